//! Fault injection against real processes: the agent binary, mosquitto
//! (restarted with and without persistence) and a TCP proxy between them
//! that blackholes, resets or refuses the uplink. A subscriber records
//! every (boot, seq) it receives; each scenario checks that every message
//! the agent made arrived exactly once (duplicates are redeliveries, and
//! reported), or is counted as dropped in the heartbeat counters.
//!
//! Each test prints one line `FAULT <scenario>: sent=… received=…
//! duplicates=… lost=… dropped=… recover=…` (run with `--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use sitewatch_testkit::{sig, ChildGuard, Mosquitto, TcpProxy};
use sitewatch_wire::payload::{OfflineReason, State};
use sitewatch_wire::Message;

use crate::util::{spawn_agent, TestConfig};

const T: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// One message as received: boot, seq, decoded.
struct Got {
    boot: String,
    seq: u64,
    msg: Message,
}

/// Subscriber on the broker's own port, counting every message; knows how
/// many times it has (re)subscribed.
struct Counter {
    rx: mpsc::Receiver<(String, Vec<u8>)>,
    stop: Arc<AtomicBool>,
    subscribed: Arc<AtomicU64>,
    got: Vec<Got>,
}

impl Counter {
    fn start(port: u16) -> Counter {
        let mut opts =
            MqttOptions::new(format!("counter-{}", fastrand::u32(..)), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(512 * 1024, 64 * 1024);
        let (client, mut conn) = Client::new(opts, 10);
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicU64::new(0));
        let (s, sub) = (Arc::clone(&stop), Arc::clone(&subscribed));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let _ = client
                            .try_subscribe(sitewatch_wire::topic::FILTER_ALL, QoS::AtLeastOnce);
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        sub.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if tx.send((p.topic, p.payload.to_vec())).is_err() {
                            break;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        let c = Counter {
            rx,
            stop,
            subscribed,
            got: Vec::new(),
        };
        c.wait_subscribed(1);
        c
    }

    fn wait_subscribed(&self, n: u64) {
        let deadline = Instant::now() + T;
        while self.subscribed.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "subscriber did not subscribe");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn take(&mut self, wait: Duration) -> Option<usize> {
        let (topic, payload) = self.rx.recv_timeout(wait).ok()?;
        let msg = sitewatch_wire::decode(&topic, &payload)
            .unwrap_or_else(|e| panic!("undecodable {topic}: {e}"));
        let (_, boot, seq) = msg.identity();
        let boot = boot.to_owned();
        self.got.push(Got { boot, seq, msg });
        Some(self.got.len() - 1)
    }

    /// Receives until `pred` holds for a message, or panics after `timeout`.
    fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Got) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; {}",
                self.summary_all()
            );
            if let Some(i) = self.take(left.min(Duration::from_millis(200))) {
                if pred(&self.got[i]) {
                    return i;
                }
            }
        }
    }

    fn drain(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        while Instant::now() < deadline {
            self.take(Duration::from_millis(50));
        }
    }

    /// seq → times received, for `boot` (seq 0, the Will, left out).
    fn seqs(&self, boot: &str) -> BTreeMap<u64, u32> {
        let mut m = BTreeMap::new();
        for g in self.got.iter().filter(|g| g.boot == boot && g.seq > 0) {
            *m.entry(g.seq).or_insert(0) += 1;
        }
        m
    }

    fn missing(&self, boot: &str, upto: u64) -> Vec<u64> {
        let s = self.seqs(boot);
        (1..=upto).filter(|q| !s.contains_key(q)).collect()
    }

    fn duplicates(&self, boot: &str) -> u64 {
        self.seqs(boot).values().map(|&n| u64::from(n - 1)).sum()
    }

    fn summary_all(&self) -> String {
        let boots: BTreeSet<&str> = self.got.iter().map(|g| g.boot.as_str()).collect();
        boots
            .iter()
            .map(|b| {
                let s = self.seqs(b);
                let max = s.keys().max().copied().unwrap_or(0);
                format!(
                    "boot {b}: {} distinct, max seq {max}, missing {:?}, dups {}",
                    s.len(),
                    self.missing(b, max),
                    self.duplicates(b)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The latest heartbeat's counters for `boot`.
    fn last_counters(&self, boot: &str) -> BTreeMap<String, u64> {
        self.got
            .iter()
            .rev()
            .filter(|g| g.boot == boot)
            .find_map(|g| match &g.msg {
                Message::Heartbeat(h) => Some(h.counters.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn is_birth(g: &Got) -> bool {
    matches!(&g.msg, Message::Status(s) if s.state == State::Online)
}

fn is_shutdown(g: &Got) -> bool {
    matches!(&g.msg, Message::Status(s) if s.state == State::Offline && s.reason == Some(OfflineReason::Shutdown))
}

/// A running agent, its config and syslog port.
struct Agent {
    guard: ChildGuard,
    udp: u16,
}

fn config_text(site: &str, url: &str, udp: u16, outbox: &str) -> String {
    format!(
        "{}[syslog]\nudp = [\"127.0.0.1:{udp}\"]\nbatch_max_wait_ms = 100\n\
         rate_limit_per_sec = 0\n{outbox}",
        TestConfig::new(site, url).mounts(&["/"]).text(),
    )
}

fn start_agent(dir: &Path, site: &str, url: &str, outbox: &str) -> Agent {
    let udp = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("udp port")
        .port();
    let path = dir.join(format!("{site}.toml"));
    std::fs::write(&path, config_text(site, url, udp, outbox)).expect("write config");
    let mut guard = spawn_agent(&path);
    guard
        .wait_for_log("Listening for syslog on UDP", T)
        .expect("UDP listener");
    Agent { guard, udp }
}

/// Sends `n` syslog lines of about `len` bytes to the agent.
fn send_logs(udp: u16, n: usize, len: usize, tag: &str) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let pad = "x".repeat(len);
    for i in 0..n {
        let line = format!("<14>Nov 28 00:00:00 cam1 {tag}: line {i} {pad}");
        sock.send_to(line.as_bytes(), ("127.0.0.1", udp))
            .expect("send");
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Stops the agent gracefully and returns the last seq of `boot` (its
/// shutdown status), after the subscriber got it.
fn stop_and_last_seq(agent: &mut Agent, c: &mut Counter, boot: &str) -> u64 {
    agent.guard.signal(sig::TERM).expect("SIGTERM");
    let i = c.until(T, "shutdown status", |g| g.boot == boot && is_shutdown(g));
    assert!(agent.guard.wait_timeout(T).is_some(), "agent did not exit");
    c.drain(Duration::from_millis(300));
    c.got[i].seq
}

fn report(name: &str, c: &Counter, boot: &str, last: u64, dropped: u64, recover: Duration) {
    let received = c.seqs(boot).len() as u64;
    let lost = c.missing(boot, last).len() as u64;
    let k = c.last_counters(boot);
    let get = |n: &str| k.get(n).copied().unwrap_or(0);
    println!(
        "FAULT {name}: sent={last} received={received} duplicates={} lost={} dropped={dropped} \
         requeued={} replayed={} reconnects={} recover={:.1}s",
        c.duplicates(boot),
        lost.saturating_sub(dropped),
        get("outbox_requeued"),
        get("outbox_replayed"),
        get("reconnects"),
        recover.as_secs_f64()
    );
}

/// Waits until everything made so far by `boot` has arrived (no holes up
/// to the newest seq) and a heartbeat stamped after `since_ms` came.
fn wait_recovered(c: &mut Counter, boot: &str, since_ms: u64, allow_missing: bool) -> Duration {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "no recovery: {}",
            c.summary_all()
        );
        if let Some(i) = c.take(Duration::from_millis(200)) {
            let g = &c.got[i];
            if let Message::Heartbeat(h) = &g.msg {
                if g.boot == boot && h.ts > since_ms {
                    let max = c.seqs(boot).keys().max().copied().unwrap_or(0);
                    let depth = h.counters.get("outbox_depth").copied().unwrap_or(0);
                    if (allow_missing || c.missing(boot, max).is_empty()) && depth <= 2 {
                        return t0.elapsed();
                    }
                }
            }
        }
    }
}

/// (1) The broker restarts without its persistence file while messages
/// are in flight (rumqttc discards them on the clean reconnect): the
/// outbox sends them again; nothing is lost.
#[test]
fn broker_restart_without_persistence_loses_nothing() {
    broker_restart(false);
}

/// (1b) The same with persistence on and a graceful broker restart.
#[test]
fn broker_restart_with_persistence_loses_nothing() {
    broker_restart(true);
}

fn broker_restart(persistence: bool) {
    let mut broker = Mosquitto::builder()
        .persistence(persistence)
        .start()
        .expect("broker");
    let proxy = TcpProxy::start(broker.port()).expect("proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Counter::start(broker.port());
    let mut agent = start_agent(dir.path(), "fault-restart", &proxy.url(), "");
    let b = c.until(T, "birth", is_birth);
    let boot = c.got[b].boot.clone();

    // The broker hangs (SIGSTOP) while traffic flows, so the agent's
    // publishes sit unacknowledged in its socket; then it dies (SIGKILL)
    // and comes back without any session, or (with persistence) resumes
    // and restarts gracefully. The agent cannot reconnect until the
    // subscriber is back.
    broker.signal(sig::STOP).expect("SIGSTOP broker");
    send_logs(agent.udp, 3000, 200, "restart");
    std::thread::sleep(Duration::from_millis(2500));
    proxy.refuse();
    if persistence {
        broker.signal(sig::CONT).expect("SIGCONT broker");
        broker.stop().expect("stop broker");
    } else {
        broker.kill().expect("kill broker");
    }
    proxy.reset_all();
    let subs = c.subscribed.load(Ordering::SeqCst);
    broker.restart().expect("restart broker");
    c.wait_subscribed(subs + 1);
    let healed = now_ms();
    proxy.heal().expect("heal");
    let recover = wait_recovered(&mut c, &boot, healed, false);

    let last = stop_and_last_seq(&mut agent, &mut c, &boot);
    let counters = c.last_counters(&boot);
    let name = if persistence {
        "broker_restart_persistence"
    } else {
        "broker_restart_no_persistence"
    };
    report(name, &c, &boot, last, 0, recover);
    assert_eq!(
        c.missing(&boot, last),
        Vec::<u64>::new(),
        "{}",
        c.summary_all()
    );
    assert_eq!(counters.get("dropped"), Some(&0), "{counters:?}");
    if !persistence {
        // Messages were in flight and sent again (the rumqttc silent-loss
        // case).
        assert!(
            counters.get("outbox_requeued").copied().unwrap_or(0) > 0,
            "{counters:?}"
        );
    }
}

/// (4) The uplink is blackholed for longer than the keep-alive (5 s), then
/// healed: nothing lost, the backlog drains.
#[test]
fn blackholed_uplink_longer_than_keepalive_loses_nothing() {
    let broker = Mosquitto::start().expect("broker");
    let proxy = TcpProxy::start(broker.port()).expect("proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Counter::start(broker.port());
    let mut agent = start_agent(dir.path(), "fault-blackhole", &proxy.url(), "");
    let b = c.until(T, "birth", is_birth);
    let boot = c.got[b].boot.clone();

    proxy.blackhole();
    let udp = agent.udp;
    let flood = std::thread::spawn(move || send_logs(udp, 2000, 200, "blackhole"));
    std::thread::sleep(Duration::from_secs(12));
    flood.join().expect("flood");
    let healed = now_ms();
    proxy.heal().expect("heal");
    let recover = wait_recovered(&mut c, &boot, healed, false);

    let last = stop_and_last_seq(&mut agent, &mut c, &boot);
    let counters = c.last_counters(&boot);
    report("blackhole_12s", &c, &boot, last, 0, recover);
    assert_eq!(
        c.missing(&boot, last),
        Vec::<u64>::new(),
        "{}",
        c.summary_all()
    );
    assert_eq!(counters.get("dropped"), Some(&0), "{counters:?}");
    assert!(
        counters.get("reconnects").copied().unwrap_or(0) >= 1,
        "{counters:?}"
    );
}

/// (5) The agent is SIGKILLed with a disk outbox while the broker is
/// unreachable; after a restart the old boot's records arrive, with their
/// old boot id and seq, none missing.
#[test]
fn sigkill_with_disk_outbox_delivers_old_boot_after_restart() {
    let broker = Mosquitto::start().expect("broker");
    let proxy = TcpProxy::start(broker.port()).expect("proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox_dir = dir.path().join("outbox");
    let outbox = format!("[outbox]\ndir = {:?}\n", outbox_dir.display().to_string());
    let mut c = Counter::start(broker.port());
    let mut agent = start_agent(dir.path(), "fault-kill", &proxy.url(), &outbox);
    let b = c.until(T, "birth", is_birth);
    let old = c.got[b].boot.clone();

    proxy.refuse();
    proxy.reset_all();
    send_logs(agent.udp, 1000, 200, "kill");
    std::thread::sleep(Duration::from_secs(3));
    agent.guard.kill().expect("SIGKILL");
    let old_before = c.seqs(&old).keys().max().copied().unwrap_or(0);

    let healed = now_ms();
    proxy.heal().expect("heal");
    let t0 = Instant::now();
    let mut agent = start_agent(dir.path(), "fault-kill", &proxy.url(), &outbox);
    // Everything of the old boot arrives: at least the ~3 s of heartbeats
    // and logs made while the broker was unreachable.
    let nb = c.until(T, "new birth", |g| g.boot != old && is_birth(g));
    let new = c.got[nb].boot.clone();
    let recover = wait_recovered(&mut c, &new, healed, false);
    let recover = recover.max(t0.elapsed());
    let old_max = c.seqs(&old).keys().max().copied().unwrap_or(0);
    let last = stop_and_last_seq(&mut agent, &mut c, &new);
    report(
        "sigkill_disk_outbox(old boot)",
        &c,
        &old,
        old_max,
        0,
        recover,
    );
    report("sigkill_disk_outbox(new boot)", &c, &new, last, 0, recover);
    assert!(
        old_max >= old_before + 5,
        "old boot's outage records not delivered: {}",
        c.summary_all()
    );
    assert_eq!(
        c.missing(&old, old_max),
        Vec::<u64>::new(),
        "{}",
        c.summary_all()
    );
    assert_eq!(
        c.missing(&new, last),
        Vec::<u64>::new(),
        "{}",
        c.summary_all()
    );
    let counters = c.last_counters(&new);
    assert!(
        counters.get("outbox_replayed").copied().unwrap_or(0) >= 5,
        "{counters:?}"
    );
}

/// (6) A long outage overflows a small memory outbox: only log batches
/// are dropped (logs first), and the heartbeat's counters match exactly
/// the seqs that never arrived.
#[test]
fn overflow_drops_logs_first_and_counts_match_the_gaps() {
    let broker = Mosquitto::start().expect("broker");
    let proxy = TcpProxy::start(broker.port()).expect("proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = "[outbox]\nmemory_max_bytes = 262144\n";
    let mut c = Counter::start(broker.port());
    let mut agent = start_agent(dir.path(), "fault-overflow", &proxy.url(), outbox);
    let b = c.until(T, "birth", is_birth);
    let boot = c.got[b].boot.clone();

    proxy.refuse();
    proxy.reset_all();
    // ~1.2 MB of logs into a 256 KiB outbox.
    send_logs(agent.udp, 6000, 200, "overflow");
    std::thread::sleep(Duration::from_secs(3));
    let healed = now_ms();
    proxy.heal().expect("heal");
    let recover = wait_recovered(&mut c, &boot, healed, true);
    let last = stop_and_last_seq(&mut agent, &mut c, &boot);
    let counters = c.last_counters(&boot);
    let missing = c.missing(&boot, last);
    let get = |k: &str| counters.get(k).copied().unwrap_or(u64::MAX);
    report("overflow_256KiB", &c, &boot, last, get("dropped"), recover);
    assert!(get("outbox_dropped_log") > 0, "{counters:?}");
    assert_eq!(get("outbox_dropped_series"), 0, "{counters:?}");
    assert_eq!(get("outbox_dropped_state"), 0, "{counters:?}");
    assert_eq!(get("outbox_dropped_event"), 0, "{counters:?}");
    // No heartbeat or disk report is missing: every gap is a log batch.
    let series_seqs: Vec<u64> = c
        .got
        .iter()
        .filter(|g| g.boot == boot && matches!(g.msg, Message::Heartbeat(_) | Message::Disk(_)))
        .map(|g| g.seq)
        .collect();
    assert!(series_seqs.len() >= 4, "{}", c.summary_all());
    // The last heartbeat came after the drain, so its counters cover all
    // drops of this boot.
    assert_eq!(
        missing.len() as u64,
        get("dropped"),
        "gaps {missing:?} vs counters {counters:?}"
    );
    assert_eq!(get("outbox_dropped_log"), get("dropped"), "{counters:?}");
}
