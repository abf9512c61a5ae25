//! Real-PostgreSQL tests: parallel clusters, restart, crash, cleanup.

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;

use sitewatch_testkit::Postgres;

/// Pids whose parent is `parent` (the postmaster's server processes).
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat[stat.rfind(')')? + 1..].to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat[stat.rfind(')').expect("stat") + 1..]
            .trim_start()
            .starts_with('Z'),
    }
}

#[test]
fn two_servers_in_parallel() {
    let servers: Vec<Postgres> = std::thread::scope(|s| {
        let a = s.spawn(|| Postgres::start().expect("start postgres a"));
        let b = s.spawn(|| Postgres::start().expect("start postgres b"));
        vec![a.join().expect("thread a"), b.join().expect("thread b")]
    });
    assert_ne!(servers[0].port(), servers[1].port());
    for pg in &servers {
        assert_ne!(pg.port(), 5432);
        assert_eq!(
            pg.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
        );
        assert_eq!(pg.psql("select 1").expect("select 1"), "1");
        assert_eq!(pg.psql("show fsync").expect("show"), "off");
        assert_eq!(pg.psql("show synchronous_commit").expect("show"), "on");
        assert_eq!(
            pg.psql("select inet_server_addr()").expect("addr"),
            "127.0.0.1"
        );
    }
}

#[test]
fn databases_psql_and_errors() {
    let pg = Postgres::start().expect("start postgres");
    let url = pg.create_database("bridge_test").expect("create database");
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/bridge_test", pg.port())
    );
    pg.psql_db(
        "bridge_test",
        "create table t (id int, name text); insert into t values (1, 'a'), (2, 'b')",
    )
    .expect("create table");
    assert_eq!(
        pg.psql_db("bridge_test", "select id, name from t order by id")
            .expect("select"),
        "1|a\n2|b"
    );
    assert!(pg.create_database("bad name; drop").is_err());
    let err = pg
        .psql("select * from missing_table")
        .expect_err("must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("missing_table") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn restart_and_crash_keep_committed_data() {
    let mut pg = Postgres::start().expect("start postgres");
    let port = pg.port();
    pg.psql("create table kept (v int); insert into kept values (42)")
        .expect("create");

    pg.restart().expect("restart");
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("select v from kept").expect("select"), "42");

    // Crash with SIGKILL: every server process dies at once, the port
    // closes, and a restart runs crash recovery without losing commits.
    pg.psql("insert into kept values (43)").expect("insert");
    let pid = pg.pid().expect("running");
    let children = children_of(pid);
    assert!(!children.is_empty(), "postmaster has server processes");
    pg.kill().expect("kill");
    assert!(pg.pid().is_none());
    assert!(gone(pid) && children.iter().all(|&c| gone(c)));
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    assert!(pg.psql("select 1").is_err());

    pg.restart().expect("restart after kill");
    assert_eq!(
        pg.psql("select string_agg(v::text, ',' order by v) from kept")
            .expect("select"),
        "42,43"
    );
    assert!(
        pg.log_contents()
            .contains("database system was interrupted"),
        "expected crash recovery in log:\n{}",
        pg.log_contents()
    );

    pg.stop().expect("stop");
    assert!(pg.pid().is_none());
    assert!(!pg.data_dir().join("postmaster.pid").exists());
}

#[test]
fn drop_stops_server_and_removes_directory() {
    let pg = Postgres::start().expect("start postgres");
    let pid = pg.pid().expect("running");
    let port = pg.port();
    let children = children_of(pid);
    let dir = pg.data_dir().parent().expect("parent").to_path_buf();
    assert!(dir.join("postgres.log").exists());
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(gone(pid) && children.iter().all(|&c| gone(c)));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn drop_after_kill_removes_directory() {
    let mut pg = Postgres::start().expect("start postgres");
    let dir = pg.data_dir().parent().expect("parent").to_path_buf();
    pg.kill().expect("kill");
    drop(pg);
    assert!(!dir.exists());
}
