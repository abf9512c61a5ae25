//! `sitewatch-agent status` and `sitewatch-agent once`, run as the built
//! binary against the real daemon and a throwaway mosquitto.

#[path = "util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sitewatch_testkit::{sig, Mosquitto};
use util::{agent_bin, outcome, spawn_agent, TestConfig};

const T: Duration = Duration::from_secs(20);

/// The MQTT password of the test site: must never show in the status.
const PASSWORD: &str = "pw-must-not-leak-7f3a";

fn agent() -> Command {
    let mut cmd = Command::new(agent_bin());
    for var in [
        "SITEWATCH_SITE_ID",
        "SITEWATCH_MQTT_URL",
        "SITEWATCH_MQTT_USERNAME",
        "SITEWATCH_MQTT_PASSWORD",
        "SITEWATCH_MQTT_CA_FILE",
        "RUST_LOG",
        "RUNTIME_DIRECTORY",
        "NOTIFY_SOCKET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Writes `cfg` plus `extra` (more tables) as a 0600 config file.
fn write_config(dir: &Path, cfg: &TestConfig, extra: &str) -> PathBuf {
    let path = dir.join(format!("{}.toml", cfg.site));
    std::fs::write(&path, format!("{}{extra}", cfg.text())).expect("write config");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod config");
    path
}

/// `sitewatch-agent status --config CFG [args]`.
fn status(config: &Path, args: &[&str]) -> Output {
    agent()
        .arg("status")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run status")
}

/// `status --json`, parsed: (exit code, document).
fn status_json(config: &Path) -> (Option<i32>, serde_json::Value) {
    let out = status(config, &["--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {text}"));
    (out.status.code(), v)
}

/// Polls `status --json` until `pred` holds; returns the last answer.
fn wait_status(
    config: &Path,
    what: &str,
    mut pred: impl FnMut(Option<i32>, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + T;
    loop {
        let (code, v) = status_json(config);
        if pred(code, &v) {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}; last: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A broker that wants a password, and a site that has it.
fn password_broker(dir: &Path) -> Mosquitto {
    let pwfile = dir.join("passwd");
    std::fs::write(&pwfile, "").expect("write");
    let st = Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(&pwfile)
        .args(["site1", PASSWORD])
        .status()
        .expect("mosquitto_passwd");
    assert!(st.success());
    Mosquitto::builder()
        .extra_config(&format!(
            "allow_anonymous false\npassword_file {}\n",
            pwfile.display()
        ))
        .start()
        .expect("broker")
}

/// The running daemon's status file says connected (exit 0) with the
/// broker, a PUBACK and the outbox; once the broker is gone it says
/// disconnected (exit 1) while messages pile up in the outbox; a clean
/// stop is reported as stopped, a killed agent as not running. The file
/// and `--json` never hold the password.
#[test]
fn status_follows_the_running_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = password_broker(dir.path());
    let status_file = dir.path().join("run/status.json");
    let cfg = TestConfig::new("status-site", &broker.url())
        .mounts(&["/"])
        .mqtt("username = \"site1\"")
        .mqtt(&format!("password = \"{PASSWORD}\""));
    let config = write_config(
        dir.path(),
        &cfg,
        &format!(
            "[status]\nfile = \"{}\"\ninterval_secs = 1\n",
            status_file.display()
        ),
    );
    let mut agent_proc = spawn_agent(&config);

    // Connected, with a PUBACK and a disk report.
    let v = wait_status(
        &config,
        "connected with a PUBACK and a disk report",
        |code, v| {
            code == Some(0)
                && v["status"]["connection"]["last_puback_ms"].is_u64()
                && v["status"]["disk"].is_object()
        },
    );
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["verdict"], "connected", "{v:#}");
    let s = &v["status"];
    assert_eq!(s["site"], "status-site");
    assert_eq!(s["pid"], agent_proc.pid());
    assert_eq!(s["connection"]["state"], "connected");
    assert_eq!(s["connection"]["broker"], broker.url());
    assert_eq!(s["connection"]["session"], 1);
    assert!(s["outbox"]["messages"].is_u64(), "{v:#}");
    assert!(s["outbox"]["dropped"].is_u64(), "{v:#}");
    assert_eq!(s["outbox"]["mode"], "memory");
    assert_eq!(s["disk"]["mounts"][0]["path"], "/");
    assert!(s["heartbeat_ms"].is_u64(), "{v:#}");

    // The plain-words form says the same, exit 0.
    let (code, text) = outcome(&status(&config, &[]));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("Connected to {}", broker.url())),
        "{text}"
    );
    assert!(text.contains("Outbox:"), "{text}");
    assert!(text.contains("Last PUBACK: 20"), "{text}");

    // No secret anywhere.
    let raw = std::fs::read_to_string(&status_file).expect("status file");
    assert!(!raw.contains(PASSWORD), "{raw}");
    assert!(!v.to_string().contains(PASSWORD), "{v:#}");
    assert!(!text.contains(PASSWORD), "{text}");

    // The broker goes away: disconnected, messages wait in the outbox.
    broker.kill().expect("kill broker");
    let v = wait_status(&config, "disconnected with a queued message", |code, v| {
        code == Some(1)
            && v["status"]["connection"]["state"] == "disconnected"
            && v["status"]["outbox"]["messages"].as_u64() > Some(0)
    });
    assert_eq!(v["verdict"], "not_connected", "{v:#}");
    assert!(v["status"]["connection"]["last_error"].is_string(), "{v:#}");
    let (code, text) = outcome(&status(&config, &[]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Disconnected: retrying"), "{text}");

    // A clean stop leaves a last status that says so.
    agent_proc.signal(sig::TERM).expect("SIGTERM");
    assert!(agent_proc.wait_timeout(T).is_some(), "agent did not stop");
    let (code, text) = outcome(&status(&config, &[]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("The agent stopped at"), "{text}");

    // A killed agent cannot say so: its pid is gone.
    let mut agent_proc = spawn_agent(&config);
    wait_status(&config, "the new agent's status", |_, v| {
        v["status"]["pid"] == agent_proc.pid() && v["status"]["connection"]["state"] != "stopped"
    });
    agent_proc.signal(sig::KILL).expect("SIGKILL");
    assert!(agent_proc.wait_timeout(T).is_some(), "agent did not die");
    let (code, text) = outcome(&status(&config, &[]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is not running any more"), "{text}");
}

/// No status file: plain words and exit 1, in text and in JSON.
#[test]
fn missing_status_file_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nowhere/status.json");
    let cfg = TestConfig::new("nofile-site", "mqtt://127.0.0.1:1");
    let config = write_config(
        dir.path(),
        &cfg,
        &format!("[status]\nfile = \"{}\"\n", file.display()),
    );
    let (code, text) = outcome(&status(&config, &[]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("the agent is not running, or runs with another config"),
        "{text}"
    );
    assert!(text.contains(&file.display().to_string()), "{text}");

    let (code, v) = status_json(&config);
    assert_eq!(code, Some(1));
    assert_eq!(v["ok"], false, "{v:#}");
    assert_eq!(v["verdict"], "missing", "{v:#}");
    assert!(v["status"].is_null(), "{v:#}");

    // --file wins over the config.
    let (code, text) = outcome(&status(&config, &["--file", "/nonexistent/sitewatch.json"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("/nonexistent/sitewatch.json"), "{text}");
}

/// A file that stopped being rewritten while its writer still lives is
/// reported as stale, with the time of the last update.
#[test]
fn stale_status_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("status.json");
    // As an agent (this test process, so the pid is alive) would have
    // written it ten minutes ago.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let old = now_ms - 600_000;
    let doc = serde_json::json!({
        "format": 1, "written_ms": old, "refresh_secs": 30, "stale_after_secs": 90,
        "pid": std::process::id(), "version": "0.1.0", "site": "s", "boot": "0123456789abcdef",
        "started_ms": old - 1000, "config": "/etc/sitewatch/agent.toml",
        "connection": {"state": "connected", "since_ms": old - 500, "broker": "mqtt://b:1883",
            "session": 1, "last_puback_ms": old, "last_error": null, "reconnects": 0,
            "connect_errors": 0},
        "outbox": {"mode": "memory", "messages": 0, "bytes": 0, "in_flight": 0, "dropped": 0,
            "dropped_log": 0, "dropped_series": 0, "dropped_state": 0, "dropped_event": 0},
        "sources": {"disk": 0, "syslog": false, "cameras": 0, "smart": false, "cleanup": 0},
        "heartbeat_ms": null, "disk": null, "syslog": null, "cameras": [], "smart": [],
        "cleanup": []
    });
    std::fs::write(&file, doc.to_string()).expect("write");
    let out = agent()
        .args(["status", "--config", "/nonexistent/agent.toml", "--file"])
        .arg(&file)
        .output()
        .expect("run status");
    let (code, text) = outcome(&out);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("The agent has stopped updating its status since"),
        "{text}"
    );
    assert!(text.contains("10 min ago"), "{text}");
}

/// `once` prints a heartbeat and a disk message for the configured mount,
/// exits 0, and never connects to the broker or creates the outbox.
#[test]
fn once_prints_heartbeat_and_disk_without_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A "broker" that would see any connection attempt.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let mount = dir.path().join("rec");
    std::fs::create_dir(&mount).expect("mkdir");
    let mount_s = mount.to_str().expect("utf8");
    let outbox = dir.path().join("outbox");
    let cfg = TestConfig::new("once-site", &format!("mqtt://127.0.0.1:{port}")).mounts(&[mount_s]);
    let config = write_config(
        dir.path(),
        &cfg,
        &format!("[outbox]\ndir = \"{}\"\n", outbox.display()),
    );

    let out = agent()
        .arg("once")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run once");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");

    let mut kinds = Vec::new();
    for line in stdout.lines() {
        let (topic, payload) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("not `TOPIC PAYLOAD`: {line}"));
        let _: serde_json::Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("payload is not JSON ({e}): {line}"));
        let msg = sitewatch_wire::decode(topic, payload.as_bytes())
            .unwrap_or_else(|e| panic!("decoder rejected {topic}: {e}: {payload}"));
        match msg {
            sitewatch_wire::Message::Heartbeat(h) => {
                assert_eq!(h.site, "once-site");
                kinds.push("heartbeat");
            }
            sitewatch_wire::Message::Disk(d) => {
                assert_eq!(d.mounts.len(), 1, "{payload}");
                assert_eq!(d.mounts[0].path, mount_s);
                kinds.push("disk");
            }
            other => panic!("unexpected message {other:?}"),
        }
        assert!(topic.starts_with("sitewatch/v1/once-site/"), "{topic}");
    }
    assert_eq!(kinds, ["heartbeat", "disk"], "{stdout}{stderr}");
    assert!(stderr.contains("syslog: off"), "{stderr}");
    assert!(
        stderr.contains("nothing was sent to the broker"),
        "{stderr}"
    );

    // No connection attempt, no outbox directory.
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("once connected to the broker: {other:?}"),
    }
    assert!(!outbox.exists(), "once created the outbox directory");
}
