//! The writer: batches received messages, stores each batch in one
//! transaction, and acknowledges it to the broker only after commit.
//!
//! Loop: wait for a first message, collect up to `batch.max_messages` or
//! until `batch.max_wait_ms` has passed, decode, deliver the `log`
//! messages to Loki, write. A failed write is retried with the *same*
//! batch (with backoff and a fresh connection) until it succeeds;
//! meanwhile nothing is acknowledged, the channel fills and the broker
//! holds the rest (backpressure, never dropping). Poison messages cannot
//! block it: the sink isolates and rejects them.
//!
//! Every database failure (connecting, storing a batch, looking up
//! `log_batches`) goes through one retry helper (`DbRetry`), which counts
//! it (`db_errors`, `db_up`), shows it on `/healthz`, logs it and backs
//! off, so the three paths report the same way.
//!
//! `log` messages ([`crate::sink::loki`]): the writer looks up which were
//! delivered already (`log_batches`), pushes the others to Loki (retrying
//! for as long as Loki fails, like the database), and only then writes
//! the batch, with one `log_batches` row per delivered message; acks
//! follow the commit as for every message. Without `[loki]`, `log`
//! messages are stored in `rejected_messages` as `no_log_sink`.
//!
//! Acknowledgements go out in receive order, and only for messages that
//! arrived on the current broker connection (see
//! [`crate::source::Received::generation`]); older ones are redelivered by
//! the broker and then stored as duplicates (no new rows) and acked.
//!
//! The writer never *waits* to hand an ack to rumqttc: acks go through
//! `try_ack` from an in-order queue that is retried every few
//! milliseconds (the queue keeps only packet ids, see `PendingAck`).
//! Awaiting `ack()` can deadlock: the request channel is
//! drained only by the poll task, which may itself be waiting for room in
//! our channel (brokers do not always keep to the Receive Maximum:
//! mosquitto 2.0.11 was seen with more unacknowledged messages in flight
//! to us than it allows; see the test
//! `sustained_load_does_not_deadlock`). The queue holds only
//! committed messages not yet acked, so it is bounded by what the broker
//! has in flight to us.
//!
//! Shutdown: when `shutdown` is cancelled the writer closes the channel,
//! commits and acks what it has and what was already queued, and returns.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use sitewatch_mqtt::Backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::{Metrics, ReasonLabel, SiteLabel, TableLabel, REASON_NO_LOG_SINK};
use crate::notify;
use crate::sink::batch::{self, agent_time, clamp_i64, site_skews, InMessage, LogId, Prepared};
use crate::sink::loki::{LogJob, LokiSink};
use crate::sink::postgres::{BatchOutcome, ConnectError, PgSink};
use crate::source::Received;

/// The writer task's state.
pub struct Writer {
    /// Where batches go.
    pub(crate) sink: PgSink,
    /// Where `log` messages go first; `None` rejects them (`no_log_sink`).
    pub(crate) loki: Option<LokiSink>,
    /// Messages from the source.
    pub(crate) rx: mpsc::Receiver<Received>,
    /// For acknowledgements.
    pub(crate) client: AsyncClient,
    /// Current connection generation (from the source).
    pub(crate) generation: Arc<AtomicU64>,
    /// Most messages per batch.
    pub(crate) max_messages: usize,
    /// Longest wait for a batch to fill.
    pub(crate) max_wait: Duration,
    /// Shared health flags.
    pub(crate) health: Arc<Health>,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// Where a fatal error is reported (the bridge then stops).
    pub(crate) fatal: tokio::sync::watch::Sender<Option<String>>,
    /// Committed messages whose ack is not yet handed to rumqttc, in
    /// receive order: only what the ack needs ([`PendingAck`]), not the
    /// message.
    pub(crate) pending_acks: VecDeque<PendingAck>,
    /// Cancelled once connected with the schema migrated, so that the
    /// tasks reading the bridge's own tables (lease, seq gaps) start after
    /// the first migration instead of logging errors until it has run.
    pub(crate) schema_ready: CancellationToken,
    /// Sign of life for the systemd watchdog ([`crate::notify`]).
    pub(crate) beat: notify::Beat,
}

/// A committed message waiting for its ack to be handed to rumqttc.
///
/// Only the packet id, QoS and connection generation: holding the whole
/// [`Received`] kept its payload (and the read buffer it is a slice of)
/// alive until the ack went out. The broker does not always keep to the
/// Receive Maximum (mosquitto with `max_inflight_messages 0` sends its
/// whole queue), so this queue can grow to everything the broker has in
/// flight to us: while draining 100k queued messages it held tens of
/// thousands of messages, and most of the bridge's 110 MiB peak RSS.
/// At 16 bytes an entry it is a few hundred KiB at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingAck {
    /// MQTT packet id, meaningful on its own connection only.
    pkid: u16,
    /// QoS of the delivery (1 or 2).
    qos: QoS,
    /// Connection generation it arrived on.
    generation: u64,
}

impl PendingAck {
    fn of(r: &Received) -> PendingAck {
        PendingAck {
            pkid: r.publish.pkid,
            qos: r.publish.qos,
            generation: r.generation,
        }
    }

    /// The publish as far as rumqttc's `try_ack` reads it (QoS and
    /// packet id); topic and payload empty, nothing allocated.
    fn publish(&self) -> Publish {
        Publish {
            dup: false,
            qos: self.qos,
            retain: false,
            topic: Bytes::new(),
            pkid: self.pkid,
            payload: Bytes::new(),
            properties: None,
        }
    }
}

/// What [`Writer::next_batch`] found.
enum Next {
    /// A batch is in the buffer.
    Batch,
    /// Nothing yet, but acks are pending: flush them and come back.
    Tick,
    /// Channel closed and empty: done.
    Done,
}

/// How often pending acks are retried while the writer is idle.
const ACK_RETRY: Duration = Duration::from_millis(5);

/// Longest the writer tries to hand over its last acks at shutdown.
const FINAL_ACK_WAIT: Duration = Duration::from_secs(2);

/// `rejected_messages.detail` of a `log` message received without Loki.
const NO_LOG_SINK_DETAIL: &str = "no [loki] section is configured, so this syslog batch \
    cannot be delivered; its payload is kept here";

impl Writer {
    /// Runs until shutdown (after the last batch is committed and acked)
    /// or until the source goes away.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Connect and migrate before taking messages; they wait in the
        // broker meanwhile.
        let beat = self.beat.clone();
        let mut retry = DbRetry::new(&self.metrics, &self.health);
        loop {
            beat.now();
            match notify::beating(&beat, self.sink.connect()).await {
                Ok(report) => {
                    let schema = report.current;
                    tracing::info!(db = self.sink.display(), schema, "Database ready.");
                    retry.ok();
                    self.health.set_db_ready();
                    self.schema_ready.cancel();
                    // Type=notify: started means migrated and storing.
                    notify::ready(&format!(
                        "Database ready (schema {schema}); storing messages"
                    ));
                    break;
                }
                Err(ConnectError::Fatal(e)) => {
                    let err = retry.failed(&e);
                    tracing::error!(%err, "Database unusable; stopping.");
                    let _ = self.fatal.send(Some(err));
                    return;
                }
                Err(ConnectError::Transient(e)) => {
                    let wait = retry.wait(DbStep::Connect, &e, Some(&shutdown));
                    if !notify::beating(&beat, wait).await {
                        return;
                    }
                }
            }
        }

        let mut buf: Vec<Received> = Vec::with_capacity(self.max_messages);
        let mut closing = false;
        loop {
            beat.now();
            self.flush_acks();
            buf.clear();
            match self.next_batch(&mut buf, &shutdown, &mut closing).await {
                Next::Batch => notify::beating(&beat, self.process(&mut buf)).await,
                Next::Tick => {}
                Next::Done => break,
            }
        }
        let deadline = tokio::time::Instant::now() + FINAL_ACK_WAIT;
        while self.flush_acks() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(ACK_RETRY).await;
        }
        if !self.pending_acks.is_empty() {
            tracing::warn!(
                unacked = self.pending_acks.len(),
                "Could not hand over every ack before stopping; the broker redelivers those."
            );
        }
        tracing::debug!("Writer finished.");
    }

    /// Fills `buf` with the next batch.
    async fn next_batch(
        &mut self,
        buf: &mut Vec<Received>,
        shutdown: &CancellationToken,
        closing: &mut bool,
    ) -> Next {
        let max = self.max_messages;
        let acks_pending = !self.pending_acks.is_empty();
        // First message: wait as long as it takes (but come back soon to
        // retry pending acks).
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !*closing => {
                    *closing = true;
                    // Senders fail from now on; queued messages stay
                    // readable and are written below.
                    self.rx.close();
                }
                n = self.rx.recv_many(buf, max) => {
                    if n == 0 {
                        return Next::Done;
                    }
                    break;
                }
                _ = tokio::time::sleep(ACK_RETRY), if acks_pending => return Next::Tick,
                // Idle: come back to beat for the watchdog.
                _ = tokio::time::sleep(notify::BEAT_EVERY) => return Next::Tick,
            }
        }
        // Then fill up until the deadline.
        let deadline = tokio::time::Instant::now() + self.max_wait;
        while buf.len() < max {
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !*closing => {
                    *closing = true;
                    self.rx.close();
                }
                _ = tokio::time::sleep_until(deadline) => break,
                n = self.rx.recv_many(buf, max - buf.len()) => {
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        Next::Batch
    }

    /// Hands pending acks to rumqttc in order, without waiting; drops
    /// those from an earlier connection. Returns how many remain.
    fn flush_acks(&mut self) -> usize {
        let current = self.generation.load(Ordering::Acquire);
        let mut stale = 0usize;
        while let Some(r) = self.pending_acks.front() {
            if r.generation != current {
                stale += 1;
                self.pending_acks.pop_front();
                continue;
            }
            // Fails when the request channel is full (the poll task
            // drains it) or gone (stopping): keep the ack and retry.
            if self.client.try_ack(&r.publish()).is_err() {
                break;
            }
            self.metrics.acked.inc();
            self.pending_acks.pop_front();
        }
        if stale > 0 {
            tracing::info!(
                stale,
                "Messages from an earlier broker connection were stored but not acked; \
                 the broker redelivers them."
            );
        }
        self.pending_acks.len()
    }

    /// Stores one batch (retrying until it is stored), then queues its
    /// acks (the buffer is left empty).
    async fn process(&mut self, batch: &mut Vec<Received>) {
        self.store(batch).await;
        self.pending_acks.extend(
            batch
                .drain(..)
                .filter(|r| r.publish.qos != QoS::AtMostOnce)
                .map(|r| PendingAck::of(&r)),
        );
        self.flush_acks();
    }

    /// Stores one batch, retrying until it is stored.
    async fn store(&mut self, batch: &[Received]) {
        let topics: Vec<Cow<'_, str>> = batch
            .iter()
            .map(|r| String::from_utf8_lossy(&r.publish.topic))
            .collect();
        let msgs: Vec<InMessage<'_>> = batch
            .iter()
            .zip(&topics)
            .map(|(r, topic)| InMessage {
                topic,
                payload: &r.publish.payload,
                received_at: r.received_at,
                retained: r.publish.retain,
            })
            .collect();
        let mut prepared = Prepared::new(&msgs);
        for d in prepared.decoded.iter().filter(|d| !d.retained) {
            let lag = d
                .received_at
                .duration_since(agent_time(d.msg.ts()))
                .unwrap_or_default();
            self.metrics.message_lag_seconds.observe(lag.as_secs_f64());
        }
        self.deliver_logs(&mut prepared).await;

        let mut retry = DbRetry::new(&self.metrics, &self.health);
        let step = DbStep::Store {
            messages: batch.len(),
        };
        let outcome = loop {
            match self.sink.write(&prepared).await {
                Ok(outcome) => break outcome,
                // No shutdown check: the batch is committed or the
                // shutdown deadline aborts this task.
                Err(e) => {
                    retry.wait(step, &e, None).await;
                }
            }
        };
        retry.ok();
        self.record(&outcome);
        for (site, skew) in site_skews(&prepared.decoded) {
            #[allow(clippy::cast_precision_loss)]
            let secs = skew.skew_ms as f64 / 1000.0;
            self.metrics
                .site_clock_skew_seconds
                .get_or_create(&SiteLabel { site })
                .set(secs);
        }
    }

    /// Pushes the batch's `log` messages that are not delivered yet to
    /// Loki (or rejects them all when Loki is not configured) and notes
    /// the outcome in the batch; see [`batch::apply`]. Returns when every
    /// line was accepted or refused.
    async fn deliver_logs(&mut self, prepared: &mut Prepared<'_>) {
        let ids: Vec<LogId> = prepared
            .decoded
            .iter()
            .filter_map(|d| match &d.msg {
                sitewatch_wire::Message::Log(l) => {
                    Some((l.site.clone(), l.boot.clone(), clamp_i64(l.seq)))
                }
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return;
        }
        if self.loki.is_none() {
            batch::reject_logs(prepared, REASON_NO_LOG_SINK, NO_LOG_SINK_DETAIL);
            return;
        }
        let mut retry = DbRetry::new(&self.metrics, &self.health);
        let delivered = loop {
            match self.sink.delivered_logs(&ids).await {
                Ok(set) => break set,
                Err(e) => {
                    retry.wait(DbStep::LogLookup, &e, None).await;
                }
            }
        };
        let mut positions = batch::plan(&prepared.decoded, &delivered);
        // A message past its table's retention is rejected as `expired` by
        // the PostgreSQL sink; it must not reach Loki first. `now` only
        // grows, so what is expired here is expired there too.
        let now = std::time::SystemTime::now();
        positions.retain(|&pos| {
            prepared.decoded.get(pos).is_some_and(|d| {
                crate::sink::postgres::retention::expired(self.sink.retention(), &d.msg, now)
                    .is_none()
            })
        });
        let Some(sink) = &self.loki else {
            return;
        };
        let jobs: Vec<LogJob<'_>> = positions
            .iter()
            .filter_map(|&pos| {
                let d = prepared.decoded.get(pos)?;
                match &d.msg {
                    sitewatch_wire::Message::Log(log) => Some(LogJob {
                        log,
                        received_at: d.received_at,
                    }),
                    _ => None,
                }
            })
            .collect();
        let outcomes = if jobs.is_empty() {
            Vec::new()
        } else {
            sink.deliver(&jobs).await
        };
        drop(jobs);
        batch::apply(prepared, &positions, &outcomes);
    }

    fn record(&self, o: &BatchOutcome) {
        let m = &self.metrics;
        m.batches.inc();
        m.batch_duration_seconds.observe(o.elapsed.as_secs_f64());
        m.duplicates.inc_by(o.duplicates as u64);
        for (table, rows) in o.rows.by_table() {
            m.rows_written
                .get_or_create(&TableLabel { table })
                .inc_by(rows);
        }
        for &reason in &o.rejected {
            m.rejected.get_or_create(&ReasonLabel { reason }).inc();
        }
        tracing::debug!(
            messages = o.messages,
            stored = o.stored,
            duplicates = o.duplicates,
            rejected = o.rejected.len(),
            isolated = o.isolated,
            elapsed = ?o.elapsed,
            "Batch committed."
        );
    }
}

/// Which database step failed; names the log line of its retry.
#[derive(Debug, Clone, Copy)]
enum DbStep {
    /// Connecting and migrating, before taking messages.
    Connect,
    /// Storing a batch of `messages`.
    Store {
        /// Messages in the batch.
        messages: usize,
    },
    /// Looking up which `log` messages are already in `log_batches`.
    LogLookup,
}

/// The retries of one database step. Every failure is reported here and
/// only here (`db_errors`, `db_up`, `/healthz`, one log line, backoff), so
/// connecting, storing and the `log_batches` lookup cannot report
/// failures differently.
struct DbRetry<'a> {
    metrics: &'a Metrics,
    health: &'a Health,
    backoff: Backoff,
    /// Failed attempts so far.
    attempt: u32,
}

impl<'a> DbRetry<'a> {
    fn new(metrics: &'a Metrics, health: &'a Health) -> DbRetry<'a> {
        DbRetry {
            metrics,
            health,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            attempt: 0,
        }
    }

    /// Counts a failure and marks the database down (metric and
    /// `/healthz`); returns the error with its whole chain, for the log.
    fn failed(&mut self, e: &anyhow::Error) -> String {
        self.attempt += 1;
        let err = format!("{e:#}");
        self.metrics.db_errors.inc();
        self.metrics.db_up.set(0);
        self.health.set_writes_failing(err.clone());
        err
    }

    /// [`DbRetry::failed`], then logs the retry and waits the backoff
    /// delay. Returns `false` if `shutdown` was cancelled first.
    async fn wait(
        &mut self,
        step: DbStep,
        e: &anyhow::Error,
        shutdown: Option<&CancellationToken>,
    ) -> bool {
        let err = self.failed(e);
        let delay = self.backoff.next_delay();
        match step {
            DbStep::Connect => {
                tracing::warn!(%err, retry_in = ?delay, "Database not reachable yet.");
                notify::status(&format!("Waiting for the database: {err}"));
            }
            DbStep::Store { messages } => tracing::warn!(
                %err, attempt = self.attempt, messages, retry_in = ?delay,
                "Batch not stored; will retry it (nothing acknowledged meanwhile)."
            ),
            DbStep::LogLookup => tracing::warn!(
                %err, retry_in = ?delay,
                "Cannot tell which log batches were delivered; will retry \
                 (nothing acknowledged meanwhile)."
            ),
        }
        match shutdown {
            Some(shutdown) => tokio::select! {
                biased;
                _ = shutdown.cancelled() => false,
                _ = tokio::time::sleep(delay) => true,
            },
            None => {
                tokio::time::sleep(delay).await;
                true
            }
        }
    }

    /// The database answered: the metric and `/healthz` say so.
    fn ok(&self) {
        self.metrics.db_up.set(1);
        self.health.set_writes_ok();
    }
}
