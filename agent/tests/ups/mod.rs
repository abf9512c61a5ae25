//! The UPS source against Debian's real NUT: `upsd` and the `dummy-ups`
//! driver reading a `.dev` file, both started here in a temp dir on a
//! free port (private state path, `-F` in the foreground, as the current
//! user). The test rewrites the file (OL -> OB -> OB LB -> OL) and the
//! real agent must publish each change as an event and every interval a
//! `ups` reading with the file's values, both accepted by the bridge's
//! decoder; `check --online` must say it in plain words. A UPS that does
//! not report runtime or input voltage has them absent (not 0) in the
//! reading; an unknown UPS and an unreachable upsd are readings with
//! their error (`once`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sitewatch_testkit::{free_port, ChildGuard, Mosquitto};
use sitewatch_wire::payload::Ups;
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
        Nut::start_dev(&dev_text(status, 100, 1800, 230.0))
    }

    /// With `dev` as the dummy's first `.dev` file.
    fn start_dev(dev: &str) -> Nut {
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
        nut.write_dev(dev);
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
        self.write_dev(&dev_text(status, charge, runtime, input));
    }

    fn write_dev(&mut self, text: &str) {
        let path = self.dir.path().join("myups.dev");
        std::fs::write(&path, text).expect("write .dev");
        self.writes += 1;
        let f = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open .dev");
        f.set_modified(SystemTime::now() + Duration::from_secs(self.writes))
            .expect("mtime");
    }
}

/// A `.dev` file with every variable the agent reads.
fn dev_text(status: &str, charge: u32, runtime: u32, input: f64) -> String {
    format!("ups.status: {status}\nbattery.charge: {charge}\nbattery.runtime: {runtime}\nups.load: 23\ninput.voltage: {input:.1}\n")
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

/// A `ups` reading whose one UPS is `myups` in power state `power` with
/// `charge` %.
fn reading(power: &str, charge: f32) -> impl FnMut(&Received) -> bool + '_ {
    move |m| {
        matches!(&m.msg, Message::Ups(u) if u.ups.len() == 1
            && u.ups[0].power == power && u.ups[0].charge_pct == Some(charge))
    }
}

fn ups_of(m: &Received) -> &Ups {
    match &m.msg {
        Message::Ups(u) => u,
        other => panic!("not a ups reading: {other:?}"),
    }
}

/// `sitewatch-agent once`: the `ups` message it prints, decoded.
fn once_reading(cfg: &Path) -> Ups {
    let out = Command::new(crate::util::agent_bin())
        .arg("once")
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("run once");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        let (topic, payload) = line.split_once(' ').expect("TOPIC PAYLOAD");
        if topic.ends_with("/ups") {
            match sitewatch_wire::decode(topic, payload.as_bytes()) {
                Ok(Message::Ups(u)) => return u,
                other => panic!("{other:?}: {payload}"),
            }
        }
    }
    panic!(
        "no ups message in `once`:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    // ...but a reading every interval (1 s), with the .dev file's values.
    let readings: Vec<&Received> = obs
        .seen
        .iter()
        .filter(|m| matches!(m.msg, Message::Ups(_)))
        .collect();
    assert!(readings.len() >= 2, "{}", obs.dump());
    let first = readings[0];
    assert!(first.topic.ends_with("/ups-site/ups") && !first.retain);
    let u = ups_of(first);
    assert_eq!(
        (u.site.as_str(), u.interval_secs, u.error.as_deref()),
        ("ups-site", 1, None)
    );
    let e = &u.ups[..];
    assert_eq!(e.len(), 1, "{u:?}");
    assert_eq!(
        (
            e[0].name.as_str(),
            e[0].power.as_str(),
            e[0].status.as_str()
        ),
        ("myups", "on_line", "OL CHRG")
    );
    assert_eq!(
        (e[0].on_line, e[0].on_battery, e[0].low_battery),
        (true, false, false)
    );
    assert_eq!(
        (
            e[0].charge_pct,
            e[0].runtime_secs,
            e[0].load_pct,
            e[0].input_voltage_v
        ),
        (Some(100.0), Some(1800), Some(23.0), Some(230.0))
    );
    assert_eq!(e[0].error, None);

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
    let m = obs.wait_for(T, "a reading on battery", reading("on_battery", 80.0));
    let r = &ups_of(&m).ups[0];
    assert_eq!(
        (r.on_line, r.on_battery, r.low_battery, r.status.as_str()),
        (false, true, false, "OB DISCHRG")
    );
    assert_eq!(
        (r.runtime_secs, r.input_voltage_v),
        (Some(1200), Some(0.0)),
        "0 V on the input is a reading"
    );
    // `sitewatch-agent status` shows it too.
    let shown = crate::util::status_text_when(&status_file, "myups: on battery, charge 80 %");
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
    let m = obs.wait_for(T, "a reading on low battery", reading("low_battery", 9.0));
    let r = &ups_of(&m).ups[0];
    assert_eq!(
        (
            r.on_battery,
            r.low_battery,
            r.status.as_str(),
            r.runtime_secs
        ),
        (true, true, "OB LB", Some(90))
    );

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
    let m = obs.wait_for(T, "a reading back on line", reading("on_line", 12.0));
    assert_eq!(ups_of(&m).ups[0].input_voltage_v, Some(229.5));

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

/// A UPS that reports neither runtime nor input voltage: the reading has
/// them absent, not 0 (`once` prints the reading a running agent sends).
#[test]
fn ups_reading_leaves_out_what_the_ups_does_not_report() {
    let nut = Nut::start_dev("ups.status: OB DISCHRG\nbattery.charge: 64\nups.load: 40\n");
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = TestConfig::new("ups-once", &broker.url())
        .mounts(&[])
        .text();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "{base}[ups]\nserver = \"127.0.0.1:{}\"\ninterval_secs = 7\n",
            nut.port
        ),
    )
    .expect("config");
    // The driver may need a moment before upsd serves its variables.
    let mut u = once_reading(&cfg);
    for _ in 0..20 {
        if u.ups.first().is_some_and(|e| e.charge_pct.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        u = once_reading(&cfg);
    }
    assert_eq!((u.interval_secs, u.error.as_deref()), (7, None));
    let e = &u.ups[0];
    assert_eq!(
        (e.name.as_str(), e.power.as_str(), e.on_battery),
        ("myups", "on_battery", true),
        "every UPS upsd lists (no names configured)"
    );
    assert_eq!((e.charge_pct, e.load_pct), (Some(64.0), Some(40.0)));
    assert_eq!((e.runtime_secs, e.input_voltage_v), (None, None));
}

/// A name upsd does not know is a failed row with what to do; an
/// unreachable upsd too. Both are readings with their error.
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
    let u = once_reading(&cfg);
    assert_eq!(u.error, None);
    let e = &u.ups[0];
    assert_eq!((e.name.as_str(), e.power.as_str()), ("nosuch", "unknown"));
    assert!(
        e.error
            .as_deref()
            .is_some_and(|x| x.contains("UNKNOWN-UPS")),
        "{u:?}"
    );
    assert_eq!((e.charge_pct, e.input_voltage_v), (None, None));

    std::fs::write(
        &cfg,
        format!("{base}[ups]\nserver = \"127.0.0.1:{}\"\n", free_port()),
    )
    .expect("config");
    let out = run_check(&cfg, &["--online"]);
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(words.contains("cannot connect to upsd"), "{words}");
    let u = once_reading(&cfg);
    assert!(u.ups.is_empty(), "{u:?}");
    assert!(
        u.error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect to upsd")),
        "{u:?}"
    );
}
