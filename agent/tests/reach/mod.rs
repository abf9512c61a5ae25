//! The `[reach]` source against real network stacks: two network
//! namespaces made here (`ip netns add`, unique per process and test), a
//! veth pair between them (10.77.0.1/30 on the agent's side, .2 on the
//! device's), nothing outside them. The test thread moves into the
//! agent's namespace (setns), so the broker, the observer and the agent
//! it starts all live there; the "device" is the other namespace's own
//! kernel answering ping, and refusing TCP on a closed port.
//!
//! Delay and loss come from `tc netem` on the agent's side of the veth.
//! Where the kernel has no netem (some VM kernels), loss is a `pfifo`
//! queue of length 0 (every packet dropped) and the delay a small echo
//! responder in the device's namespace that answers each ping 50 ms late
//! (the kernel's own replies switched off there).
//!
//! Asserted: `check --online` says which ICMP socket it used (raw as
//! root; datagram once `net.ipv4.ping_group_range` allows the group) and
//! the round trip is about the delay; the running agent publishes
//! `device_down` (loss 100 %) when everything is dropped and `device_up`
//! (with the delay as its round trip) when it is not any more.

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sitewatch_testkit::Mosquitto;
use sitewatch_wire::payload::{Event, Reach};
use sitewatch_wire::Message;

use crate::util::{run_check, spawn_agent, Observer, Received, TestConfig};

const T: Duration = Duration::from_secs(20);
const DEVICE: &str = "10.77.0.2";
const DELAY_MS: u64 = 50;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip netns exec NS ARGS...`, which must succeed.
fn exec(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    ip(&all).expect("command in the namespace");
}

fn setns(f: &File) {
    // SAFETY: setns(2) on an open namespace file; it moves only this
    // thread, and nothing else in it holds namespace-dependent state.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Two namespaces and the veth between them; removed on drop (also when
/// the test fails), after moving the thread back where it was.
struct Netns {
    agent: String,
    device: String,
    /// The agent's side of the veth.
    dev: String,
    home: File,
    entered: bool,
    responder: Option<Arc<AtomicBool>>,
}

impl Netns {
    /// `None` (with the reason printed) when namespaces cannot be made.
    fn create(tag: &str) -> Option<Netns> {
        let id = format!("{}{tag}", std::process::id());
        let (agent, device) = (format!("swra{id}"), format!("swrd{id}"));
        if let Err(e) = ip(&["netns", "add", &agent]) {
            eprintln!("SKIPPED: cannot create a network namespace (needs root): {e}");
            return None;
        }
        let ns = Netns {
            agent,
            device,
            dev: format!("ra{id}"),
            home: File::open("/proc/thread-self/ns/net").expect("own namespace"),
            entered: false,
            responder: None,
        };
        ip(&["netns", "add", &ns.device]).expect("device namespace");
        let peer = format!("rd{id}");
        ip(&[
            "link", "add", &ns.dev, "netns", &ns.agent, "type", "veth", "peer", "name", &peer,
            "netns", &ns.device,
        ])
        .expect("veth pair");
        for (n, d, a) in [
            (&ns.agent, &ns.dev, "10.77.0.1/30"),
            (&ns.device, &peer, "10.77.0.2/30"),
        ] {
            ip(&["-n", n, "addr", "add", a, "dev", d]).expect("address");
            ip(&["-n", n, "link", "set", d, "up"]).expect("link up");
            ip(&["-n", n, "link", "set", "lo", "up"]).expect("lo up");
        }
        Some(ns)
    }

    /// Moves this thread (and what it starts from now on) into the
    /// agent's namespace.
    fn enter(&mut self) {
        let f = File::open(format!("/run/netns/{}", self.agent)).expect("namespace file");
        setns(&f);
        self.entered = true;
    }

    /// Adds the delay: netem when the kernel has it (true), else the
    /// late echo responder (false).
    fn delay(&mut self) -> bool {
        let delay = format!("{DELAY_MS}ms");
        let tc = [
            "tc", "qdisc", "replace", "dev", &self.dev, "root", "netem", "delay", &delay,
        ];
        let mut all = vec!["netns", "exec", self.agent.as_str()];
        all.extend_from_slice(&tc);
        match ip(&all) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("no netem ({e}): a late echo responder stands in for the delay");
                if self.responder.is_none() {
                    self.responder = Some(late_responder(&self.device));
                }
                false
            }
        }
    }

    /// Drops every packet the agent sends.
    fn drop_all(&self, netem: bool) {
        let q: &[&str] = if netem {
            &["netem", "loss", "100%"]
        } else {
            &["pfifo", "limit", "0"]
        };
        let mut args = vec!["tc", "qdisc", "replace", "dev", &self.dev, "root"];
        args.extend_from_slice(q);
        exec(&self.agent, &args);
    }

    /// Back to the delay only.
    fn restore(&mut self, netem: bool) {
        if netem {
            self.delay();
        } else {
            exec(
                &self.agent,
                &["tc", "qdisc", "del", "dev", &self.dev, "root"],
            );
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(stop) = &self.responder {
            stop.store(true, Ordering::Relaxed);
        }
        if self.entered {
            setns(&self.home);
        }
        for n in [&self.agent, &self.device] {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// In namespace `ns`: the kernel's echo replies off, and a thread that
/// answers each echo request after [`DELAY_MS`] over a raw socket.
fn late_responder(ns: &str) -> Arc<AtomicBool> {
    exec(ns, &["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, path) = (stop.clone(), format!("/run/netns/{ns}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        setns(&File::open(path).expect("namespace file"));
        let fd = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::RAW,
            Some(rustix::net::ipproto::ICMP),
        )
        .expect("raw ICMP socket");
        let sock = UdpSocket::from(fd);
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        tx.send(()).expect("ready");
        let mut buf = [0u8; 1500];
        while !flag.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n < ihl + 8 || buf[ihl] != 8 {
                continue;
            }
            let mut reply = buf[ihl..n].to_vec();
            reply[0] = 0;
            reply[2..4].copy_from_slice(&[0, 0]);
            let sum = sitewatch_agent::sources::reach::proto::checksum(&reply);
            reply[2..4].copy_from_slice(&sum.to_be_bytes());
            std::thread::sleep(Duration::from_millis(DELAY_MS));
            let _ = sock.send_to(&reply, from);
        }
    });
    rx.recv_timeout(T).expect("responder ready");
    stop
}

fn event_of<'a>(m: &'a Received, name: &str, subject: &str) -> Option<&'a Event> {
    match &m.msg {
        Message::Event(e) if e.event == name && e.subject == subject => Some(e),
        _ => None,
    }
}

/// The average in `... answers ping, 51.3 ms (min ...` in ms.
/// The `reach` reading in `m`, if it is one.
fn reading(m: &Received) -> Option<&Reach> {
    match &m.msg {
        Message::Reach(r) => Some(r),
        _ => None,
    }
}

fn avg_ms(words: &str, target: &str) -> f64 {
    let line = words
        .lines()
        .find(|l| l.contains(target) && l.contains("answers ping, "))
        .unwrap_or_else(|| panic!("no row for {target}:\n{words}"));
    let after = line.split("answers ping, ").nth(1).unwrap_or_default();
    after
        .split(" ms")
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no round trip in {line:?}"))
}

#[test]
fn reach_device_down_and_up_through_a_veth_with_loss_and_delay() {
    let Some(mut ns) = Netns::create("a") else {
        return;
    };
    let netem = ns.delay();
    ns.enter();
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = TestConfig::new("reach-site", &broker.url())
        .mounts(&[])
        .text();
    text.push_str(&format!(
        "[reach]\ninterval_secs = 1\ncount = 3\ntimeout_ms = 400\n\
         [[reach.target]]\nname = \"nvr\"\naddress = \"{DEVICE}\"\n\
         [[reach.target]]\nname = \"nvr-rtsp\"\naddress = \"{DEVICE}\"\nkind = \"tcp\"\nport = 554\n"
    ));
    let status_file = dir.path().join("status.json");
    text.push_str(&format!(
        "[status]\nfile = {:?}\ninterval_secs = 1\n",
        status_file.display().to_string()
    ));
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, text).expect("config");

    // As root with the namespace's default ping_group_range ("1 0"): raw.
    let words = String::from_utf8_lossy(&run_check(&cfg, &["--online"]).stdout).into_owned();
    assert!(words.contains("raw ICMP socket"), "{words}");
    let rtt = avg_ms(&words, &format!("reach nvr {DEVICE}"));
    assert!(
        (45.0..250.0).contains(&rtt),
        "round trip {rtt} ms:\n{words}"
    );
    assert!(
        words.contains(&format!("reach nvr-rtsp {DEVICE}:554"))
            && words.contains("port 554 refused: the device answers"),
        "{words}"
    );

    // Datagram ICMP sockets once the group may use them.
    exec(
        &ns.agent,
        &["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
    );
    let words = String::from_utf8_lossy(&run_check(&cfg, &["--online"]).stdout).into_owned();
    assert!(words.contains("datagram ICMP socket"), "{words}");
    let rtt = avg_ms(&words, &format!("reach nvr {DEVICE}"));
    assert!(
        (45.0..250.0).contains(&rtt),
        "round trip {rtt} ms:\n{words}"
    );

    let mut obs = Observer::start(&broker);
    let _agent = spawn_agent(&cfg);
    obs.wait_for(T, "birth", Received::is_birth);
    // Rounds that answer: no event for a start with the device up.
    obs.drain_for(Duration::from_secs(3));
    assert!(
        !obs.seen.iter().any(|m| matches!(&m.msg, Message::Event(_))),
        "{}",
        obs.dump()
    );
    // A reading each round, both targets in it: the NVR answers ping
    // through the delay, the RTSP port refuses (up, received 0).
    let r = obs
        .seen
        .iter()
        .rev()
        .find_map(reading)
        .unwrap_or_else(|| panic!("no reach reading: {}", obs.dump()));
    assert_eq!(r.interval_secs, 1);
    let [nvr, rtsp] = &r.targets[..] else {
        panic!("{r:?}")
    };
    assert_eq!(
        (nvr.name.as_str(), nvr.address.as_str(), nvr.kind.as_str()),
        ("nvr", DEVICE, "icmp")
    );
    assert_eq!((nvr.state.as_str(), nvr.sent, nvr.port), ("up", 3, None));
    let avg = nvr.rtt_avg_ms.unwrap_or_default();
    assert!((45.0..250.0).contains(&avg), "{nvr:?}");
    assert!(nvr.rtt_min_ms <= nvr.rtt_avg_ms && nvr.rtt_avg_ms <= nvr.rtt_max_ms);
    assert_eq!(
        (rtsp.kind.as_str(), rtsp.port, rtsp.state.as_str()),
        ("tcp", Some(554), "up")
    );
    assert!(rtsp.received == 0 && rtsp.refused >= 1, "{rtsp:?}");

    ns.drop_all(netem);
    let m = obs.wait_for(T, "device_down for nvr", |m| {
        event_of(m, "device_down", "nvr").is_some()
    });
    let e = event_of(&m, "device_down", "nvr").expect("event");
    assert_eq!(
        (e.severity.as_str(), e.from.as_deref(), e.to.as_deref()),
        ("critical", Some("up"), Some("down"))
    );
    assert_eq!(e.numbers.get("loss_pct"), Some(&100), "{e:?}");
    assert_eq!(e.numbers.get("sent"), Some(&3), "{e:?}");
    assert!(
        e.message
            .contains(&format!("nvr {DEVICE}: does not answer (3 of 3 lost)")),
        "{e:?}"
    );
    // The TCP target goes down with it (its SYNs are dropped too).
    obs.wait_for(T, "device_down for nvr-rtsp", |m| {
        event_of(m, "device_down", "nvr-rtsp").is_some()
    });
    // The readings say so too: nothing back, so no round trip at all.
    let m = obs.wait_for(T, "a reading with both down", |m| {
        reading(m).is_some_and(|r| r.targets.iter().all(|t| t.state == "down"))
    });
    let r = reading(&m).expect("reading");
    for t in &r.targets {
        assert_eq!(
            (t.sent, t.received, t.refused, t.lost()),
            (3, 0, 0, 3),
            "{t:?}"
        );
        assert_eq!(
            (t.rtt_min_ms, t.rtt_avg_ms, t.rtt_max_ms),
            (None, None, None)
        );
    }

    // `sitewatch-agent status` shows the same, with since when.
    let shown = crate::util::status_text_when(&status_file, "Reach:       0 of 2 targets answer");
    assert!(
        shown.contains("Reach:       0 of 2 targets answer")
            && shown.contains(&format!("  nvr {DEVICE}: down for "))
            && shown.contains(" s: does not answer (3 of 3 lost) (")
            && shown.contains(&format!("  nvr-rtsp {DEVICE}:554: down for")),
        "{shown}"
    );

    ns.restore(netem);
    let m = obs.wait_for(T, "device_up for nvr", |m| {
        event_of(m, "device_up", "nvr").is_some()
    });
    let e = event_of(&m, "device_up", "nvr").expect("event");
    assert_eq!(
        (e.severity.as_str(), e.from.as_deref(), e.to.as_deref()),
        ("info", Some("down"), Some("up"))
    );
    let avg = e.numbers.get("rtt_avg_us").copied().unwrap_or_default();
    assert!((45_000..250_000).contains(&avg), "{e:?}");
    assert!(e.message.contains("answers ping"), "{e:?}");
    let m = obs.wait_for(T, "device_up for nvr-rtsp", |m| {
        event_of(m, "device_up", "nvr-rtsp").is_some()
    });
    let e = event_of(&m, "device_up", "nvr-rtsp").expect("event");
    // The round that sees the drop lifted may lose its first probes.
    assert!(e.numbers.get("refused").is_some_and(|n| *n >= 1), "{e:?}");
    assert_eq!(e.numbers.get("received"), Some(&0), "{e:?}");
    assert_eq!(e.numbers.get("port"), Some(&554), "{e:?}");
}
