//! The LTE source against a stand-in for ModemManager's `mmcli`
//! (`scripts/mmcli-stand-in.py`: ModemManager needs a real modem and
//! cannot run here; the stand-in prints what mmcli's source prints,
//! errors included). `check --online` must say in plain words what the
//! modem reports and what to do; the running agent must turn on the
//! extended signal polling, show the reading in `status`, and publish an
//! `lte_signal` event when the class changes and holds two rounds
//! (poor: warning with the figures; ModemManager gone: critical), never
//! for one round near a threshold.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sitewatch_testkit::Mosquitto;
use sitewatch_wire::payload::Event;
use sitewatch_wire::Message;

use crate::util::{run_check, spawn_agent, status_text_when, Observer, Received, TestConfig};

const T: Duration = Duration::from_secs(20);

/// The modem state the stand-in reads at each call.
fn write_state(path: &Path, daemon: bool, rsrp: f64, rate: u32) {
    let state = json!({
        "daemon": daemon,
        "modems": [{
            "state": "connected", "tech": ["lte"], "quality": 72,
            "operator": "Telkomsel", "registration": "home", "rate": rate,
            "lte": {"rssi": -60.0, "rsrq": -9.0, "rsrp": rsrp, "snr": 12.5},
        }],
    });
    std::fs::write(path, state.to_string()).expect("state");
}

/// The signal polling rate the agent left in the state file.
fn rate(path: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("state")).expect("json");
    v["modems"][0]["rate"].as_u64().unwrap_or_default()
}

/// A `mmcli` for the agent: the stand-in with its state file.
fn mmcli_wrapper(dir: &Path, state: &Path, log: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mmcli-stand-in.py");
    let path = dir.join("mmcli");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nSITEWATCH_MMCLI_STATE='{}' SITEWATCH_MMCLI_LOG='{}' exec python3 '{}' \"$@\"\n",
            state.display(),
            log.display(),
            script.display()
        ),
    )
    .expect("wrapper");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn lte_event(m: &Received) -> Option<&Event> {
    match &m.msg {
        Message::Event(e) if e.event == "lte_signal" => Some(e),
        _ => None,
    }
}

fn check_words(cfg: &Path) -> String {
    String::from_utf8_lossy(&run_check(cfg, &["--online"]).stdout).into_owned()
}

#[test]
fn lte_signal_in_check_status_and_events() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("modem.json");
    let log = dir.path().join("mmcli.log");
    write_state(&state, true, -85.0, 0);
    let mmcli = mmcli_wrapper(dir.path(), &state, &log);
    let status_file = dir.path().join("status.json");
    let mut text = TestConfig::new("lte-site", &broker.url())
        .mounts(&[])
        .text();
    text.push_str(&format!(
        "[lte]\nmmcli = \"{}\"\ninterval_secs = 1\n[status]\nfile = {:?}\ninterval_secs = 1\n",
        mmcli.display(),
        status_file.display().to_string()
    ));
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, &text).expect("config");

    // The installer's check: the modem in words. Polling is off, so no
    // RSRP yet, and check does not turn it on.
    let words = check_words(&cfg);
    assert!(
        words.contains("lte modem any")
            && words.contains("lte, Telkomsel (home), connected; signal good: quality 72 %")
            && words.contains("RSRP and SNR appear once the agent runs"),
        "{words}"
    );
    assert_eq!(rate(&state), 0, "check changes nothing");
    // No ModemManager, and no mmcli at all: what to do.
    write_state(&state, false, -85.0, 0);
    let words = check_words(&cfg);
    assert!(
        words.contains("error: couldn't find the ModemManager process in the bus")
            && words.contains("start ModemManager"),
        "{words}"
    );
    std::fs::write(
        &cfg,
        text.replace(&mmcli.display().to_string(), "/nonexistent/mmcli"),
    )
    .expect("config");
    let words = check_words(&cfg);
    assert!(
        words.contains("cannot run /nonexistent/mmcli") && words.contains("install ModemManager"),
        "{words}"
    );
    std::fs::write(&cfg, &text).expect("config");
    write_state(&state, true, -85.0, 0);

    let mut obs = Observer::start(&broker);
    let _agent = spawn_agent(&cfg);
    obs.wait_for(T, "birth", Received::is_birth);
    // It turns the extended signal on (at the reading period, at least
    // 5 s), and a good start is not an event.
    let shown = status_text_when(&status_file, "RSRP -85 dBm");
    assert!(
        shown.contains(
            "LTE:         good: lte, Telkomsel (home), connected; signal good: RSRP -85 dBm, \
             RSRQ -9 dB, SNR 12.5 dB, RSSI -60 dBm, quality 72 %"
        ),
        "{shown}"
    );
    assert_eq!(rate(&state), 5);
    let calls = std::fs::read_to_string(&log).expect("log");
    assert_eq!(calls.matches("--signal-setup=5").count(), 1, "{calls}");
    obs.drain_for(Duration::from_secs(2));
    assert!(
        !obs.seen.iter().any(|m| lte_event(m).is_some()),
        "{}",
        obs.dump()
    );

    // One round near the threshold is not news...
    write_state(&state, true, -104.0, 5);
    std::thread::sleep(Duration::from_millis(1100));
    write_state(&state, true, -85.0, 5);
    obs.drain_for(Duration::from_secs(3));
    assert!(
        !obs.seen.iter().any(|m| lte_event(m).is_some()),
        "{}",
        obs.dump()
    );
    // ...two rounds poor are: a warning with the figures.
    write_state(&state, true, -110.0, 5);
    let m = obs.wait_for(T, "lte_signal poor", |m| lte_event(m).is_some());
    let e = lte_event(&m).expect("event");
    assert_eq!(
        (
            e.severity.as_str(),
            e.subject.as_str(),
            e.from.as_deref(),
            e.to.as_deref()
        ),
        ("warning", "lte", Some("good"), Some("poor"))
    );
    assert_eq!(e.numbers.get("rsrp_neg_dbm"), Some(&110), "{e:?}");
    assert_eq!(e.numbers.get("quality_pct"), Some(&72), "{e:?}");
    assert!(e.message.contains("signal poor: RSRP -110 dBm"), "{e:?}");

    // ModemManager gone: no service, critical, mmcli's own words.
    write_state(&state, false, -110.0, 5);
    let m = obs.wait_for(T, "lte_signal no_service", |m| {
        lte_event(m).is_some_and(|e| e.to.as_deref() == Some("no_service"))
    });
    let e = lte_event(&m).expect("event");
    assert_eq!(
        (e.severity.as_str(), e.from.as_deref()),
        ("critical", Some("poor"))
    );
    assert!(
        e.message
            .contains("error: couldn't find the ModemManager process in the bus"),
        "{e:?}"
    );
    let shown = status_text_when(&status_file, "LTE:         no_service");
    assert!(shown.contains("LTE:         no_service: "), "{shown}");
}
