//! The decoded batch both sinks work on, and the pure planning of its
//! `log` messages.
//!
//! Pure; no I/O, and no sink: the sinks import this module, never the
//! other way round. [`Prepared`] holds a batch decoded once (and reused
//! by every retry): [`prepare`] turns every input message into either a
//! [`Decoded`] message or a [`Rejection`], keeping receive order. Before
//! the PostgreSQL write, the writer decides which `log` messages to push
//! to Loki ([`plan`]) and records what Loki did with them in the batch
//! ([`apply`], or [`reject_logs`] when no Loki is configured); the
//! PostgreSQL sink then turns the batch into rows.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_wire::{decode, Message};

use crate::metrics::REASON_LOKI_REJECTED;

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
    /// push, before the database write; see [`apply`]).
    pub log: Option<LogDelivery>,
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

/// A decoded batch, ready to write (and to retry without decoding again).
#[derive(Debug)]
pub struct Prepared<'a> {
    /// The raw messages, in receive order.
    pub msgs: &'a [InMessage<'a>],
    /// Messages that decoded, in receive order.
    pub decoded: Vec<Decoded>,
    /// Messages that did not, in receive order.
    pub rejected: Vec<Rejection>,
}

impl<'a> Prepared<'a> {
    /// Decodes every message of the batch.
    pub fn new(msgs: &'a [InMessage<'a>]) -> Prepared<'a> {
        let (decoded, rejected) = prepare(msgs);
        Prepared {
            msgs,
            decoded,
            rejected,
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

/// A line Loki refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLine {
    /// Position of the record in its message.
    pub record: usize,
    /// HTTP status of the refusal.
    pub status: u16,
    /// Loki's answer (capped).
    pub text: String,
}

/// What Loki did with the lines of one `log` message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOutcome {
    /// Lines Loki accepted.
    pub accepted: u32,
    /// Lines Loki refused.
    pub refused: Vec<RefusedLine>,
}

/// What `log_batches` records about a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogDelivery {
    /// Lines Loki accepted.
    pub pushed: i32,
    /// Lines Loki refused.
    pub refused: i32,
}

/// Identity of a message, as keyed in `log_batches`.
pub type LogId = (String, String, i64);

/// Positions (in `decoded`) of the `log` messages to push: the first copy
/// of each identity that is not in `delivered`.
pub fn plan(decoded: &[Decoded], delivered: &HashSet<LogId>) -> Vec<usize> {
    let mut seen: HashSet<(&str, &str, u64)> = HashSet::new();
    decoded
        .iter()
        .enumerate()
        .filter_map(|(pos, d)| match &d.msg {
            Message::Log(l) => {
                let id = (l.site.as_str(), l.boot.as_str(), l.seq);
                let key = (l.site.clone(), l.boot.clone(), clamp_i64(l.seq));
                (seen.insert(id) && !delivered.contains(&key)).then_some(pos)
            }
            _ => None,
        })
        .collect()
}

/// Every `log` message of the batch becomes a rejection with `reason`
/// (used when no Loki is configured).
pub fn reject_logs(batch: &mut Prepared<'_>, reason: &'static str, detail: &str) {
    let mut kept = Vec::with_capacity(batch.decoded.len());
    for d in std::mem::take(&mut batch.decoded) {
        if matches!(d.msg, Message::Log(_)) {
            if let Some(raw) = batch.msgs.get(d.index) {
                batch
                    .rejected
                    .push(Rejection::new(d.index, raw, reason, detail));
            }
        } else {
            kept.push(d);
        }
    }
    batch.decoded = kept;
    batch.rejected.sort_by_key(|r| r.index);
}

/// Applies push outcomes (`pushed[i]` belongs to `decoded[positions[i]]`)
/// to the batch:
/// * every line accepted: the message gets a [`LogDelivery`] (a
///   `log_batches` row);
/// * some lines refused: the same, plus a `loki_rejected` rejection
///   naming the refused records;
/// * every line refused: the message becomes a `loki_rejected`
///   rejection only (like a `db_error`, it does not count as received in
///   `boots`), and so do its copies in the batch;
/// * `log` messages that were not pushed (already delivered, or a second
///   copy) get a delivery too: their `log_batches` insert conflicts, and
///   they count as duplicates.
pub fn apply(batch: &mut Prepared<'_>, positions: &[usize], pushed: &[JobOutcome]) {
    let mut refused_ids: HashMap<(String, String, u64), String> = HashMap::new();
    let mut drop_positions: HashSet<usize> = HashSet::new();
    for (&pos, o) in positions.iter().zip(pushed) {
        let Some(d) = batch.decoded.get_mut(pos) else {
            continue;
        };
        let Message::Log(log) = &d.msg else {
            continue;
        };
        let total = log.records.len();
        let delivery = LogDelivery {
            pushed: i32::try_from(o.accepted).unwrap_or(i32::MAX),
            refused: i32::try_from(o.refused.len()).unwrap_or(i32::MAX),
        };
        if o.refused.is_empty() {
            d.log = Some(delivery);
            continue;
        }
        let detail = refusal_detail(o, total);
        let id = (log.site.clone(), log.boot.clone(), log.seq);
        if let Some(raw) = batch.msgs.get(d.index) {
            batch
                .rejected
                .push(Rejection::new(d.index, raw, REASON_LOKI_REJECTED, &detail));
        }
        if o.accepted == 0 {
            drop_positions.insert(pos);
            refused_ids.insert(id, detail);
        } else {
            d.log = Some(delivery);
        }
    }
    // Copies of wholly refused messages, and log messages not pushed.
    let pushed_set: HashSet<usize> = positions.iter().copied().collect();
    for (pos, d) in batch.decoded.iter_mut().enumerate() {
        if pushed_set.contains(&pos) {
            continue;
        }
        let Message::Log(log) = &d.msg else {
            continue;
        };
        let id = (log.site.clone(), log.boot.clone(), log.seq);
        if let Some(detail) = refused_ids.get(&id) {
            drop_positions.insert(pos);
            if let Some(raw) = batch.msgs.get(d.index) {
                batch
                    .rejected
                    .push(Rejection::new(d.index, raw, REASON_LOKI_REJECTED, detail));
            }
        } else if d.log.is_none() {
            let n = i32::try_from(log.records.len()).unwrap_or(i32::MAX);
            d.log = Some(LogDelivery {
                pushed: n,
                refused: 0,
            });
        }
    }
    if !drop_positions.is_empty() {
        let decoded = std::mem::take(&mut batch.decoded);
        batch.decoded = decoded
            .into_iter()
            .enumerate()
            .filter(|(pos, _)| !drop_positions.contains(pos))
            .map(|(_, d)| d)
            .collect();
    }
    batch.rejected.sort_by_key(|r| r.index);
}

/// `Loki refused 1 of 2 lines (record 1): 400 <Loki's text>`.
fn refusal_detail(o: &JobOutcome, total: usize) -> String {
    let records: Vec<String> = o
        .refused
        .iter()
        .take(32)
        .map(|r| r.record.to_string())
        .collect();
    let more = if o.refused.len() > 32 { ", ..." } else { "" };
    let mut texts: Vec<String> = Vec::new();
    for r in &o.refused {
        let t = format!("{} {}", r.status, r.text);
        if !texts.contains(&t) && texts.len() < 4 {
            texts.push(t);
        }
    }
    format!(
        "Loki refused {} of {total} lines (record {}{more}): {}",
        o.refused.len(),
        records.join(", "),
        texts.join("; ")
    )
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

    fn log_batch() -> (Vec<u8>, &'static str) {
        let v = golden::VALID
            .iter()
            .find(|v| v.file == "log.json")
            .expect("log vector");
        (v.payload.to_vec(), v.topic)
    }

    #[test]
    fn plan_and_apply() {
        let (payload, topic) = log_batch();
        let hb = golden::VALID
            .iter()
            .find(|v| v.file == "heartbeat.json")
            .expect("heartbeat");
        let at = SystemTime::UNIX_EPOCH;
        let m = |topic, payload| InMessage {
            topic,
            payload,
            received_at: at,
            retained: false,
        };
        // The log batch twice (a redelivery within the batch), a heartbeat.
        let msgs = [
            m(topic, &payload),
            m(hb.topic, hb.payload),
            m(topic, &payload),
        ];
        let prepared = Prepared::new(&msgs);
        assert_eq!(plan(&prepared.decoded, &HashSet::new()), [0]);
        let delivered: HashSet<LogId> =
            [("lokasi1".to_owned(), "9f2c4e1a7b3d5608".to_owned(), 5i64)].into();
        assert!(plan(&prepared.decoded, &delivered).is_empty());

        // Partly refused: both copies stay, one rejection row.
        let mut b = Prepared::new(&msgs);
        let refused = JobOutcome {
            accepted: 1,
            refused: vec![RefusedLine {
                record: 1,
                status: 400,
                text: "too long".into(),
            }],
        };
        apply(&mut b, &[0], std::slice::from_ref(&refused));
        assert_eq!(b.decoded.len(), 3);
        assert_eq!(
            b.decoded[0].log,
            Some(LogDelivery {
                pushed: 1,
                refused: 1
            })
        );
        assert!(b.decoded[2].log.is_some());
        assert_eq!(b.rejected.len(), 1);
        assert_eq!(b.rejected[0].reason, "loki_rejected");
        assert_eq!(
            b.rejected[0].detail,
            "Loki refused 1 of 2 lines (record 1): 400 too long"
        );

        // Wholly refused: both copies become rejections.
        let mut b = Prepared::new(&msgs);
        let all = JobOutcome {
            accepted: 0,
            refused: vec![
                RefusedLine {
                    record: 0,
                    status: 400,
                    text: "x".into(),
                },
                RefusedLine {
                    record: 1,
                    status: 400,
                    text: "x".into(),
                },
            ],
        };
        apply(&mut b, &[0], &[all]);
        assert_eq!(b.decoded.len(), 1, "only the heartbeat is left");
        assert_eq!(
            b.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 2]
        );

        // No sink: every log message rejected.
        let mut b = Prepared::new(&msgs);
        reject_logs(&mut b, "no_log_sink", "none");
        assert_eq!(b.decoded.len(), 1);
        assert_eq!(b.rejected.len(), 2);
        assert!(b.rejected.iter().all(|r| r.reason == "no_log_sink"));
    }
}
