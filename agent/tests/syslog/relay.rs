//! Real senders → the agent binary → a real mosquitto → an observer that
//! decodes every `log` batch with the bridge's decoder.
//!
//! Senders: util-linux `logger` (RFC 3164 and RFC 5424, UDP and TCP) and
//! syslog-ng from Debian packages, configured as in the seed deployment
//! (`tcp()`), plus `udp()` and RFC 5424 with octet counting (`syslog()`).
//! Every line sent must arrive exactly once with the right host, app,
//! severity and timestamp. Everything listens on 127.0.0.1, on ports
//! picked at run time.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sitewatch_testkit::{ChildGuard, Mosquitto};
use sitewatch_wire::payload::LogRecord;
use sitewatch_wire::Message;

use crate::util::{spawn_agent, Observer, TestConfig};

const T: Duration = Duration::from_secs(20);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("udp port")
        .port()
}

/// This machine's UTC offset (`+07:00`): logger and syslog-ng write RFC
/// 3164 timestamps in local time without a zone.
fn local_offset() -> String {
    let out = Command::new("date").arg("+%:z").output().expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// This machine's host name, as `logger` and syslog-ng write it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

struct Agent {
    guard: ChildGuard,
    udp: u16,
    tcp: u16,
}

/// Starts the agent with `[syslog]` on free loopback ports; `extra` is
/// appended to the table (may add sub-tables at the end).
fn start_agent(broker: &Mosquitto, dir: &Path, site: &str, extra: &str) -> Agent {
    let udp = free_udp_port();
    let tcp = sitewatch_testkit::free_port();
    let text = format!(
        "{}[syslog]\nudp = [\"127.0.0.1:{udp}\"]\ntcp = [\"127.0.0.1:{tcp}\"]\n\
         batch_max_wait_ms = 200\ntimezone = \"{tz}\"\n{extra}",
        TestConfig::new(site, &broker.url()).text(),
        tz = local_offset(),
    );
    let path = dir.join(format!("{site}.toml"));
    std::fs::write(&path, text).expect("write config");
    let mut guard = spawn_agent(&path);
    guard
        .wait_for_log("Listening for syslog on UDP", T)
        .expect("UDP listener");
    guard
        .wait_for_log("Listening for syslog on TCP", T)
        .expect("TCP listener");
    Agent { guard, udp, tcp }
}

/// All log records seen so far, in arrival order.
fn records(obs: &Observer) -> Vec<LogRecord> {
    obs.seen
        .iter()
        .filter_map(|m| match &m.msg {
            Message::Log(l) => Some(l.records.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Waits until every marker has arrived (by `msg` containing it); then
/// waits a little longer for duplicates. Returns the record per marker.
fn collect(obs: &mut Observer, markers: &[String]) -> HashMap<String, LogRecord> {
    let deadline = Instant::now() + T;
    loop {
        let recs = records(obs);
        let found = markers
            .iter()
            .filter(|m| recs.iter().any(|r| r.msg.contains(m.as_str())))
            .count();
        if found == markers.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {found} of {} lines arrived; seen:\n{}",
            markers.len(),
            obs.dump()
        );
        obs.drain_for(Duration::from_millis(200));
    }
    obs.drain_for(Duration::from_millis(700));
    let recs = records(obs);
    let mut out = HashMap::new();
    for m in markers {
        let hits: Vec<&LogRecord> = recs.iter().filter(|r| r.msg.contains(m.as_str())).collect();
        assert_eq!(hits.len(), 1, "{m} arrived {} times: {hits:?}", hits.len());
        out.insert(m.clone(), hits[0].clone());
    }
    out
}

fn logger(args: &[&str], lines: &[String]) {
    let mut child = Command::new("logger")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run logger (util-linux)");
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write to logger");
        }
    }
    let out = child.wait_with_output().expect("logger");
    assert!(
        out.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_ms() -> u64 {
    sitewatch_agent::uplink::publish::now_ms()
}

/// `logger --rfc3164/--rfc5424` over UDP and TCP (newline and octet
/// counting): every line exactly once, with host, app, severity, facility,
/// format and a device timestamp close to the receive time.
#[test]
fn logger_lines_arrive_exactly_once() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let agent = start_agent(&broker, dir.path(), "logger-site", "");
    let (udp, tcp) = (agent.udp.to_string(), agent.tcp.to_string());
    let host = hostname();
    let t0 = now_ms();

    let modes: [(&str, Vec<&str>, &str); 4] = [
        ("u3164", vec!["-d", "--rfc3164", "-P", &udp], "rfc3164"),
        ("u5424", vec!["-d", "--rfc5424", "-P", &udp], "rfc5424"),
        ("t3164", vec!["-T", "--rfc3164", "-P", &tcp], "rfc3164"),
        (
            "t5424",
            vec!["-T", "--octet-count", "--rfc5424", "-P", &tcp],
            "rfc5424",
        ),
    ];
    let mut all = Vec::new();
    for (mode, args, _) in &modes {
        let lines: Vec<String> = (0..50)
            .map(|i| format!("{mode}-line-{i:03} via logger é"))
            .collect();
        let mut a = vec!["-n", "127.0.0.1", "-t", "sw-test", "-p", "local3.warning"];
        a.extend(args.iter().copied());
        logger(&a, &lines);
        all.extend(lines);
    }
    let got = collect(&mut obs, &all);
    for (marker, r) in &got {
        let mode = &marker[..5];
        let want_format = modes
            .iter()
            .find(|(m, _, _)| *m == mode)
            .map(|(_, _, f)| *f)
            .expect("mode");
        assert_eq!(r.format, want_format, "{marker}: {r:?}");
        assert_eq!(r.host, host, "{marker}");
        assert_eq!(r.app, "sw-test", "{marker}");
        assert_eq!((r.facility, r.severity), (19, 4), "{marker}");
        assert_eq!(r.ip, "127.0.0.1");
        assert_eq!(r.msg, *marker, "{marker}");
        assert!(!r.truncated);
        let ts = r.ts.expect("device timestamp");
        // RFC 3164 has whole seconds: within 2 s of when we sent.
        assert!(
            ts + 2_000 >= t0 && ts <= r.rx + 1_000,
            "{marker}: ts {ts} t0 {t0} rx {}",
            r.rx
        );
    }
    // Counters reach the heartbeat.
    let hb = obs.wait_for(T, "heartbeat counting 200 lines", |m| match &m.msg {
        Message::Heartbeat(h) => h.counters.get("syslog_received").copied().unwrap_or(0) >= 200,
        _ => false,
    });
    let Message::Heartbeat(h) = &hb.msg else {
        unreachable!()
    };
    assert_eq!(h.counters.get("syslog_rfc3164"), Some(&100));
    assert_eq!(h.counters.get("syslog_rfc5424"), Some(&100));
    assert_eq!(h.counters.get("syslog_dropped"), Some(&0));
    drop(agent);
}

const SYSLOG_NG: &str = "/usr/sbin/syslog-ng";

/// syslog-ng relaying to the agent as the seed deployment does
/// (`destination d_remote { tcp(...) }`), and with `udp()` and RFC 5424
/// octet counting (`syslog(transport("tcp"))`). logger feeds one syslog-ng
/// UDP input per destination.
#[test]
fn syslog_ng_relays_arrive_exactly_once() {
    if !Path::new(SYSLOG_NG).exists() {
        panic!("syslog-ng is not installed: apt-get install -y syslog-ng-core");
    }
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    // syslog-ng's own host: the agent maps 127.0.0.1 to a name, but the
    // HOSTNAME syslog-ng keeps from logger must win only when no name is
    // configured; here none is.
    let agent = start_agent(&broker, dir.path(), "sng-site", "");
    let inputs: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    let d = dir.path();
    let conf = format!(
        r#"@version: 3.38
options {{ keep-hostname(yes); stats-freq(0); mark-freq(0); time-reopen(1); log-fifo-size(100000); }};
source s_tcp {{ network(ip("127.0.0.1") port({a}) transport("udp")); }};
source s_udp {{ network(ip("127.0.0.1") port({b}) transport("udp")); }};
source s_5424 {{ network(ip("127.0.0.1") port({c}) transport("udp")); }};
destination d_remote {{ tcp("127.0.0.1" port({tcp})); }};
destination d_udp {{ udp("127.0.0.1" port({udp})); }};
destination d_5424 {{ syslog("127.0.0.1" transport("tcp") port({tcp}) persist-name("d_5424")); }};
log {{ source(s_tcp); destination(d_remote); }};
log {{ source(s_udp); destination(d_udp); }};
log {{ source(s_5424); destination(d_5424); }};
"#,
        a = inputs[0],
        b = inputs[1],
        c = inputs[2],
        tcp = agent.tcp,
        udp = agent.udp,
    );
    let cfg = d.join("syslog-ng.conf");
    std::fs::write(&cfg, conf).expect("write syslog-ng.conf");
    let ctl = d.join("syslog-ng.ctl");
    let mut sng = ChildGuard::spawn(
        Command::new(SYSLOG_NG)
            .arg("-F")
            .arg("-f")
            .arg(&cfg)
            .arg("--persist-file")
            .arg(d.join("syslog-ng.persist"))
            .arg("--pidfile")
            .arg(d.join("syslog-ng.pid"))
            .arg("--control")
            .arg(&ctl)
            .arg("--no-caps"),
    )
    .expect("start syslog-ng");
    let deadline = Instant::now() + T;
    while !ctl.exists() {
        assert!(
            Instant::now() < deadline && sng.try_status().is_none(),
            "syslog-ng did not start:\n{}",
            sng.log_contents()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its network sources are up once the control socket is.
    std::thread::sleep(Duration::from_millis(300));

    let host = hostname();
    let names = ["tcp", "udp", "5424"];
    let mut all = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let lines: Vec<String> = (0..100)
            .map(|n| format!("sng-{name}-{n:03} relayed"))
            .collect();
        let port = inputs[i].to_string();
        logger(
            &[
                "-n",
                "127.0.0.1",
                "-P",
                &port,
                "-d",
                "--rfc3164",
                "-t",
                "nvr-app",
                "-p",
                "daemon.err",
            ],
            &lines,
        );
        all.extend(lines);
    }
    let got = collect(&mut obs, &all);
    for (marker, r) in &got {
        let want_format = if marker.starts_with("sng-5424") {
            "rfc5424"
        } else {
            "rfc3164"
        };
        assert_eq!(r.format, want_format, "{marker}: {r:?}");
        assert_eq!(r.host, host, "{marker}");
        assert_eq!(r.app, "nvr-app", "{marker}");
        assert_eq!((r.facility, r.severity), (3, 3), "{marker}");
        assert_eq!(r.msg, *marker);
        assert!(r.ts.is_some(), "{marker}");
    }
    drop(sng);
    drop(agent);
}

fn heartbeat_counter(obs: &mut Observer, name: &str, at_least: u64) -> u64 {
    let m = obs.wait_for(T, &format!("heartbeat with {name} >= {at_least}"), |m| {
        matches!(&m.msg, Message::Heartbeat(h)
            if h.counters.get(name).copied().unwrap_or(0) >= at_least)
    });
    match &m.msg {
        Message::Heartbeat(h) => h.counters.get(name).copied().unwrap_or(0),
        _ => 0,
    }
}

/// Binary bytes, invalid UTF-8, a 1 MiB line, a flood over the rate limit
/// and a sender outside the allow list: the agent keeps running, counts
/// them, and relays the next good line on the same connection.
#[test]
fn garbage_and_floods_are_counted_and_survived() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let agent = start_agent(
        &broker,
        dir.path(),
        "garbage-site",
        "allow = [\"127.0.0.1\"]\nrate_limit_per_sec = 100\nrate_limit_burst = 200\n\
         [syslog.hosts]\n\"127.0.0.1\" = \"nvr-1\"\n",
    );
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let target = ("127.0.0.1", agent.udp);
    udp.send_to(&[0u8, 1, 2, 0xff, 0xfe, 0x80, b'\n'], target)
        .expect("send");
    udp.send_to(
        b"<13>Nov 27 10:00:00 h app: caf\xc3\xa9 \xc3\x28 bad utf8",
        target,
    )
    .expect("send");

    // 1 MiB line then a good one, on one TCP connection.
    let mut tcp = TcpStream::connect(("127.0.0.1", agent.tcp)).expect("connect");
    let mut big = b"<13>Nov 27 10:00:00 h app: ".to_vec();
    big.resize(1 << 20, b'x');
    big.extend_from_slice(b"\n<13>Nov 27 10:00:01 h app: after-the-big-one\n");
    tcp.write_all(&big).expect("write 1 MiB");
    tcp.flush().expect("flush");

    let got = collect(
        &mut obs,
        &["after-the-big-one".to_owned(), "bad utf8".to_owned()],
    );
    assert_eq!(got["bad utf8"].msg, "café \u{fffd}( bad utf8");
    assert_eq!(
        got["after-the-big-one"].host, "nvr-1",
        "configured name wins"
    );
    let recs = records(&obs);
    let truncated: Vec<&LogRecord> = recs.iter().filter(|r| r.truncated).collect();
    assert_eq!(truncated.len(), 1, "the 1 MiB line, cut and flagged");
    assert!(truncated[0].msg.len() < 8192 && truncated[0].msg.starts_with("xxxx"));
    assert!(
        recs.iter()
            .any(|r| r.format == "raw" && r.msg.contains('\u{fffd}')),
        "binary datagram kept as raw"
    );

    // A sender outside the allow list (127.0.0.3 is loopback too).
    let stranger = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    stranger.send_to(b"<13>not allowed", target).expect("send");

    // Flood: 2000 lines at once, limit 100/s with a burst of 200.
    for i in 0..2000 {
        let line = format!("<13>flood line {i}");
        let _ = udp.send_to(line.as_bytes(), target);
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let limited = heartbeat_counter(&mut obs, "syslog_rate_limited", 1000);
    assert!(limited <= 1900, "{limited}");
    heartbeat_counter(&mut obs, "syslog_denied", 1);
    heartbeat_counter(&mut obs, "syslog_truncated", 1);
    heartbeat_counter(&mut obs, "syslog_raw", 1);

    // Still alive and relaying on the same TCP connection.
    std::thread::sleep(Duration::from_millis(2100)); // refill the bucket
    tcp.write_all(b"<13>Nov 27 10:00:02 h app: still-alive\n")
        .expect("write");
    collect(&mut obs, &["still-alive".to_owned()]);
    drop(agent);
}

/// Shutdown publishes the pending batch before the offline status.
#[test]
fn pending_batch_is_flushed_before_offline_status() {
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    let mut agent = start_agent(&broker, dir.path(), "flush-site", "");
    obs.wait_for(T, "birth", crate::util::Received::is_birth);
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for i in 0..20 {
        udp.send_to(
            format!("<13>last-words-{i}").as_bytes(),
            ("127.0.0.1", agent.udp),
        )
        .expect("send");
    }
    std::thread::sleep(Duration::from_millis(50));
    agent.guard.terminate().expect("SIGTERM");
    let bye = obs.wait_for(T, "offline status", |m| {
        m.is_offline(sitewatch_wire::payload::OfflineReason::Shutdown)
    });
    let recs = records(&obs);
    for i in 0..20 {
        let m = format!("last-words-{i}");
        assert_eq!(
            recs.iter().filter(|r| r.msg == m).count(),
            1,
            "{m}:\n{}",
            obs.dump()
        );
    }
    // The status is the last message of the boot.
    let last_seq = obs.seen.iter().map(|m| m.identity().2).max();
    assert_eq!(Some(bye.identity().2), last_seq);
}

/// The default config relays a steady stream far above the outbox's
/// backlog drain limit (128 KiB/s) with no outage at all, losing nothing:
/// the limit paces the backlog after an outage, not live traffic. Eight
/// senders on their own loopback addresses (each under the default
/// per-sender limit of 1000 lines/s) send 700 lines/s of about 200 bytes
/// each over TCP for 4 s: about 1.1 MB/s, 8x the drain limit.
#[test]
fn default_config_relays_a_steady_stream_above_the_drain_limit() {
    const SENDERS: usize = 8;
    const PER_SENDER_PER_SEC: usize = 700;
    const SECS: usize = 4;
    let broker = Mosquitto::start().expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut obs = Observer::start(&broker);
    // The [syslog] table as start_agent writes it, with the default
    // batch wait; no [outbox] table: the defaults are under test.
    let tcp = sitewatch_testkit::free_port();
    let text = format!(
        "{}[syslog]\nudp = []\ntcp = [\"127.0.0.1:{tcp}\"]\n",
        TestConfig::new("steady-site", &broker.url()).text(),
    );
    assert!(!text.contains("[outbox]") && !text.contains("rate_limit"));
    let path = dir.path().join("steady-site.toml");
    std::fs::write(&path, text).expect("write config");
    let mut agent = spawn_agent(&path);
    agent
        .wait_for_log("Listening for syslog on TCP", T)
        .expect("TCP listener");

    let pad = "p".repeat(150);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let pad = pad.clone();
            std::thread::spawn(move || {
                let sock = tcp_from(&format!("127.0.0.{}", s + 2), tcp);
                let mut sock = std::io::BufWriter::new(sock);
                let start = Instant::now();
                let per_tick = PER_SENDER_PER_SEC / 10;
                for tick in 0..SECS * 10 {
                    for i in 0..per_tick {
                        let n = tick * per_tick + i;
                        writeln!(
                            sock,
                            "<13>Nov 27 10:00:00 nvr{s} app: steady s{s} n{n:05} {pad}"
                        )
                        .expect("write");
                    }
                    sock.flush().expect("flush");
                    let next = start + Duration::from_millis(100 * (tick as u64 + 1));
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let total = (SENDERS * PER_SENDER_PER_SEC * SECS) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = |obs: &Observer| {
        records(obs)
            .iter()
            .filter(|r| r.msg.starts_with("steady s"))
            .count() as u64
    };
    while count(&obs) < total && Instant::now() < deadline {
        obs.drain_for(Duration::from_millis(500));
    }
    let hb = obs.wait_for(T, "heartbeat counting every line", |m| match &m.msg {
        Message::Heartbeat(h) => h.counters.get("syslog_received").copied().unwrap_or(0) >= total,
        _ => false,
    });
    let Message::Heartbeat(h) = &hb.msg else {
        unreachable!()
    };
    let counter = |name: &str| h.counters.get(name).copied().unwrap_or(0);
    assert_eq!(
        (counter("syslog_dropped"), counter("outbox_dropped_log")),
        (0, 0),
        "dropped with no outage; counters: {:?}",
        h.counters
    );
    assert_eq!(counter("syslog_rate_limited"), 0, "{:?}", h.counters);
    let recs = records(&obs);
    let mut seen = std::collections::HashSet::new();
    for r in recs.iter().filter(|r| r.msg.starts_with("steady s")) {
        assert!(seen.insert(r.msg.clone()), "duplicate: {}", r.msg);
    }
    assert_eq!(seen.len() as u64, total, "lines relayed of {total}");
    drop(agent);
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `from`
/// (so each sender is its own source for the per-sender limits).
fn tcp_from(from: &str, port: u16) -> TcpStream {
    let from: std::net::IpAddr = from.parse().expect("address");
    // std cannot bind before connect: go through a raw socket (rustix).
    let fd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .expect("socket");
    rustix::net::bind(&fd, &std::net::SocketAddr::new(from, 0)).expect("bind source address");
    rustix::net::connect(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("connect");
    TcpStream::from(fd)
}
