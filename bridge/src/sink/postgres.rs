//! PostgreSQL sink: writes one batch per transaction.
//!
//! [`PgSink::write`] makes one attempt at storing a [`Prepared`] batch:
//! every table is written with one `INSERT ... SELECT FROM UNNEST(...)`
//! (one array parameter per column, so no bind-parameter limit and one
//! round trip per table), with `ON CONFLICT DO NOTHING` on the message
//! identity so that redelivered messages are stored once. Prepared
//! statements are cached per connection.
//!
//! Errors: [`PgSink::write`] only returns errors worth retrying (after
//! which the connection is dropped and re-opened on the next attempt). A
//! poison error (see [`super::classify`]) makes it redo the batch one
//! message at a time under savepoints, storing each offending message in
//! `rejected_messages` as `db_error` instead; the batch then succeeds.
//!
//! `log` messages are pushed to Loki by the writer before the batch
//! comes here ([`super::loki`], planned in [`super::batch`]); this module records each delivered one
//! in `log_batches` (and `boots`), and answers which were delivered
//! already ([`PgSink::delivered_logs`]).
//!
//! Retrying, acking and metrics are the caller's business
//! ([`crate::writer`]); this module only talks to the database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use sitewatch_wire::payload::{OfflineReason, State};
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::batch::{
    agent_time, beyond, clamp_i32, clamp_i64, site_skews, unix_ms, Decoded, LogDelivery, LogId,
    Prepared, Rejection, SiteSkew,
};
use super::classify::{classify, is_transient, ErrorClass};
use super::migrations::{migrate, verify, MigrationReport};
use super::state::{should_apply, StateKey};
use crate::config::PostgresSettings;
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
        self.rejected_messages += o.rejected_messages;
    }

    /// `(table, rows)` pairs, for metrics.
    pub fn by_table(&self) -> [(&'static str, u64); 8] {
        [
            ("status_events", self.status_events),
            ("heartbeats", self.heartbeats),
            ("disk_usage", self.disk_usage),
            ("log_batches", self.log_batches),
            ("camera_probes", self.camera_probes),
            ("smart_readings", self.smart_readings),
            ("events", self.events),
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

/// Per-write counts from [`write_rows`].
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    stored: usize,
    duplicates: usize,
    rows: TableRows,
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
        }
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
        let conn = self.conn_mut().await?;
        let decoded: Vec<&Decoded> = batch.decoded.iter().collect();
        let rejected: Vec<&Rejection> = batch.rejected.iter().collect();
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
                outcome.rejected = batch.rejected.iter().map(|r| r.reason).collect();
                Ok(outcome)
            }
            Err(e) if classify(&e) == ErrorClass::Poison => {
                tracing::warn!(
                    err = %db_error_text(&e),
                    "A message in the batch was refused by the database; \
                     retrying the batch one message at a time."
                );
                outcome.isolated = true;
                isolate(conn, &clock, batch, &mut outcome).await?;
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
                .query(&conn.stmts.delivered_logs, &[&site, &boot, &seq])
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
pub async fn connect(settings: &PostgresSettings) -> anyhow::Result<Client> {
    let (client, connection) = settings
        .config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {}", settings.display))?;
    let db = settings.display.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%db, err = %e, "Database connection closed.");
        }
    });
    Ok(client)
}

/// The batch again, one message at a time under savepoints; messages the
/// database refuses become `db_error` rejections.
async fn isolate(
    conn: &mut Conn,
    clock: &Clock,
    batch: &Prepared<'_>,
    outcome: &mut BatchOutcome,
) -> anyhow::Result<()> {
    let mut tx = conn.client.transaction().await?;
    let mut extra: Vec<Rejection> = Vec::new();
    for d in &batch.decoded {
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
    let mut all: Vec<&Rejection> = batch.rejected.iter().chain(extra.iter()).collect();
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

/// Every statement one batch may run, prepared once per connection.
struct Statements {
    ensure_sites: Statement,
    touch_sites: Statement,
    apply_state: Statement,
    insert_status: Statement,
    insert_heartbeats: Statement,
    insert_disk: Statement,
    insert_log_batches: Statement,
    delivered_logs: Statement,
    insert_rejected: Statement,
    upsert_boots: Statement,
    heartbeat_versions: Statement,
    last_seq: Statement,
    clock_skew: Statement,
    insert_streams: Statement,
    upsert_cameras: Statement,
    insert_smart: Statement,
    upsert_disks: Statement,
    insert_events: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            ensure_sites: c.prepare(SQL_ENSURE_SITES).await?,
            touch_sites: c.prepare(SQL_TOUCH_SITES).await?,
            apply_state: c.prepare(SQL_APPLY_STATE).await?,
            insert_status: c.prepare(SQL_INSERT_STATUS).await?,
            insert_heartbeats: c.prepare(SQL_INSERT_HEARTBEATS).await?,
            insert_disk: c.prepare(SQL_INSERT_DISK).await?,
            insert_log_batches: c.prepare(SQL_INSERT_LOG_BATCHES).await?,
            delivered_logs: c.prepare(SQL_DELIVERED_LOGS).await?,
            insert_rejected: c.prepare(SQL_INSERT_REJECTED).await?,
            upsert_boots: c.prepare(SQL_UPSERT_BOOTS).await?,
            heartbeat_versions: c.prepare(SQL_HEARTBEAT_VERSIONS).await?,
            last_seq: c.prepare(SQL_LAST_SEQ).await?,
            clock_skew: c.prepare(SQL_CLOCK_SKEW).await?,
            insert_streams: c.prepare(super::health::SQL_INSERT_STREAMS).await?,
            upsert_cameras: c.prepare(super::health::SQL_UPSERT_CAMERAS).await?,
            insert_smart: c.prepare(super::health::SQL_INSERT_SMART).await?,
            upsert_disks: c.prepare(super::health::SQL_UPSERT_DISKS).await?,
            insert_events: c.prepare(super::health::SQL_INSERT_EVENTS).await?,
        })
    }
}

/// Creates rows for sites never seen before.
const SQL_ENSURE_SITES: &str = "\
INSERT INTO sites (site, first_seen, last_seen)
SELECT u.site, u.seen, u.seen FROM UNNEST($1::text[], $2::timestamptz[]) AS u(site, seen)
ON CONFLICT (site) DO NOTHING";

/// Locks the batch's sites, moves `last_seen`, returns the current state.
const SQL_TOUCH_SITES: &str = "\
UPDATE sites AS s SET last_seen = GREATEST(s.last_seen, u.live)
FROM UNNEST($1::text[], $2::timestamptz[]) AS u(site, live)
WHERE s.site = u.site
RETURNING s.site, s.boot, s.session, s.state_rank, s.state_ts";

const SQL_APPLY_STATE: &str = "\
UPDATE sites AS s SET
    state = u.state, reason = u.reason, boot = u.boot, session = u.session,
    state_rank = u.rank, state_ts = u.ts,
    state_changed_at = CASE WHEN s.state IS DISTINCT FROM u.state
                            THEN u.received_at ELSE s.state_changed_at END,
    agent_version = u.agent_version, heartbeat_secs = u.heartbeat_secs
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int2[],
            $7::timestamptz[], $8::timestamptz[], $9::text[], $10::int4[])
    AS u(site, state, reason, boot, session, rank, ts, received_at, agent_version, heartbeat_secs)
WHERE s.site = u.site";

const SQL_INSERT_STATUS: &str = "\
INSERT INTO status_events
    (site, boot, session, seq, state, reason, agent_ts, received_at, applied,
     agent_version, heartbeat_secs)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::int8[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::text[], $11::int4[])
ON CONFLICT DO NOTHING
RETURNING site, boot, session, seq";

const SQL_INSERT_HEARTBEATS: &str = "\
INSERT INTO heartbeats
    (site, boot, seq, ts, received_at, agent_version, interval_secs, uptime_secs,
     agent_uptime_secs, load1, load5, load15, mem_total_bytes, mem_available_bytes,
     agent_rss_bytes, counters, agent_ts)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $7::int4[], $8::int8[], $9::int8[], $10::float4[],
                     $11::float4[], $12::float4[], $13::int8[], $14::int8[], $15::int8[],
                     $16::jsonb[], $17::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING site, boot, seq";

const SQL_INSERT_DISK: &str = "\
INSERT INTO disk_usage
    (site, boot, seq, ts, received_at, path, fs_type, total_bytes, used_bytes, avail_bytes,
     used_pct, inodes_total, inodes_free, read_only, error, agent_ts)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[],
                     $11::float4[], $12::int8[], $13::int8[], $14::bool[], $15::text[],
                     $16::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING site, boot, seq";

/// One row per `log` message delivered to Loki.
const SQL_INSERT_LOG_BATCHES: &str = "\
INSERT INTO log_batches (site, boot, seq, ts, received_at, records, rejected)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[],
                     $6::int4[], $7::int4[])
ON CONFLICT DO NOTHING
RETURNING site, boot, seq";

/// Which of the given log message identities were delivered already.
const SQL_DELIVERED_LOGS: &str = "\
SELECT l.site, l.boot, l.seq
FROM log_batches AS l
JOIN UNNEST($1::text[], $2::text[], $3::int8[]) AS u(site, boot, seq)
  ON l.site = u.site AND l.boot = u.boot AND l.seq = u.seq";

const SQL_INSERT_REJECTED: &str = "\
INSERT INTO rejected_messages (received_at, topic, reason, detail, payload, payload_len)
SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                     $6::int4[])";

const SQL_UPSERT_BOOTS: &str = "\
INSERT INTO boots AS b (site, boot, first_seen, last_seen, max_seq, received)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                     $5::int8[], $6::int8[])
ON CONFLICT (site, boot) DO UPDATE SET
    first_seen = LEAST(b.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(b.last_seen, EXCLUDED.last_seen),
    max_seq = GREATEST(b.max_seq, EXCLUDED.max_seq),
    received = b.received + EXCLUDED.received";

/// Heartbeats of the site's current boot (or of a site with no status
/// yet) refresh its agent version and heartbeat period; never its state.
const SQL_HEARTBEAT_VERSIONS: &str = "\
UPDATE sites AS s SET agent_version = u.agent_version, heartbeat_secs = u.interval_secs
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[])
    AS u(site, boot, agent_version, interval_secs)
WHERE s.site = u.site AND (s.boot IS NULL OR s.boot = u.boot)";

/// Highest seq of the site's current boot; for a site without a status
/// yet, of the boot of its latest message in the batch.
const SQL_LAST_SEQ: &str = "\
UPDATE sites AS s SET last_seq = b.max_seq
FROM UNNEST($1::text[], $2::text[]) AS u(site, latest_boot), boots AS b
WHERE s.site = u.site AND b.site = s.site AND b.boot = COALESCE(s.boot, u.latest_boot)
  AND s.last_seq IS DISTINCT FROM b.max_seq";

/// Latest measured clock skew per site (a measurement older than the
/// stored one, from a batch retried late, does not overwrite it).
const SQL_CLOCK_SKEW: &str = "\
UPDATE sites AS s SET clock_skew_ms = u.skew_ms, clock_skew_at = u.at
FROM UNNEST($1::text[], $2::int8[], $3::timestamptz[]) AS u(site, skew_ms, at)
WHERE s.site = u.site AND (s.clock_skew_at IS NULL OR s.clock_skew_at <= u.at)";

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

/// Per-site liveness seen in a batch.
#[derive(Default)]
struct Seen {
    /// Latest receive time of a live (not retained) message.
    live: Option<SystemTime>,
    /// Latest agent time of a retained message, capped at its receipt.
    retained: Option<SystemTime>,
}

/// Per-boot aggregate for `boots`.
struct BootAgg {
    first_seen: SystemTime,
    last_seen: SystemTime,
    max_seq: i64,
    received: i64,
}

fn state_str(s: State) -> &'static str {
    match s {
        State::Online => "online",
        State::Offline => "offline",
    }
}

fn reason_str(r: Option<OfflineReason>) -> Option<&'static str> {
    r.map(|r| match r {
        OfflineReason::Shutdown => "shutdown",
        OfflineReason::Lost => "lost",
    })
}

/// Writes decoded messages and rejections inside the caller's transaction
/// (or savepoint). Does not commit.
async fn write_rows<C: GenericClient + Sync>(
    tx: &C,
    st: &Statements,
    clock: &Clock,
    decoded: &[&Decoded],
    rejected: &[&Rejection],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();

    // Sites: create, lock (the UPDATE holds row locks until commit, so
    // concurrent bridges serialize per site), bump last_seen, read state.
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    for d in decoded {
        let (site, _, _) = d.msg.identity();
        let e = seen.entry(site).or_default();
        if d.retained {
            let t = agent_time(d.msg.ts()).min(d.received_at);
            e.retained = e.retained.max(Some(t));
        } else {
            e.live = e.live.max(Some(d.received_at));
        }
    }
    let mut current: HashMap<String, Option<StateKey>> = HashMap::new();
    if !seen.is_empty() {
        let sites: Vec<&str> = seen.keys().copied().collect();
        let first: Vec<SystemTime> = seen
            .values()
            .map(|s| s.live.or(s.retained).unwrap_or_else(SystemTime::now))
            .collect();
        let live: Vec<Option<SystemTime>> = seen.values().map(|s| s.live).collect();
        tx.execute(&st.ensure_sites, &[&sites, &first]).await?;
        for row in tx.query(&st.touch_sites, &[&sites, &live]).await? {
            let site: String = row.try_get(0)?;
            let boot: Option<String> = row.try_get(1)?;
            let session: Option<i32> = row.try_get(2)?;
            let rank: Option<i16> = row.try_get(3)?;
            let ts: Option<SystemTime> = row.try_get(4)?;
            let key = match (boot, session, rank, ts) {
                (Some(boot), Some(session), Some(rank), Some(ts)) => Some(StateKey {
                    boot,
                    session: u32::try_from(session).unwrap_or(0),
                    rank,
                    ts_ms: unix_ms(ts),
                }),
                _ => None,
            };
            current.insert(site, key);
        }
        let skews: Vec<(&str, &SiteSkew)> = seen
            .keys()
            .filter_map(|site| clock.skews.get(*site).map(|s| (*site, s)))
            .collect();
        if !skews.is_empty() {
            let site: Vec<&str> = skews.iter().map(|s| s.0).collect();
            let skew: Vec<i64> = skews.iter().map(|s| s.1.skew_ms).collect();
            let at: Vec<SystemTime> = skews.iter().map(|s| s.1.at).collect();
            tx.execute(&st.clock_skew, &[&site, &skew, &at]).await?;
        }
    }

    // Statuses: fold through the rule in receive order.
    let mut applied_flags = Vec::new();
    let mut final_state: BTreeMap<&str, &Decoded> = BTreeMap::new();
    for d in decoded {
        if let Message::Status(s) = &d.msg {
            let key = StateKey::of(s);
            let cur = current.entry(s.site.clone()).or_insert(None);
            let apply = should_apply(cur.as_ref(), &key);
            if apply {
                *cur = Some(key);
                final_state.insert(&s.site, d);
            }
            applied_flags.push(apply);
        }
    }
    if !final_state.is_empty() {
        let mut c = StatusCols::default();
        for d in final_state.values() {
            if let Message::Status(s) = &d.msg {
                c.push(s, d.received_at, true);
            }
        }
        tx.execute(
            &st.apply_state,
            &[
                &c.site,
                &c.state,
                &c.reason,
                &c.boot,
                &c.session,
                &c.rank,
                &c.ts,
                &c.received_at,
                &c.agent_version,
                &c.heartbeat_secs,
            ],
        )
        .await?;
    }

    // New message identities, for duplicates and boots.received.
    let mut new_ids: HashSet<(String, String, i64)> = HashSet::new();
    let mut new_messages = 0usize;

    let mut sc = StatusCols::default();
    let mut flags = applied_flags.into_iter();
    for d in decoded {
        if let Message::Status(s) = &d.msg {
            sc.push(s, d.received_at, flags.next().unwrap_or(false));
        }
    }
    if !sc.site.is_empty() {
        let rows = tx
            .query(
                &st.insert_status,
                &[
                    &sc.site,
                    &sc.boot,
                    &sc.session,
                    &sc.seq,
                    &sc.state,
                    &sc.reason,
                    &sc.ts,
                    &sc.received_at,
                    &sc.applied,
                    &sc.agent_version,
                    &sc.heartbeat_secs,
                ],
            )
            .await?;
        counts.rows.status_events = rows.len() as u64;
        new_messages += rows.len();
        for row in rows {
            let seq: i64 = row.try_get(3)?;
            if seq >= 1 {
                new_ids.insert((row.try_get(0)?, row.try_get(1)?, seq));
            }
        }
    }

    let mut hc = HeartbeatCols::default();
    for d in decoded {
        if let Message::Heartbeat(h) = &d.msg {
            hc.push(h, d.received_at, clock);
        }
    }
    if !hc.site.is_empty() {
        let rows = tx
            .query(
                &st.insert_heartbeats,
                &[
                    &hc.site,
                    &hc.boot,
                    &hc.seq,
                    &hc.ts,
                    &hc.received_at,
                    &hc.agent_version,
                    &hc.interval_secs,
                    &hc.uptime_secs,
                    &hc.agent_uptime_secs,
                    &hc.load1,
                    &hc.load5,
                    &hc.load15,
                    &hc.mem_total_bytes,
                    &hc.mem_available_bytes,
                    &hc.agent_rss_bytes,
                    &hc.counters,
                    &hc.agent_ts,
                ],
            )
            .await?;
        counts.rows.heartbeats = rows.len() as u64;
        new_messages += rows.len();
        for row in rows {
            new_ids.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
    }

    let mut dc = DiskCols::default();
    for d in decoded {
        if let Message::Disk(m) = &d.msg {
            dc.push(m, d.received_at, clock);
        }
    }
    if !dc.site.is_empty() {
        let rows = tx
            .query(
                &st.insert_disk,
                &[
                    &dc.site,
                    &dc.boot,
                    &dc.seq,
                    &dc.ts,
                    &dc.received_at,
                    &dc.path,
                    &dc.fs_type,
                    &dc.total_bytes,
                    &dc.used_bytes,
                    &dc.avail_bytes,
                    &dc.used_pct,
                    &dc.inodes_total,
                    &dc.inodes_free,
                    &dc.read_only,
                    &dc.error,
                    &dc.agent_ts,
                ],
            )
            .await?;
        counts.rows.disk_usage = rows.len() as u64;
        let mut disk_ids = HashSet::new();
        for row in rows {
            let id: (String, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            disk_ids.insert(id);
        }
        new_messages += disk_ids.len();
        new_ids.extend(disk_ids);
    }

    let mut lc = LogCols::default();
    for d in decoded {
        if let Message::Log(l) = &d.msg {
            lc.push(l, d.received_at, d.log);
        }
    }
    if !lc.site.is_empty() {
        let rows = tx
            .query(
                &st.insert_log_batches,
                &[
                    &lc.site,
                    &lc.boot,
                    &lc.seq,
                    &lc.ts,
                    &lc.received_at,
                    &lc.records,
                    &lc.rejected,
                ],
            )
            .await?;
        counts.rows.log_batches = rows.len() as u64;
        new_messages += rows.len();
        for row in rows {
            new_ids.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
    }

    let health = super::health::Rows::collect(decoded.iter().map(|d| {
        let (site, _, _) = d.msg.identity();
        let agent = agent_time(d.msg.ts());
        (
            &d.msg,
            clock.effective(site, agent, d.received_at),
            d.received_at,
        )
    }));
    if let Some(rows) = &health.streams {
        let ids = tx.query(&st.insert_streams, &[rows]).await?;
        counts.rows.camera_probes = ids.len() as u64;
        new_messages += ids.len();
        for row in ids {
            new_ids.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
    }
    if let Some(rows) = &health.cameras {
        tx.execute(&st.upsert_cameras, &[rows]).await?;
    }
    if let Some(rows) = &health.smart {
        let ids = tx.query(&st.insert_smart, &[rows]).await?;
        counts.rows.smart_readings = ids.len() as u64;
        new_messages += ids.len();
        for row in ids {
            new_ids.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
    }
    if let Some(rows) = &health.disks {
        tx.execute(&st.upsert_disks, &[rows]).await?;
    }
    if let Some(rows) = &health.events {
        let ids = tx.query(&st.insert_events, &[rows]).await?;
        counts.rows.events = ids.len() as u64;
        new_messages += ids.len();
        for row in ids {
            new_ids.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
    }

    if !rejected.is_empty() {
        let received_at: Vec<SystemTime> = rejected.iter().map(|r| r.received_at).collect();
        let topic: Vec<&str> = rejected.iter().map(|r| r.topic.as_str()).collect();
        let reason: Vec<&str> = rejected.iter().map(|r| r.reason).collect();
        let detail: Vec<&str> = rejected.iter().map(|r| r.detail.as_str()).collect();
        let payload: Vec<&[u8]> = rejected.iter().map(|r| r.payload.as_slice()).collect();
        let len: Vec<i32> = rejected.iter().map(|r| r.payload_len).collect();
        counts.rows.rejected_messages = tx
            .execute(
                &st.insert_rejected,
                &[&received_at, &topic, &reason, &detail, &payload, &len],
            )
            .await?;
    }

    // Boots: seen range, highest seq, and newly stored messages.
    let mut boots: BTreeMap<(&str, &str), BootAgg> = BTreeMap::new();
    for d in decoded {
        let (site, boot, seq) = d.msg.identity();
        let seq = clamp_i64(seq);
        let agg = boots.entry((site, boot)).or_insert(BootAgg {
            first_seen: d.received_at,
            last_seen: d.received_at,
            max_seq: 0,
            received: 0,
        });
        agg.first_seen = agg.first_seen.min(d.received_at);
        agg.last_seen = agg.last_seen.max(d.received_at);
        agg.max_seq = agg.max_seq.max(seq);
    }
    for (site, boot, _) in &new_ids {
        if let Some(agg) = boots.get_mut(&(site.as_str(), boot.as_str())) {
            agg.received += 1;
        }
    }
    if !boots.is_empty() {
        let site: Vec<&str> = boots.keys().map(|k| k.0).collect();
        let boot: Vec<&str> = boots.keys().map(|k| k.1).collect();
        let first: Vec<SystemTime> = boots.values().map(|a| a.first_seen).collect();
        let last: Vec<SystemTime> = boots.values().map(|a| a.last_seen).collect();
        let max_seq: Vec<i64> = boots.values().map(|a| a.max_seq).collect();
        let received: Vec<i64> = boots.values().map(|a| a.received).collect();
        tx.execute(
            &st.upsert_boots,
            &[&site, &boot, &first, &last, &max_seq, &received],
        )
        .await?;
    }

    // Latest heartbeat per site refreshes version and period.
    let mut latest_hb: BTreeMap<&str, (&str, &str, i32)> = BTreeMap::new();
    for d in decoded {
        if let Message::Heartbeat(h) = &d.msg {
            latest_hb.insert(
                &h.site,
                (
                    &h.boot,
                    &h.agent_version,
                    clamp_i32(u64::from(h.interval_secs)),
                ),
            );
        }
    }
    if !latest_hb.is_empty() {
        let site: Vec<&str> = latest_hb.keys().copied().collect();
        let boot: Vec<&str> = latest_hb.values().map(|v| v.0).collect();
        let version: Vec<&str> = latest_hb.values().map(|v| v.1).collect();
        let interval: Vec<i32> = latest_hb.values().map(|v| v.2).collect();
        tx.execute(&st.heartbeat_versions, &[&site, &boot, &version, &interval])
            .await?;
    }
    let mut latest_boot: BTreeMap<&str, &str> = BTreeMap::new();
    for d in decoded {
        let (site, boot, _) = d.msg.identity();
        latest_boot.insert(site, boot);
    }
    if !latest_boot.is_empty() {
        let site: Vec<&str> = latest_boot.keys().copied().collect();
        let boot: Vec<&str> = latest_boot.values().copied().collect();
        tx.execute(&st.last_seq, &[&site, &boot]).await?;
    }

    counts.stored = new_messages;
    counts.duplicates = decoded.len().saturating_sub(new_messages);
    Ok(counts)
}

#[derive(Default)]
struct StatusCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    session: Vec<i32>,
    seq: Vec<i64>,
    state: Vec<&'static str>,
    reason: Vec<Option<&'static str>>,
    rank: Vec<i16>,
    ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    applied: Vec<bool>,
    agent_version: Vec<&'a str>,
    heartbeat_secs: Vec<i32>,
}

impl<'a> StatusCols<'a> {
    fn push(
        &mut self,
        s: &'a sitewatch_wire::payload::Status,
        received_at: SystemTime,
        applied: bool,
    ) {
        self.site.push(&s.site);
        self.boot.push(&s.boot);
        self.session.push(clamp_i32(u64::from(s.session)));
        self.seq.push(clamp_i64(s.seq));
        self.state.push(state_str(s.state));
        self.reason.push(reason_str(s.reason));
        self.rank.push(super::state::rank(s.state));
        self.ts.push(agent_time(s.ts));
        self.received_at.push(received_at);
        self.applied.push(applied);
        self.agent_version.push(&s.agent_version);
        self.heartbeat_secs
            .push(clamp_i32(u64::from(s.heartbeat_secs)));
    }
}

#[derive(Default)]
struct HeartbeatCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    seq: Vec<i64>,
    ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    agent_version: Vec<&'a str>,
    interval_secs: Vec<i32>,
    uptime_secs: Vec<i64>,
    agent_uptime_secs: Vec<i64>,
    load1: Vec<f32>,
    load5: Vec<f32>,
    load15: Vec<f32>,
    mem_total_bytes: Vec<i64>,
    mem_available_bytes: Vec<i64>,
    agent_rss_bytes: Vec<i64>,
    counters: Vec<serde_json::Value>,
    agent_ts: Vec<SystemTime>,
}

impl<'a> HeartbeatCols<'a> {
    fn push(
        &mut self,
        h: &'a sitewatch_wire::payload::Heartbeat,
        received_at: SystemTime,
        clock: &Clock,
    ) {
        self.site.push(&h.site);
        self.boot.push(&h.boot);
        self.seq.push(clamp_i64(h.seq));
        let agent = agent_time(h.ts);
        self.ts.push(clock.effective(&h.site, agent, received_at));
        self.agent_ts.push(agent);
        self.received_at.push(received_at);
        self.agent_version.push(&h.agent_version);
        self.interval_secs
            .push(clamp_i32(u64::from(h.interval_secs)));
        self.uptime_secs.push(clamp_i64(h.uptime_secs));
        self.agent_uptime_secs.push(clamp_i64(h.agent_uptime_secs));
        self.load1.push(h.load[0]);
        self.load5.push(h.load[1]);
        self.load15.push(h.load[2]);
        self.mem_total_bytes.push(clamp_i64(h.mem_total_bytes));
        self.mem_available_bytes
            .push(clamp_i64(h.mem_available_bytes));
        self.agent_rss_bytes.push(clamp_i64(h.agent_rss_bytes));
        self.counters.push(serde_json::Value::Object(
            h.counters
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect(),
        ));
    }
}

#[derive(Default)]
struct LogCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    seq: Vec<i64>,
    ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    records: Vec<i32>,
    rejected: Vec<i32>,
}

impl<'a> LogCols<'a> {
    fn push(
        &mut self,
        l: &'a sitewatch_wire::payload::Log,
        received_at: SystemTime,
        delivery: Option<LogDelivery>,
    ) {
        // A log message reaches here only after the writer pushed it (or
        // found it delivered); without a delivery record it counts all
        // its lines.
        let d = delivery.unwrap_or(LogDelivery {
            pushed: clamp_i32(u64::try_from(l.records.len()).unwrap_or(u64::MAX)),
            refused: 0,
        });
        self.site.push(&l.site);
        self.boot.push(&l.boot);
        self.seq.push(clamp_i64(l.seq));
        self.ts.push(agent_time(l.ts));
        self.received_at.push(received_at);
        self.records.push(d.pushed);
        self.rejected.push(d.refused);
    }
}

#[derive(Default)]
struct DiskCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    seq: Vec<i64>,
    ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    path: Vec<&'a str>,
    fs_type: Vec<&'a str>,
    total_bytes: Vec<i64>,
    used_bytes: Vec<i64>,
    avail_bytes: Vec<i64>,
    used_pct: Vec<f32>,
    inodes_total: Vec<i64>,
    inodes_free: Vec<i64>,
    read_only: Vec<bool>,
    error: Vec<Option<&'a str>>,
    agent_ts: Vec<SystemTime>,
}

impl<'a> DiskCols<'a> {
    fn head(
        &mut self,
        m: &'a sitewatch_wire::payload::Disk,
        at: SystemTime,
        clock: &Clock,
        path: &'a str,
        fs_type: &'a str,
    ) {
        self.site.push(&m.site);
        self.boot.push(&m.boot);
        self.seq.push(clamp_i64(m.seq));
        let agent = agent_time(m.ts);
        self.ts.push(clock.effective(&m.site, agent, at));
        self.agent_ts.push(agent);
        self.received_at.push(at);
        self.path.push(path);
        self.fs_type.push(fs_type);
    }

    fn push(
        &mut self,
        m: &'a sitewatch_wire::payload::Disk,
        received_at: SystemTime,
        clock: &Clock,
    ) {
        if m.mounts.is_empty() {
            // Marker row, so that the message is stored (see migration).
            self.head(m, received_at, clock, "", "");
            self.total_bytes.push(0);
            self.used_bytes.push(0);
            self.avail_bytes.push(0);
            self.used_pct.push(0.0);
            self.inodes_total.push(0);
            self.inodes_free.push(0);
            self.read_only.push(false);
            self.error.push(Some("no_mounts"));
            return;
        }
        for mount in &m.mounts {
            self.head(m, received_at, clock, &mount.path, &mount.fs_type);
            self.total_bytes.push(clamp_i64(mount.total_bytes));
            self.used_bytes.push(clamp_i64(mount.used_bytes));
            self.avail_bytes.push(clamp_i64(mount.avail_bytes));
            self.used_pct.push(mount.used_pct);
            self.inodes_total.push(clamp_i64(mount.inodes_total));
            self.inodes_free.push(clamp_i64(mount.inodes_free));
            self.read_only.push(mount.read_only);
            self.error.push(mount.error.as_deref());
        }
    }
}
