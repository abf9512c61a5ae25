//! The publish queue: what sources hand their messages to.
//!
//! [`Publisher`] is a small cloneable handle shared by every source and by
//! the MQTT uplink. It owns the message identity of this boot (site, boot
//! id, sequence number) and the agent counters. A source builds its payload
//! from a [`Header`] the publisher stamps; the publisher encodes it with
//! `sitewatch_wire::encode` into a stack buffer and offers it to the MQTT
//! client's bounded request queue without waiting. Log batches, which are
//! up to
//! [`LOG_BUF_LEN`](sitewatch_wire::payload::LOG_BUF_LEN) long, are encoded into a heap buffer the syslog
//! receiver allocates once and reuses ([`Publisher::publish_log`]); they
//! may use only part of the queue ([`LOG_QUEUE_SLOTS`]) so a log flood on
//! a slow uplink cannot crowd out heartbeats.
//!
//! This module must not block or await: live sources never wait on the
//! uplink (see [`QUEUE_CAPACITY`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Publish, QoS};
use serde::Serialize;
use sitewatch_wire::payload::{
    AgentCounters, Header, LogOut, LogRecordOut, OfflineReason, State, StatusOut, DISK_BUF_LEN,
    HEARTBEAT_BUF_LEN, STATUS_BUF_LEN,
};
use sitewatch_wire::topic::{Kind, Topic};

use crate::AGENT_VERSION;

/// Capacity of the MQTT client's request queue, in messages.
///
/// When full (the broker is unreachable, or the link is slower than the
/// sources), [`Publisher::publish`] drops the new message instead of
/// waiting, logs it at debug level and counts it in `counters.dropped`.
/// A dropped message still took its sequence number, so the bridge sees
/// the loss as a gap in `seq`. 64 messages is about 20
/// minutes of default heartbeat and disk traffic; a durable outbox will
/// replace this policy later.
pub const QUEUE_CAPACITY: usize = 64;

/// How many of the [`QUEUE_CAPACITY`] slots log batches may occupy; the
/// rest stay free for heartbeats and disk reports. Batches that find no
/// slot wait in the syslog receiver's bounded memory instead.
pub const LOG_QUEUE_SLOTS: u64 = 32;

/// Largest encode buffer any kind needs, taken on the stack per publish.
const MAX_BUF_LEN: usize = {
    let a = if STATUS_BUF_LEN > HEARTBEAT_BUF_LEN {
        STATUS_BUF_LEN
    } else {
        HEARTBEAT_BUF_LEN
    };
    if a > DISK_BUF_LEN {
        a
    } else {
        DISK_BUF_LEN
    }
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
    /// Messages handed to the MQTT client.
    pub published: AtomicU64,
    /// PUBACKs received.
    pub acked: AtomicU64,
    /// Connections after the first.
    pub reconnects: AtomicU64,
    /// Failed connection attempts.
    pub connect_errors: AtomicU64,
    /// Messages dropped because the queue was full.
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
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// The request queue was full (or the uplink is gone).
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
    client: AsyncClient,
    status_topic: String,
    heartbeat_topic: String,
    disk_topic: String,
    log_topic: String,
    /// Messages handed to the client's request queue.
    queued: AtomicU64,
    /// Messages that left that queue, as far as the uplink can tell
    /// (see [`Publisher::note_sent`]).
    left: AtomicU64,
}

impl Publisher {
    /// Creates the handle. `site` must be valid (checked by config).
    pub fn new(
        site: &str,
        boot: String,
        heartbeat_secs: u32,
        client: AsyncClient,
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
                status_topic: topic(Kind::Status)?,
                heartbeat_topic: topic(Kind::Heartbeat)?,
                disk_topic: topic(Kind::Disk)?,
                log_topic: topic(Kind::Log)?,
                queued: AtomicU64::new(0),
                left: AtomicU64::new(0),
                client,
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
            _ => &self.inner.status_topic,
        }
    }

    /// Stamps a header with the next sequence number, builds the payload
    /// with `build`, encodes it and offers it to the MQTT queue without
    /// waiting. On a full queue the message is dropped and counted.
    pub fn publish<'s, T, F>(&'s self, kind: Kind, build: F) -> Result<u64, NotQueued>
    where
        T: Serialize,
        F: FnOnce(Header<'s>) -> T,
    {
        let client = &self.inner.client;
        let mut buf = [0u8; MAX_BUF_LEN];
        let res = self.stamp(kind, &mut buf, false, build, |topic, retain, payload| {
            client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_ok()
        });
        if res.is_ok() {
            self.inner.queued.fetch_add(1, Ordering::Relaxed);
        }
        if res == Err(NotQueued::QueueFull) {
            Counters::inc(&self.inner.counters.dropped);
            tracing::debug!(kind = %kind, "Publish queue full; message dropped");
        }
        res
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
        self.stamp(kind, &mut buf, false, build, |topic, retain, payload| {
            let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
            p.retain = retain;
            out = Some(p);
            true
        })
        .ok()?;
        out
    }

    /// Whether a log batch may be offered to the request queue now:
    /// fewer than [`LOG_QUEUE_SLOTS`] messages seem to wait in it (all
    /// [`QUEUE_CAPACITY`] slots when `shutting_down`, as no heartbeat
    /// follows). An estimate: see [`Publisher::note_sent`].
    pub fn log_room(&self, shutting_down: bool) -> bool {
        let queued = self.inner.queued.load(Ordering::Relaxed);
        let left = self.inner.left.load(Ordering::Relaxed);
        let depth = queued.saturating_sub(left);
        let slots = if shutting_down {
            QUEUE_CAPACITY as u64
        } else {
            LOG_QUEUE_SLOTS
        };
        depth < slots
    }

    /// Called by the uplink for each PUBLISH it takes from its queues
    /// (rumqttc's `Outgoing::Publish`), so [`Publisher::log_room`] can
    /// estimate the request queue's depth. The uplink's own messages and
    /// retransmissions count too, which only makes the estimate low.
    pub(crate) fn note_sent(&self) {
        self.inner.left.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by the uplink when a connection drops: rumqttc then empties
    /// the request queue (clean session: those messages are lost), so the
    /// depth estimate restarts at zero.
    pub(crate) fn note_queue_drained(&self) {
        let queued = self.inner.queued.load(Ordering::Relaxed);
        self.inner.left.fetch_max(queued, Ordering::Relaxed);
    }

    /// Publishes one `log` batch, encoding it into `buf` (at least
    /// [`LOG_BUF_LEN`](sitewatch_wire::payload::LOG_BUF_LEN) bytes, owned by the caller and reused). Unlike
    /// [`Publisher::publish`], a full queue gives the sequence number back
    /// and returns [`NotQueued::QueueFull`]: the caller keeps the batch and
    /// tries again later, so nothing is lost or counted yet.
    pub fn publish_log(
        &self,
        buf: &mut [u8],
        records: &[LogRecordOut<'_>],
    ) -> Result<u64, NotQueued> {
        let client = &self.inner.client;
        let res = self.stamp(
            Kind::Log,
            buf,
            true,
            |h| LogOut::new(h, records),
            |topic, retain, payload| {
                client
                    .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                    .is_ok()
            },
        );
        if res.is_ok() {
            self.inner.queued.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// Common path: lock seq, stamp, encode into `buf`, hand over, commit
    /// seq. With `give_back`, a refused hand-over returns the number.
    fn stamp<'s, T, F>(
        &'s self,
        kind: Kind,
        buf: &mut [u8],
        give_back: bool,
        build: F,
        hand_over: impl FnOnce(&str, bool, Vec<u8>) -> bool,
    ) -> Result<u64, NotQueued>
    where
        T: Serialize,
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
        let n = match sitewatch_wire::encode(&msg, buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(kind = %kind, err = %e, "Cannot encode message; dropped");
                Counters::inc(&self.inner.counters.dropped);
                return Err(NotQueued::Encode);
            }
        };
        // rumqttc takes ownership of the payload: this copy is the one
        // allocation per message.
        if !hand_over(self.topic(kind), kind.retained(), buf[..n].to_vec()) {
            if give_back {
                *seq -= 1;
            }
            return Err(NotQueued::QueueFull);
        }
        Counters::inc(&self.inner.counters.published);
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
    use rumqttc::{MqttOptions, Request};
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

    #[test]
    fn dropped_messages_leave_a_seq_gap() {
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("t", "localhost", 1), 2);
        let p = Publisher::new("lokasi1", "0123456789abcdef".into(), 30, client).expect("ok");
        let hb = |h| HeartbeatOut::new(h, AGENT_VERSION, 30);
        assert_eq!(p.publish(Kind::Heartbeat, hb), Ok(1));
        assert_eq!(p.publish(Kind::Heartbeat, hb), Ok(2));
        // Queue (capacity 2) is full now: dropped; seq 3 becomes a gap.
        assert_eq!(p.publish(Kind::Heartbeat, hb), Err(NotQueued::QueueFull));
        let c = p.counters().snapshot();
        assert_eq!((c.published, c.dropped), (2, 1));
        // The uplink's own messages never wait in that queue.
        let birth = p
            .stamp_for_uplink(Kind::Status, |h| p.status(h, State::Online, None, 1))
            .expect("birth");
        assert!(birth.retain);
        let m = sitewatch_wire::decode(&birth.topic, &birth.payload).expect("decodes");
        assert_eq!(m.identity(), ("lokasi1", "0123456789abcdef", 4));
        assert_eq!(p.counters().snapshot().published, 3);

        // What was queued decodes, with consecutive seqs, not retained.
        eventloop.clean();
        let seqs: Vec<u64> = eventloop
            .pending
            .iter()
            .map(|r| match r {
                Request::Publish(p) => {
                    assert!(!p.retain);
                    assert_eq!(p.topic, "sitewatch/v1/lokasi1/heartbeat");
                    let m = sitewatch_wire::decode(&p.topic, &p.payload).expect("decodes");
                    assert!(matches!(m, Message::Heartbeat(_)));
                    m.identity().2
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn will_is_offline_lost_seq0() {
        let (client, _el) = AsyncClient::new(MqttOptions::new("t", "localhost", 1), 1);
        let p = Publisher::new("s", "abc".into(), 15, client).expect("ok");
        let will = p.will_payload(7);
        match sitewatch_wire::decode(p.status_topic(), &will).expect("decodes") {
            Message::Status(s) => {
                assert_eq!(s.seq, 0);
                assert_eq!(s.session, 7);
                assert_eq!(s.state, State::Offline);
                assert_eq!(s.reason, Some(OfflineReason::Lost));
                assert_eq!(s.heartbeat_secs, 15);
                assert_eq!(s.agent_version, AGENT_VERSION);
            }
            other => panic!("{other:?}"),
        }
    }
}
