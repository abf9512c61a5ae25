//! Decoding a batch of raw MQTT messages into rows to store.
//!
//! Pure; no I/O. [`prepare`] turns every input message into either a
//! [`Decoded`] message or a [`Rejection`], keeping receive order. The
//! PostgreSQL sink then turns these into column arrays.
//!
//! Value conversions (documented here because they are part of the
//! schema's contract):
//! * unsigned 64-bit wire values above `i64::MAX` are clamped to
//!   `i64::MAX` ([`clamp_i64`]), 32-bit ones above `i32::MAX` to
//!   `i32::MAX` ([`clamp_i32`]);
//! * agent timestamps after 9999-12-31 are clamped to that instant
//!   ([`clamp_ts_ms`]), so that no timestamp can overflow PostgreSQL;
//! * NUL characters, which PostgreSQL `text` cannot hold, are replaced by
//!   U+FFFD in the topic and detail of a rejection ([`sanitize`]). In a
//!   valid payload they make PostgreSQL refuse the row, and the message is
//!   rejected as `db_error`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_wire::{decode, Message};

/// Most payload bytes kept in `rejected_messages.payload`.
pub const REJECTED_PAYLOAD_CAP: usize = 64 * 1024;

/// Most characters kept in `rejected_messages.detail` / `topic`.
const TEXT_CAP: usize = 4096;

/// 9999-12-31T23:59:59.999Z in Unix milliseconds.
pub const MAX_TS_MS: u64 = 253_402_300_799_999;

/// One message as received, borrowed from wherever the caller keeps it
/// (the MQTT publish, or a benchmark's generated payloads).
#[derive(Debug, Clone, Copy)]
pub struct InMessage<'a> {
    /// MQTT topic.
    pub topic: &'a str,
    /// Raw payload.
    pub payload: &'a [u8],
    /// Bridge clock at receipt.
    pub received_at: SystemTime,
    /// Whether the broker delivered it as a retained message (a replay of
    /// the last status, not a live message): it then does not count as a
    /// sign of life for `sites.last_seen`, nor for the lag metric.
    pub retained: bool,
}

/// A message that decoded and validated.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Position in the batch (receive order).
    pub index: usize,
    /// The message.
    pub msg: Message,
    /// See [`InMessage::received_at`].
    pub received_at: SystemTime,
    /// See [`InMessage::retained`].
    pub retained: bool,
    /// For a `log` message: what Loki took (set by the writer after the
    /// push, before the database write; see [`super::loki::apply`]).
    pub log: Option<super::loki::LogDelivery>,
}

/// A message to store in `rejected_messages`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Position in the batch (receive order).
    pub index: usize,
    /// Bridge clock at receipt.
    pub received_at: SystemTime,
    /// Topic, sanitized.
    pub topic: String,
    /// Stable code: a `DecodeError::reason()`, `db_error`,
    /// `loki_rejected` or `no_log_sink`.
    pub reason: &'static str,
    /// Human-readable explanation, sanitized.
    pub detail: String,
    /// First [`REJECTED_PAYLOAD_CAP`] bytes of the payload.
    pub payload: Vec<u8>,
    /// Full payload length.
    pub payload_len: i32,
}

impl Rejection {
    /// Builds a rejection for `m` (at position `index`).
    pub fn new(index: usize, m: &InMessage<'_>, reason: &'static str, detail: &str) -> Rejection {
        let keep = m.payload.len().min(REJECTED_PAYLOAD_CAP);
        Rejection {
            index,
            received_at: m.received_at,
            topic: sanitize(m.topic),
            reason,
            detail: sanitize(detail),
            payload: m.payload[..keep].to_vec(),
            payload_len: clamp_i32(u64::try_from(m.payload.len()).unwrap_or(u64::MAX)),
        }
    }
}

/// Decodes every message; valid ones and rejections keep receive order.
pub fn prepare(msgs: &[InMessage<'_>]) -> (Vec<Decoded>, Vec<Rejection>) {
    let mut decoded = Vec::with_capacity(msgs.len());
    let mut rejected = Vec::new();
    for (index, m) in msgs.iter().enumerate() {
        match decode(m.topic, m.payload) {
            Ok(msg) => decoded.push(Decoded {
                index,
                msg,
                received_at: m.received_at,
                retained: m.retained,
                log: None,
            }),
            Err(e) => rejected.push(Rejection::new(index, m, e.reason(), &e.to_string())),
        }
    }
    (decoded, rejected)
}

/// A site's clock skew as measured in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteSkew {
    /// Agent timestamp minus bridge receive time, in ms (positive: the
    /// agent's clock is ahead).
    pub skew_ms: i64,
    /// Receive time of the message it was measured on.
    pub at: SystemTime,
}

/// Per-site clock skew of a batch: for each site, the largest
/// `agent ts - receive time` over its live (not retained) messages.
///
/// Transport delay only ever makes a message look older, so the freshest
/// message of the batch is the best estimate of the clock offset; a
/// message replayed late (a broker queue, the agent's outbox) does not
/// count as skew as long as a fresher message of the same site is in the
/// same batch. Retained copies (replays of the last status) are ignored,
/// and so are Last Wills (seq 0): the agent stamps its Will when it
/// connects, so its age is the session's length, not clock skew.
pub fn site_skews(decoded: &[Decoded]) -> BTreeMap<String, SiteSkew> {
    let mut out: BTreeMap<String, SiteSkew> = BTreeMap::new();
    let will = |d: &&Decoded| matches!(&d.msg, sitewatch_wire::Message::Status(s) if s.seq == 0);
    for d in decoded.iter().filter(|d| !d.retained).filter(|d| !will(d)) {
        let (site, _, _) = d.msg.identity();
        let skew_ms = skew_ms(clamp_ts_ms(d.msg.ts()), d.received_at);
        let e = out.entry(site.to_owned()).or_insert(SiteSkew {
            skew_ms,
            at: d.received_at,
        });
        if skew_ms > e.skew_ms {
            *e = SiteSkew {
                skew_ms,
                at: d.received_at,
            };
        }
    }
    out
}

/// `agent_ms - received_at` in ms, saturating.
pub fn skew_ms(agent_ms: u64, received_at: SystemTime) -> i64 {
    let agent = i128::from(agent_ms);
    let recv = match received_at.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_millis()).unwrap_or(i128::MAX),
    };
    i64::try_from((agent - recv).clamp(i128::from(i64::MIN), i128::from(i64::MAX)))
        .unwrap_or(i64::MAX)
}

/// Whether a skew exceeds the bound (`None`: no bound, never).
pub fn beyond(skew_ms: i64, max: Option<Duration>) -> bool {
    match max {
        None => false,
        Some(max) => {
            let max_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
            skew_ms.unsigned_abs() > max_ms.unsigned_abs()
        }
    }
}

/// Replaces NUL (which PostgreSQL text cannot hold) and caps the length.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(TEXT_CAP)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    if s.chars().nth(TEXT_CAP).is_some() {
        out.push('…');
    }
    out
}

/// `u64` → `bigint`, clamping values above `i64::MAX`.
pub fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `u64`/`u32` → `integer`, clamping values above `i32::MAX`.
pub fn clamp_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Agent timestamp, clamped to [`MAX_TS_MS`].
pub fn clamp_ts_ms(ms: u64) -> u64 {
    ms.min(MAX_TS_MS)
}

/// Agent timestamp (Unix ms) as a `SystemTime`, clamped.
pub fn agent_time(ms: u64) -> SystemTime {
    // Cannot overflow: MAX_TS_MS is far below SystemTime's range.
    UNIX_EPOCH + Duration::from_millis(clamp_ts_ms(ms))
}

/// A `timestamptz` read back from PostgreSQL as Unix ms (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_wire::golden;

    fn msg<'a>(topic: &'a str, payload: &'a [u8]) -> InMessage<'a> {
        InMessage {
            topic,
            payload,
            received_at: UNIX_EPOCH,
            retained: false,
        }
    }

    #[test]
    fn golden_vectors_sort_into_valid_and_rejected() {
        let (big_topic, big) = golden::too_large();
        let mut msgs: Vec<InMessage<'_>> = golden::VALID
            .iter()
            .map(|v| msg(v.topic, v.payload))
            .collect();
        msgs.extend(golden::INVALID.iter().map(|v| msg(v.topic, v.payload)));
        msgs.push(msg(big_topic, &big));
        let (ok, bad) = prepare(&msgs);
        assert_eq!(ok.len(), golden::VALID.len());
        let reasons: Vec<&str> = bad.iter().map(|r| r.reason).collect();
        let mut expected: Vec<&str> = golden::INVALID.iter().map(|v| v.reason).collect();
        expected.push("too_large");
        assert_eq!(reasons, expected);
        // Receive order is kept.
        assert!(ok.windows(2).all(|w| w[0].index < w[1].index));
        let last = bad.last().expect("too_large");
        assert_eq!(last.payload.len(), REJECTED_PAYLOAD_CAP);
        assert_eq!(last.payload_len as usize, big.len());
    }

    #[test]
    fn sanitize_removes_nul_and_caps() {
        assert_eq!(sanitize("a\0b"), "a\u{FFFD}b");
        let long = "x".repeat(TEXT_CAP + 10);
        assert_eq!(sanitize(&long).chars().count(), TEXT_CAP + 1);
        assert_eq!(sanitize("short"), "short");
    }

    #[test]
    fn clamps() {
        assert_eq!(clamp_i64(u64::MAX), i64::MAX);
        assert_eq!(clamp_i64(5), 5);
        assert_eq!(clamp_i32(u64::from(u32::MAX)), i32::MAX);
        assert_eq!(unix_ms(agent_time(u64::MAX)), MAX_TS_MS);
        assert_eq!(unix_ms(agent_time(1_764_284_400_000)), 1_764_284_400_000);
    }

    #[test]
    fn skew_and_bound() {
        let t = UNIX_EPOCH + Duration::from_millis(10_000);
        assert_eq!(skew_ms(12_000, t), 2_000);
        assert_eq!(skew_ms(0, t), -10_000);
        assert_eq!(skew_ms(u64::MAX, UNIX_EPOCH), i64::MAX);
        assert!(!beyond(300_000, Some(Duration::from_secs(300))));
        assert!(beyond(-300_001, Some(Duration::from_secs(300))));
        assert!(beyond(300_001, Some(Duration::from_secs(300))));
        assert!(!beyond(i64::MIN, None));
    }

    #[test]
    fn a_last_will_is_not_clock_skew() {
        // The Will (seq 0) was stamped when the agent connected, an hour
        // before the broker published it; a heartbeat is current.
        let will = golden::VALID
            .iter()
            .find(|v| v.file == "status-offline-lost.json")
            .expect("will vector");
        let hb = golden::VALID
            .iter()
            .find(|v| v.file == "heartbeat.json")
            .expect("heartbeat vector");
        let late = |v: &golden::Vector, ms: u64| InMessage {
            topic: v.topic,
            payload: v.payload,
            received_at: UNIX_EPOCH + Duration::from_millis(ms),
            retained: false,
        };
        // status-offline-lost.json: ts 1764284400000.
        let only_will = [late(will, 1_764_288_000_000)];
        let (ok, _) = prepare(&only_will);
        assert!(site_skews(&ok).is_empty(), "a Will alone measures nothing");
        // heartbeat.json: ts 1764284430000, received 1 s later.
        let both = [late(will, 1_764_288_000_000), late(hb, 1_764_284_431_000)];
        let (ok, _) = prepare(&both);
        let skew = site_skews(&ok);
        assert_eq!(skew.get("lokasi1").map(|s| s.skew_ms), Some(-1_000));
    }
}
