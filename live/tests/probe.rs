//! The centre-side probe against real parts: the project's GStreamer RTSP
//! server (`scripts/rtsp-test-server.py`, Digest auth) as the camera, a
//! throwaway PostgreSQL with the bridge's schema, and the real
//! `sitewatch-live` binary. Every class that can be produced on loopback
//! is asserted, in the binary's table and in the database rows:
//!
//! - `ok`: right path and password;
//! - `auth`: wrong password;
//! - `not_found`: wrong path;
//! - `tcp_refused`: a closed port;
//! - `dns`: a name under `.invalid` (RFC 6761: never resolves);
//! - `tcp_timeout`: a listening socket with a backlog of 0 whose one
//!   queue slot is taken, so the kernel drops further SYNs;
//! - `rtsp_error`: the fixture's black-hole port (accepts, never answers).
//!
//! Plus the exit statuses of `check` and of a bad config (78), and that
//! the RTSP password appears in no output and no row.
//!
//! The optional short PLAY (`probe.play_secs`): `ok` with the first
//! frame's delay on `/secure`, `no_frames` on the fixture's `/noframes`
//! (PLAY answered, RTP flowing, every packet one the client must drop),
//! stored as `no_frames` (bridge migration 11 added the class; on schema
//! 10 it would be `rtsp_error` with the same detail).

use std::process::Command;
use std::time::Duration;

use sitewatch_testkit::Postgres;

mod util;
use util::{live_bin, migrate, rtsp_server, write, SECRET};

/// A socket that listens with a backlog of 0 and whose one accept-queue
/// slot is taken: further connections get no SYN-ACK (a black-holing
/// port forward, as seen from the centre).
struct Blackhole {
    _listener: socket2::Socket,
    _filler: std::net::TcpStream,
    port: u16,
}

impl Blackhole {
    fn start() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        s.bind(&addr.into()).expect("bind");
        s.listen(0).expect("listen");
        let port = s
            .local_addr()
            .expect("local addr")
            .as_socket()
            .expect("inet")
            .port();
        let filler = std::net::TcpStream::connect_timeout(
            &format!("127.0.0.1:{port}").parse().expect("addr"),
            Duration::from_secs(2),
        )
        .expect("fill the accept queue");
        Blackhole {
            _listener: s,
            _filler: filler,
            port,
        }
    }
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let p = l.local_addr().expect("addr").port();
    drop(l);
    p
}

#[test]
fn every_class_in_the_table_and_in_postgres() {
    let server = rtsp_server();
    let hole = Blackhole::start();
    let pg = Postgres::start().expect("start PostgreSQL");
    let url = pg.create_database("live_probe").expect("database");
    migrate(&url);

    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.pw", &format!("{SECRET}\n"));
    let bad = write(dir.path(), "bad.pw", "wrong-password\n");
    let p = server.port;
    let config = format!(
        r#"
[postgres]
url = "{url}"

[probe]
connect_timeout_ms = 700
rtsp_timeout_ms = 1500

[[sites]]
site = "good"
host = "127.0.0.1"
port = {p}
username = "admin"
password_file = "{good}"
[[sites.cameras]]
camera = "secure"
path = "/secure"
[[sites.cameras]]
camera = "wrong-path"
path = "/nope"
[[sites.cameras]]
camera = "closed"
port = {closed}
path = "/cam1"
[[sites.cameras]]
camera = "no-answer"
port = {hole}
path = "/cam1"
[[sites.cameras]]
camera = "not-rtsp"
port = {bh}
path = "/cam1"

[[sites]]
site = "badpw"
host = "127.0.0.1"
port = {p}
username = "admin"
password_file = "{bad}"
[[sites.cameras]]
camera = "secure"
path = "/secure"

[[sites]]
site = "stale-ddns"
host = "no-such-site.invalid"
[[sites.cameras]]
camera = "cam1"
path = "/cam1"
"#,
        good = good.display(),
        bad = bad.display(),
        closed = closed_port(),
        hole = hole.port,
        bh = server.blackhole,
    );
    let cfg = write(dir.path(), "live.toml", &config);

    let ok = Command::new(live_bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run check");
    assert!(ok.status.success(), "{ok:?}");

    let out = Command::new(live_bin())
        .args(["probe", "--store", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));

    let want = [
        ("good", "secure", "ok"),
        ("good", "wrong-path", "not_found"),
        ("good", "closed", "tcp_refused"),
        ("good", "no-answer", "tcp_timeout"),
        ("good", "not-rtsp", "rtsp_error"),
        ("badpw", "secure", "auth"),
        ("stale-ddns", "cam1", "dns"),
    ];
    for (site, camera, class) in want {
        let line = stdout
            .lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 3 && w[0] == site && w[1] == camera
            })
            .unwrap_or_else(|| panic!("no line for {site}/{camera}:\n{stdout}"));
        assert_eq!(
            line.split_whitespace().nth(2),
            Some(class),
            "{site}/{camera}:\n{stdout}"
        );
    }

    let rows = pg
        .psql_db(
            "live_probe",
            "SELECT site, camera, class FROM camera_reachability_now ORDER BY site, camera",
        )
        .expect("query");
    let mut expected: Vec<String> = want
        .iter()
        .map(|(s, c, k)| format!("{s}|{c}|{k}"))
        .collect();
    expected.sort();
    let got: Vec<&str> = rows.lines().collect();
    assert_eq!(got, expected, "{rows}");
    let history = pg
        .psql_db("live_probe", "SELECT count(*) FROM camera_reachability")
        .expect("query");
    assert_eq!(history, "7");
    let dump = pg
        .psql_db(
            "live_probe",
            "SELECT string_agg(detail || url || host, ' ') FROM camera_reachability_now",
        )
        .expect("query");
    assert!(!dump.contains(SECRET), "{dump}");
    // The DDNS name did not resolve: no address; the others have one.
    let addr = pg
        .psql_db(
            "live_probe",
            "SELECT site, addr IS NULL FROM camera_reachability_now WHERE camera IN ('cam1', 'secure') ORDER BY site",
        )
        .expect("query");
    assert_eq!(addr, "badpw|f\ngood|f\nstale-ddns|t");
}

/// The DDNS check (bridge migration 15): the camera's host name against
/// the site's latest uplink address on `sites`. `localhost` resolves to
/// 127.0.0.1, so the site whose agent reported 127.0.0.1 matches, the one
/// that reported 192.0.2.1 does not (a router whose DDNS client stopped
/// updating), the one behind carrier-grade NAT is named as such, and the
/// one the bridge knows no address of is not compared.
#[test]
fn ddns_name_against_the_sites_wan_address() {
    let server = rtsp_server();
    let pg = Postgres::start().expect("start PostgreSQL");
    let url = pg.create_database("live_ddns").expect("database");
    migrate(&url);
    pg.psql_db(
        "live_ddns",
        "INSERT INTO sites (site, first_seen, last_seen, wan_addr, wan_addr_class, wan_addr_since) \
         VALUES ('fresh', now(), now(), '127.0.0.1', 'public', now()), \
                ('stale', now(), now(), '192.0.2.1', 'public', now()), \
                ('cgnat', now(), now(), '100.72.18.9', 'cgnat', now())",
    )
    .expect("site rows");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.pw", &format!("{SECRET}\n"));
    let mut config = format!("[postgres]\nurl = \"{url}\"\n");
    for site in ["fresh", "stale", "cgnat", "unknown"] {
        config.push_str(&format!(
            "\n[[sites]]\nsite = \"{site}\"\nhost = \"localhost\"\nport = {p}\n\
             username = \"admin\"\npassword_file = \"{good}\"\n\
             [[sites.cameras]]\ncamera = \"secure\"\npath = \"/secure\"\n",
            p = server.port,
            good = good.display(),
        ));
    }
    let cfg = write(dir.path(), "live.toml", &config);
    let out = Command::new(live_bin())
        .args(["probe", "--store", "--config"])
        .arg(&cfg)
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "but the site's WAN address is 192.0.2.1: the DDNS client on the router is not updating"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("port forwarding cannot work"), "{stdout}");
    let rows = pg
        .psql_db(
            "live_ddns",
            "SELECT site, class, coalesce(ddns::text, 'null') FROM camera_reachability_now \
             ORDER BY site",
        )
        .expect("query");
    assert_eq!(
        rows,
        "cgnat|ok|null\nfresh|ok|true\nstale|ok|false\nunknown|ok|null"
    );
    let stale = pg
        .psql_db(
            "live_ddns",
            "SELECT detail FROM camera_reachability WHERE site = 'stale' AND ddns = false",
        )
        .expect("query");
    assert!(
        stale.contains("the DDNS name localhost resolves to ")
            && stale.contains("127.0.0.1")
            && stale.ends_with(
                "but the site's WAN address is 192.0.2.1: the DDNS client on the router is not updating"
            ),
        "{stale}"
    );
    let cgnat = pg
        .psql_db(
            "live_ddns",
            "SELECT detail FROM camera_reachability_now WHERE site = 'cgnat'",
        )
        .expect("query");
    assert!(cgnat.contains("carrier-grade NAT"), "{cgnat}");
}

#[test]
fn short_play_ok_and_no_frames() {
    let server = rtsp_server();
    let pg = Postgres::start().expect("start PostgreSQL");
    let url = pg.create_database("live_play").expect("database");
    migrate(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.pw", &format!("{SECRET}\n"));
    let config = format!(
        r#"
[postgres]
url = "{url}"

[probe]
rtsp_timeout_ms = 5000
play_secs = 3

[[sites]]
site = "play"
host = "127.0.0.1"
port = {p}
username = "admin"
password_file = "{good}"
[[sites.cameras]]
camera = "secure"
path = "/secure"
[[sites.cameras]]
camera = "noframes"
path = "/noframes"
"#,
        p = server.port,
        good = good.display(),
    );
    let cfg = write(dir.path(), "live.toml", &config);
    let out = Command::new(live_bin())
        .args(["probe", "--store", "--config"])
        .arg(&cfg)
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    let line = |camera: &str| -> String {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(camera))
            .unwrap_or_else(|| panic!("no line for {camera}:\n{stdout}"))
            .to_owned()
    };
    let secure = line("secure");
    assert_eq!(secure.split_whitespace().nth(2), Some("ok"), "{stdout}");
    assert!(secure.contains("PLAY ok, first frame after"), "{stdout}");
    let nof = line("noframes");
    assert_eq!(nof.split_whitespace().nth(2), Some("no_frames"), "{stdout}");
    assert!(
        nof.contains("no frames: PLAY accepted but no frame arrived within 3 s"),
        "{stdout}"
    );
    assert!(stdout.contains("sent no picture"), "the advice: {stdout}");
    println!("{stdout}");
    let rows = pg
        .psql_db(
            "live_play",
            "SELECT camera, class, detail LIKE '%no frames: PLAY accepted%' \
             FROM camera_reachability_now ORDER BY camera",
        )
        .expect("query");
    assert_eq!(rows, "noframes|no_frames|t\nsecure|ok|f", "{rows}");
    let history = pg
        .psql_db(
            "live_play",
            "SELECT string_agg(class, ',' ORDER BY camera) FROM camera_reachability",
        )
        .expect("query");
    assert_eq!(history, "no_frames,ok");
}

#[test]
fn bad_config_exits_78_and_check_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "bad.toml",
        "[postgres]\nurl = \"postgresql://x@127.0.0.1/x\"\n[[sites]]\nsite = \"Bad Site\"\nhost = \"h\"\n",
    );
    let run = Command::new(live_bin())
        .args(["--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(78), "{run:?}");
    let check = Command::new(live_bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("check");
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains(".site:") && err.contains("cameras"), "{err}");
}
