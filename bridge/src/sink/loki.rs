//! Loki sink: delivers the syslog records of `log` messages to Grafana
//! Loki's push API, before the batch's PostgreSQL transaction.
//!
//! * [`config`]: the `[loki]` section, raw and validated;
//! * [`labels`]: records → stream labels, entries, metadata (pure);
//! * [`proto`]: the push protobuf messages and body encoding;
//! * [`client`]: one HTTP request and the meaning of its answer;
//! * this module: pushes and retries ([`LokiSink::deliver`]). Which
//!   messages to push and how the outcome changes the batch written to
//!   PostgreSQL is pure planning in [`super::batch`] (`plan`, `apply`,
//!   `reject_logs`).
//!
//! # Delivery
//! The writer ([`crate::writer`]) handles one batch in this order:
//! 1. looks up which `log` messages (site, boot, seq) are already in
//!    `log_batches` (delivered by an earlier attempt or bridge);
//! 2. pushes the others ([`super::batch::plan`]: first copy of each
//!    identity) in as few requests as `loki.max_push_bytes` allows,
//!    entries of each stream sorted by time;
//! 3. writes the batch to PostgreSQL in one transaction, including one
//!    `log_batches` row per delivered message ([`super::batch::apply`]);
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
pub mod config;
pub mod labels;
pub mod proto;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sitewatch_mqtt::Backoff;
use sitewatch_wire::payload::Log;

use self::client::{Answer, LokiClient, MAX_RETRY_AFTER};
use self::config::LokiSettings;
use self::labels::{BatchId, Limits, Line, MapOptions};
use self::proto::{PushRequest, StreamAdapter};
use super::batch::{JobOutcome, RefusedLine};
use crate::health::Health;
use crate::metrics::{Metrics, ResultLabel};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
