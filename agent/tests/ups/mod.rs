//! The UPS source against Debian's real NUT: `upsd` and the `dummy-ups`
//! driver reading a `.dev` file, both started here in a temp dir on a
//! free port (private state path, `-F` in the foreground, as the current
//! user). The test rewrites the file (OL -> OB -> OB LB -> OL) and the
//! real agent must publish each change as an event the bridge's decoder
//! accepts; `check --online` must say it in plain words.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sitewatch_testkit::{free_port, ChildGuard, Mosquitto};
use sitewatch_wire::Message;

use crate::util::{run_check, spawn_agent, Observer, Received, TestConfig};

/// Where Debian's nut-server puts the daemon and the drivers.
const NUT_DIR: &str = "/lib/nut";
const T: Duration = Duration::from_secs(20);

/// A throwaway upsd with one dummy UPS, `myups`.
struct Nut {
    dir: tempfile::TempDir,
    port: u16,
    /// Bumped on each write: dummy-ups re-reads the file when its mtime
    /// changes, and two writes within a second must still differ.
    writes: u64,
    _driver: Option<ChildGuard>,
    _upsd: Option<ChildGuard>,
}

impl Nut {
    fn start(status: &str) -> Nut {
        for bin in ["upsd", "dummy-ups"] {
            assert!(
                Path::new(NUT_DIR).join(bin).exists(),
                "{NUT_DIR}/{bin} not found: install with apt-get install nut-server (scripts/test.sh does)"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path();
        std::fs::write(
            d.join("ups.conf"),
            format!(
                "[myups]\n\tdriver = dummy-ups\n\tport = {}\n\tdesc = \"test ups\"\n",
                d.join("myups.dev").display()
            ),
        )
        .expect("ups.conf");
        std::fs::write(d.join("upsd.conf"), format!("LISTEN 127.0.0.1 {port}\n"))
            .expect("upsd.conf");
        std::fs::write(d.join("upsd.users"), "").expect("upsd.users");
        let mut nut = Nut {
            dir,
            port,
            writes: 0,
            _driver: None,
            _upsd: None,
        };
        nut.set(status, 100, 1800, 230.0);
        let d = nut.dir.path().to_owned();
        nut._driver = Some(
            ChildGuard::spawn(nut_cmd(&d, "dummy-ups").args(["-a", "myups", "-F", "-i", "1"]))
                .expect("dummy-ups"),
        );
        std::thread::sleep(Duration::from_millis(300));
        let mut upsd = ChildGuard::spawn(nut_cmd(&d, "upsd").arg("-F")).expect("upsd");
        upsd.wait_for_log("listening on", Duration::from_secs(10))
            .expect("upsd listening");
        nut._upsd = Some(upsd);
        nut
    }

    /// Rewrites the dummy's `.dev` file.
    fn set(&mut self, status: &str, charge: u32, runtime: u32, input: f64) {
        let path = self.dir.path().join("myups.dev");
        std::fs::write(
            &path,
            format!("ups.status: {status}\nbattery.charge: {charge}\nbattery.runtime: {runtime}\nups.load: 23\ninput.voltage: {input:.1}\n"),
        )
        .expect("write .dev");
        self.writes += 1;
        let f = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open .dev");
        f.set_modified(SystemTime::now() + Duration::from_secs(self.writes))
            .expect("mtime");
    }
}

/// NUT with its config and state in `dir`; as root, told to stay root
/// (it would switch to the `nut` user, who cannot read the temp dir).
fn nut_cmd(dir: &Path, bin: &str) -> Command {
    let mut c = Command::new(PathBuf::from(NUT_DIR).join(bin));
    c.env("NUT_CONFPATH", dir)
        .env("NUT_STATEPATH", dir)
        .env("NUT_ALTPIDPATH", dir);
    let root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self"))
            == 0;
    if root {
        c.args(["-u", "root"]);
    }
    c
}

fn event_named(name: &str) -> impl FnMut(&Received) -> bool + '_ {
    move |m| matches!(&m.msg, Message::Event(e) if e.event == name)
}

#[test]
fn ups_power_changes_are_events() {
    let mut nut = Nut::start("OL CHRG");
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = TestConfig::new("ups-site", &broker.url())
        .mounts(&[])
        .text();
    text.push_str(&format!(
        "[ups]\nserver = \"127.0.0.1:{}\"\nnames = [\"myups\"]\ninterval_secs = 1\n",
        nut.port
    ));
    let status_file = dir.path().join("status.json");
    text.push_str(&format!(
        "[status]\nfile = {:?}\ninterval_secs = 1\n",
        status_file.display().to_string()
    ));
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, text).expect("config");

    // The commissioning check, in plain words (the driver may need a moment).
    let mut words = String::new();
    for _ in 0..20 {
        let out = run_check(&cfg, &["--online"]);
        words = String::from_utf8_lossy(&out.stdout).into_owned();
        if words.contains("on line (mains), charge 100 %") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        words.contains(&format!("upsd at 127.0.0.1:{}", nut.port)),
        "{words}"
    );
    assert!(
        words.contains("ups 'myups'")
            && words.contains(
                "on line (mains), charge 100 %, runtime 30 min, load 23 %, input 230.0 V"
            ),
        "{words}"
    );

    let mut obs = Observer::start(&broker);
    let _agent = spawn_agent(&cfg);
    obs.wait_for(T, "birth", Received::is_birth);
    // Several readings on mains: no event for a start on line.
    obs.drain_for(Duration::from_secs(3));
    assert!(
        !obs.seen.iter().any(|m| matches!(m.msg, Message::Event(_))),
        "{}",
        obs.dump()
    );

    nut.set("OB DISCHRG", 80, 1200, 0.0);
    let m = obs.wait_for(T, "ups_on_battery", event_named("ups_on_battery"));
    let Message::Event(e) = &m.msg else {
        unreachable!()
    };
    assert_eq!(
        (e.severity.as_str(), e.subject.as_str()),
        ("warning", "myups")
    );
    assert_eq!(
        (e.from.as_deref(), e.to.as_deref()),
        (Some("on_line"), Some("on_battery"))
    );
    assert_eq!(e.numbers.get("charge_pct"), Some(&80));
    assert_eq!(e.numbers.get("runtime_secs"), Some(&1200));
    assert_eq!(e.numbers.get("input_voltage_v"), Some(&0));
    assert!(
        e.message.contains("on battery, charge 80 %"),
        "{}",
        e.message
    );
    // `sitewatch-agent status` shows it too.
    let mut shown = String::new();
    for _ in 0..40 {
        let out = Command::new(crate::util::agent_bin())
            .args(["status", "--file"])
            .arg(&status_file)
            .output()
            .expect("status");
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        if shown.contains("myups: on battery, charge 80 %") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(shown.contains("myups: on battery, charge 80 %"), "{shown}");

    nut.set("OB LB", 9, 90, 0.0);
    let m = obs.wait_for(T, "ups_low_battery", event_named("ups_low_battery"));
    let Message::Event(e) = &m.msg else {
        unreachable!()
    };
    assert_eq!(
        (e.severity.as_str(), e.from.as_deref(), e.to.as_deref()),
        ("critical", Some("on_battery"), Some("low_battery"))
    );
    assert_eq!(e.numbers.get("charge_pct"), Some(&9));

    nut.set("OL CHRG", 12, 100, 229.5);
    let m = obs.wait_for(T, "ups_on_line", event_named("ups_on_line"));
    let Message::Event(e) = &m.msg else {
        unreachable!()
    };
    assert_eq!(
        (e.severity.as_str(), e.from.as_deref(), e.to.as_deref()),
        ("info", Some("low_battery"), Some("on_line"))
    );
    assert_eq!(e.numbers.get("input_voltage_v"), Some(&230));

    // One event per change, none repeated while the state holds.
    obs.drain_for(Duration::from_secs(2));
    let events: Vec<&str> = obs
        .seen
        .iter()
        .filter_map(|m| match &m.msg {
            Message::Event(e) => Some(e.event.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        ["ups_on_battery", "ups_low_battery", "ups_on_line"],
        "{}",
        obs.dump()
    );
}

/// A name upsd does not know is a failed row with what to do; an
/// unreachable upsd too.
#[test]
fn ups_check_explains_failures() {
    let nut = Nut::start("OL");
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = TestConfig::new("ups-check", &broker.url())
        .mounts(&[])
        .text();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "{base}[ups]\nserver = \"127.0.0.1:{}\"\nnames = [\"nosuch\"]\n",
            nut.port
        ),
    )
    .expect("config");
    let out = run_check(&cfg, &["--online"]);
    let words = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{words}");
    assert!(
        words.contains("ups 'nosuch'") && words.contains("ERR UNKNOWN-UPS"),
        "{words}"
    );

    std::fs::write(
        &cfg,
        format!("{base}[ups]\nserver = \"127.0.0.1:{}\"\n", free_port()),
    )
    .expect("config");
    let out = run_check(&cfg, &["--online"]);
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(words.contains("cannot connect to upsd"), "{words}");
}
