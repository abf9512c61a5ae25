//! The publish path: what sources hand their messages to.
//!
//! [`Publisher`] is a small cloneable handle shared by every source and by
//! the MQTT uplink. It owns the message identity of this boot (site, boot
//! id, sequence number) and the agent counters. A source builds its payload
//! from a [`Header`] the publisher stamps; the publisher encodes it with
//! `sitewatch_wire::encode` into a stack buffer and offers it to the MQTT
//! store-and-forward [`Outbox`](crate::uplink::outbox::Outbox) (shared with the
//! uplink through [`link::Shared`]) without waiting; the pump
//! ([`link::pump`]) hands records to MQTT and they leave the outbox only
//! on their PUBACK. When the outbox is full it drops by class (logs
//! first) and counts every drop. Log batches, which are up to
//! [`LOG_BUF_LEN`](sitewatch_wire::payload::LOG_BUF_LEN) long, are encoded
//! into a heap buffer the syslog receiver allocates once and reuses
//! ([`Publisher::publish_log`]).
//!
//! This module must not block or await: live sources never wait on the
//! uplink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rumqttc::{Publish, QoS};
use serde::Serialize;
use sitewatch_wire::payload::{
    AgentCounters, Header, LogOut, LogRecordOut, OfflineReason, State, StatusOut, DISK_BUF_LEN,
    EVENT_BUF_LEN, HEARTBEAT_BUF_LEN, SMART_BUF_LEN, STATUS_BUF_LEN, STREAM_BUF_LEN,
};
use sitewatch_wire::topic::{Kind, Topic};

use crate::uplink::link::Shared;
use crate::uplink::outbox::{Class, Record};

/// Agent version reported in status, heartbeat and birth messages.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest encode buffer any kind but `log` needs, taken on the stack per
/// publish (32 KiB; sources publish from plain functions, not across an
/// await, so it never lives in a task's state).
const MAX_BUF_LEN: usize = {
    let lens = [
        STATUS_BUF_LEN,
        HEARTBEAT_BUF_LEN,
        DISK_BUF_LEN,
        STREAM_BUF_LEN,
        SMART_BUF_LEN,
        EVENT_BUF_LEN,
    ];
    let mut max = 0;
    let mut i = 0;
    while i < lens.len() {
        if lens[i] > max {
            max = lens[i];
        }
        i += 1;
    }
    max
};

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A new boot id: 16 lowercase hex digits from the OS random source.
///
/// Reads `/dev/urandom`; if that fails (a very bare chroot) it falls back
/// to fastrand, which std seeds from the OS where it can.
pub fn new_boot_id() -> String {
    let mut bytes = [0u8; 8];
    let n = match std::fs::File::open("/dev/urandom") {
        Ok(mut f) => {
            use std::io::Read as _;
            f.read_exact(&mut bytes).map(|()| bytes.len()).unwrap_or(0)
        }
        Err(_) => 0,
    };
    let value = if n == bytes.len() {
        u64::from_le_bytes(bytes)
    } else {
        tracing::warn!("Cannot read /dev/urandom; boot id from fastrand");
        fastrand::u64(..)
    };
    format!("{value:016x}")
}

/// The agent's own counters, shared by all tasks. See
/// [`AgentCounters`] for their meaning.
#[derive(Debug, Default)]
pub struct Counters {
    /// The uplink's own messages (birth, shutdown status) handed to the
    /// MQTT client; outbox records are counted by the outbox.
    pub published: AtomicU64,
    /// PUBACKs received for the uplink's own messages.
    pub acked: AtomicU64,
    /// Connections after the first.
    pub reconnects: AtomicU64,
    /// Failed connection attempts.
    pub connect_errors: AtomicU64,
    /// Messages that could not be encoded or stored (outbox drops are
    /// counted by the outbox).
    pub dropped: AtomicU64,
    /// Failed disk samples (one per mount per sample).
    pub disk_errors: AtomicU64,
    /// Syslog lines received from allowed senders.
    pub syslog_received: AtomicU64,
    /// Syslog lines parsed as RFC 5424.
    pub syslog_rfc5424: AtomicU64,
    /// Syslog lines parsed as RFC 3164.
    pub syslog_rfc3164: AtomicU64,
    /// Syslog lines understood by a vendor rule.
    pub syslog_vendor: AtomicU64,
    /// Syslog lines with a PRI but no timestamp.
    pub syslog_no_timestamp: AtomicU64,
    /// Syslog lines relayed whole (nothing recognised).
    pub syslog_raw: AtomicU64,
    /// Syslog lines cut at the line limit.
    pub syslog_truncated: AtomicU64,
    /// Syslog lines dropped by a rate limit.
    pub syslog_rate_limited: AtomicU64,
    /// Syslog datagrams/connections from senders not allowed.
    pub syslog_denied: AtomicU64,
    /// Syslog records dropped before publishing (memory bound, shutdown).
    pub syslog_dropped: AtomicU64,
    /// Syslog TCP connections refused at the connection limit.
    pub syslog_tcp_refused: AtomicU64,
    /// Wall-clock jumps seen by the heartbeat's clock check.
    pub clock_jumps: AtomicU64,
    /// RTSP probes run.
    pub rtsp_probes: AtomicU64,
    /// SMART readings taken.
    pub smart_reads: AtomicU64,
    /// SMART readings that failed.
    pub smart_errors: AtomicU64,
    /// Files deleted by retention cleanup.
    pub cleanup_deleted: AtomicU64,
    /// Retention cleanup errors.
    pub cleanup_errors: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy for a heartbeat.
    pub fn snapshot(&self) -> AgentCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AgentCounters {
            published: get(&self.published),
            acked: get(&self.acked),
            reconnects: get(&self.reconnects),
            connect_errors: get(&self.connect_errors),
            dropped: get(&self.dropped),
            disk_errors: get(&self.disk_errors),
            syslog_received: get(&self.syslog_received),
            syslog_rfc5424: get(&self.syslog_rfc5424),
            syslog_rfc3164: get(&self.syslog_rfc3164),
            syslog_vendor: get(&self.syslog_vendor),
            syslog_no_timestamp: get(&self.syslog_no_timestamp),
            syslog_raw: get(&self.syslog_raw),
            syslog_truncated: get(&self.syslog_truncated),
            syslog_rate_limited: get(&self.syslog_rate_limited),
            syslog_denied: get(&self.syslog_denied),
            syslog_dropped: get(&self.syslog_dropped),
            syslog_tcp_refused: get(&self.syslog_tcp_refused),
            clock_jumps: get(&self.clock_jumps),
            rtsp_probes: get(&self.rtsp_probes),
            smart_reads: get(&self.smart_reads),
            smart_errors: get(&self.smart_errors),
            cleanup_deleted: get(&self.cleanup_deleted),
            cleanup_errors: get(&self.cleanup_errors),
            // Filled in by Publisher::snapshot.
            ..AgentCounters::default()
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// Not used since the outbox (which drops and counts by class
    /// instead); kept for callers' matches.
    QueueFull,
    /// The payload could not be encoded (a bug; logged).
    Encode,
}

/// Handle through which sources publish. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    site: String,
    boot: String,
    heartbeat_secs: u32,
    /// Last sequence number taken. Locked while a message is stamped,
    /// encoded and queued, so queue order is seq order.
    seq: Mutex<u64>,
    counters: Counters,
    /// What the status file shows ([`crate::status`]).
    board: crate::status::Board,
    shared: Arc<Shared>,
    status_topic: String,
    heartbeat_topic: String,
    disk_topic: String,
    log_topic: String,
    event_topic: String,
    ups_topic: String,
    reach_topic: String,
}

impl Publisher {
    /// Creates the handle. `site` must be valid (checked by config).
    pub fn new(
        site: &str,
        boot: String,
        heartbeat_secs: u32,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Publisher> {
        let topic = |kind| -> anyhow::Result<String> {
            Ok(Topic::new(site, kind, None)
                .map_err(|e| anyhow::anyhow!("site id `{site}`: {e}"))?
                .to_heapless()
                .to_string())
        };
        Ok(Publisher {
            inner: Arc::new(Inner {
                site: site.to_owned(),
                boot,
                heartbeat_secs,
                seq: Mutex::new(0),
                counters: Counters::default(),
                board: crate::status::Board::default(),
                status_topic: topic(Kind::Status)?,
                heartbeat_topic: topic(Kind::Heartbeat)?,
                disk_topic: topic(Kind::Disk)?,
                log_topic: topic(Kind::Log)?,
                event_topic: topic(Kind::Event)?,
                ups_topic: topic(Kind::Ups)?,
                reach_topic: topic(Kind::Reach)?,
                shared,
            }),
        })
    }

    /// Site id.
    pub fn site(&self) -> &str {
        &self.inner.site
    }

    /// Boot id of this process.
    pub fn boot(&self) -> &str {
        &self.inner.boot
    }

    /// Shared counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The connection state and the sources' last results, for the
    /// status file.
    pub fn board(&self) -> &crate::status::Board {
        &self.inner.board
    }

    /// The outbox and its wake-ups, shared with the uplink.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The agent counters with the outbox's figures merged in: messages
    /// handed to MQTT, acknowledged and dropped (outbox drops plus
    /// replaced state records: every seq gap is counted here), and the
    /// `outbox_*` counters.
    pub fn snapshot(&self) -> AgentCounters {
        let mut c = self.inner.counters.snapshot();
        let st = self.inner.shared.lock().outbox.stats();
        c.published += st.sent;
        c.acked += st.acked;
        c.dropped += st.dropped.total() + st.replaced;
        c.outbox_depth = st.depth.total();
        c.outbox_bytes = st.bytes.total();
        c.outbox_in_flight = st.in_flight;
        c.outbox_dropped_log = st.dropped[Class::Log];
        c.outbox_dropped_series = st.dropped[Class::Series];
        c.outbox_dropped_state = st.dropped[Class::State];
        c.outbox_dropped_event = st.dropped[Class::Event];
        c.outbox_replaced = st.replaced;
        c.outbox_requeued = st.requeued;
        c.outbox_replayed = st.replayed;
        c.outbox_corrupt = st.corrupt_skipped;
        c.outbox_fsyncs = st.fsyncs;
        c.outbox_disk_errors = st.disk_errors;
        c
    }

    /// Heartbeat period in seconds, as announced in status messages.
    pub fn heartbeat_secs(&self) -> u32 {
        self.inner.heartbeat_secs
    }

    /// The retained status topic.
    pub fn status_topic(&self) -> &str {
        &self.inner.status_topic
    }

    fn topic(&self, kind: Kind) -> &str {
        match kind {
            Kind::Heartbeat => &self.inner.heartbeat_topic,
            Kind::Disk => &self.inner.disk_topic,
            Kind::Log => &self.inner.log_topic,
            Kind::Event => &self.inner.event_topic,
            Kind::Ups => &self.inner.ups_topic,
            Kind::Reach => &self.inner.reach_topic,
            _ => &self.inner.status_topic,
        }
    }

    /// Stamps a header with the next sequence number, builds the payload
    /// with `build`, encodes it and pushes it to the outbox without
    /// waiting. A full outbox drops (and counts) by class.
    pub fn publish<'s, T, F>(&'s self, kind: Kind, build: F) -> Result<u64, NotQueued>
    where
        T: Serialize,
        F: FnOnce(Header<'s>) -> T,
    {
        let mut buf = [0u8; MAX_BUF_LEN];
        self.stamp(
            kind,
            self.topic(kind),
            &mut buf,
            build,
            sitewatch_wire::encode::<T>,
            |topic, retain, payload, seq| self.push(kind, topic, retain, payload, seq),
        )
    }

    /// Like [`Publisher::publish`] for the kinds with a `{name}` segment
    /// (`stream/{camera}`, `smart/{device}`). `Err(Encode)` if the name is
    /// not valid in a topic (config validation prevents it).
    pub fn publish_named<'s, T, F>(
        &'s self,
        kind: Kind,
        name: &str,
        build: F,
    ) -> Result<u64, NotQueued>
    where
        T: Serialize,
        F: FnOnce(Header<'s>) -> T,
    {
        let topic = match Topic::new(&self.inner.site, kind, Some(name)) {
            Ok(t) => t.to_heapless(),
            Err(e) => {
                tracing::error!(kind = %kind, name, err = %e, "Cannot make a topic; dropped");
                Counters::inc(&self.inner.counters.dropped);
                return Err(NotQueued::Encode);
            }
        };
        let mut buf = [0u8; MAX_BUF_LEN];
        self.stamp(
            kind,
            &topic,
            &mut buf,
            build,
            sitewatch_wire::encode::<T>,
            |topic, retain, payload, seq| self.push(kind, topic, retain, payload, seq),
        )
    }

    /// Pushes one encoded message to the outbox and wakes the pump and the
    /// sync task. False if it cannot be a record (too large: a bug).
    fn push(&self, kind: Kind, topic: &str, retain: bool, payload: Vec<u8>, seq: u64) -> bool {
        let rec = match Record::new(Class::of(kind), topic, payload, retain, seq) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(kind = %kind, err = %e, "Cannot store message; dropped");
                return false;
            }
        };
        let out = {
            let mut link = self.inner.shared.lock();
            // Live or backlog: only the backlog waits for the drain limit.
            if link.connected {
                link.outbox.push_live(rec)
            } else {
                link.outbox.push(rec)
            }
        };
        let dropped = out.dropped.0.iter().map(|&n| u64::from(n)).sum::<u64>();
        if dropped > 0 {
            tracing::debug!(kind = %kind, dropped, "Outbox full; oldest of the lowest class dropped");
        }
        self.inner.shared.work.notify_one();
        self.inner.shared.dirty.notify_one();
        true
    }

    /// Builds a message for the uplink itself (birth, shutdown status),
    /// which inserts it at the front of the connection's queue. Always
    /// takes a sequence number unless encoding fails.
    pub(crate) fn stamp_for_uplink<'s, T, F>(&'s self, kind: Kind, build: F) -> Option<Publish>
    where
        T: Serialize,
        F: FnOnce(Header<'s>) -> T,
    {
        let mut out = None;
        let mut buf = [0u8; MAX_BUF_LEN];
        self.stamp(
            kind,
            self.topic(kind),
            &mut buf,
            build,
            sitewatch_wire::encode::<T>,
            |topic, retain, payload, _seq| {
                let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
                p.retain = retain;
                out = Some(p);
                true
            },
        )
        .ok()?;
        Counters::inc(&self.inner.counters.published);
        out
    }

    /// Publishes one `log` batch, encoding it into `buf` (at least
    /// [`LOG_BUF_LEN`](sitewatch_wire::payload::LOG_BUF_LEN) bytes, owned
    /// by the caller and reused), pushing it to the outbox like
    /// [`Publisher::publish`].
    pub fn publish_log(
        &self,
        buf: &mut [u8],
        records: &[LogRecordOut<'_>],
    ) -> Result<u64, NotQueued> {
        self.stamp(
            Kind::Log,
            self.topic(Kind::Log),
            buf,
            |h| LogOut::new(h, records),
            // The volume: serde-free, same bytes (see `encode_log`).
            |m, b| sitewatch_wire::encode_log(m, b),
            |topic, retain, payload, seq| self.push(Kind::Log, topic, retain, payload, seq),
        )
    }

    /// Common path: lock seq, stamp, encode into `buf`, hand over (to the
    /// outbox, or to the uplink for its own messages), commit seq.
    fn stamp<'s, T, F>(
        &'s self,
        kind: Kind,
        topic: &str,
        buf: &mut [u8],
        build: F,
        encode: impl FnOnce(&T, &mut [u8]) -> Result<usize, sitewatch_wire::EncodeError>,
        hand_over: impl FnOnce(&str, bool, Vec<u8>, u64) -> bool,
    ) -> Result<u64, NotQueued>
    where
        F: FnOnce(Header<'s>) -> T,
    {
        let mut seq = self
            .inner
            .seq
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Every message made takes a number, delivered or not, so the
        // bridge counts a dropped message as a gap (docs/wire.md).
        *seq += 1;
        let next = *seq;
        let header = Header {
            site: &self.inner.site,
            boot: &self.inner.boot,
            seq: next,
            ts: now_ms(),
        };
        let msg = build(header);
        let n = match encode(&msg, buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(kind = %kind, err = %e, "Cannot encode message; dropped");
                Counters::inc(&self.inner.counters.dropped);
                return Err(NotQueued::Encode);
            }
        };
        // The record (or rumqttc) takes ownership of the payload: this
        // copy is the one allocation per message.
        if !hand_over(topic, kind.retained(), buf[..n].to_vec(), next) {
            Counters::inc(&self.inner.counters.dropped);
            return Err(NotQueued::Encode);
        }
        Ok(next)
    }

    /// The status payload for this boot.
    pub(crate) fn status<'a>(
        &'a self,
        h: Header<'a>,
        state: State,
        reason: Option<OfflineReason>,
        session: u32,
    ) -> StatusOut<'a> {
        StatusOut::new(
            h,
            state,
            reason,
            session,
            AGENT_VERSION,
            self.inner.heartbeat_secs,
        )
    }

    /// The Last Will payload for connection number `session`: retained
    /// `offline`/`lost` with seq 0, stamped now.
    pub(crate) fn will_payload(&self, session: u32) -> Vec<u8> {
        let h = Header {
            site: &self.inner.site,
            boot: &self.inner.boot,
            seq: 0,
            ts: now_ms(),
        };
        let msg = self.status(h, State::Offline, Some(OfflineReason::Lost), session);
        let mut buf = [0u8; STATUS_BUF_LEN];
        match sitewatch_wire::encode(&msg, &mut buf) {
            Ok(n) => buf[..n].to_vec(),
            // Cannot happen: a status always fits STATUS_BUF_LEN.
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::link;
    use rumqttc::{AsyncClient, MqttOptions};
    use sitewatch_wire::payload::HeartbeatOut;
    use sitewatch_wire::Message;

    #[test]
    fn boot_ids_are_16_hex_and_differ() {
        let a = new_boot_id();
        let b = new_boot_id();
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert!(sitewatch_wire::payload::validate_boot(&a));
        assert_ne!(a, b);
    }

    /// A publisher over a memory outbox with the given bound.
    pub(crate) fn test_publisher(memory_max_bytes: u64) -> (Publisher, rumqttc::EventLoop) {
        let (client, el) = AsyncClient::new(MqttOptions::new("t", "localhost", 1), 32);
        let cfg = crate::uplink::outbox::OutboxConfig {
            memory_max_bytes,
            ..crate::uplink::outbox::OutboxConfig::default()
        };
        let (outbox, _) = crate::uplink::outbox::Outbox::open(&cfg).expect("opens");
        let shared = Shared::new(link::Link {
            outbox,
            tracker: crate::uplink::pkid::PkidTracker::new(),
            connected: false,
            client,
        });
        let p = Publisher::new("lokasi1", "0123456789abcdef".into(), 30, shared).expect("ok");
        (p, el)
    }

    #[test]
    fn messages_go_to_the_outbox_in_seq_order() {
        let (p, _el) = test_publisher(crate::uplink::outbox::config::default_memory_max_bytes());
        let hb = |h| HeartbeatOut::new(h, AGENT_VERSION, 30);
        assert_eq!(p.publish(Kind::Heartbeat, hb), Ok(1));
        assert_eq!(p.publish(Kind::Heartbeat, hb), Ok(2));
        let c = p.snapshot();
        assert_eq!((c.published, c.dropped, c.outbox_depth), (0, 0, 2));
        // The uplink's own messages never wait in the outbox.
        let birth = p
            .stamp_for_uplink(Kind::Status, |h| p.status(h, State::Online, None, 1))
            .expect("birth");
        assert!(birth.retain);
        let m = sitewatch_wire::decode(&birth.topic, &birth.payload).expect("decodes");
        assert_eq!(m.identity(), ("lokasi1", "0123456789abcdef", 3));
        let c = p.snapshot();
        assert_eq!((c.published, c.outbox_depth), (1, 2));
        // Nothing is handed to MQTT while disconnected.
        assert_eq!(link::pump_once(p.shared()), None);
        assert_eq!(p.shared().lock().outbox.stats().sent, 0);
        p.shared().lock().connected = true;
        assert_eq!(link::pump_once(p.shared()), None);
        let c = p.snapshot();
        assert_eq!((c.published, c.outbox_in_flight), (3, 2));
    }

    #[test]
    fn will_is_offline_lost_seq0() {
        let (p, _el) = test_publisher(crate::uplink::outbox::config::default_memory_max_bytes());
        let will = p.will_payload(7);
        match sitewatch_wire::decode(p.status_topic(), &will).expect("decodes") {
            Message::Status(s) => {
                assert_eq!(s.seq, 0);
                assert_eq!(s.session, 7);
                assert_eq!(s.state, State::Offline);
                assert_eq!(s.reason, Some(OfflineReason::Lost));
                assert_eq!(s.heartbeat_secs, 30);
                assert_eq!(s.agent_version, AGENT_VERSION);
            }
            other => panic!("{other:?}"),
        }
    }
}
