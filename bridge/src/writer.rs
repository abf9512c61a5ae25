//! The writer: batches received messages, stores each batch in one
//! transaction, and acknowledges it to the broker only after commit.
//!
//! Loop: wait for a first message, collect up to `batch.max_messages` or
//! until `batch.max_wait_ms` has passed, then hand the batch to its own
//! task, which decodes it, delivers the `log` messages to Loki and
//! writes it. A failed write is retried with the *same* batch (with
//! backoff and a fresh connection) until it succeeds; meanwhile nothing
//! is acknowledged, the channel fills and the broker holds the rest
//! (backpressure, never dropping). Poison messages cannot block it: the
//! sink isolates and rejects them.
//!
//! Batches in flight (`batch.in_flight`, default 2): each batch task has
//! its own database connection, so the next batch's statements run while
//! the previous one waits for its COMMIT (fsync) and round trips. One at
//! a time, the server sat idle during the bridge's own work and the
//! bridge during the server's: `scripts/bench/ingest.sh` showed the
//! processes using 7.3 of the 19.8 CPU seconds that two cores had during
//! a drain. Acks still go out in receive order: a batch that commits
//! before an older one waits for it ([`Writer::run`] finishes batches
//! from the front of its queue only). Storage stays exactly-once:
//! concurrent inserts of one identity meet on its unique index, where the
//! second waits for the first to commit and then inserts nothing, as
//! with several bridges.
//!
//! One hazard is particular to `log` messages: a batch looks up which
//! were delivered to Loki already *before* it writes, so a redelivered
//! copy whose first copy sits in a batch not yet committed would reach
//! Loki twice. A batch therefore claims its `log` identities
//! ([`LogClaims`]) before the lookup and keeps them until it has
//! committed; a batch carrying an identity claimed by another waits for
//! that one. Copies are rare (agents resend after a lost connection), so
//! batches with logs still overlap almost always.
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
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use sitewatch_mqtt::Backoff;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
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
    /// Idle database connections: one at first, which connects and
    /// migrates; once that has worked, `in_flight` (the others connect on
    /// their first batch). A batch in flight holds one.
    pub(crate) sinks: Vec<PgSink>,
    /// Most batches written at once (`[batch] in_flight`).
    pub(crate) in_flight: usize,
    /// Where `log` messages go first; `None` rejects them (`no_log_sink`).
    pub(crate) loki: Option<Arc<LokiSink>>,
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

/// What a batch's task needs besides its connection: shared by every
/// batch in flight.
#[derive(Clone)]
struct StoreCtx {
    loki: Option<Arc<LokiSink>>,
    metrics: Metrics,
    health: Arc<Health>,
    claims: Arc<LogClaims>,
}

/// A batch being stored by its own task, with the connection it holds.
/// Dropping it aborts the task (the writer stopping on a fatal error):
/// nothing of the batch was acked, so the broker redelivers it.
struct InFlight {
    task: JoinHandle<(PgSink, Vec<Received>)>,
}

impl InFlight {
    fn start(ctx: StoreCtx, mut sink: PgSink, batch: Vec<Received>) -> InFlight {
        InFlight {
            task: tokio::spawn(async move {
                store(&ctx, &mut sink, &batch).await;
                (sink, batch)
            }),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `log` identities being delivered by batches that have not committed
/// yet (see the module documentation).
#[derive(Default)]
struct LogClaims {
    held: Mutex<HashSet<LogId>>,
    /// Woken whenever a claim is released.
    released: Notify,
}

impl LogClaims {
    /// Claims all of `ids` at once, waiting while any of them is claimed
    /// by another batch. A waiting batch holds nothing, so two batches
    /// cannot wait for each other.
    async fn claim(self: &Arc<Self>, ids: &[LogId]) -> LogClaim {
        loop {
            // Registered before the check, so a release between the check
            // and the wait is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                if !ids.iter().any(|id| held.contains(id)) {
                    held.extend(ids.iter().cloned());
                    return LogClaim {
                        claims: Arc::clone(self),
                        ids: ids.to_vec(),
                    };
                }
            }
            released.await;
        }
    }
}

/// Held from before a batch's `log_batches` lookup until it has committed.
struct LogClaim {
    claims: Arc<LogClaims>,
    ids: Vec<LogId>,
}

impl Drop for LogClaim {
    fn drop(&mut self) {
        {
            let mut held = self
                .claims
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for id in &self.ids {
                held.remove(id);
            }
        }
        self.claims.released.notify_waiters();
    }
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
        let Some(mut first) = self.sinks.pop() else {
            let _ = self
                .fatal
                .send(Some("the writer has no database connection".to_owned()));
            return;
        };
        let mut retry = DbRetry::new(&self.metrics, &self.health);
        loop {
            beat.now();
            match notify::beating(&beat, first.connect()).await {
                Ok(report) => {
                    let schema = report.current;
                    tracing::info!(db = first.display(), schema, "Database ready.");
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
        self.sinks = (1..self.in_flight.max(1))
            .map(|_| first.sibling())
            .collect();
        self.sinks.push(first);

        let ctx = StoreCtx {
            loki: self.loki.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            claims: Arc::default(),
        };
        let max = self.max_messages;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut buf: Vec<Received> = Vec::with_capacity(max);
        // Set by the first message of the batch being collected.
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut closing = false;
        // The channel is closed and empty.
        let mut drained = false;
        loop {
            beat.now();
            self.flush_acks();
            let ready = !buf.is_empty()
                && (buf.len() >= max
                    || drained
                    || deadline.is_some_and(|d| tokio::time::Instant::now() >= d));
            if ready {
                if let Some(sink) = self.sinks.pop() {
                    let batch = std::mem::replace(&mut buf, Vec::with_capacity(max));
                    deadline = None;
                    in_flight.push_back(InFlight::start(ctx.clone(), sink, batch));
                    continue;
                }
            }
            if drained && buf.is_empty() && in_flight.is_empty() {
                break;
            }
            let room = max.saturating_sub(buf.len());
            let acks_pending = !self.pending_acks.is_empty();
            let busy = !in_flight.is_empty();
            let oldest = async {
                match in_flight.front_mut() {
                    Some(f) => (&mut f.task).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !closing => {
                    closing = true;
                    // Senders fail from now on; queued messages stay
                    // readable and are written.
                    self.rx.close();
                }
                // Only the oldest batch is finished, so acks keep the
                // receive order; a younger one that committed first waits.
                done = oldest, if busy => {
                    in_flight.pop_front();
                    match done {
                        Ok((sink, mut batch)) => {
                            self.sinks.push(sink);
                            self.queue_acks(&mut batch);
                        }
                        Err(e) => {
                            let err = format!("a batch's task failed: {e}");
                            tracing::error!(%err, "Stopping; the broker redelivers what was not acknowledged.");
                            let _ = self.fatal.send(Some(err));
                            return;
                        }
                    }
                }
                n = self.rx.recv_many(&mut buf, room), if room > 0 && !drained => {
                    if n == 0 {
                        drained = true;
                    } else if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + self.max_wait);
                    }
                }
                // The batch is due; started at the top of the loop when a
                // connection is idle (else it keeps filling meanwhile).
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() && !self.sinks.is_empty() => {}
                _ = tokio::time::sleep(ACK_RETRY), if acks_pending => {}
                // Idle: come back to beat for the watchdog.
                _ = tokio::time::sleep(notify::BEAT_EVERY) => {}
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

    /// Queues the acks of a committed batch (the buffer is left empty)
    /// and hands over what it can.
    fn queue_acks(&mut self, batch: &mut Vec<Received>) {
        self.pending_acks.extend(
            batch
                .drain(..)
                .filter(|r| r.publish.qos != QoS::AtMostOnce)
                .map(|r| PendingAck::of(&r)),
        );
        self.flush_acks();
    }
}

/// Stores one batch on `sink`, retrying until it is stored.
async fn store(ctx: &StoreCtx, sink: &mut PgSink, batch: &[Received]) {
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
        ctx.metrics.message_lag_seconds.observe(lag.as_secs_f64());
    }
    // Held until the batch has committed.
    let _claim = deliver_logs(ctx, sink, &mut prepared).await;

    let mut retry = DbRetry::new(&ctx.metrics, &ctx.health);
    let step = DbStep::Store {
        messages: batch.len(),
    };
    let outcome = loop {
        match sink.write(&prepared).await {
            Ok(outcome) => break outcome,
            // No shutdown check: the batch is committed or the
            // shutdown deadline aborts this task.
            Err(e) => {
                retry.wait(step, &e, None).await;
            }
        }
    };
    retry.ok();
    record(&ctx.metrics, &outcome);
    for (site, skew) in site_skews(&prepared.decoded) {
        #[allow(clippy::cast_precision_loss)]
        let secs = skew.skew_ms as f64 / 1000.0;
        ctx.metrics
            .site_clock_skew_seconds
            .get_or_create(&SiteLabel { site })
            .set(secs);
    }
}

/// Pushes the batch's `log` messages that are not delivered yet to Loki
/// (or rejects them all when Loki is not configured) and notes the
/// outcome in the batch; see [`batch::apply`]. Returns when every line
/// was accepted or refused, with the batch's claim on its `log`
/// identities, which the caller holds until the batch has committed.
async fn deliver_logs(
    ctx: &StoreCtx,
    sink: &mut PgSink,
    prepared: &mut Prepared<'_>,
) -> Option<LogClaim> {
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
        return None;
    }
    let Some(loki) = &ctx.loki else {
        batch::reject_logs(prepared, REASON_NO_LOG_SINK, NO_LOG_SINK_DETAIL);
        return None;
    };
    let claim = ctx.claims.claim(&ids).await;
    let mut retry = DbRetry::new(&ctx.metrics, &ctx.health);
    let delivered = loop {
        match sink.delivered_logs(&ids).await {
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
            crate::sink::postgres::retention::expired(sink.retention(), &d.msg, now).is_none()
        })
    });
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
        loki.deliver(&jobs).await
    };
    drop(jobs);
    batch::apply(prepared, &positions, &outcomes);
    Some(claim)
}

fn record(m: &Metrics, o: &BatchOutcome) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: i64) -> LogId {
        ("site-a".to_owned(), "b1".to_owned(), seq)
    }

    #[tokio::test]
    async fn a_claimed_log_identity_waits_for_its_release() {
        let claims: Arc<LogClaims> = Arc::default();
        let first = claims.claim(&[id(1), id(2)]).await;
        let disjoint = tokio::time::timeout(Duration::from_secs(1), claims.claim(&[id(3)]))
            .await
            .expect("a claim sharing no identity does not wait");
        let waiting = tokio::spawn({
            let claims = Arc::clone(&claims);
            async move {
                let _claim = claims.claim(&[id(2), id(4)]).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "a batch carrying a claimed identity waits"
        );
        // Nothing of the waiting claim was taken meanwhile.
        assert!(!claims.held.lock().expect("lock").contains(&id(4)));
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released claim wakes the waiting batch")
            .expect("task");
        drop(disjoint);
        assert!(claims.held.lock().expect("lock").is_empty());
    }
}
