//! Outbox benchmark (run by `scripts/bench/outbox.sh`).
//!
//! ```text
//! outbox_bench throughput --dir DIR [--messages N] [--fsync-ms MS] [--seconds S] [--paced-rate R]
//! outbox_bench rss [--payload-min B] [--payload-max B]
//! ```
//!
//! `throughput` uses a disk outbox in DIR the way the agent will: the
//! outbox behind a mutex, a separate thread running the fsync jobs when
//! they are due (the agent's `spawn_blocking`), and the caller pushing,
//! sending and acknowledging (a broker that acknowledges at once). Payloads
//! are 300–1500 random JSON-like bytes; classes 60 % log, 30 % series,
//! 5 % state (8 topics), 5 % event. Phases:
//!
//! 1. append: N pushes as fast as possible;
//! 2. drain: send and acknowledge all of them;
//! 3. steady: push one, drain what is ready, for S seconds;
//! 4. paced: R pushes per second (drained as they come) for S seconds,
//!    to show the fsync rate at a realistic site rate.
//!
//! `rss` fills a memory-only outbox of the default size with such records
//! until the first drop and prints the process's resident memory before
//! and after.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sitewatch_agent::uplink::outbox::{Class, Next, Outbox, OutboxConfig, Record};

/// Set while the sync thread waits for the lock. std's mutex is not fair
/// and the benchmark's loops re-take it at once, which the agent's sources
/// (a push every few seconds) never do; so the loops step aside.
static SYNC_WAITING: AtomicBool = AtomicBool::new(false);

fn lock(m: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    while SYNC_WAITING.load(Ordering::Relaxed) {
        std::thread::yield_now();
    }
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_for_sync(m: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    SYNC_WAITING.store(true, Ordering::Relaxed);
    let g = m.lock().unwrap_or_else(PoisonError::into_inner);
    SYNC_WAITING.store(false, Ordering::Relaxed);
    g
}

struct Gen {
    rng: fastrand::Rng,
    seq: u64,
    min: usize,
    max: usize,
}

impl Gen {
    fn record(&mut self) -> Record {
        self.seq += 1;
        let class = match self.rng.u8(0..100) {
            0..=59 => Class::Log,
            60..=89 => Class::Series,
            90..=94 => Class::State,
            _ => Class::Event,
        };
        let topic = match class {
            Class::Log => "sitewatch/v1/lokasi1/log".to_owned(),
            Class::Series => "sitewatch/v1/lokasi1/heartbeat".to_owned(),
            Class::State => format!("sitewatch/v1/lokasi1/stream/cam{}", self.rng.u8(0..8)),
            Class::Event => "sitewatch/v1/lokasi1/event".to_owned(),
        };
        let len = self.rng.usize(self.min..=self.max);
        let mut payload = format!(
            "{{\"v\":1,\"site\":\"lokasi1\",\"boot\":\"9f2c4e1a7b3d5608\",\"seq\":{},\"ts\":1764284430000,\"x\":\"",
            self.seq
        )
        .into_bytes();
        while payload.len() < len - 2 {
            payload.push(b'a' + self.rng.u8(0..26));
        }
        payload.extend_from_slice(b"\"}");
        Record::new(class, topic, payload, class == Class::State, self.seq).expect("valid record")
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends and acknowledges everything ready; returns how many.
fn drain_ready(ob: &Mutex<Outbox>) -> u64 {
    let mut n = 0;
    let mut g = lock(ob);
    let now = Instant::now();
    let mut sent = Vec::new();
    loop {
        match g.next_to_send(now) {
            Next::Send(id, r) => {
                // What the uplink does: copy into a rumqttc Publish.
                std::hint::black_box((r.topic().to_owned(), r.payload().to_vec()));
                g.mark_sent(id, now);
                sent.push(id);
            }
            Next::WindowFull => {
                for id in sent.drain(..) {
                    g.ack(id);
                    n += 1;
                }
            }
            Next::Empty | Next::RateLimited(_) => break,
        }
    }
    for id in sent {
        g.ack(id);
        n += 1;
    }
    n
}

/// The agent's sync task: runs fsync jobs when due, outside the lock.
fn spawn_syncer(ob: Arc<Mutex<Outbox>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        let due = lock_for_sync(&ob).sync_due();
        let now = Instant::now();
        match due {
            Some(t) if t <= now => {
                let job = lock_for_sync(&ob).begin_sync();
                if let Some(job) = job {
                    let done = job.run();
                    if let Err(e) = lock_for_sync(&ob).finish_sync(done) {
                        eprintln!("sync failed: {e}");
                    }
                }
            }
            Some(t) => std::thread::sleep((t - now).min(Duration::from_millis(5))),
            None if stop.load(Ordering::SeqCst) => return,
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    })
}

fn throughput(args: &[String]) {
    let dir: PathBuf = arg(args, "--dir", PathBuf::from("/tmp/outbox-bench"));
    let messages: u64 = arg(args, "--messages", 100_000);
    let fsync_ms: u64 = arg(args, "--fsync-ms", 5_000);
    let seconds: u64 = arg(args, "--seconds", 10);
    let paced_rate: u64 = arg(args, "--paced-rate", 50);
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = OutboxConfig {
        dir: Some(dir.clone()),
        disk_max_bytes: 1 << 30,
        fsync_interval_ms: fsync_ms,
        drain_bytes_per_sec: 0,
        ..OutboxConfig::default()
    };
    let (ob, _) = Outbox::open(&cfg).expect("open outbox");
    let ob = Arc::new(Mutex::new(ob));
    println!("(fsyncs = fdatasync/fsync calls; a flush batch syncs every segment file written since the last one, and a class directory that got a new segment)");
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = spawn_syncer(Arc::clone(&ob), Arc::clone(&stop));
    let mut gen = Gen {
        rng: fastrand::Rng::with_seed(1),
        seq: 0,
        min: 300,
        max: 1500,
    };
    let records: Vec<Record> = (0..messages).map(|_| gen.record()).collect();
    let bytes: u64 = records.iter().map(|r| r.payload().len() as u64).sum();
    println!(
        "config fsync_interval_ms={fsync_ms} segment_bytes={} memory_max_bytes={} messages={messages} payload_bytes={bytes}",
        cfg.segment_bytes, cfg.memory_max_bytes
    );

    // 1. append
    let b0 = lock(&ob).stats().syncs;
    let f0 = lock(&ob).stats().fsyncs;
    let t0 = Instant::now();
    let mut dropped = 0;
    for r in records {
        if lock(&ob).push(r).id.is_none() {
            dropped += 1;
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    let s = lock(&ob).stats();
    println!(
        "append  {:>9.0} msg/s {:>7.1} MB/s  fsyncs {:>5} ({:>6.1}/s)  disk {:.1} MiB  memory {:.2} MiB  dropped {dropped}",
        messages as f64 / dt,
        bytes as f64 / dt / 1e6,
        s.fsyncs - f0,
        (s.fsyncs - f0) as f64 / dt,
        s.disk_bytes as f64 / 1048576.0,
        s.memory_bytes as f64 / 1048576.0,
    );
    println!(
        "        flush batches {} ({:.2}/s)",
        s.syncs - b0,
        (s.syncs - b0) as f64 / dt
    );

    // 2. drain
    let b0 = s.syncs;
    let f0 = s.fsyncs;
    let t0 = Instant::now();
    let mut drained = 0;
    loop {
        let n = drain_ready(&ob);
        if n == 0 && lock(&ob).is_empty() {
            break;
        }
        drained += n;
    }
    let dt = t0.elapsed().as_secs_f64();
    let s = lock(&ob).stats();
    println!(
        "drain   {:>9.0} msg/s {:>7.1} MB/s  fsyncs {:>5} ({:>6.1}/s)  disk {:.1} MiB after  drained {drained} (+{} state replaced)",
        drained as f64 / dt,
        bytes as f64 / dt / 1e6,
        s.fsyncs - f0,
        (s.fsyncs - f0) as f64 / dt,
        s.disk_bytes as f64 / 1048576.0,
        s.replaced,
    );
    println!(
        "        flush batches {} ({:.2}/s)",
        s.syncs - b0,
        (s.syncs - b0) as f64 / dt
    );

    // 3. steady: append and drain at once, as fast as possible.
    let b0 = s.syncs;
    let f0 = s.fsyncs;
    let t0 = Instant::now();
    let (mut pushed, mut through) = (0u64, 0u64);
    while t0.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..16 {
            lock(&ob).push(gen.record());
            pushed += 1;
        }
        through += drain_ready(&ob);
    }
    let dt = t0.elapsed().as_secs_f64();
    let s = lock(&ob).stats();
    println!(
        "steady  {:>9.0} msg/s in, {:>9.0} msg/s out  fsyncs {:>5} ({:>6.1}/s)  disk {:.1} MiB",
        pushed as f64 / dt,
        through as f64 / dt,
        s.fsyncs - f0,
        (s.fsyncs - f0) as f64 / dt,
        s.disk_bytes as f64 / 1048576.0,
    );
    println!(
        "        flush batches {} ({:.2}/s)",
        s.syncs - b0,
        (s.syncs - b0) as f64 / dt
    );

    // 4. paced
    let b0 = s.syncs;
    let f0 = s.fsyncs;
    let t0 = Instant::now();
    let mut next = t0;
    let mut pushed = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        lock(&ob).push(gen.record());
        pushed += 1;
        drain_ready(&ob);
        next += Duration::from_secs_f64(1.0 / paced_rate as f64);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    let s = lock(&ob).stats();
    println!(
        "paced   {:>9.0} msg/s  fsyncs {:>5} ({:>6.2}/s)",
        pushed as f64 / dt,
        s.fsyncs - f0,
        (s.fsyncs - f0) as f64 / dt,
    );
    println!(
        "        flush batches {} ({:.2}/s)",
        s.syncs - b0,
        (s.syncs - b0) as f64 / dt
    );
    stop.store(true, Ordering::SeqCst);
    let _ = syncer.join();
    let s = lock(&ob).stats();
    println!(
        "total   fsyncs {} in {} flush batches, disk errors {}, dropped {}",
        s.fsyncs,
        s.syncs,
        s.disk_errors,
        s.dropped.total()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn rss(args: &[String]) {
    let min: usize = arg(args, "--payload-min", 300);
    let max: usize = arg(args, "--payload-max", 1500);
    let cfg = OutboxConfig::default();
    let (mut ob, _) = Outbox::open(&cfg).expect("open outbox");
    let mut gen = Gen {
        rng: fastrand::Rng::with_seed(2),
        seq: 0,
        min,
        max,
    };
    // Records are made as they are pushed, so their allocations are the
    // outbox's (as in the agent, where the encoded payload moves in).
    let before = rss_kib();
    let mut count = 0u64;
    loop {
        let out = ob.push(gen.record());
        if out.dropped.0.iter().any(|&d| d > 0) {
            break;
        }
        count += 1;
    }
    let after = rss_kib();
    let s = ob.stats();
    println!(
        "rss payload {min}-{max} B: {count} records, outbox accounting {:.2} MiB (bound {:.2} MiB), RSS before {before} KiB, after {after} KiB, outbox ≈ {} KiB",
        s.memory_bytes as f64 / 1048576.0,
        cfg.memory_max_bytes as f64 / 1048576.0,
        after.saturating_sub(before),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("throughput") => throughput(&args),
        Some("rss") => rss(&args),
        _ => {
            eprintln!("usage: outbox_bench throughput --dir DIR [--messages N] [--fsync-ms MS] [--seconds S] [--paced-rate R]\n       outbox_bench rss [--payload-min B] [--payload-max B]");
            std::process::exit(2);
        }
    }
}
