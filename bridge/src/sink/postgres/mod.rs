//! PostgreSQL sink: writes one batch per transaction.
//!
//! Its settings, the `[postgres]` section, are in [`config`].
//!
//! [`PgSink::write`] makes one attempt at storing a [`Prepared`] batch,
//! one table family after the other (`write_rows`), each in its own
//! file with its SQL, column building and `write_*` function:
//! * `sites`: create, lock and touch the batch's sites, clock skew
//!   (after the message tables: the row locks serialize concurrent
//!   batches per site until their COMMIT, so they are taken last);
//! * `status`: the site-state rule, `status_events`;
//! * `heartbeat`, `disk`, `logs` (`log_batches`), `ups`
//!   (`ups_readings`): time series;
//! * `streams` (`camera_probes`, `cameras`), `smart`
//!   (`smart_readings`, `disks`), `events`, `reach` (`reach_readings`,
//!   `reach_targets`): kinds with many optional columns, through
//!   `jsonb_to_recordset` (`jsonb`);
//! * `rejected` (`rejected_messages`);
//! * `boots`: `boots` and `sites.last_seq`, from the identities the
//!   message tables reported new (last).
//!
//! Fixed-column tables are written with one `INSERT ... SELECT FROM
//! UNNEST(...)` (one array parameter per column, so no bind-parameter
//! limit and one round trip per table); the jsonb families with one
//! `jsonb` array per table. Message tables have `ON CONFLICT DO NOTHING`
//! on the message identity so that redelivered messages are stored once.
//! Prepared statements are cached per connection.
//!
//! Round trips: statements that do not need each other's results are
//! *pipelined* (tokio-postgres sends the requests of futures polled
//! together without waiting for the answers, and the server runs them in
//! the order sent): the inserts of every message table followed by the
//! two `sites` statements; the `boots` / version / `last_seq`
//! bookkeeping. A batch of heartbeats and disk messages is then BEGIN,
//! two pipelines and COMMIT, where each statement used to wait for the
//! previous one's answer. Futures are joined `biased` (polled, so sent, in statement
//! order), and their results are checked in that order, so that a poison
//! error is reported by the statement that caused it, not by a later one
//! that only saw the transaction aborted (25P02).
//!
//! Errors: [`PgSink::write`] only returns errors worth retrying (after
//! which the connection is dropped and re-opened on the next attempt). A
//! poison error (see [`super::classify`]) makes it redo the batch one
//! message at a time under savepoints, storing each offending message in
//! `rejected_messages` as `db_error` instead; the batch then succeeds.
//!
//! `log` messages are pushed to Loki by the writer before the batch
//! comes here ([`super::loki`], planned in [`super::batch`]); this module
//! records each delivered one in `log_batches` (and `boots`), and answers
//! which were delivered already ([`PgSink::delivered_logs`]).
//!
//! Retrying, acking and metrics are the caller's business
//! ([`crate::writer`]); this module only talks to the database. It
//! imports [`super::batch`], never [`super::loki`].

mod boots;
pub mod config;
mod disk;
mod events;
mod heartbeat;
mod jsonb;
mod logs;
mod reach;
mod rejected;
pub mod retention;
mod sites;
mod smart;
mod status;
mod streams;
pub mod tls;
mod ups;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient};

use self::config::PostgresSettings;
use super::batch::{agent_time, beyond, site_skews, Decoded, LogId, Prepared, Rejection, SiteSkew};
use super::classify::{classify, is_transient, ErrorClass};
use super::migrations::{migrate, verify, MigrationReport};
use crate::metrics::REASON_DB_ERROR;

/// Rows inserted per table by one batch (conflicting duplicates excluded).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableRows {
    /// `status_events`.
    pub status_events: u64,
    /// `heartbeats`.
    pub heartbeats: u64,
    /// `disk_usage`.
    pub disk_usage: u64,
    /// `log_batches`.
    pub log_batches: u64,
    /// `camera_probes`.
    pub camera_probes: u64,
    /// `smart_readings`.
    pub smart_readings: u64,
    /// `events`.
    pub events: u64,
    /// `ups_readings`.
    pub ups_readings: u64,
    /// `reach_readings`.
    pub reach_readings: u64,
    /// `rejected_messages`.
    pub rejected_messages: u64,
}

impl TableRows {
    fn add(&mut self, o: TableRows) {
        self.status_events += o.status_events;
        self.heartbeats += o.heartbeats;
        self.disk_usage += o.disk_usage;
        self.log_batches += o.log_batches;
        self.camera_probes += o.camera_probes;
        self.smart_readings += o.smart_readings;
        self.events += o.events;
        self.ups_readings += o.ups_readings;
        self.reach_readings += o.reach_readings;
        self.rejected_messages += o.rejected_messages;
    }

    /// `(table, rows)` pairs, for metrics.
    pub fn by_table(&self) -> [(&'static str, u64); 10] {
        [
            ("status_events", self.status_events),
            ("heartbeats", self.heartbeats),
            ("disk_usage", self.disk_usage),
            ("log_batches", self.log_batches),
            ("camera_probes", self.camera_probes),
            ("smart_readings", self.smart_readings),
            ("events", self.events),
            ("ups_readings", self.ups_readings),
            ("reach_readings", self.reach_readings),
            ("rejected_messages", self.rejected_messages),
        ]
    }
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchOutcome {
    /// Messages in the batch.
    pub messages: usize,
    /// Valid messages stored for the first time.
    pub stored: usize,
    /// Valid messages that were already stored (redeliveries, or repeated
    /// within the batch).
    pub duplicates: usize,
    /// Rows inserted per table.
    pub rows: TableRows,
    /// Reason of every message stored in `rejected_messages`.
    pub rejected: Vec<&'static str>,
    /// Whether a poison error forced one-message-at-a-time isolation.
    pub isolated: bool,
    /// Time spent in the successful attempt.
    pub elapsed: std::time::Duration,
}

impl BatchOutcome {
    fn merge(&mut self, o: Counts) {
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.rows.add(o.rows);
    }
}

/// A message identity (site, boot, seq), as returned by the inserts.
type MessageId = (String, String, i64);

/// What one table family, or a whole [`write_rows`], wrote.
#[derive(Debug, Default)]
struct Counts {
    /// Valid messages stored for the first time.
    stored: usize,
    /// Valid messages already stored (set by [`write_rows`] at the end).
    duplicates: usize,
    /// Rows inserted per table.
    rows: TableRows,
    /// Identities with seq >= 1 stored for the first time: they count in
    /// `boots.received`.
    new_ids: HashSet<MessageId>,
}

impl Counts {
    /// Counts the rows an insert returned (`RETURNING site, boot, seq`) as
    /// messages stored for the first time; returns how many rows.
    fn stored_from(&mut self, rows: &[tokio_postgres::Row]) -> Result<u64, tokio_postgres::Error> {
        self.stored += rows.len();
        for row in rows {
            self.new_ids
                .insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
        Ok(rows.len() as u64)
    }

    fn add(&mut self, o: Counts) {
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.rows.add(o.rows);
        self.new_ids.extend(o.new_ids);
    }
}

/// Why [`PgSink::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached or is starting up; retry.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// The server refused in a way retrying cannot fix.
    #[error("{0:#}")]
    Fatal(anyhow::Error),
}

/// Connection to PostgreSQL plus its cached statements; reconnects lazily.
pub struct PgSink {
    settings: PostgresSettings,
    conn: Option<Conn>,
    migrated: Option<MigrationReport>,
    max_skew: Option<Duration>,
    retention: retention::RetentionSettings,
}

/// Default of `[clock] max_skew_secs`.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(86_400);

struct Conn {
    client: Client,
    stmts: Statements,
}

impl PgSink {
    /// A sink that connects on first use.
    pub fn new(settings: PostgresSettings) -> PgSink {
        PgSink {
            settings,
            conn: None,
            migrated: None,
            max_skew: Some(DEFAULT_MAX_SKEW),
            retention: retention::RetentionSettings::keep_forever(),
        }
    }

    /// Sets `[retention]`: messages older than their table's retention
    /// are rejected as `expired` instead of stored (see [`retention`]).
    pub fn with_retention(mut self, retention: retention::RetentionSettings) -> PgSink {
        self.retention = retention;
        self
    }

    /// The `[retention]` in force, so the writer does not push to Loki a
    /// `log` message this sink will reject as expired.
    pub fn retention(&self) -> &retention::RetentionSettings {
        &self.retention
    }

    /// Sets the clock skew bound (`[clock] max_skew_secs`; `None`: never
    /// correct). Heartbeat and disk rows of a site whose batch skew (see
    /// [`site_skews`]) exceeds it are stored with `ts` = receive time.
    pub fn with_max_skew(mut self, max_skew: Option<Duration>) -> PgSink {
        self.max_skew = max_skew;
        self
    }

    /// The database, for logs (no password).
    pub fn display(&self) -> &str {
        &self.settings.display
    }

    /// Connects (if needed) and runs the migrations (once per sink).
    ///
    /// Errors are [`ConnectError::Transient`] when the server could not
    /// be reached (worth retrying), [`ConnectError::Fatal`] when it
    /// answered with an error retrying cannot fix (authentication, a
    /// migration that fails, missing privileges).
    pub async fn connect(&mut self) -> Result<&MigrationReport, ConnectError> {
        if let Err(e) = self.conn_mut().await {
            let transient = e
                .chain()
                .find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
                .is_none_or(is_transient);
            return Err(if transient {
                ConnectError::Transient(e)
            } else {
                ConnectError::Fatal(e)
            });
        }
        self.migrated
            .as_ref()
            .ok_or_else(|| ConnectError::Fatal(anyhow::anyhow!("migrations did not run")))
    }

    /// Another sink for the same database with the same settings, not
    /// connected yet: a second batch in flight writes on its own
    /// connection. It takes this sink's migration report, so it does not
    /// migrate again; call it after [`PgSink::connect`].
    pub fn sibling(&self) -> PgSink {
        PgSink {
            settings: self.settings.clone(),
            conn: None,
            migrated: self.migrated.clone(),
            max_skew: self.max_skew,
            retention: self.retention.clone(),
        }
    }

    /// Drops the connection; the next write reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    async fn conn_mut(&mut self) -> anyhow::Result<&mut Conn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut client = connect(&self.settings).await?;
            if self.migrated.is_none() {
                let report = if self.settings.migrate {
                    migrate(&mut client)
                        .await
                        .with_context(|| format!("migrating {}", self.settings.display))?
                } else {
                    verify(&client).await.with_context(|| {
                        format!("checking the schema of {}", self.settings.display)
                    })?
                };
                if !report.applied.is_empty() {
                    tracing::info!(applied = ?report.applied, "Applied database migrations.");
                }
                self.migrated = Some(report);
            }
            let stmts = Statements::prepare(&client)
                .await
                .with_context(|| format!("preparing statements on {}", self.settings.display))?;
            self.conn = Some(Conn { client, stmts });
        }
        self.conn
            .as_mut()
            .context("database connection vanished while in use")
    }

    /// One attempt at storing a batch, in one transaction. Every error
    /// returned is retriable (connection lost, timeout, deadlock...): retry
    /// the same batch later. The connection has then been dropped.
    pub async fn write(&mut self, batch: &Prepared<'_>) -> anyhow::Result<BatchOutcome> {
        let timeout = self.settings.write_timeout;
        let display = self.settings.display.clone();
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, self.write_inner(batch)).await;
        match result {
            Ok(Ok(mut outcome)) => {
                outcome.elapsed = started.elapsed();
                Ok(outcome)
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.context(format!("writing a batch to {display}")))
            }
            Err(_) => {
                self.conn = None;
                anyhow::bail!("writing a batch to {display} took longer than {timeout:?}")
            }
        }
    }

    async fn write_inner(&mut self, batch: &Prepared<'_>) -> anyhow::Result<BatchOutcome> {
        let clock = Clock {
            skews: site_skews(&batch.decoded),
            max_skew: self.max_skew,
        };
        let (decoded, expired) = retention::split(&self.retention, batch, SystemTime::now())?;
        let mut rejected: Vec<&Rejection> = batch.rejected.iter().chain(expired.iter()).collect();
        rejected.sort_by_key(|r| r.index);
        let conn = self.conn_mut().await?;
        let first = async {
            let tx = conn.client.transaction().await?;
            let counts = write_rows(&tx, &conn.stmts, &clock, &decoded, &rejected).await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(counts)
        }
        .await;
        let mut outcome = BatchOutcome {
            messages: batch.msgs.len(),
            ..BatchOutcome::default()
        };
        match first {
            Ok(counts) => {
                outcome.merge(counts);
                outcome.rejected = rejected.iter().map(|r| r.reason).collect();
                Ok(outcome)
            }
            Err(e) if classify(&e) == ErrorClass::Poison => {
                tracing::warn!(
                    err = %db_error_text(&e),
                    "A message in the batch was refused by the database; \
                     retrying the batch one message at a time."
                );
                outcome.isolated = true;
                isolate(conn, &clock, batch, &decoded, &rejected, &mut outcome).await?;
                Ok(outcome)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Which of `ids` are recorded in `log_batches` (pushed to Loki by a
    /// committed batch). One attempt; an error is worth retrying (the
    /// connection has then been dropped).
    pub async fn delivered_logs(&mut self, ids: &[LogId]) -> anyhow::Result<HashSet<LogId>> {
        let timeout = self.settings.write_timeout;
        let display = self.settings.display.clone();
        let result = tokio::time::timeout(timeout, async {
            let conn = self.conn_mut().await?;
            let site: Vec<&str> = ids.iter().map(|i| i.0.as_str()).collect();
            let boot: Vec<&str> = ids.iter().map(|i| i.1.as_str()).collect();
            let seq: Vec<i64> = ids.iter().map(|i| i.2).collect();
            let rows = conn
                .client
                .query(&conn.stmts.logs.delivered, &[&site, &boot, &seq])
                .await?;
            let mut out = HashSet::with_capacity(rows.len());
            for row in rows {
                out.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
            Ok::<_, anyhow::Error>(out)
        })
        .await;
        match result {
            Ok(Ok(set)) => Ok(set),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.context(format!("reading log_batches on {display}")))
            }
            Err(_) => {
                self.conn = None;
                anyhow::bail!("reading log_batches on {display} took longer than {timeout:?}")
            }
        }
    }

    /// Runs `SELECT 1` on the sink's connection (connecting if needed).
    pub async fn ping(&mut self) -> anyhow::Result<()> {
        let conn = self.conn_mut().await?;
        conn.client
            .simple_query("SELECT 1")
            .await
            .context("pinging the database")?;
        Ok(())
    }
}

/// Opens a connection and spawns its driver task.
/// TLS follows `settings.tls` (libpq's sslmode, see [`tls`]).
pub async fn connect(settings: &PostgresSettings) -> anyhow::Result<Client> {
    let context = || {
        format!(
            "connecting to {} (sslmode={})",
            settings.display,
            settings.tls.mode.as_str()
        )
    };
    let db = settings.display.clone();
    let client = match &settings.tls.config {
        None => {
            let (client, connection) = settings
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .with_context(context)?;
            tokio::spawn(drive(connection, db));
            client
        }
        Some(tls) => {
            let make = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
            let (client, connection) = settings.config.connect(make).await.with_context(context)?;
            tokio::spawn(drive(connection, db));
            client
        }
    };
    Ok(client)
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>, db: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(%db, err = %e, "Database connection closed.");
    }
}

/// The batch again (`decoded` and `rejected`: what [`PgSink::write`]
/// kept of it), one message at a time under savepoints; messages the
/// database refuses become `db_error` rejections.
async fn isolate(
    conn: &mut Conn,
    clock: &Clock,
    batch: &Prepared<'_>,
    decoded: &[&Decoded],
    rejected: &[&Rejection],
    outcome: &mut BatchOutcome,
) -> anyhow::Result<()> {
    let mut tx = conn.client.transaction().await?;
    let mut extra: Vec<Rejection> = Vec::new();
    for &d in decoded {
        let sp = tx.savepoint("one_message").await?;
        match write_rows(&sp, &conn.stmts, clock, &[d], &[]).await {
            Ok(counts) => {
                sp.commit().await?;
                outcome.merge(counts);
            }
            Err(e) if classify(&e) == ErrorClass::Poison => {
                sp.rollback().await?;
                let text = db_error_text(&e);
                let raw = batch
                    .msgs
                    .get(d.index)
                    .context("decoded message index out of range")?;
                tracing::warn!(topic = raw.topic, err = %text, "Message refused by the database; rejected.");
                extra.push(Rejection::new(d.index, raw, REASON_DB_ERROR, &text));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut all: Vec<&Rejection> = rejected.iter().copied().chain(extra.iter()).collect();
    all.sort_by_key(|r| r.index);
    let counts = write_rows(&tx, &conn.stmts, clock, &[], &all).await?;
    outcome.merge(counts);
    outcome.rejected = all.iter().map(|r| r.reason).collect();
    tx.commit().await?;
    Ok(())
}

/// The SQLSTATE and message of a server error, or the whole error.
fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Every statement one batch may run, per table family, prepared once
/// per connection.
struct Statements {
    sites: sites::Stmts,
    status: status::Stmts,
    heartbeat: heartbeat::Stmts,
    disk: disk::Stmts,
    logs: logs::Stmts,
    streams: streams::Stmts,
    smart: smart::Stmts,
    events: events::Stmts,
    ups: ups::Stmts,
    reach: reach::Stmts,
    rejected: rejected::Stmts,
    boots: boots::Stmts,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            sites: sites::Stmts::prepare(c).await?,
            status: status::Stmts::prepare(c).await?,
            heartbeat: heartbeat::Stmts::prepare(c).await?,
            disk: disk::Stmts::prepare(c).await?,
            logs: logs::Stmts::prepare(c).await?,
            streams: streams::Stmts::prepare(c).await?,
            smart: smart::Stmts::prepare(c).await?,
            events: events::Stmts::prepare(c).await?,
            ups: ups::Stmts::prepare(c).await?,
            reach: reach::Stmts::prepare(c).await?,
            rejected: rejected::Stmts::prepare(c).await?,
            boots: boots::Stmts::prepare(c).await?,
        })
    }
}

/// Clock skew of a batch and the bound beyond which time series are
/// stored at receive time.
struct Clock {
    skews: BTreeMap<String, SiteSkew>,
    max_skew: Option<Duration>,
}

impl Clock {
    /// The effective `ts` of a time-series row: the agent's time, or the
    /// receive time when the site's clock is off by more than the bound.
    fn effective(&self, site: &str, agent: SystemTime, received_at: SystemTime) -> SystemTime {
        match self.skews.get(site) {
            Some(s) if beyond(s.skew_ms, self.max_skew) => received_at,
            _ => agent,
        }
    }
}

/// `(message, effective time, received at)` of each message, in receive
/// order: the input of the jsonb row builders.
fn timed<'a>(
    clock: &'a Clock,
    decoded: &'a [&'a Decoded],
) -> impl Iterator<Item = (&'a Message, SystemTime, SystemTime)> + 'a {
    decoded.iter().map(move |d| {
        let (site, _, _) = d.msg.identity();
        let agent = agent_time(d.msg.ts());
        (
            &d.msg,
            clock.effective(site, agent, d.received_at),
            d.received_at,
        )
    })
}

/// Writes decoded messages and rejections inside the caller's transaction
/// (or savepoint), one table family after the other. Does not commit.
///
/// The order matters. The message tables come first, in one pipeline with
/// the `sites` statements after them: they take no lock another batch
/// waits for (only a copy of the same identity meets the first on its
/// unique index). Then the sites are locked (concurrent batches, of this
/// bridge or another, serialize per site from here to their COMMIT),
/// statuses fold over the state read there, and `boots` counts the
/// identities the message tables reported new. Locking the sites first,
/// as before, made a batch sharing a single site with the batch before it
/// (the heartbeat and disk message of one site split by a batch boundary
/// are enough) wait for that batch's COMMIT before doing anything, so two
/// batches in flight, or two bridges, took turns instead of overlapping.
async fn write_rows<C: GenericClient + Sync>(
    tx: &C,
    st: &Statements,
    clock: &Clock,
    decoded: &[&Decoded],
    rejected: &[&Rejection],
) -> Result<Counts, tokio_postgres::Error> {
    // The message tables do not depend on each other: one pipeline (see
    // the module documentation), results checked in statement order.
    let (hb, disk, logs, streams, smart, events, ups, reach, rejected, current) = tokio::join!(
        biased;
        heartbeat::write_heartbeats(tx, &st.heartbeat, clock, decoded),
        disk::write_disk(tx, &st.disk, clock, decoded),
        logs::write_logs(tx, &st.logs, decoded),
        streams::write_streams(tx, &st.streams, clock, decoded),
        smart::write_smart(tx, &st.smart, clock, decoded),
        events::write_events(tx, &st.events, clock, decoded),
        ups::write_ups(tx, &st.ups, clock, decoded),
        reach::write_reach(tx, &st.reach, clock, decoded),
        rejected::write_rejected(tx, &st.rejected, rejected),
        sites::touch_sites(tx, &st.sites, clock, decoded),
    );
    let mut counts = Counts::default();
    for c in [hb, disk, logs, streams, smart, events, ups, reach, rejected] {
        counts.add(c?);
    }
    let applied = status::apply_states(tx, &st.status, decoded, current?).await?;
    counts.add(status::write_status(tx, &st.status, decoded, applied).await?);
    // Bookkeeping, one pipeline: `boots` is upserted before `last_seq`
    // reads it (the server runs a pipeline in the order it was sent).
    let (boots_done, versions, last_seq) = tokio::join!(
        biased;
        boots::write_boots(tx, &st.boots, decoded, &counts.new_ids),
        heartbeat::write_versions(tx, &st.heartbeat, decoded),
        boots::write_last_seq(tx, &st.boots, decoded),
    );
    boots_done?;
    versions?;
    last_seq?;
    counts.duplicates = decoded.len().saturating_sub(counts.stored);
    Ok(counts)
}
