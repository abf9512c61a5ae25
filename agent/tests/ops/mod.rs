//! Operations on a gateway: systemd notifications, exit codes, SIGHUP
//! reload, socket activation, the sandbox's view of disks and the
//! installer's commissioning check (`check --online`).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sitewatch_testkit::{sig, ChildGuard, Mosquitto, TestCerts};
use sitewatch_wire::Message;

use crate::util::{agent_bin, outcome, run_check, Observer, Received, TestConfig};

const T: Duration = Duration::from_secs(15);

/// The agent binary as a `Command` without `SITEWATCH_*`/`RUST_LOG` from
/// the developer's shell.
fn agent() -> Command {
    let mut cmd = Command::new(agent_bin());
    for var in [
        "SITEWATCH_SITE_ID",
        "SITEWATCH_MQTT_URL",
        "SITEWATCH_MQTT_USERNAME",
        "SITEWATCH_MQTT_PASSWORD",
        "SITEWATCH_MQTT_CA_FILE",
        "RUST_LOG",
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Every datagram that arrives on `sock` within `dur`, as text.
fn notifications(sock: &UnixDatagram, dur: Duration) -> Vec<String> {
    let end = Instant::now() + dur;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).expect("timeout");
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

/// Offline site: READY=1 comes anyway, WATCHDOG=1 keeps coming during the
/// reconnect backoff, STATUS says why; SIGTERM: STOPPING=1.
#[test]
fn sd_notify_ready_watchdog_status_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    // A port where nothing listens yet.
    let port = sitewatch_testkit::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let cfg = TestConfig::new("notify-site", &url).write(dir.path());
    let mut agent = ChildGuard::spawn(
        agent()
            .arg("--config")
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "1000000"),
    )
    .expect("spawn");
    let first = notifications(&sock, Duration::from_millis(3500));
    let all = first.join("|");
    assert!(
        first
            .first()
            .is_some_and(|m| m.contains("READY=1") && m.contains("STATUS=")),
        "READY first: {all}\n{}",
        agent.log_contents()
    );
    let kicks = first.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(kicks >= 4, "WATCHDOG=1 every 0.5 s while offline: {all}");
    assert!(all.contains("STATUS=Cannot connect to broker"), "{all}");

    agent.signal(sig::TERM).expect("SIGTERM");
    let rest = notifications(&sock, Duration::from_secs(2));
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
    assert!(agent.wait_timeout(T).is_some_and(|s| s.success()));
}

/// With a broker: STATUS says connected.
#[test]
fn sd_notify_status_when_connected() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let cfg = TestConfig::new("notify-online", &broker.url()).write(dir.path());
    let mut agent = ChildGuard::spawn(
        agent()
            .arg("--config")
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path),
    )
    .expect("spawn");
    let end = Instant::now() + T;
    let mut seen: Vec<String> = Vec::new();
    while Instant::now() < end && !seen.iter().any(|m| m.contains("STATUS=Connected")) {
        seen.extend(notifications(&sock, Duration::from_millis(500)));
    }
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=Connected to 127.0.0.1")),
        "{seen:?}\n{}",
        agent.log_contents()
    );
    // No WATCHDOG_USEC: no keep-alives.
    assert!(!seen.iter().any(|m| m.contains("WATCHDOG=1")), "{seen:?}");
    agent.signal(sig::TERM).expect("SIGTERM");
    assert!(agent.wait_timeout(T).is_some_and(|s| s.success()));
}

/// An invalid config at start exits with EX_CONFIG (78), so systemd's
/// `RestartPreventExitStatus=78` stops the restart loop.
#[test]
fn invalid_config_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "site_id = \"x\"\n[mqtt]\nurl = \"nope://\"\n").expect("write");
    let out = agent().arg("--config").arg(&cfg).output().expect("run");
    let (code, text) = outcome(&out);
    assert_eq!(code, Some(78), "{text}");
    // An unreadable config file is a config error too.
    let out = agent()
        .arg("--config")
        .arg(dir.path().join("absent.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
}

/// SIGHUP: an invalid file is refused (still running, same boot); a
/// changed site_id is refused; a changed [mqtt] setting reconnects with
/// a new session and birth in the same boot, seq continuing; a changed
/// heartbeat interval applies.
#[test]
fn sighup_reload_refuses_invalid_and_applies_valid() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let mut tc = TestConfig::new("reload-site", &broker.url());
    tc.heartbeat_secs = 5;
    let cfg = tc.write(dir.path());
    let mut agent = ChildGuard::spawn(agent().arg("--config").arg(&cfg)).expect("spawn");
    let birth = obs.wait_for(T, "birth", Received::is_birth);
    let (_, boot, _) = birth.identity();

    // Invalid: refused, every problem logged.
    std::fs::write(
        &cfg,
        "site_id = \"reload-site\"\n[mqtt]\nurl = 5\n[disk]\ninterval_secs = 0\n",
    )
    .expect("write");
    agent.signal(sig::HUP).expect("SIGHUP");
    agent
        .wait_for_log("Reload refused: the new config is invalid", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_contents()));
    let log = agent.log_contents();
    assert!(
        log.contains("interval_secs"),
        "every problem logged:\n{log}"
    );

    // site_id change: restart required.
    let other = TestConfig::new("other-site", &broker.url());
    std::fs::write(&cfg, other.text()).expect("write");
    agent.signal(sig::HUP).expect("SIGHUP");
    agent
        .wait_for_log("restart required", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_contents()));
    assert!(agent.try_status().is_none(), "still running");

    // Valid: heartbeat 1 s and a new keep-alive (an [mqtt] change).
    tc.heartbeat_secs = 1;
    let text = tc
        .text()
        .replace("keep_alive_secs = 5", "keep_alive_secs = 7");
    std::fs::write(&cfg, text).expect("write");
    agent.signal(sig::HUP).expect("SIGHUP");
    let second = obs.wait_for(T, "second birth", |m| {
        m.status()
            .is_some_and(|s| s.session == 2 && s.state == sitewatch_wire::payload::State::Online)
    });
    assert_eq!(second.identity().1, boot, "same boot");
    assert!(second.identity().2 > birth.identity().2, "seq continues");
    agent
        .wait_for_log("applied: mqtt, heartbeat", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_contents()));
    let t0 = Instant::now();
    let mut beats = 0;
    obs.wait_for(T, "heartbeats every second", |m| {
        if matches!(m.msg, Message::Heartbeat(_)) && m.identity().1 == boot {
            beats += 1;
        }
        beats >= 3
    });
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    agent.signal(sig::TERM).expect("SIGTERM");
    assert!(agent.wait_timeout(T).is_some_and(|s| s.success()));
}

/// The disk probe under a mount namespace like systemd's sandbox: an
/// empty folder bind-mounted onto itself (`ReadWritePaths=`) is
/// `not_mounted`; a real filesystem bound onto itself and made read-only
/// per mount (`ProtectSystem=strict`) is mounted and not read-only.
#[test]
fn sandbox_bind_mounts_and_read_only_view() {
    use std::os::unix::fs::MetadataExt as _;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let unshare = Path::new("/usr/bin/unshare").exists();
    if !root || !unshare {
        eprintln!("skipped: needs root and unshare(1)");
        return;
    }
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("recordings");
    let real = dir.path().join("nvr");
    std::fs::create_dir_all(&empty).expect("mkdir");
    std::fs::create_dir_all(&real).expect("mkdir");
    let (e, r) = (empty.display().to_string(), real.display().to_string());
    let mut tc = TestConfig::new("sandbox-site", &broker.url());
    tc.mounts = vec![e.clone(), r.clone()];
    let cfg = tc.write(dir.path());
    let mut obs = Observer::start(&broker);
    let script = format!(
        "set -e; mount --bind '{e}' '{e}'; mount -t tmpfs -o size=8m tmpfs '{r}'; \
         mount --bind '{r}' '{r}'; mount -o remount,bind,ro '{r}'; \
         mount -o remount,bind,ro '{e}'; exec '{bin}' --config '{cfg}'",
        bin = agent_bin(),
        cfg = cfg.display()
    );
    let _agent = ChildGuard::spawn(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .env_remove("RUST_LOG"),
    )
    .expect("spawn");
    let disk = obs.wait_for(T, "disk report", |m| matches!(m.msg, Message::Disk(_)));
    let Message::Disk(d) = &disk.msg else {
        unreachable!()
    };
    let by = |p: &str| {
        d.mounts
            .iter()
            .find(|m| m.path == p)
            .expect("entry")
            .clone()
    };
    let empty_m = by(&e);
    assert_eq!(empty_m.error.as_deref(), Some("not_mounted"), "{d:?}");
    let real_m = by(&r);
    assert_eq!(real_m.error, None, "{d:?}");
    assert_eq!(real_m.fs_type, "tmpfs");
    assert!(
        !real_m.read_only,
        "per-mount ro is not a read-only disk: {d:?}"
    );
    assert!(real_m.total_bytes > 0);
}

/// Socket activation with systemd's own tool: the UDP socket named
/// `syslog` is used instead of the configured address, which stays free.
#[test]
fn socket_activation_with_systemd_socket_activate() {
    let tool = Path::new("/usr/bin/systemd-socket-activate");
    if !tool.exists() {
        eprintln!("skipped: systemd-socket-activate not installed");
        return;
    }
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let passed = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let configured = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let text = format!(
        "{}[syslog]\nudp = [\"127.0.0.1:{configured}\"]\ntcp = []\nbatch_max_wait_ms = 200\n",
        TestConfig::new("sockact-site", &broker.url()).text()
    );
    let cfg = dir.path().join("sockact.toml");
    std::fs::write(&cfg, text).expect("write");
    let mut obs = Observer::start(&broker);
    let mut cmd = Command::new(tool);
    cmd.args([
        "--datagram",
        "-l",
        &format!("127.0.0.1:{passed}"),
        "--fdname=syslog",
    ])
    .arg(agent_bin())
    .arg("--config")
    .arg(&cfg)
    .env_remove("RUST_LOG");
    let mut agent = ChildGuard::spawn(&mut cmd).expect("spawn");
    // The tool starts the agent on the first datagram; it stays queued.
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let marker = format!("sockact-{}", std::process::id());
    let line = format!("<13>Jan  1 00:00:00 nvr-1 app: {marker}");
    let end = Instant::now() + T;
    let mut got = false;
    while Instant::now() < end && !got {
        tx.send_to(line.as_bytes(), ("127.0.0.1", passed))
            .expect("send");
        obs.drain_for(Duration::from_millis(500));
        got = obs.seen.iter().any(|m| match &m.msg {
            Message::Log(l) => l.records.iter().any(|r| r.msg.contains(&marker)),
            _ => false,
        });
    }
    assert!(
        got,
        "line relayed through the passed socket:\n{}",
        agent.log_contents()
    );
    let log = agent.log_contents();
    assert!(log.contains("Syslog UDP socket from systemd"), "{log}");
    assert!(
        !log.contains(&format!("127.0.0.1:{configured}")) || log.contains("not bound"),
        "{log}"
    );
    // The configured address was never bound by the agent.
    std::net::UdpSocket::bind(("127.0.0.1", configured)).expect("configured port stays free");
    agent.signal(sig::TERM).expect("SIGTERM");
    let _ = agent.wait_timeout(T);
}

/// The commissioning table: TLS broker with credentials OK, certificate
/// dates shown, an unmounted disk and a busy syslog port FAILED with what
/// to do; exit status 1.
#[test]
fn check_online_prints_one_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(dir.path()).expect("certs");
    let broker = Mosquitto::builder().tls(&certs).start().expect("broker");
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").expect("busy port");
    let busy_addr = busy.local_addr().expect("addr");
    let free_tcp = sitewatch_testkit::free_port();
    let unmounted = dir.path().join("recordings");
    std::fs::create_dir_all(&unmounted).expect("mkdir");
    let mut tc = TestConfig::new("commission-site", &broker.tls_url().expect("tls url")).mqtt(
        &format!("ca_file = {:?}", certs.ca_cert.display().to_string()),
    );
    tc.mounts = vec!["/".into(), unmounted.display().to_string()];
    let text = format!(
        "{}[syslog]\nudp = [\"{busy_addr}\"]\ntcp = [\"127.0.0.1:{free_tcp}\"]\n",
        tc.text()
    );
    let cfg = dir.path().join("commission.toml");
    std::fs::write(&cfg, text).expect("write");
    let (code, out) = outcome(&run_check(&cfg, &["--online"]));
    assert_eq!(code, Some(1), "{out}");
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no row `{needle}`:\n{out}"))
            .to_owned()
    };
    assert!(line("broker DNS").contains("| ok"), "{out}");
    assert!(line("broker TLS").contains("| ok"), "{out}");
    assert!(line("broker MQTT").contains("| ok"), "{out}");
    assert!(line("CA certificate").contains("valid until"), "{out}");
    assert!(line("clock").contains("| ok"), "{out}");
    assert!(line("disk / ").contains("| ok"), "{out}");
    let d = line(&format!("disk {}", unmounted.display()));
    assert!(
        d.contains("FAILED") && d.contains("nothing is mounted"),
        "{d}"
    );
    let s = line(&format!("syslog UDP {busy_addr}"));
    assert!(s.contains("FAILED") && s.contains("another program"), "{s}");
    assert!(
        line(&format!("syslog TCP 127.0.0.1:{free_tcp}")).contains("| ok"),
        "{out}"
    );
    // No [rtsp] table: a warning that says how to add cameras.
    let cams = line("cameras");
    assert!(
        cams.contains("warning") && cams.contains("[[rtsp.camera]]"),
        "{cams}"
    );
    assert!(out.contains("check(s) FAILED"), "{out}");
    // `--connect` stays an alias.
    let (code2, out2) = outcome(&run_check(&cfg, &["--connect"]));
    assert_eq!(code2, Some(1), "{out2}");
    drop(busy);
}

/// A world-readable config with an inline password, or a world-readable
/// password file, stops the agent with a message naming the file and the
/// chmod to run, unless explicitly allowed; group-readable is fine.
#[test]
fn secrets_readable_by_everyone_are_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let cfg = TestConfig::new("perms", "mqtt://127.0.0.1:1")
        .mqtt("username = \"site1\"")
        .mqtt("password = \"inline-secret\"")
        .write(dir.path());
    chmod(&cfg, 0o644);

    let out = run_check(&cfg, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("holds the broker password"), "{text}");
    assert!(
        text.contains(&format!("chmod 600 {}", cfg.display())),
        "{text}"
    );
    assert!(!text.contains("inline-secret"), "{text}");

    // `run` refuses with EX_CONFIG before connecting anywhere.
    let run = agent().arg("--config").arg(&cfg).output().expect("run");
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(78), "{err}");
    assert!(
        err.contains("every user on this machine can read it (mode 0644)"),
        "{err}"
    );

    // Explicit override: a warning, not a failure.
    let out = run_check(&cfg, &["--allow-insecure-permissions"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warning:") && text.contains("chmod 600"),
        "{text}"
    );

    // root:sitewatch 0640 is the packaged layout.
    chmod(&cfg, 0o640);
    let out = run_check(&cfg, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The same for a password file, even when the config is world-readable
    // (it has no inline secret then).
    let pw = dir.path().join("mqtt.pass");
    std::fs::write(&pw, "file-secret\n").expect("write");
    chmod(&pw, 0o604);
    let cfg2 = TestConfig::new("perms2", "mqtt://127.0.0.1:1")
        .mqtt("username = \"site1\"")
        .mqtt(&format!("password_file = \"{}\"", pw.display()))
        .write(dir.path());
    chmod(&cfg2, 0o644);
    let out = run_check(&cfg2, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{} holds the broker password", pw.display())),
        "{text}"
    );
    // The config itself has no inline secret: only the password file.
    assert_eq!(text.matches(" holds ").count(), 1, "{text}");
    chmod(&pw, 0o600);
    let out = run_check(&cfg2, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// On OpenWrt the init script generates `/var/etc/sitewatch/agent.toml`
/// from UCI and `/etc/sitewatch/agent.toml` does not exist: `check` (and
/// every other command) without `--config` uses the generated file. In a
/// private mount namespace with a tmpfs on `/var` (and on
/// `/etc/sitewatch`, should this machine have one), so the host is not
/// touched.
#[test]
fn commands_without_config_fall_back_to_the_openwrt_generated_file() {
    use std::os::unix::fs::MetadataExt as _;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let unshare = Path::new("/usr/bin/unshare").exists();
    if !root || !unshare {
        eprintln!("skipped: needs root and unshare(1)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TestConfig::new("openwrt-site", "mqtt://127.0.0.1:1").write(dir.path());
    let hide_etc = if Path::new("/etc/sitewatch").is_dir() {
        "mount -t tmpfs -o size=1m tmpfs /etc/sitewatch;"
    } else {
        ""
    };
    let run = |generated: bool| {
        let copy = if generated {
            format!(
                "mkdir -p /var/etc/sitewatch; cp '{}' /var/etc/sitewatch/agent.toml;",
                cfg.display()
            )
        } else {
            String::new()
        };
        let script = format!(
            "set -e; {hide_etc} mount -t tmpfs -o size=1m tmpfs /var; {copy} exec '{bin}' check",
            bin = agent_bin(),
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
        // Environment settings would win over the file (and the check).
        for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("SITEWATCH_")) {
            cmd.env_remove(var);
        }
        outcome(&cmd.env_remove("RUST_LOG").output().expect("unshare"))
    };
    let (code, text) = run(true);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("OK: /var/etc/sitewatch/agent.toml:"),
        "checked the generated file: {text}"
    );
    let (code, text) = run(false);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("/etc/sitewatch/agent.toml")
            && text.contains("/var/etc/sitewatch/agent.toml")
            && text.contains("--config"),
        "a missing config names both places and the flag: {text}"
    );
}
