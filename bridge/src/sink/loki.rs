//! Loki sink: delivers the syslog records of `log` messages to Grafana
//! Loki's push API, before the batch's PostgreSQL transaction.
//!
//! * [`labels`]: records → stream labels, entries, metadata (pure);
//! * [`proto`]: the push protobuf messages and body encoding;
//! * [`client`]: one HTTP request and the meaning of its answer;
//! * this module: pushes and retries ([`LokiSink::deliver`]), and how the
//!   outcome changes the batch written to PostgreSQL ([`plan`], [`apply`],
//!   [`reject_logs`]).
//!
//! # Delivery
//! The writer ([`crate::writer`]) handles one batch in this order:
//! 1. looks up which `log` messages (site, boot, seq) are already in
//!    `log_batches` (delivered by an earlier attempt or bridge);
//! 2. pushes the others ([`plan`]: first copy of each identity) in as
//!    few requests as `loki.max_push_bytes` allows, entries of each
//!    stream sorted by time;
//! 3. writes the batch to PostgreSQL in one transaction, including one
//!    `log_batches` row per delivered message ([`apply`]);
//! 4. acknowledges the MQTT messages.
//!
//! A push that fails in a way worth retrying (429, 5xx, 408, transport
//! error or timeout; also 401/403/404 and the like, which need an
//! operator) is retried with the *same* body, with backoff (at least
//! `Retry-After` when Loki sends one, at most [`client::MAX_RETRY_AFTER`]),
//! for as long as it takes: the batch is held, nothing is acknowledged,
//! the broker keeps the rest (backpressure, never dropping).
//!
//! A push that Loki refuses (400 and the other 4xx) is never retried as
//! such. Loki stores the valid entries of a request and refuses the rest
//! (`pkg/distributor/distributor.go`), without saying which; so the
//! request is split in halves, and the halves pushed again, down to
//! single lines, to find the lines refused. Each refused line is counted
//! (`loki_rejected_lines`) and its message stored in `rejected_messages`
//! as `loki_rejected`, with Loki's answer as detail; the other lines are
//! delivered and the message acknowledged. Splitting makes at most
//! [`MAX_ISOLATION_PUSHES`] extra requests per batch; lines still
//! unresolved then are reported refused (Loki may have stored some of
//! them). A poison message therefore never blocks the queue.
//!
//! # Duplicates
//! A crash (or a database failure that outlives the process) between the
//! push (2) and the commit (3) makes the broker redeliver the batch and
//! the bridge push it again. Re-pushed lines carry exactly the same
//! labels, timestamp and line, and Loki ignores an entry identical in
//! timestamp and line to one already in the same stream *while that
//! stream's chunk is still in the ingester's memory* (typically up to an
//! hour or two, `chunk_idle_period` / `max_chunk_age`); after a flush it
//! would store them twice. The same holds for the lines Loki accepted in
//! a refused request and that splitting pushes again. That is the
//! residual duplicate window; `log_batches` closes it for every
//! redelivery after a commit.

pub mod client;
pub mod labels;
pub mod proto;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sitewatch_mqtt::Backoff;
use sitewatch_wire::payload::Log;
use sitewatch_wire::Message;

use self::client::{Answer, LokiClient, MAX_RETRY_AFTER};
use self::labels::{BatchId, Limits, Line, MapOptions};
use self::proto::{PushRequest, StreamAdapter};
use super::batch::{Decoded, Rejection};
use super::postgres::Prepared;
use crate::config::LokiSettings;
use crate::health::Health;
use crate::metrics::{Metrics, ResultLabel, REASON_LOKI_REJECTED};

/// Most extra requests made per batch to find which lines Loki refused.
pub const MAX_ISOLATION_PUSHES: usize = 256;

/// Most bytes of Loki's answer kept per refused line.
const MAX_REFUSAL_TEXT: usize = 1024;

/// A `log` message to deliver.
#[derive(Debug, Clone, Copy)]
pub struct LogJob<'a> {
    /// The message.
    pub log: &'a Log,
    /// Bridge clock at receipt.
    pub received_at: SystemTime,
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

/// What became of one [`LogJob`].
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

/// A push still to make: its pieces, and the refusal of the larger push
/// it was split from (`None` for a first push).
type Work = (Vec<Piece>, Option<(u16, String)>);

/// A run of records of one job inside a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    job: usize,
    start: usize,
    end: usize,
}

/// Pushes to one Loki.
pub struct LokiSink {
    client: LokiClient,
    opts: MapOptions,
    max_push_bytes: usize,
    min_backoff: Duration,
    max_backoff: Duration,
    metrics: Metrics,
    health: Arc<Health>,
}

impl LokiSink {
    /// Builds the sink (no connection yet).
    pub fn new(
        settings: &LokiSettings,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> anyhow::Result<LokiSink> {
        Ok(LokiSink {
            client: LokiClient::new(settings)?,
            opts: MapOptions {
                limits: Limits {
                    max_line_bytes: settings.max_line_bytes,
                    ..Limits::default()
                },
                max_clock_skew: settings.max_clock_skew,
                max_age: settings.max_age,
            },
            max_push_bytes: settings.max_push_bytes,
            min_backoff: settings.min_backoff,
            max_backoff: settings.max_backoff,
            metrics,
            health,
        })
    }

    /// The push URL, for logs.
    pub fn display(&self) -> &str {
        self.client.display()
    }

    /// Delivers every record of `jobs`; returns one outcome per job, in
    /// order. Returns only when each line was accepted or refused: a
    /// retriable failure is retried for as long as it lasts.
    pub async fn deliver(&self, jobs: &[LogJob<'_>]) -> Vec<JobOutcome> {
        let now = SystemTime::now();
        let lines: Vec<Vec<Line>> = jobs
            .iter()
            .map(|j| {
                let id = BatchId {
                    site: &j.log.site,
                    boot: &j.log.boot,
                    seq: j.log.seq,
                };
                j.log
                    .records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| labels::map_record(id, i, r, j.received_at, now, &self.opts))
                    .collect()
            })
            .collect();
        let mut outcomes = vec![JobOutcome::default(); jobs.len()];
        let mut work: VecDeque<Work> = group(&lines, self.max_push_bytes)
            .into_iter()
            .map(|g| (g, None))
            .collect();
        let mut budget = MAX_ISOLATION_PUSHES;
        while let Some((pieces, parent)) = work.pop_front() {
            if let Some((status, text)) = &parent {
                if budget == 0 {
                    let text = format!(
                        "not isolated (more than {MAX_ISOLATION_PUSHES} extra pushes); \
                         Loki refused a push holding this line: {text}"
                    );
                    self.refuse_all(&pieces, *status, &text, &mut outcomes);
                    continue;
                }
                budget -= 1;
            }
            match self.push_pieces(&lines, &pieces).await {
                Ok(()) => {
                    for p in &pieces {
                        if let Some(o) = outcomes.get_mut(p.job) {
                            o.accepted += u32::try_from(p.end - p.start).unwrap_or(u32::MAX);
                        }
                    }
                }
                Err((status, text)) => match split(&pieces) {
                    Some((a, b)) => {
                        if parent.is_none() {
                            tracing::warn!(
                                status, answer = %text,
                                "Loki refused a push; pushing its halves to find the lines it refuses."
                            );
                        }
                        work.push_front((b, Some((status, text.clone()))));
                        work.push_front((a, Some((status, text))));
                    }
                    None => self.refuse_all(&pieces, status, &text, &mut outcomes),
                },
            }
        }
        outcomes
    }

    fn refuse_all(&self, pieces: &[Piece], status: u16, text: &str, out: &mut [JobOutcome]) {
        let text = labels::cut(text, MAX_REFUSAL_TEXT).0;
        let mut lines = 0u64;
        for p in pieces {
            if let Some(o) = out.get_mut(p.job) {
                for record in p.start..p.end {
                    lines += 1;
                    o.refused.push(RefusedLine {
                        record,
                        status,
                        text: text.to_owned(),
                    });
                }
            }
        }
        self.metrics.loki_rejected_lines.inc_by(lines);
        tracing::warn!(
            status, lines, answer = %text,
            "Loki refused log lines; they go to rejected_messages as loki_rejected."
        );
    }

    /// One push of the given records (retried until accepted or refused).
    async fn push_pieces(
        &self,
        lines: &[Vec<Line>],
        pieces: &[Piece],
    ) -> Result<(), (u16, String)> {
        let (req, count, bytes) = build_request(lines, pieces);
        let body = match proto::encode_body(&req) {
            Ok(b) => Bytes::from(b),
            // Only fails for inputs beyond snappy's 4 GiB block limit,
            // which max_push_bytes rules out; refuse rather than loop.
            Err(e) => return Err((0, format!("cannot compress the push body: {e}"))),
        };
        self.send(body, count, bytes).await
    }

    /// Sends one body until Loki accepts or refuses it.
    async fn send(&self, body: Bytes, lines: u64, bytes: u64) -> Result<(), (u16, String)> {
        let m = &self.metrics;
        let mut backoff = Backoff::new(self.min_backoff, self.max_backoff);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            m.loki_request_bytes
                .inc_by(u64::try_from(body.len()).unwrap_or(u64::MAX));
            let started = Instant::now();
            let answer = self.client.push(body.clone()).await;
            m.loki_push_duration_seconds
                .observe(started.elapsed().as_secs_f64());
            let result = |r: &'static str| {
                m.loki_requests
                    .get_or_create(&ResultLabel { result: r })
                    .inc();
            };
            match answer {
                Answer::Accepted => {
                    result("accepted");
                    m.loki_lines_pushed.inc_by(lines);
                    m.loki_bytes_pushed.inc_by(bytes);
                    m.loki_up.set(1);
                    self.health.set_loki_ok();
                    if attempt > 1 {
                        tracing::info!(attempt, "Loki accepted the push after retrying.");
                    }
                    return Ok(());
                }
                Answer::Refused { status, text } => {
                    result("refused");
                    m.loki_up.set(1);
                    self.health.set_loki_ok();
                    return Err((status, text));
                }
                Answer::Retry {
                    status,
                    why,
                    retry_after,
                    misconfigured,
                } => {
                    result(match status {
                        _ if misconfigured => "misconfigured",
                        Some(429) => "rate_limited",
                        Some(_) => "server_error",
                        None => "transport_error",
                    });
                    m.loki_up.set(0);
                    m.loki_retries.inc();
                    self.health.set_loki_failing(why.clone());
                    let wanted = retry_after.map(|d| d.min(MAX_RETRY_AFTER));
                    let delay = backoff.next_delay().max(wanted.unwrap_or_default());
                    if misconfigured {
                        tracing::error!(
                            err = %why, attempt, retry_in = ?delay,
                            "Loki refuses the bridge's requests; check loki.url and the \
                             credentials. Holding the batch (nothing acknowledged)."
                        );
                    } else {
                        tracing::warn!(
                            err = %why, attempt, retry_in = ?delay, ?retry_after,
                            "Push to Loki failed; will retry it (nothing acknowledged meanwhile)."
                        );
                    }
                    // No shutdown check, as for database writes: the
                    // shutdown deadline aborts the writer.
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Splits all lines into pushes of about `max_bytes` (a push holds at
/// least one line), keeping the order.
fn group(lines: &[Vec<Line>], max_bytes: usize) -> Vec<Vec<Piece>> {
    let mut groups = Vec::new();
    let mut cur: Vec<Piece> = Vec::new();
    let mut cur_bytes = 0usize;
    for (job, ls) in lines.iter().enumerate() {
        for (i, l) in ls.iter().enumerate() {
            // Entry framing and the labels (shared per stream in the
            // request, counted per line here: an overestimate).
            let size = l.bytes + l.labels.len() + 32;
            if cur_bytes > 0 && cur_bytes + size > max_bytes {
                groups.push(std::mem::take(&mut cur));
                cur_bytes = 0;
            }
            match cur.last_mut() {
                Some(p) if p.job == job && p.end == i => p.end += 1,
                _ => cur.push(Piece {
                    job,
                    start: i,
                    end: i + 1,
                }),
            }
            cur_bytes += size;
        }
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

/// Halves a refused push: by pieces, else by records; `None` for a
/// single line.
fn split(pieces: &[Piece]) -> Option<(Vec<Piece>, Vec<Piece>)> {
    match pieces {
        [] => None,
        [p] if p.end - p.start <= 1 => None,
        [p] => {
            let mid = p.start + (p.end - p.start) / 2;
            Some((
                vec![Piece { end: mid, ..*p }],
                vec![Piece { start: mid, ..*p }],
            ))
        }
        _ => {
            let (a, b) = pieces.split_at(pieces.len() / 2);
            Some((a.to_vec(), b.to_vec()))
        }
    }
}

/// The request for some pieces: one stream per label set, entries sorted
/// by time (stable, so equal times keep receive order). Returns it with
/// its line count and byte count.
fn build_request(lines: &[Vec<Line>], pieces: &[Piece]) -> (PushRequest, u64, u64) {
    let mut streams: Vec<StreamAdapter> = Vec::new();
    let mut by_labels: HashMap<&str, usize> = HashMap::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    for p in pieces {
        let Some(ls) = lines.get(p.job).and_then(|ls| ls.get(p.start..p.end)) else {
            continue;
        };
        for l in ls {
            let i = *by_labels.entry(l.labels.as_str()).or_insert_with(|| {
                streams.push(StreamAdapter {
                    labels: l.labels.clone(),
                    entries: Vec::new(),
                    hash: 0,
                });
                streams.len() - 1
            });
            if let Some(s) = streams.get_mut(i) {
                s.entries.push(l.entry.clone());
            }
            count += 1;
            bytes += u64::try_from(l.bytes).unwrap_or(u64::MAX);
        }
    }
    for s in &mut streams {
        s.entries.sort_by_key(|e| e.timestamp);
    }
    (
        PushRequest {
            streams,
            format: String::new(),
        },
        count,
        bytes,
    )
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
                let key = (
                    l.site.clone(),
                    l.boot.clone(),
                    super::batch::clamp_i64(l.seq),
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::batch::InMessage;
    use sitewatch_wire::golden;

    fn lines(sizes: &[usize]) -> Vec<Vec<Line>> {
        sizes
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|i| Line {
                        labels: "{a=\"b\"}".into(),
                        entry: proto::EntryAdapter {
                            timestamp: Some(proto::Timestamp {
                                seconds: 100 - i64::try_from(i).expect("small"),
                                nanos: 0,
                            }),
                            line: format!("l{i}"),
                            structured_metadata: vec![],
                            parsed: vec![],
                        },
                        ts_source: labels::TsSource::Device,
                        bytes: 100,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn groups_respect_the_size_and_keep_order() {
        let ls = lines(&[3, 1, 4]);
        // 100 + 7 + 32 = 139 bytes per line: two lines per 300-byte push.
        let g = group(&ls, 300);
        let flat: Vec<(usize, usize, usize)> = g
            .iter()
            .flatten()
            .map(|p| (p.job, p.start, p.end))
            .collect();
        assert_eq!(
            flat,
            [(0, 0, 2), (0, 2, 3), (1, 0, 1), (2, 0, 2), (2, 2, 4)]
        );
        assert_eq!(g.len(), 4);
        assert!(g
            .iter()
            .all(|p| p.iter().map(|x| x.end - x.start).sum::<usize>() <= 2));
        // Everything in one push when it fits.
        assert_eq!(group(&ls, 1 << 20).len(), 1);
    }

    #[test]
    fn split_halves_pieces_then_records() {
        let p = |job, start, end| Piece { job, start, end };
        assert_eq!(
            split(&[p(0, 0, 4), p(1, 0, 2), p(2, 0, 1)]),
            Some((vec![p(0, 0, 4)], vec![p(1, 0, 2), p(2, 0, 1)]))
        );
        assert_eq!(
            split(&[p(0, 0, 5)]),
            Some((vec![p(0, 0, 2)], vec![p(0, 2, 5)]))
        );
        assert_eq!(split(&[p(0, 3, 4)]), None);
    }

    #[test]
    fn request_sorts_each_stream_by_time() {
        let ls = lines(&[3, 2]);
        let (req, count, bytes) = build_request(
            &ls,
            &[
                Piece {
                    job: 0,
                    start: 0,
                    end: 3,
                },
                Piece {
                    job: 1,
                    start: 0,
                    end: 2,
                },
            ],
        );
        assert_eq!((count, bytes), (5, 500));
        assert_eq!(req.streams.len(), 1);
        let secs: Vec<i64> = req.streams[0]
            .entries
            .iter()
            .map(|e| e.timestamp.expect("ts").seconds)
            .collect();
        assert_eq!(secs, [98, 99, 99, 100, 100]);
        // Stable: equal times keep receive order (job 0 before job 1).
        let lines: Vec<&str> = req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(lines, ["l2", "l1", "l1", "l0", "l0"]);
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
