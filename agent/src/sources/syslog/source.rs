//! The syslog receiver: UDP and TCP listeners, sender checks, and the
//! hand-off from parsed lines to log batches.
//!
//! Every line goes through [`Receiver::ingest`]: allow list → per-sender
//! token bucket → [`parse::parse`] → host choice → [`Pending`]. Closed
//! batches are offered to the [`Publisher`] right away and again on a
//! timer; the publisher never waits, so neither does a listener. The
//! receiver state sits behind one mutex, held only for synchronous work
//! (never across an `.await`).
//!
//! Each UDP datagram is one message. TCP connections are framed by
//! [`framing::Framer`]; at most `max_tcp_connections` are open (further
//! ones are accepted and closed at once, and counted), and a connection
//! silent for `tcp_idle_timeout_secs` is closed.
//!
//! What this module must not do: block the runtime thread, allocate per
//! line (the sender's address is formatted on the stack, the line is read
//! into per-socket buffers allocated once), or log per line: warnings about
//! senders are rate limited ([`Throttle`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sitewatch_wire::payload::{LogFormat, LOG_BUF_LEN};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::batch::{Input, Pending};
use super::config::{RateLimit, SyslogConfig, UNPRIVILEGED_PORT};
use super::framing::{Framer, Mode};
use super::parse::{self, ParseCtx};
use crate::uplink::publish::{now_ms, Counters, NotQueued, Publisher};

/// Largest UDP datagram (IPv4/IPv6 without jumbograms).
const MAX_DATAGRAM: usize = 65_535;

/// Datagrams read per wake-up before yielding to other tasks.
const UDP_BATCH: usize = 64;

/// Requested UDP receive buffer (the kernel caps it at
/// `net.core.rmem_max`): absorbs bursts while a batch is encoded.
const UDP_RCVBUF: usize = 1 << 20;

/// Senders tracked by the rate limiter at most; beyond, senders share
/// one bucket.
const MAX_BUCKETS: usize = 4096;

/// How often a warning about senders may be repeated.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How often a listener that could not bind tries again.
const REBIND_EVERY: Duration = Duration::from_secs(30);

/// At shutdown, how long to keep offering waiting batches to a full
/// MQTT queue before counting them as dropped.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(1500);

/// Allows one log line per `WARN_EVERY`; counts the ones it held back.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(n)` when a warning may be logged now, `n` being how many were
    /// held back since the last one.
    pub fn ready(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(limit: RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens =
            (self.tokens + elapsed * f64::from(limit.per_sec)).min(f64::from(limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-sender token buckets, bounded in number.
#[derive(Debug, Default)]
struct Limiter {
    buckets: HashMap<IpAddr, Bucket>,
    shared: Option<Bucket>,
}

impl Limiter {
    fn allow(&mut self, ip: IpAddr, limit: RateLimit, now: Instant) -> bool {
        if limit.per_sec == 0 {
            return true;
        }
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_BUCKETS {
            // Forget senders quiet long enough for their bucket to be full.
            self.buckets.retain(|_, b| {
                now.duration_since(b.last).as_secs_f64() * f64::from(limit.per_sec)
                    < f64::from(limit.burst)
            });
        }
        let bucket = if self.buckets.contains_key(&ip) || self.buckets.len() < MAX_BUCKETS {
            self.buckets
                .entry(ip)
                .or_insert_with(|| Bucket::full(limit, now))
        } else {
            self.shared.get_or_insert_with(|| Bucket::full(limit, now))
        };
        bucket.take(limit, now)
    }
}

/// The receiver's state, shared by the listener tasks.
pub struct Receiver {
    cfg: Arc<SyslogConfig>,
    publisher: Publisher,
    pending: Pending,
    limiter: Limiter,
    /// Encode buffer for log batches: allocated once, reused.
    encode_buf: Vec<u8>,
    warn_rate: Throttle,
    warn_dropped: Throttle,
}

impl Receiver {
    /// A receiver publishing through `publisher`.
    pub fn new(cfg: Arc<SyslogConfig>, publisher: Publisher) -> Receiver {
        let pending = Pending::new(cfg.pending_max_bytes, publisher.site(), publisher.boot());
        Receiver {
            cfg,
            publisher,
            pending,
            limiter: Limiter::default(),
            encode_buf: vec![0; LOG_BUF_LEN],
            warn_rate: Throttle::default(),
            warn_dropped: Throttle::default(),
        }
    }

    fn counters(&self) -> &Counters {
        self.publisher.counters()
    }

    /// The settings in force.
    pub fn config(&self) -> &Arc<SyslogConfig> {
        &self.cfg
    }

    /// Switches to new settings (config reload): allow list, names, zones,
    /// rate limits, line and connection limits apply to the next line or
    /// connection. `pending_max_bytes` applies from the next start.
    pub fn set_config(&mut self, cfg: Arc<SyslogConfig>) {
        if cfg.pending_max_bytes != self.cfg.pending_max_bytes {
            tracing::warn!(
                "syslog.pending_max_bytes changes only when the agent restarts; the other syslog \
                 settings apply now"
            );
        }
        self.cfg = cfg;
    }

    /// Whether `ip` may send; counts a refusal.
    pub fn admit(&self, ip: IpAddr) -> bool {
        let ok = self.cfg.allowed(ip);
        if !ok {
            Counters::inc(&self.counters().syslog_denied);
        }
        ok
    }

    /// Handles one received line from an allowed sender.
    pub fn ingest(&mut self, ip: IpAddr, line: &[u8], truncated: bool, now: Instant) {
        let c = self.publisher.counters();
        Counters::inc(&c.syslog_received);
        let policy = self.cfg.policy(ip);
        if !self.limiter.allow(ip, policy.rate_limit, now) {
            Counters::inc(&c.syslog_rate_limited);
            if let Some(held) = self.warn_rate.ready(now) {
                tracing::warn!(
                    sender = %ip,
                    limit_per_sec = policy.rate_limit.per_sec,
                    earlier_warnings_suppressed = held,
                    "Syslog sender over its rate limit; lines dropped (counted in syslog_rate_limited)"
                );
            }
            return;
        }
        let rx = now_ms();
        let ctx = ParseCtx {
            rx_ms: rx,
            tz_offset_secs: policy.tz_offset_secs,
        };
        let rec = parse::parse(line, &ctx);
        Counters::inc(match rec.format {
            LogFormat::Rfc5424 => &c.syslog_rfc5424,
            LogFormat::Rfc3164 => &c.syslog_rfc3164,
            LogFormat::Vendor => &c.syslog_vendor,
            LogFormat::NoTimestamp => &c.syslog_no_timestamp,
            LogFormat::Raw => &c.syslog_raw,
        });
        if truncated {
            Counters::inc(&c.syslog_truncated);
        }
        let mut ip_text: heapless::String<48> = heapless::String::new();
        // 48 bytes fit any IPv6 text form; on failure the field is empty.
        let _ = std::fmt::Write::write_fmt(&mut ip_text, format_args!("{ip}"));
        let host: &[u8] = match policy.host {
            Some(h) => h.as_bytes(),
            None if !rec.host.is_empty() => rec.host,
            None => ip_text.as_bytes(),
        };
        let added = self.pending.add(
            &Input {
                ts: rec.ts,
                rx,
                ip: &ip_text,
                host,
                app: rec.app,
                procid: rec.procid,
                msgid: rec.msgid,
                facility: rec.facility,
                severity: rec.severity,
                format: rec.format,
                msg: rec.msg,
                sd: rec.sd,
                truncated,
            },
            now,
        );
        self.count_dropped(added.dropped, now);
        if added.closed {
            self.offer(false);
        }
    }

    fn count_dropped(&mut self, n: u64, now: Instant) {
        if n == 0 {
            return;
        }
        Counters::add(&self.counters().syslog_dropped, n);
        if let Some(held) = self.warn_dropped.ready(now) {
            tracing::warn!(
                records = n,
                pending_max_bytes = self.cfg.pending_max_bytes,
                earlier_warnings_suppressed = held,
                "Syslog memory full while the uplink is slow or down; oldest records dropped \
                 (counted in syslog_dropped)"
            );
        }
    }

    /// Pushes waiting batches to the outbox (which never refuses: when
    /// full it drops by class, logs first, and counts). Returns whether
    /// batches are still waiting.
    pub fn offer(&mut self, _shutting_down: bool) -> bool {
        while let Some(batch) = self.pending.front() {
            let records = batch.records();
            match self.publisher.publish_log(&mut self.encode_buf, &records) {
                Ok(_) => {}
                Err(NotQueued::QueueFull) => break,
                Err(NotQueued::Encode) => {
                    // Logged by the publisher; cannot succeed later either.
                    Counters::add(&self.counters().syslog_dropped, records.len() as u64);
                }
            }
            drop(records);
            self.pending.pop_front();
        }
        self.pending.has_closed()
    }

    /// Timer work: closes the open batch when it is `batch_max_wait` old
    /// (unless batches are already waiting for the uplink: then it keeps
    /// filling, so an outage produces full batches) and offers batches.
    pub fn tick(&mut self, now: Instant) {
        let blocked = self.offer(false);
        if !blocked && self.pending.close_if(now, self.cfg.batch_max_wait, false) {
            self.offer(false);
        }
    }

    /// Closes the open batch and offers everything, using the whole queue.
    /// Returns whether batches are still waiting.
    pub fn flush_for_shutdown(&mut self, now: Instant) -> bool {
        self.pending.close_if(now, Duration::ZERO, true);
        self.offer(true)
    }

    /// Counts what is still pending as dropped (at the end of shutdown).
    pub fn drop_remaining(&mut self) -> u64 {
        let mut n = 0;
        while let Some(b) = self.pending.pop_front() {
            n += b.len() as u64;
        }
        Counters::add(&self.counters().syslog_dropped, n);
        n
    }
}

/// The receiver shared between tasks.
pub type Shared = Arc<Mutex<Receiver>>;

pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Receiver> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Plain words for a failed bind, naming the address and what to do.
pub fn bind_error(proto: &str, addr: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            "cannot listen for syslog on {proto} {addr}: permission denied. Ports below 1024 need \
             root or the CAP_NET_BIND_SERVICE capability (`setcap cap_net_bind_service=+ep \
             /usr/bin/sitewatch-agent`, or AmbientCapabilities=CAP_NET_BIND_SERVICE in a systemd \
             unit); or listen on {UNPRIVILEGED_PORT} instead and point the devices there"
        ),
        io::ErrorKind::AddrInUse => format!(
            "cannot listen for syslog on {proto} {addr}: the port is already in use (another \
             syslog daemon such as syslog-ng, rsyslog or logd?); stop it or choose another port"
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("cannot listen for syslog on {proto} {addr}: this machine has no such address")
        }
        _ => format!("cannot listen for syslog on {proto} {addr}: {e}"),
    }
}

/// Binds a UDP socket, asking for a larger receive buffer.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let std_sock = std::net::UdpSocket::bind(addr)?;
    std_sock.set_nonblocking(true)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&std_sock, UDP_RCVBUF);
    UdpSocket::from_std(std_sock)
}

/// Binds a TCP listener.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

/// Waits until `bind` succeeds, retrying every [`REBIND_EVERY`]; logs the
/// first failure as an error and later ones at debug level. `None` when
/// stopped first.
async fn bind_retrying<T>(
    proto: &str,
    addr: SocketAddr,
    first: Option<io::Result<T>>,
    bind: impl Fn(SocketAddr) -> io::Result<T>,
    stop: &CancellationToken,
) -> Option<T> {
    let mut attempt = first.unwrap_or_else(|| bind(addr));
    let mut logged = false;
    loop {
        match attempt {
            Ok(s) => {
                if logged {
                    tracing::info!(%addr, proto, "Syslog listener is up after all");
                }
                return Some(s);
            }
            Err(e) => {
                let words = bind_error(proto, addr, &e);
                if logged {
                    tracing::debug!("{words}; retrying");
                } else {
                    tracing::error!(
                        "{words}. Other sources keep running; retrying every {} s",
                        REBIND_EVERY.as_secs()
                    );
                    logged = true;
                }
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(REBIND_EVERY) => {}
        }
        attempt = bind(addr);
    }
}

/// One UDP listener: reads datagrams until `stop`.
pub async fn udp(
    addr: SocketAddr,
    first: Option<io::Result<UdpSocket>>,
    shared: Shared,
    stop: CancellationToken,
) {
    let Some(sock) = bind_retrying("UDP", addr, first, bind_udp, &stop).await else {
        return;
    };
    tracing::info!(%addr, "Listening for syslog on UDP");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut warn = Throttle::default();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = sock.readable() => {
                if let Err(e) = r {
                    tracing::error!(%addr, err = %e, "Syslog UDP socket failed");
                    return;
                }
            }
        }
        let now = Instant::now();
        let mut g = lock(&shared);
        let max_line = g.config().max_line_bytes;
        for _ in 0..UDP_BATCH {
            match sock.try_recv_from(&mut buf) {
                Ok((n, peer)) => {
                    let ip = peer.ip().to_canonical();
                    if !g.admit(ip) {
                        if let Some(held) = warn.ready(now) {
                            tracing::warn!(
                                sender = %ip,
                                earlier_warnings_suppressed = held,
                                "Syslog from a sender not in syslog.allow; ignored (counted in syslog_denied)"
                            );
                        }
                        continue;
                    }
                    let take = n.min(max_line);
                    g.ingest(ip, &buf[..take], n > max_line, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors and the like: not fatal.
                    if let Some(held) = warn.ready(now) {
                        tracing::debug!(err = %e, held, "Syslog UDP receive error");
                    }
                    break;
                }
            }
        }
    }
}

/// One TCP listener: accepts connections until `stop`, then waits for
/// its connections to finish.
pub async fn tcp(
    addr: SocketAddr,
    first: Option<io::Result<TcpListener>>,
    shared: Shared,
    open: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let Some(listener) = bind_retrying("TCP", addr, first, bind_tcp, &stop).await else {
        return;
    };
    tracing::info!(%addr, "Listening for syslog on TCP");
    let mut conns = JoinSet::new();
    let mut warn = Throttle::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little.
                if let Some(held) = warn.ready(Instant::now()) {
                    tracing::warn!(%addr, err = %e, held, "Cannot accept a syslog connection");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        let cfg = Arc::clone(lock(&shared).config());
        if !lock(&shared).admit(ip) {
            if let Some(held) = warn.ready(Instant::now()) {
                tracing::warn!(
                    sender = %ip,
                    earlier_warnings_suppressed = held,
                    "Syslog connection from a sender not in syslog.allow; closed"
                );
            }
            continue;
        }
        if open.fetch_add(1, Ordering::Relaxed) >= cfg.max_tcp_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            Counters::inc(&lock(&shared).counters().syslog_tcp_refused);
            if let Some(held) = warn.ready(Instant::now()) {
                tracing::warn!(
                    sender = %ip,
                    max = cfg.max_tcp_connections,
                    earlier_warnings_suppressed = held,
                    "Too many syslog TCP connections; new one closed (counted in syslog_tcp_refused)"
                );
            }
            continue;
        }
        let guard = OpenGuard(Arc::clone(&open));
        crate::spawn::spawn_in(
            &mut conns,
            connection(
                stream,
                ip,
                Arc::clone(&shared),
                cfg.max_line_bytes,
                cfg.tcp_idle_timeout,
                stop.clone(),
                guard,
            ),
        );
    }
    // `stop` is cancelled: connections end on their own.
    while conns.join_next().await.is_some() {}
}

/// Decrements the open-connection count when a connection ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One TCP connection: frames and ingests lines until EOF, error, idle
/// timeout or `stop`.
async fn connection(
    stream: TcpStream,
    ip: IpAddr,
    shared: Shared,
    max_line: usize,
    idle: Duration,
    stop: CancellationToken,
    _guard: OpenGuard,
) {
    let mut framer = Framer::new(max_line);
    let mut reported_fallback = false;
    loop {
        let ready = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = tokio::time::timeout(idle, stream.readable()) => r,
        };
        match ready {
            Err(_) => {
                tracing::debug!(sender = %ip, "Syslog TCP connection idle; closed");
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(sender = %ip, err = %e, "Syslog TCP connection failed");
                break;
            }
            Ok(Ok(())) => {}
        }
        let n = match stream.try_read(framer.read_buf()) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(sender = %ip, err = %e, "Syslog TCP read failed");
                break;
            }
        };
        framer.filled(n);
        let now = Instant::now();
        let mut g = lock(&shared);
        while let Some(f) = framer.next_frame() {
            g.ingest(ip, f.data, f.truncated, now);
        }
        drop(g);
        if framer.fell_back() && !reported_fallback {
            reported_fallback = true;
            tracing::warn!(
                sender = %ip,
                "Syslog TCP sender broke octet-counting framing; reading it line by line from here"
            );
        }
    }
    // Whatever is left: an unterminated last line.
    if let Some(f) = framer.finish() {
        let (data, truncated) = (f.data, f.truncated);
        lock(&shared).ingest(ip, data, truncated, Instant::now());
    }
    tracing::debug!(
        sender = %ip,
        octet_counting = framer.mode() == Mode::OctetCounting,
        "Syslog TCP connection closed"
    );
}

/// Timer task: closes aged batches and offers waiting ones.
pub async fn timer(shared: Shared, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        lock(&shared).tick(Instant::now());
    }
}

/// After the listeners stopped: publishes the open batch and everything
/// waiting, giving a full MQTT queue [`SHUTDOWN_FLUSH`] to drain; what is
/// left then is counted as dropped.
pub async fn flush_on_shutdown(shared: &Shared) {
    let deadline = Instant::now() + SHUTDOWN_FLUSH;
    loop {
        let waiting = lock(shared).flush_for_shutdown(Instant::now());
        if !waiting {
            return;
        }
        if Instant::now() >= deadline {
            let n = lock(shared).drop_remaining();
            tracing::warn!(
                records = n,
                "Syslog records still waiting for the uplink at shutdown were dropped"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
