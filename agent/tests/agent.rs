//! End-to-end tests of the agent against real mosquitto brokers started by
//! `sitewatch-testkit` (private, random ports). The agent runs as the
//! built binary unless a test says otherwise; an observer decodes every
//! message with the bridge's decoder.

mod cleanup;
mod faults;
mod lte;
mod ops;
mod reach;
mod rtsp;
mod syslog;
mod ups;
mod util;

use std::time::{Duration, Instant};

use sitewatch_testkit::{sig, Mosquitto, TestCerts};
use sitewatch_wire::payload::{OfflineReason, State};
use sitewatch_wire::Message;
use util::{
    check_steps, outcome, retained_status, run_check, spawn_agent, Observer, Received, TestConfig,
};

const T: Duration = Duration::from_secs(15);

/// Birth first (seq 1, session 1), then heartbeats and disk reports with
/// seq rising by exactly 1 per message, all from one boot.
#[test]
fn birth_heartbeat_and_disk_with_consecutive_seq() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let cfg = TestConfig::new("seq-site", &broker.url()).write(dir.path());
    let agent = spawn_agent(&cfg);

    let birth = obs.wait_for(T, "birth", Received::is_birth);
    let s = birth.status().expect("status");
    assert_eq!((s.seq, s.session), (1, 1), "{}", obs.dump());
    assert_eq!(s.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(s.heartbeat_secs, 1);
    assert_eq!(s.site, "seq-site");
    assert_eq!(s.boot.len(), 16);
    let boot = s.boot.clone();

    let mut heartbeats = 0;
    let mut disks = 0;
    obs.wait_for(T, "2 heartbeats and 2 disk reports", |m| {
        match &m.msg {
            Message::Heartbeat(_) => heartbeats += 1,
            Message::Disk(_) => disks += 1,
            _ => {}
        }
        heartbeats >= 2 && disks >= 2
    });

    let seqs: Vec<u64> = obs.seen.iter().map(|m| m.identity().2).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "seq must rise by 1:\n{}", obs.dump());
    assert!(obs.seen.iter().all(|m| m.identity().1 == boot));

    for m in &obs.seen {
        match &m.msg {
            Message::Heartbeat(h) => {
                assert_eq!(h.interval_secs, 1);
                assert!(h.uptime_secs > 0 && h.mem_total_bytes > 0 && h.agent_rss_bytes > 0);
                assert!(h.counters.contains_key("published") && h.counters.contains_key("dropped"));
            }
            Message::Disk(d) => {
                assert_eq!(d.mounts.len(), 2);
                let root = &d.mounts[0];
                assert_eq!(root.path, "/");
                assert!(root.error.is_none() && root.total_bytes > 0 && !root.fs_type.is_empty());
                let missing = &d.mounts[1];
                assert_eq!(missing.error.as_deref(), Some("missing"));
            }
            _ => {}
        }
    }
    // The birth is retained.
    let r = retained_status(&broker, "seq-site");
    assert!(r.is_birth() && r.identity().1 == boot);
    drop(agent);
}

/// `[heartbeat] wan_interface` names the uplink: heartbeats carry the
/// kernel's counters of that interface (here `lo`, which the agent's own
/// MQTT traffic goes over, so they must grow between heartbeats).
#[test]
fn heartbeats_carry_the_uplink_interface_counters() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let cfg = TestConfig::new("wan-site", &broker.url());
    let text = cfg.text().replace(
        "[heartbeat]\ninterval_secs = 1\n",
        "[heartbeat]\ninterval_secs = 1\nwan_interface = \"lo\"\n",
    );
    assert!(text.contains("wan_interface"), "{text}");
    let path = dir.path().join("wan-site.toml");
    std::fs::write(&path, text).expect("write config");
    let agent = spawn_agent(&path);

    let mut wans = Vec::new();
    obs.wait_for(T, "3 heartbeats", |m| {
        if let Message::Heartbeat(h) = &m.msg {
            wans.push(h.wan.clone());
        }
        wans.len() >= 3
    });
    let wans: Vec<_> = wans
        .into_iter()
        .map(|w| w.expect("wan in every heartbeat"))
        .collect();
    assert!(wans.iter().all(|w| w.iface == "lo"), "{wans:?}");
    let (first, last) = (&wans[0], &wans[wans.len() - 1]);
    assert!(last.rx_bytes > first.rx_bytes, "{wans:?}");
    assert!(last.tx_bytes > first.tx_bytes, "{wans:?}");
    drop(agent);
}

/// A crash (SIGKILL) makes the broker publish the retained Will:
/// offline/lost, seq 0, same boot and session as the birth.
#[test]
fn sigkill_publishes_will_with_same_boot_and_session() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let cfg = TestConfig::new("kill-site", &broker.url()).write(dir.path());
    let mut agent = spawn_agent(&cfg);
    let birth = obs.wait_for(T, "birth", Received::is_birth);
    agent.signal(sig::KILL).expect("SIGKILL");

    let will = obs.wait_for(T, "Last Will", |m| m.is_offline(OfflineReason::Lost));
    let (b, w) = (birth.status().expect("s"), will.status().expect("s"));
    assert_eq!(w.seq, 0);
    assert_eq!((w.boot.as_str(), w.session), (b.boot.as_str(), b.session));
    let r = retained_status(&broker, "kill-site");
    assert!(r.is_offline(OfflineReason::Lost), "{:?}", r.msg);
}

/// SIGTERM: retained offline/shutdown with the next seq and the same
/// session, then a prompt exit with status 0.
#[test]
fn sigterm_publishes_shutdown_and_exits_zero() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let cfg = TestConfig::new("term-site", &broker.url()).write(dir.path());
    let mut agent = spawn_agent(&cfg);
    let birth = obs.wait_for(T, "birth", Received::is_birth);
    obs.wait_for(T, "a heartbeat", |m| matches!(m.msg, Message::Heartbeat(_)));

    let t0 = Instant::now();
    agent.terminate().expect("SIGTERM");
    let status = agent
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("agent did not exit; log:\n{}", agent.log_contents()));
    assert!(status.success(), "{status}; log:\n{}", agent.log_contents());
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "slow exit: {:?}",
        t0.elapsed()
    );

    let bye = obs.wait_for(T, "shutdown status", |m| {
        m.is_offline(OfflineReason::Shutdown)
    });
    let last_seq = obs.seen[obs.seen.len() - 2].identity().2;
    let (b, s) = (birth.status().expect("s"), bye.status().expect("s"));
    assert_eq!(s.seq, last_seq + 1, "{}", obs.dump());
    assert_eq!((s.boot.as_str(), s.session), (b.boot.as_str(), b.session));
    // No Will after a clean DISCONNECT: the retained state stays shutdown.
    obs.drain_for(Duration::from_millis(300));
    assert!(!obs.seen.iter().any(|m| m.is_offline(OfflineReason::Lost)));
    let r = retained_status(&broker, "term-site");
    assert!(r.is_offline(OfflineReason::Shutdown), "{:?}", r.msg);
    assert!(agent
        .log_contents()
        .contains("Broker acknowledged the offline status"));
}

/// A hung broker (SIGSTOP: TCP open, nothing answers) cannot hold the
/// agent: without the PUBACK it gives up after its bounded waits, and a
/// second signal ends it at once.
#[test]
fn hung_broker_cannot_hold_shutdown() {
    let mut broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let a = TestConfig::new("hung-a", &broker.url()).write(dir.path());
    let b = TestConfig::new("hung-b", &broker.url()).write(dir.path());
    let mut patient = spawn_agent(&a);
    let mut impatient = spawn_agent(&b);
    let mut born = std::collections::HashSet::new();
    obs.wait_for(T, "both births", |m| {
        if m.is_birth() {
            born.insert(m.identity().0);
        }
        born.len() == 2
    });
    broker.signal(sig::STOP).expect("SIGSTOP broker");
    let t0 = Instant::now();
    patient.terminate().expect("SIGTERM");
    impatient.terminate().expect("SIGTERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        impatient.try_status().is_none(),
        "should be waiting for the PUBACK"
    );
    impatient.terminate().expect("second SIGTERM");
    let status = impatient
        .wait_timeout(Duration::from_secs(2))
        .expect("second signal exits");
    assert_eq!(status.code(), Some(1), "{}", impatient.log_contents());

    let status = patient
        .wait_timeout(Duration::from_secs(12))
        .unwrap_or_else(|| panic!("still running; log:\n{}", patient.log_contents()));
    let waited = t0.elapsed();
    assert!(status.success(), "{status}");
    assert!(waited < Duration::from_secs(9), "took {waited:?}");
    assert!(patient
        .log_contents()
        .contains("No acknowledgement for the offline status"));
    broker.signal(sig::CONT).expect("SIGCONT broker");
}

/// Without a broker the agent publishes nothing and still stops at once.
#[test]
fn sigterm_while_disconnected_exits_promptly() {
    let port = sitewatch_testkit::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TestConfig::new("lonely", &format!("mqtt://127.0.0.1:{port}")).write(dir.path());
    let mut agent = spawn_agent(&cfg);
    agent
        .wait_for_log("Cannot connect to broker: TCP: connection to 127.0.0.1", T)
        .expect("connect error logged in plain words");
    agent.terminate().expect("SIGTERM");
    let status = agent.wait_timeout(Duration::from_secs(3)).expect("exits");
    assert!(status.success(), "{status}");
}

/// Broker restart: the agent reconnects by itself and publishes a new
/// birth with session 2, the same boot and a higher seq.
#[test]
fn broker_restart_gives_new_birth_with_session_2() {
    let mut broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let cfg = TestConfig::new("restart-site", &broker.url()).write(dir.path());
    let agent = spawn_agent(&cfg);
    let first = obs.wait_for(T, "first birth", Received::is_birth);
    obs.wait_for(T, "a heartbeat", |m| matches!(m.msg, Message::Heartbeat(_)));

    broker.restart().expect("restart broker");
    let second = obs.wait_for(Duration::from_secs(20), "second birth", Received::is_birth);
    let (a, b) = (first.status().expect("s"), second.status().expect("s"));
    assert_eq!(b.session, 2, "{}", obs.dump());
    assert_eq!(b.boot, a.boot);
    assert!(b.seq > a.seq);
    // Messages queued during the outage (lower seq) may follow the birth:
    // the birth always goes first on a connection. Wait for a heartbeat
    // sampled after the reconnect.
    let birth_seq = b.seq;
    let hb = obs.wait_for(T, "heartbeat after reconnect", |m| {
        matches!(m.msg, Message::Heartbeat(_)) && m.identity().2 > birth_seq
    });
    let Message::Heartbeat(h) = &hb.msg else {
        unreachable!()
    };
    assert_eq!(h.counters.get("reconnects"), Some(&1), "{}", obs.dump());
    // Every seq of the boot up to that heartbeat arrived. A message the
    // broker delivered but whose PUBACK the restart swallowed is sent
    // again by the outbox (QoS 1: at least once; the bridge deduplicates
    // by seq): duplicates are only such redeliveries.
    let requeued = h.counters.get("outbox_requeued").copied().unwrap_or(0);
    let mut seqs: Vec<u64> = obs
        .seen
        .iter()
        .filter(|m| m.identity().2 > 0)
        .map(|m| m.identity().2)
        .collect();
    let n = seqs.len() as u64;
    seqs.sort_unstable();
    seqs.dedup();
    let dups = n - seqs.len() as u64;
    assert!(
        dups <= requeued,
        "{dups} duplicates, {requeued} requeued:\n{}",
        obs.dump()
    );
    let top = hb.identity().2;
    let missing: Vec<u64> = (1..=top)
        .filter(|q| seqs.binary_search(q).is_err())
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}:\n{}", obs.dump());
    drop(agent);
}

// ---------------------------------------------------------------- TLS

struct TlsSetup {
    broker: Mosquitto,
    certs: TestCerts,
    _dir: tempfile::TempDir,
}

fn tls_setup() -> TlsSetup {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(dir.path()).expect("certs");
    let broker = Mosquitto::builder()
        .tls(&certs)
        .mtls(&certs)
        .start()
        .expect("broker");
    TlsSetup {
        broker,
        certs,
        _dir: dir,
    }
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn tls_with_ca_file_connects() {
    let s = tls_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&s.broker);
    let cfg = TestConfig::new("tls-site", &s.broker.tls_url().expect("tls"))
        .mounts(&["/"])
        .mqtt(&format!("ca_file = {:?}", path(&s.certs.ca_cert)))
        .write(dir.path());
    let (code, text) = check_steps(&run_check(&cfg, &["--connect"]));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("TLS:  ok: ") && text.contains("MQTT: ok: "),
        "{text}"
    );

    let _agent = spawn_agent(&cfg);
    let birth = obs.wait_for(T, "birth over TLS", Received::is_birth);
    assert_eq!(birth.identity().0, "tls-site");
}

#[test]
fn mtls_with_client_cert_connects() {
    let s = tls_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&s.broker);
    let cfg = TestConfig::new("mtls-site", &s.broker.mtls_url().expect("mtls"))
        .mounts(&["/"])
        .mqtt(&format!("ca_file = {:?}", path(&s.certs.ca_cert)))
        .mqtt(&format!(
            "client_cert_file = {:?}",
            path(&s.certs.client_cert)
        ))
        .mqtt(&format!(
            "client_key_file = {:?}",
            path(&s.certs.client_key)
        ))
        .write(dir.path());
    let (code, text) = check_steps(&run_check(&cfg, &["--connect"]));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("client.pem accepted"), "{text}");

    let _agent = spawn_agent(&cfg);
    obs.wait_for(T, "birth over mTLS", Received::is_birth);
}

/// A client certificate from another CA is refused: the agent keeps
/// retrying and publishes nothing; `check --connect` says why.
#[test]
fn mtls_rogue_client_cert_is_refused() {
    let s = tls_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&s.broker);
    let cfg = TestConfig::new("rogue-site", &s.broker.mtls_url().expect("mtls"))
        .mqtt(&format!("ca_file = {:?}", path(&s.certs.ca_cert)))
        .mqtt(&format!(
            "client_cert_file = {:?}",
            path(&s.certs.rogue_client_cert)
        ))
        .mqtt(&format!(
            "client_key_file = {:?}",
            path(&s.certs.rogue_client_key)
        ))
        .write(dir.path());
    let (code, text) = check_steps(&run_check(&cfg, &["--connect"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("TLS:  FAILED: the broker rejected our client certificate"),
        "{text}"
    );
    assert!(!text.contains("TLS:  ok"), "{text}");

    let mut agent = spawn_agent(&cfg);
    agent
        .wait_for_log("rejected our client certificate", T)
        .expect("plain-words error in the log");
    // It keeps retrying (backoff 1 s, then 1-2 s) and publishes nothing.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(agent.try_status().is_none(), "agent must keep running");
    obs.drain_for(Duration::from_millis(100));
    assert!(obs.seen.is_empty(), "published:\n{}", obs.dump());
    let log = agent.log_contents();
    assert_eq!(
        log.matches("Cannot connect to broker").count(),
        1,
        "the same error is logged once:\n{log}"
    );
}

/// Trusting the wrong CA: the broker's certificate is refused.
#[test]
fn wrong_ca_is_refused() {
    let s = tls_setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&s.broker);
    let cfg = TestConfig::new("wrongca-site", &s.broker.tls_url().expect("tls"))
        .mqtt(&format!("ca_file = {:?}", path(&s.certs.rogue_ca_cert)))
        .write(dir.path());
    let (code, text) = check_steps(&run_check(&cfg, &["--connect"]));
    assert_eq!(code, Some(1), "{text}");
    let expected = format!(
        "TLS:  FAILED: server certificate not trusted by ca_file {}",
        path(&s.certs.rogue_ca_cert)
    );
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.contains("DNS:  ok") && text.contains("TCP:  ok"),
        "{text}"
    );

    let mut agent = spawn_agent(&cfg);
    agent
        .wait_for_log("server certificate not trusted", T)
        .expect("plain-words error in the log");
    obs.drain_for(Duration::from_millis(500));
    assert!(obs.seen.is_empty(), "published:\n{}", obs.dump());
}

// ------------------------------------------------------------- check

#[test]
fn check_accepts_good_config_without_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens there; plain `check` must not care.
    let cfg = TestConfig::new("check-ok", "mqtt://127.0.0.1:9").write(dir.path());
    let (code, text) = outcome(&run_check(&cfg, &[]));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("OK: "), "{text}");
    assert!(text.contains("site check-ok"), "{text}");
}

#[test]
fn check_reports_every_problem_numbered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "site_id = \"Bad Site\"\n[mqtt]\nurl = \"mqtt://broker.example.com\"\npassword = \"s3cret-pw\"\n\
         [disk]\nmounts = [\"relative/path\"]\n",
    )
    .expect("write");
    let (code, text) = outcome(&run_check(&cfg, &[]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("4 problems"), "{text}");
    for needle in [
        "  1. site_id `Bad Site`",
        "allow_plaintext",
        "mqtt.password is set but mqtt.username is not",
        "`relative/path` is not an absolute path",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("s3cret-pw"), "password leaked:\n{text}");

    let (code, text) = outcome(&run_check(&dir.path().join("absent.toml"), &[]));
    assert_eq!(code, Some(1));
    assert!(text.contains("cannot read the config file"), "{text}");
}

#[test]
fn check_applies_environment_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TestConfig::new("INVALID SITE", "mqtt://far.example.com").write(dir.path());
    let out = std::process::Command::new(util::agent_bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .env("SITEWATCH_SITE_ID", "from-env")
        .env("SITEWATCH_MQTT_URL", "mqtt://localhost:1883")
        .env("SITEWATCH_MQTT_USERNAME", "installer")
        .env("SITEWATCH_MQTT_PASSWORD", "pw-from-env")
        .output()
        .expect("run");
    let (code, text) = outcome(&out);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("site from-env") && text.contains("mqtt://localhost:1883"),
        "{text}"
    );
    assert!(text.contains("username installer (password set)"), "{text}");
    assert!(!text.contains("pw-from-env"), "{text}");
}

#[test]
fn check_connect_explains_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listening.
    let port = sitewatch_testkit::free_port();
    let cfg =
        TestConfig::new("conn-refused", &format!("mqtt://127.0.0.1:{port}")).write(dir.path());
    let (code, text) = check_steps(&run_check(&cfg, &["--connect"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "TCP:  FAILED: connection to 127.0.0.1:{port} refused"
        )),
        "{text}"
    );

    // Unresolvable name (.invalid never resolves).
    let cfg = TestConfig::new("no-dns", "mqtts://broker.invalid:8883").write(dir.path());
    let (code, text) = check_steps(&run_check(&cfg, &["--connect"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("DNS:  FAILED: cannot resolve broker.invalid"),
        "{text}"
    );

    // Wrong password.
    let pwfile = dir.path().join("passwd");
    std::fs::write(&pwfile, "").expect("write");
    let st = std::process::Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(&pwfile)
        .args(["site1", "right-password"])
        .status()
        .expect("mosquitto_passwd");
    assert!(st.success());
    let broker = Mosquitto::builder()
        .extra_config(&format!(
            "allow_anonymous false\npassword_file {}\n",
            pwfile.display()
        ))
        .start()
        .expect("broker");
    let cfg = TestConfig::new("bad-pw", &broker.url())
        .mqtt("username = \"site1\"")
        .mqtt("password = \"wrong-password\"")
        .write(dir.path());
    let (code, text) = check_steps(&run_check(&cfg, &["--connect"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("MQTT: FAILED: broker refused: bad username or password for user `site1`")
            || text.contains("MQTT: FAILED: broker refused: not authorized for user `site1`"),
        "{text}"
    );
    assert!(!text.contains("wrong-password"), "{text}");
}

// ------------------------------------------------------- in-process

/// The library entry point runs with a caller-supplied shutdown future.
#[test]
fn run_in_process_with_shutdown_future() {
    let broker = Mosquitto::start().expect("broker");
    let mut obs = Observer::start(&broker);
    let text = TestConfig::new("inproc", &broker.url()).text();
    let cfg = sitewatch_agent::Config::parse(&text, "inline", |_| None).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        rt.block_on(sitewatch_agent::run(cfg, async {
            let _ = rx.await;
        }))
    });
    let birth = obs.wait_for(T, "birth", Received::is_birth);
    assert_eq!(birth.status().map(|s| s.state), Some(State::Online));
    tx.send(()).expect("signal shutdown");
    let result = handle.join().expect("thread");
    result.expect("run returns Ok");
    obs.wait_for(T, "shutdown status", |m| {
        m.is_offline(OfflineReason::Shutdown)
    });
}
