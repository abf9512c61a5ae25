//! Share-group session takeover: when a bridge of a share group dies and
//! does not come back, a live member drains the session it left behind.
//!
//! # Why
//! Bridges in a share group each hold a persistent MQTT session. When one
//! is killed, mosquitto (2.0.11 measured; upstream #1747, #2662) keeps
//! giving its session a round-robin share of new messages and queues them
//! there, so about half of every site's messages wait for that bridge to
//! come back, or are lost when the session expires. Takeover makes a live
//! member connect *as* the dead one (same client id, clean start off),
//! unsubscribe that session from the group, store and acknowledge what it
//! had queued, and leave: from then on the broker gives the live members
//! everything.
//!
//! # Who may drive a session: the lease
//! Two connections with one client id would keep kicking each other off
//! the broker, so each session is driven only by whoever holds its
//! PostgreSQL advisory lock, `(LOCK_CLASS, bridge_sessions.id)`:
//! * a bridge registers its client id in `bridge_sessions`, takes its own
//!   lock (waiting if a peer is draining its session), and only then
//!   connects to the broker ([`crate::source::Source::connect_when`]);
//! * it refreshes `last_seen` every `takeover_after / 5`; every member of
//!   a share group does this, also one with `takeover_after_secs = 0`
//!   (which only stops it from draining others);
//! * a member that sees a peer's `last_seen` unchanged for
//!   `takeover_after` (counted on its own clock, and only while its own
//!   database connection has been up that long, so a database restart
//!   does not make everyone look dead) tries the peer's lock. The lock is
//!   free only if the peer's database connection is gone: a process that
//!   is merely slow keeps it, and is left alone.
//!
//! Session-level advisory locks die with their connection, so a killed
//! bridge frees its lock at once. If this bridge loses its own database
//! connection it retakes its lock on reconnect; if a peer took it
//! meanwhile (this bridge was cut off from the database for longer than
//! `takeover_after`), the bridge stops with an error, and its restart
//! waits for the lock like any start.
//!
//! # What can go wrong, and why nothing is lost
//! A drain ends only when the session is unsubscribed, every message
//! received is committed and acknowledged, and nothing has arrived for a
//! quiet period. If the draining bridge dies or loses the connection
//! midway, unacknowledged messages stay in the session (clean start off)
//! and the next drain, or the owner's return, gets them; duplicates are
//! absorbed by the (site, boot, seq) keys. The broker must keep the
//! session longer than `takeover_after`: the configuration requires
//! `session_expiry_secs >= 2 * takeover_after_secs`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::source::{Ended, Mode};

/// First key of the session advisory locks (`b"SWBS"`); the second is
/// `bridge_sessions.id`. The migration lock uses the one-key form, a
/// separate key space.
pub const LOCK_CLASS: i32 = 0x5357_4253;

/// Quiet time after which a drained session counts as empty.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Longest one drain may take; a longer one is abandoned (what was stored
/// stays acknowledged) and retried on the next round.
const DRAIN_MAX: Duration = Duration::from_secs(600);

/// The lease and takeover task of one bridge.
pub struct Takeover {
    /// The bridge's configuration (its client id names its own session).
    pub config: Config,
    /// Share group.
    pub group: String,
    /// How long a peer must be silent before its session is drained;
    /// `None` (`takeover_after_secs = 0`): hold the lease and beat, but
    /// never drain a peer. The lease is held either way, so that peers
    /// with takeover on never mistake this bridge for a dead one.
    pub after: Option<Duration>,
    /// Cancelled once this bridge holds its own lease.
    pub held: CancellationToken,
    /// Where losing the lease to a peer is reported (the bridge stops).
    pub fatal: watch::Sender<Option<String>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Cancelled by the writer once the schema is migrated
    /// (`bridge_sessions` exists); the lease is taken after that.
    pub schema_ready: CancellationToken,
}

/// A drain in progress.
struct Running {
    peer_id: i32,
    peer: String,
    task: JoinHandle<anyhow::Result<u64>>,
}

impl Takeover {
    /// Holds the lease, beats, and drains dead peers' sessions until
    /// `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        // Peers judge this bridge by their own takeover_after (the default
        // when ours is off); the lock, not the beat, is what protects a
        // live bridge, so a late beat only costs a failed try.
        let beat = (self.after.unwrap_or(Duration::from_secs(20)) / 5)
            .clamp(Duration::from_millis(200), Duration::from_secs(5));
        // Retry the lease no slower than the beat: after a database outage
        // a peer whose connection came back first starts counting our
        // silence, and a retry backing off past its takeover_after would
        // make this live bridge look dead (seen in CI with
        // takeover_after_secs = 5 and a 10 s cap).
        let mut backoff = sitewatch_mqtt::Backoff::new(
            Duration::from_millis(250).min(beat),
            beat.max(Duration::from_millis(250)),
        );
        let mut conn: Option<(Client, i32)> = None;
        let mut up_since = Instant::now();
        // Peer id -> (last_seen in µs, when we first saw that value).
        let mut seen: HashMap<i32, (i64, Instant)> = HashMap::new();
        let mut running: Option<Running> = None;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = self.schema_ready.cancelled() => {}
        }
        loop {
            if conn.as_ref().is_some_and(|(c, _)| c.is_closed()) {
                tracing::warn!("Lost the database connection that holds the session lease.");
                self.metrics.session_lease_held.set(0);
                conn = None;
            }
            if conn.is_none() {
                match self.lease(&stop).await {
                    Ok(Some(c)) => {
                        backoff.reset();
                        self.metrics.session_lease_held.set(1);
                        self.held.cancel();
                        conn = Some(c);
                        up_since = Instant::now();
                        seen.clear();
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(err = format!("{e:#}"), retry_in = ?delay, "Could not take the session lease.");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
            let Some((client, own_id)) = conn.as_ref() else {
                continue;
            };
            if let Err(e) = self
                .round(client, *own_id, up_since, &mut seen, &mut running)
                .await
            {
                tracing::warn!(err = format!("{e:#}"), "Session lease round failed.");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(beat) => {}
            }
        }
        if let Some(r) = running {
            r.task.abort();
        }
    }

    /// Registers this bridge and takes its own lock. `Ok(None)`: stopped
    /// while waiting.
    async fn lease(&self, stop: &CancellationToken) -> anyhow::Result<Option<(Client, i32)>> {
        let client = crate::sink::postgres::connect(&self.config.postgres).await?;
        let id: i32 = client
            .query_one(
                "INSERT INTO bridge_sessions (client_id, share_group) VALUES ($1, $2) \
                 ON CONFLICT (client_id) DO UPDATE SET share_group = EXCLUDED.share_group \
                 RETURNING id",
                &[&self.config.client_id, &self.group],
            )
            .await
            .context("registering in bridge_sessions (has migration 7 run?)")?
            .get(0);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &id])
            .await
            .context("taking the session lease")?
            .get(0);
        if !got {
            if self.held.is_cancelled() {
                let why = format!(
                    "another bridge took over MQTT session {:?} while this bridge could not \
                     reach the database; stopping so that the session is not driven twice \
                     (a restart waits for the other bridge to finish)",
                    self.config.client_id
                );
                tracing::error!("{why}");
                let _ = self.fatal.send(Some(why));
                return Ok(None);
            }
            tracing::info!(
                client_id = %self.config.client_id,
                "Another bridge is draining this bridge's MQTT session (this bridge was gone \
                 for a while); waiting for it to finish before connecting."
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&LOCK_CLASS, &id];
            tokio::select! {
                _ = stop.cancelled() => return Ok(None),
                r = client.execute("SELECT pg_advisory_lock($1, $2)", &params) => {
                    r.context("waiting for the session lease")?;
                }
            }
        }
        client
            .execute(
                "UPDATE bridge_sessions SET last_seen = now(), started_at = now() WHERE id = $1",
                &[&id],
            )
            .await
            .context("updating bridge_sessions")?;
        tracing::info!(client_id = %self.config.client_id, group = %self.group, "Holding the session lease.");
        Ok(Some((client, id)))
    }

    /// One beat: refresh `last_seen`, finish a drain, look for dead peers.
    async fn round(
        &self,
        client: &Client,
        own_id: i32,
        up_since: Instant,
        seen: &mut HashMap<i32, (i64, Instant)>,
        running: &mut Option<Running>,
    ) -> anyhow::Result<()> {
        client
            .execute(
                "UPDATE bridge_sessions SET last_seen = now() WHERE id = $1",
                &[&own_id],
            )
            .await
            .context("refreshing last_seen")?;

        if running.as_ref().is_some_and(|r| r.task.is_finished()) {
            if let Some(r) = running.take() {
                self.finish(client, r).await?;
            }
        }
        let Some(after) = self.after else {
            return Ok(());
        };

        let rows = client
            .query(
                "SELECT id, client_id, (extract(epoch FROM last_seen) * 1000000)::int8, \
                        coalesce(taken_over_at >= last_seen, false) \
                 FROM bridge_sessions WHERE share_group = $1 AND id <> $2",
                &[&self.group, &own_id],
            )
            .await
            .context("reading bridge_sessions")?;
        let now = Instant::now();
        for row in rows {
            let (id, peer, last, drained): (i32, String, i64, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let entry = seen.entry(id).or_insert((last, now));
            if entry.0 != last {
                *entry = (last, now);
            }
            let silent = now.duration_since(entry.1);
            if drained
                || running.is_some()
                || silent < after
                || now.duration_since(up_since) < after
            {
                continue;
            }
            let free: bool = client
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &id])
                .await
                .context("trying a peer's session lease")?
                .get(0);
            if !free {
                // Alive (its database connection is up) but not beating:
                // slow or stuck, not dead. Leave its session alone.
                tracing::debug!(%peer, ?silent, "Peer silent but holds its lease.");
                continue;
            }
            tracing::warn!(
                %peer,
                silent_secs = silent.as_secs(),
                "Share-group peer is gone; taking over its MQTT session to store what the \
                 broker queued for it."
            );
            let mut config = self.config.clone();
            config.client_id = peer.clone();
            let metrics = self.metrics.clone();
            *running = Some(Running {
                peer_id: id,
                peer,
                task: tokio::spawn(drain(config, metrics)),
            });
        }
        Ok(())
    }

    /// Records a finished drain and releases the peer's lock.
    async fn finish(&self, client: &Client, r: Running) -> anyhow::Result<()> {
        let result = r
            .task
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("drain task failed: {e}")));
        match result {
            Ok(messages) => {
                tracing::info!(peer = %r.peer, messages, "Drained the peer's session.");
                self.metrics.takeovers.inc();
                self.metrics.takeover_messages.inc_by(messages);
                client
                    .execute(
                        "UPDATE bridge_sessions SET taken_over_at = now(), taken_over_by = $2, \
                         taken_over_messages = taken_over_messages + $3 WHERE id = $1",
                        &[
                            &r.peer_id,
                            &self.config.client_id,
                            &i64::try_from(messages).unwrap_or(i64::MAX),
                        ],
                    )
                    .await
                    .context("recording the takeover")?;
            }
            Err(e) => {
                tracing::warn!(peer = %r.peer, err = format!("{e:#}"), "Draining the peer's session failed; retrying next round.");
            }
        }
        client
            .execute(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&LOCK_CLASS, &r.peer_id],
            )
            .await
            .context("releasing the peer's session lease")?;
        Ok(())
    }
}

/// Connects as the peer (`config.client_id`), unsubscribes its session
/// from the group, stores and acknowledges what it holds. Returns how
/// many messages it held. The MQTT side is the source's drain loop
/// ([`Mode::Drain`], separate from the member loop); the writer is the
/// same as for the bridge's own session.
async fn drain(config: Config, metrics: Metrics) -> anyhow::Result<u64> {
    let health = std::sync::Arc::new(crate::health::Health::default());
    let (fatal_tx, _fatal_rx) = watch::channel(None);
    let source = crate::source::Source::with_mode(
        &config,
        health.clone(),
        metrics.clone(),
        Mode::Drain { idle: DRAIN_IDLE },
    )?;
    let (tx, rx) = tokio::sync::mpsc::channel(config.receive_maximum());
    let writer = crate::writer_for(&config, &source, rx, health, metrics, fatal_tx)?;
    let draining = CancellationToken::new();
    let stop = CancellationToken::new();
    let writer = tokio::spawn(writer.run(draining.clone()));
    let ended = tokio::time::timeout(DRAIN_MAX, source.run(tx, draining.clone(), stop)).await;
    draining.cancel();
    let _ = writer.await;
    match ended {
        Ok(Ended::Drained { messages }) => Ok(messages),
        Ok(other) => anyhow::bail!("the drain ended early ({other:?})"),
        Err(_) => anyhow::bail!("the drain took longer than {DRAIN_MAX:?}"),
    }
}
