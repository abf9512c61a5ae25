//! The real `sitewatch-bridge` binary under the systemd notify protocol
//! (`Type=notify` in systemd/sitewatch-bridge.service): the test plays
//! systemd's side, a Unix datagram socket named by `NOTIFY_SOCKET`, with
//! `WATCHDOG_USEC` set, and starts the bridge while its PostgreSQL is
//! down. It must say why it waits, keep feeding the watchdog while it
//! waits, send `READY=1` only once the schema is migrated, and
//! `STOPPING=1` on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sitewatch_testkit::{Mosquitto, Postgres};

/// Every datagram received until `until` returns true for one of them or
/// `limit` passes; each datagram is split into its `KEY=value` lines.
fn collect(
    sock: &UnixDatagram,
    limit: Duration,
    mut until: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let stop = msg.lines().any(&mut until);
        seen.extend(msg.lines().map(str::to_owned));
        if stop {
            break;
        }
    }
    seen
}

#[test]
fn ready_after_migrations_watchdog_while_waiting_stopping_on_term() {
    let mosquitto = Mosquitto::start().expect("start mosquitto");
    let mut pg = Postgres::start().expect("start postgres");
    pg.stop()
        .expect("stop postgres: the bridge starts with its database down");

    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nurl = \"{}\"\nclient_id = \"notify-test\"\n\
             [postgres]\nurl = \"postgresql://postgres@127.0.0.1:{}/postgres\"\n\
             connect_timeout_secs = 1\n[http]\nlisten = \"127.0.0.1:0\"\n",
            mosquitto.url(),
            pg.port()
        ),
    )
    .expect("write config");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitewatch-bridge"));
    cmd.arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        // 4 s: kicks every 2 s.
        .env("WATCHDOG_USEC", "4000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SITEWATCH_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("start sitewatch-bridge");
    let guard = scopeguard(&mut child);

    // Database down for 7 s: a status that says why, watchdog kicks (the
    // writer beats while it retries), and no READY.
    let waiting = collect(&sock, Duration::from_secs(7), |_| false);
    assert!(
        !waiting.iter().any(|l| l == "READY=1"),
        "READY=1 before the database was reachable: {waiting:?}"
    );
    assert!(
        waiting
            .iter()
            .any(|l| l.starts_with("STATUS=Waiting for the database:")),
        "no status saying why it waits: {waiting:?}"
    );
    let kicks = waiting.iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(
        kicks >= 2,
        "{kicks} watchdog kicks in 7 s while waiting: {waiting:?}"
    );

    pg.restart().expect("start postgres");
    let after = collect(&sock, Duration::from_secs(60), |l| l == "READY=1");
    assert!(
        after.iter().any(|l| l == "READY=1"),
        "no READY=1 within 60 s of the database coming up: {after:?}"
    );
    // READY came after the migrations: the schema is there now.
    let version = pg
        .psql("SELECT max(version) FROM schema_migrations")
        .expect("schema_migrations exists once READY=1 was sent");
    assert!(
        version.trim().parse::<i64>().is_ok_and(|v| v >= 7),
        "schema version {version:?}"
    );

    nix_kill(guard.id());
    let stopping = collect(&sock, Duration::from_secs(20), |l| l == "STOPPING=1");
    assert!(
        stopping.iter().any(|l| l == "STOPPING=1"),
        "no STOPPING=1 after SIGTERM: {stopping:?}"
    );
    let status = guard.wait().expect("wait for the bridge");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

fn nix_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}

/// Kills the child if the test panics before it is waited for.
struct Guard<'a>(&'a mut std::process::Child);

fn scopeguard(child: &mut std::process::Child) -> Guard<'_> {
    Guard(child)
}

impl Guard<'_> {
    fn id(&self) -> u32 {
        self.0.id()
    }
    fn wait(self) -> std::io::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.0.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("the bridge did not exit within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
