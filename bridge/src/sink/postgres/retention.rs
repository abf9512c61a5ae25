//! Bounded history: the `[retention]` section, weekly partitions of the
//! history tables created ahead and dropped when past retention, the
//! writer's rule for messages older than retention, and the figures of
//! `sitewatch-bridge retention`.
//!
//! The history tables are partitioned by week on the agent's timestamp of
//! the message (migration 0008, which explains why that column). This
//! module keeps them bounded:
//! * [`maintain`] (one round, the clock passed in so that tests can move
//!   time) creates the partitions of this week and the next
//!   [`AHEAD_WEEKS`], drops the partitions wholly older than the table's
//!   retention (`DROP TABLE`, never `DELETE`), and prunes the DEFAULT
//!   partition (stray rows whose week has no partition) by receive time;
//! * [`run`] calls it on a timer, on its own connection;
//! * [`expired`] is the writer's rule: a message whose agent timestamp is
//!   older than its table's retention is not stored (its partition is gone
//!   or about to go, so storing it would put back a row that was dropped,
//!   or store twice a message whose first copy is about to be dropped); it
//!   becomes a `rejected_messages` row with reason [`REASON_EXPIRED`],
//!   counted by `sitewatch_bridge_rejected_total{reason="expired"}`, and
//!   is acknowledged like any rejection. This holds for statuses too: an
//!   expired status does not move the site's state either;
//! * [`status`] and [`render`] are the `retention` command's table.
//!
//! Without a `[retention]` section nothing expires and nothing is dropped
//! (as before version 8); partitions are still created ahead.
//!
//! Several bridges: a round runs under a session-level advisory lock taken
//! with `pg_try_advisory_lock`, so one bridge maintains while the others
//! skip that round. Ingest: creating a partition takes SHARE UPDATE
//! EXCLUSIVE on the partitioned table (`ATTACH PARTITION`, which does not
//! block inserts or reads) and ACCESS EXCLUSIVE on the DEFAULT partition
//! for the few milliseconds of moving its rows of that week; dropping
//! takes ACCESS EXCLUSIVE on the partitioned table for the `DROP TABLE`
//! (PostgreSQL 15 allows `DETACH ... CONCURRENTLY` neither in a
//! transaction nor with a DEFAULT partition). Every such step runs in its
//! own short transaction with `lock_timeout` = [`LOCK_TIMEOUT_MS`]: behind
//! a long query it gives up rather than hold the queue of inserts, and the
//! next round tries again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Deserialize;
use sitewatch_wire::Message;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::config::PostgresSettings;
use crate::sink::batch::{agent_time, Decoded, Prepared, Rejection};

/// `rejected_messages.reason` of a message older than its table's
/// retention.
pub const REASON_EXPIRED: &str = "expired";

/// Seconds in a partition (one week).
pub const WEEK_SECS: i64 = 7 * 86_400;

/// Partitions are created for the current week and this many after it.
pub const AHEAD_WEEKS: i64 = 2;

/// `lock_timeout` of every maintenance step, in ms: the longest an insert
/// can be held up behind a maintenance step that waits for a lock.
pub const LOCK_TIMEOUT_MS: u64 = 2_000;

/// Advisory lock key of a maintenance round ("sitewatch" + 2; the
/// migrations use + 1).
const LOCK_KEY: i64 = 0x5177_a7c4_0000_0002;

/// 1970-01-05, the first Monday after the Unix epoch, in seconds.
const FIRST_MONDAY: i64 = 4 * 86_400;

/// A partitioned history table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryTable {
    /// Table name.
    pub name: &'static str,
    /// Partition column: the agent's timestamp of the message (the
    /// bucket or probe time for the tables no message is stored in).
    pub column: &'static str,
    /// Column of the centre's receive time: stray rows of the DEFAULT
    /// partition are pruned by it.
    pub received: &'static str,
    /// Default retention when `[retention]` is present, in days.
    pub default_days: u32,
}

/// Number of partitioned tables.
pub const HISTORY_TABLES: usize = 12;

/// Every partitioned table, in the order of the `retention` output: the
/// seven message tables of migration 0008, then `disk_hourly` (the
/// rollup, kept longer than the samples), `camera_reachability` (written
/// by sitewatch-live) and `ingest_minutes` (migration 0011), then
/// `ups_readings` (migration 0012) and `reach_readings` (migration 0014).
pub const HISTORY: [HistoryTable; HISTORY_TABLES] = [
    HistoryTable {
        name: "heartbeats",
        column: "agent_ts",
        received: "received_at",
        default_days: 30,
    },
    HistoryTable {
        name: "disk_usage",
        column: "agent_ts",
        received: "received_at",
        default_days: 180,
    },
    HistoryTable {
        name: "camera_probes",
        column: "agent_ts",
        received: "received_at",
        default_days: 90,
    },
    HistoryTable {
        name: "smart_readings",
        column: "agent_ts",
        received: "received_at",
        default_days: 730,
    },
    HistoryTable {
        name: "status_events",
        column: "agent_ts",
        received: "received_at",
        default_days: 365,
    },
    HistoryTable {
        name: "events",
        column: "agent_ts",
        received: "received_at",
        default_days: 365,
    },
    HistoryTable {
        name: "log_batches",
        column: "ts",
        received: "received_at",
        default_days: 90,
    },
    HistoryTable {
        name: "disk_hourly",
        column: "hour",
        received: "hour",
        default_days: 730,
    },
    HistoryTable {
        name: "camera_reachability",
        column: "ts",
        received: "ts",
        default_days: 90,
    },
    HistoryTable {
        name: "ingest_minutes",
        column: "minute",
        received: "minute",
        default_days: 90,
    },
    HistoryTable {
        name: "ups_readings",
        column: "agent_ts",
        received: "received_at",
        default_days: 90,
    },
    HistoryTable {
        name: "reach_readings",
        column: "agent_ts",
        received: "received_at",
        default_days: 90,
    },
];

/// The history table a message is stored in.
pub fn table_of(msg: &Message) -> &'static str {
    match msg {
        Message::Status(_) => "status_events",
        Message::Heartbeat(_) => "heartbeats",
        Message::Disk(_) => "disk_usage",
        Message::Log(_) => "log_batches",
        Message::Stream(_) => "camera_probes",
        Message::Smart(_) => "smart_readings",
        Message::Event(_) => "events",
        Message::Ups(_) => "ups_readings",
        Message::Reach(_) => "reach_readings",
    }
}

fn default_heartbeats_days() -> u32 {
    30
}
fn default_disk_usage_days() -> u32 {
    180
}
fn default_camera_probes_days() -> u32 {
    90
}
fn default_smart_readings_days() -> u32 {
    730
}
fn default_status_events_days() -> u32 {
    365
}
fn default_events_days() -> u32 {
    365
}
fn default_log_batches_days() -> u32 {
    90
}
fn default_disk_hourly_days() -> u32 {
    730
}
fn default_camera_reachability_days() -> u32 {
    90
}
fn default_ingest_minutes_days() -> u32 {
    90
}
fn default_ups_readings_days() -> u32 {
    90
}
fn default_reach_readings_days() -> u32 {
    90
}
fn default_maintenance_interval_secs() -> u64 {
    3600
}

/// `[retention]`: how long each history table keeps its rows, in days
/// of the agent's timestamp. A row is dropped with its week's partition,
/// between `days` and `days` + 7 after its timestamp.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// `heartbeats`.
    #[serde(default = "default_heartbeats_days")]
    pub heartbeats_days: u32,
    /// `disk_usage`.
    #[serde(default = "default_disk_usage_days")]
    pub disk_usage_days: u32,
    /// `camera_probes`.
    #[serde(default = "default_camera_probes_days")]
    pub camera_probes_days: u32,
    /// `smart_readings`.
    #[serde(default = "default_smart_readings_days")]
    pub smart_readings_days: u32,
    /// `status_events`.
    #[serde(default = "default_status_events_days")]
    pub status_events_days: u32,
    /// `events`.
    #[serde(default = "default_events_days")]
    pub events_days: u32,
    /// `log_batches` (the record of which syslog batches reached Loki;
    /// the lines themselves follow Loki's own retention).
    #[serde(default = "default_log_batches_days")]
    pub log_batches_days: u32,
    /// `disk_hourly`, the hourly disk rollup (forecast and long ranges).
    #[serde(default = "default_disk_hourly_days")]
    pub disk_hourly_days: u32,
    /// `camera_reachability`, sitewatch-live's probe history.
    #[serde(default = "default_camera_reachability_days")]
    pub camera_reachability_days: u32,
    /// `ingest_minutes`, the messages stored per minute.
    #[serde(default = "default_ingest_minutes_days")]
    pub ingest_minutes_days: u32,
    /// `ups_readings`, the UPS readings (every `[ups] interval_secs`).
    #[serde(default = "default_ups_readings_days")]
    pub ups_readings_days: u32,
    /// `reach_readings`, the reachability rounds (every `[reach]
    /// interval_secs`, one row per target).
    #[serde(default = "default_reach_readings_days")]
    pub reach_readings_days: u32,
    /// How often the bridge creates and drops partitions.
    #[serde(default = "default_maintenance_interval_secs")]
    pub maintenance_interval_secs: u64,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            heartbeats_days: default_heartbeats_days(),
            disk_usage_days: default_disk_usage_days(),
            camera_probes_days: default_camera_probes_days(),
            smart_readings_days: default_smart_readings_days(),
            status_events_days: default_status_events_days(),
            events_days: default_events_days(),
            log_batches_days: default_log_batches_days(),
            disk_hourly_days: default_disk_hourly_days(),
            camera_reachability_days: default_camera_reachability_days(),
            ingest_minutes_days: default_ingest_minutes_days(),
            ups_readings_days: default_ups_readings_days(),
            reach_readings_days: default_reach_readings_days(),
            maintenance_interval_secs: default_maintenance_interval_secs(),
        }
    }
}

/// Longest retention accepted, in days (100 years).
const MAX_DAYS: u32 = 36_500;

/// Validated `[retention]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Days per table, in [`HISTORY`] order; `None`: no `[retention]`
    /// section, keep everything.
    days: Option<[u32; HISTORY_TABLES]>,
    /// Time between two maintenance rounds.
    pub maintenance_interval: Duration,
}

impl RetentionSettings {
    /// No `[retention]` section: nothing expires, partitions are still
    /// created ahead.
    pub fn keep_forever() -> RetentionSettings {
        RetentionSettings {
            days: None,
            maintenance_interval: Duration::from_secs(default_maintenance_interval_secs()),
        }
    }

    /// Retention of `table` in days; `None`: kept forever (or not a
    /// history table).
    pub fn days(&self, table: &str) -> Option<u32> {
        let days = self.days?;
        HISTORY
            .iter()
            .position(|t| t.name == table)
            .and_then(|i| days.get(i).copied())
    }

    /// Rows of `table` whose timestamp is before this are expired at `now`.
    pub fn cutoff(&self, table: &str, now: SystemTime) -> Option<SystemTime> {
        let days = self.days(table)?;
        Some(
            now.checked_sub(Duration::from_secs(u64::from(days) * 86_400))
                .unwrap_or(UNIX_EPOCH),
        )
    }
}

/// Validates `[retention]` (pure); every problem in plain words.
pub fn settings(raw: Option<&RawRetention>) -> Result<RetentionSettings, Vec<String>> {
    let Some(raw) = raw else {
        return Ok(RetentionSettings::keep_forever());
    };
    let days = [
        ("heartbeats_days", raw.heartbeats_days),
        ("disk_usage_days", raw.disk_usage_days),
        ("camera_probes_days", raw.camera_probes_days),
        ("smart_readings_days", raw.smart_readings_days),
        ("status_events_days", raw.status_events_days),
        ("events_days", raw.events_days),
        ("log_batches_days", raw.log_batches_days),
        ("disk_hourly_days", raw.disk_hourly_days),
        ("camera_reachability_days", raw.camera_reachability_days),
        ("ingest_minutes_days", raw.ingest_minutes_days),
        ("ups_readings_days", raw.ups_readings_days),
        ("reach_readings_days", raw.reach_readings_days),
    ];
    let mut problems = Vec::new();
    for (key, d) in days {
        if d == 0 || d > MAX_DAYS {
            problems.push(format!(
                "retention.{key}: must be 1 to {MAX_DAYS} days, not {d} (leave out the \
                 [retention] section to keep every row)"
            ));
        }
    }
    let secs = raw.maintenance_interval_secs;
    if !(60..=86_400).contains(&secs) {
        problems.push(format!(
            "retention.maintenance_interval_secs: must be 60 to 86400, not {secs}"
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RetentionSettings {
        days: Some(days.map(|(_, d)| d)),
        maintenance_interval: Duration::from_secs(secs),
    })
}

/// The writer's rule: `Some(detail)` when `msg` is older than its table's
/// retention at `now` and must not be stored. Deterministic for a given
/// message and `now`: it looks at the agent's timestamp only (the
/// partition column), never at when or how the message arrived.
pub fn expired(retention: &RetentionSettings, msg: &Message, now: SystemTime) -> Option<String> {
    let table = table_of(msg);
    let cutoff = retention.cutoff(table, now)?;
    let agent = agent_time(msg.ts());
    (agent < cutoff).then(|| {
        format!(
            "agent timestamp {} is older than the {}-day retention of {table}: not stored",
            format_utc(unix_secs(agent)),
            retention.days(table).unwrap_or(0),
        )
    })
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Monday 00:00 UTC of the week holding `secs`.
pub fn week_start(secs: i64) -> i64 {
    (secs - FIRST_MONDAY).div_euclid(WEEK_SECS) * WEEK_SECS + FIRST_MONDAY
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD HH:MM:SS+00`: a PostgreSQL timestamptz literal.
pub fn format_utc(secs: i64) -> String {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+00",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `<table>_pYYYYMMDD` for a partition starting at `start` (a Monday);
/// `_HHMMSS` is added for a start that is not midnight.
pub fn partition_name(table: &str, start: i64) -> String {
    let (y, m, d) = civil(start.div_euclid(86_400));
    let s = start.rem_euclid(86_400);
    if s == 0 {
        format!("{table}_p{y:04}{m:02}{d:02}")
    } else {
        format!(
            "{table}_p{y:04}{m:02}{d:02}_{:02}{:02}{:02}",
            s / 3600,
            s % 3600 / 60,
            s % 60
        )
    }
}

/// One partition of a history table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Table name.
    pub name: String,
    /// `[from, to)` in Unix seconds; `None` for the DEFAULT partition (or
    /// a bound this module cannot read, which it then leaves alone).
    pub range: Option<(i64, i64)>,
}

/// What one round does to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Weeks `[from, to)` to create, oldest first.
    pub create: Vec<(i64, i64)>,
    /// Partitions to drop: every row in them is past retention.
    pub drop: Vec<String>,
}

/// The pure part of a round: which weeks to create (this one and
/// [`AHEAD_WEEKS`] more, unless a partition overlaps them) and which
/// partitions to drop (those ending at or before `now - days`; never the
/// DEFAULT one).
pub fn plan(existing: &[Partition], now: i64, days: Option<u32>) -> Plan {
    let this_week = week_start(now);
    let create = (0..=AHEAD_WEEKS)
        .map(|i| (this_week + i * WEEK_SECS, this_week + (i + 1) * WEEK_SECS))
        .filter(|&(from, to)| {
            !existing
                .iter()
                .filter_map(|p| p.range)
                .any(|(a, b)| a < to && from < b)
        })
        .collect();
    let drop = match days {
        None => Vec::new(),
        Some(days) => {
            let cutoff = now - i64::from(days) * 86_400;
            let mut old: Vec<(i64, &str)> = existing
                .iter()
                .filter_map(|p| match p.range {
                    Some((from, to)) if to <= cutoff => Some((from, p.name.as_str())),
                    _ => None,
                })
                .collect();
            old.sort_unstable();
            old.into_iter().map(|(_, n)| n.to_owned()).collect()
        }
    };
    Plan { create, drop }
}

/// What a round did to one table.
#[derive(Debug, Clone, Default)]
pub struct TableRound {
    /// Table name.
    pub table: &'static str,
    /// Partitions created.
    pub created: Vec<String>,
    /// Rows moved from the DEFAULT partition into the ones created.
    pub moved: u64,
    /// Partitions dropped.
    pub dropped: Vec<String>,
    /// Rows deleted from the DEFAULT partition (received before the
    /// cutoff).
    pub pruned: u64,
    /// Longest step that held or waited for a lock (create, drop).
    pub longest_step: Duration,
    /// Steps that failed (each with its error); retried next round.
    pub errors: Vec<String>,
}

/// What [`maintain`] did.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// `false`: another bridge held the maintenance lock; nothing done.
    pub ran: bool,
    /// Per table, in [`HISTORY`] order.
    pub tables: Vec<TableRound>,
}

impl Round {
    /// Whether any step failed.
    pub fn has_errors(&self) -> bool {
        self.tables.iter().any(|t| !t.errors.is_empty())
    }
}

/// One maintenance round at `now` (the clock is a parameter so that tests
/// can move it): for each history table, creates the coming partitions
/// (moving the DEFAULT partition's rows of those weeks into them), drops
/// the partitions past retention and prunes the DEFAULT partition. A step
/// that fails (a lock not obtained within [`LOCK_TIMEOUT_MS`], a missing
/// privilege) is reported in the result and retried next round; an error
/// is returned only when the database cannot be used at all.
pub async fn maintain(
    client: &mut Client,
    now: SystemTime,
    retention: &RetentionSettings,
) -> anyhow::Result<Round> {
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .context("taking the partition maintenance lock")?
        .try_get(0)
        .context("reading pg_try_advisory_lock")?;
    if !got {
        return Ok(Round::default());
    }
    let result = maintain_locked(client, now, retention).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .context("releasing the partition maintenance lock");
    let round = result?;
    unlocked?;
    Ok(round)
}

async fn maintain_locked(
    client: &mut Client,
    now: SystemTime,
    retention: &RetentionSettings,
) -> anyhow::Result<Round> {
    let now_secs = unix_secs(now);
    let mut round = Round {
        ran: true,
        tables: Vec::new(),
    };
    for t in &HISTORY {
        let mut tr = TableRound {
            table: t.name,
            ..TableRound::default()
        };
        let parts = partitions(client, t.name).await?;
        let has_default = parts.iter().any(|p| p.range.is_none());
        let days = retention.days(t.name);
        let plan = plan(&parts, now_secs, days);
        for &(from, to) in &plan.create {
            let name = partition_name(t.name, from);
            let started = Instant::now();
            match create_partition(client, t, &name, from, to, has_default).await {
                Ok(moved) => {
                    tr.moved += moved;
                    tr.created.push(name);
                }
                Err(e) => tr
                    .errors
                    .push(format!("creating {name}: {}", error_text(&e))),
            }
            tr.longest_step = tr.longest_step.max(started.elapsed());
        }
        if !plan.drop.is_empty() {
            let started = Instant::now();
            match drop_partitions(client, t.name, &plan.drop).await {
                Ok(()) => tr.dropped = plan.drop.clone(),
                Err(e) => tr.errors.push(format!(
                    "dropping {}: {}",
                    plan.drop.join(", "),
                    error_text(&e)
                )),
            }
            tr.longest_step = tr.longest_step.max(started.elapsed());
        }
        if let (true, Some(cutoff)) = (has_default, retention.cutoff(t.name, now)) {
            let sql = format!(
                "DELETE FROM \"{}_default\" WHERE {} < $1",
                t.name, t.received
            );
            match client.execute(&sql, &[&cutoff]).await {
                Ok(n) => tr.pruned = n,
                Err(e) => tr.errors.push(format!(
                    "pruning {}_default: {}",
                    t.name,
                    error_text(&anyhow::Error::from(e))
                )),
            }
        }
        round.tables.push(tr);
    }
    Ok(round)
}

/// The SQLSTATE and message of a server error, or the whole chain.
fn error_text(e: &anyhow::Error) -> String {
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .and_then(|pg| pg.as_db_error())
    {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => format!("{e:#}"),
    }
}

/// The partitions of `table`, with their bounds in Unix seconds.
pub async fn partitions(client: &Client, table: &str) -> anyhow::Result<Vec<Partition>> {
    let rows = client
        .query(
            "SELECT c.relname::text,
                    extract(epoch FROM m[1]::timestamptz)::int8,
                    extract(epoch FROM m[2]::timestamptz)::int8
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             LEFT JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                            'FROM \\(''([^'']*)''\\) TO \\(''([^'']*)''\\)') AS m
                    ON true
             WHERE i.inhparent = $1::text::regclass
             ORDER BY 2 NULLS FIRST",
            &[&table],
        )
        .await
        .with_context(|| format!("listing the partitions of {table}"))?;
    rows.iter()
        .map(|r| {
            let from: Option<i64> = r.try_get(1)?;
            let to: Option<i64> = r.try_get(2)?;
            Ok(Partition {
                name: r.try_get(0)?,
                range: from.zip(to),
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .with_context(|| format!("reading the partitions of {table}"))
}

/// Creates the week `[from, to)` of `t` as a new table, moves the DEFAULT
/// partition's rows of that week into it, and attaches it; one
/// transaction. Returns how many rows moved.
async fn create_partition(
    client: &mut Client,
    t: &HistoryTable,
    name: &str,
    from: i64,
    to: i64,
    has_default: bool,
) -> anyhow::Result<u64> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
        .await?;
    if has_default {
        // First, so that no insert puts a row of this week into the
        // DEFAULT partition between the move and the attach.
        tx.batch_execute(&format!(
            "LOCK TABLE \"{}_default\" IN ACCESS EXCLUSIVE MODE",
            t.name
        ))
        .await?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE \"{name}\" (LIKE \"{}\" INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
         INCLUDING STORAGE)",
        t.name
    ))
    .await?;
    let mut moved = 0;
    if has_default {
        let lo = UNIX_EPOCH + Duration::from_secs(u64::try_from(from).unwrap_or(0));
        let hi = UNIX_EPOCH + Duration::from_secs(u64::try_from(to).unwrap_or(0));
        moved = tx
            .execute(
                &format!(
                    "WITH moved AS (DELETE FROM \"{0}_default\" WHERE {1} >= $1 AND {1} < $2 \
                     RETURNING *) INSERT INTO \"{name}\" SELECT * FROM moved",
                    t.name, t.column
                ),
                &[&lo, &hi],
            )
            .await?;
    }
    tx.batch_execute(&format!(
        "ALTER TABLE \"{}\" ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{}') TO ('{}')",
        t.name,
        format_utc(from),
        format_utc(to)
    ))
    .await?;
    tx.commit().await?;
    Ok(moved)
}

/// Drops partitions of `table` in one transaction. The partitioned table
/// is locked first (ACCESS EXCLUSIVE, within `lock_timeout`), in the same
/// order as queries take their locks, so that a query reading the table
/// cannot deadlock with the drop.
async fn drop_partitions(client: &mut Client, table: &str, names: &[String]) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
        .await?;
    tx.batch_execute(&format!("LOCK TABLE \"{table}\" IN ACCESS EXCLUSIVE MODE"))
        .await?;
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    tx.batch_execute(&format!("DROP TABLE {}", list.join(", ")))
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Runs [`maintain`] now and then every `maintenance_interval` until
/// `stop` is cancelled, starting once `schema_ready` is (the writer's
/// migrations create the partitioned tables). Failures are logged and
/// retried next round; they never stop the bridge (ingest goes on: rows
/// whose week has no partition land in the DEFAULT one).
pub async fn run(
    settings: PostgresSettings,
    retention: RetentionSettings,
    schema_ready: CancellationToken,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = schema_ready.cancelled() => {}
    }
    let mut client: Option<Client> = None;
    loop {
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match super::connect(&settings).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(err = %format!("{e:#}"), "Partition maintenance cannot connect; will retry.");
                    None
                }
            };
        }
        if let Some(c) = client.as_mut() {
            match maintain(c, SystemTime::now(), &retention).await {
                Ok(round) => log_round(&round),
                Err(e) => {
                    tracing::warn!(err = %format!("{e:#}"), "Partition maintenance failed; will retry.");
                    client = None;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retention.maintenance_interval) => {}
        }
    }
}

fn log_round(round: &Round) {
    if !round.ran {
        tracing::debug!("Another bridge is maintaining the partitions.");
        return;
    }
    for t in &round.tables {
        if !t.created.is_empty() || !t.dropped.is_empty() || t.pruned > 0 {
            tracing::info!(
                table = t.table,
                created = ?t.created,
                moved = t.moved,
                dropped = ?t.dropped,
                pruned = t.pruned,
                longest_step = ?t.longest_step,
                "Partitions maintained."
            );
        }
        for err in &t.errors {
            tracing::warn!(
                table = t.table,
                %err,
                "Partition maintenance step failed; will retry next round (a lock not \
                 obtained in time, or an account that does not own the tables: run \
                 `sitewatch-bridge retention --apply` as the schema owner)."
            );
        }
    }
}

/// One line of `sitewatch-bridge retention`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableStatus {
    /// Table name.
    pub table: &'static str,
    /// Retention in days; `None`: kept forever.
    pub days: Option<u32>,
    /// Weekly partitions (the DEFAULT one excluded).
    pub partitions: usize,
    /// Start of the oldest partition (Unix seconds): nothing older is
    /// kept, except stray rows in the DEFAULT partition.
    pub oldest: Option<i64>,
    /// End of the newest partition (Unix seconds): created ahead until.
    pub newest: Option<i64>,
    /// Rows in the DEFAULT partition.
    pub default_rows: i64,
    /// Estimated rows (planner statistics), all partitions.
    pub rows_estimate: i64,
    /// Bytes on disk, all partitions with their indexes and TOAST.
    pub bytes: i64,
}

/// The figures of every history table.
pub async fn status(
    client: &Client,
    retention: &RetentionSettings,
) -> anyhow::Result<Vec<TableStatus>> {
    let mut out = Vec::new();
    for t in &HISTORY {
        let parts = partitions(client, t.name).await?;
        let ranges: Vec<(i64, i64)> = parts.iter().filter_map(|p| p.range).collect();
        let row = client
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::int8,
                        coalesce(sum(greatest(c.reltuples, 0)), 0)::int8
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = $1::text::regclass",
                &[&t.name],
            )
            .await
            .with_context(|| format!("measuring {}", t.name))?;
        let default_rows: i64 = if parts.iter().any(|p| p.range.is_none()) {
            client
                .query_one(&format!("SELECT count(*) FROM \"{}_default\"", t.name), &[])
                .await
                .with_context(|| format!("counting {}_default", t.name))?
                .try_get(0)?
        } else {
            0
        };
        out.push(TableStatus {
            table: t.name,
            days: retention.days(t.name),
            partitions: ranges.len(),
            oldest: ranges.iter().map(|r| r.0).min(),
            newest: ranges.iter().map(|r| r.1).max(),
            default_rows,
            rows_estimate: row.try_get(1)?,
            bytes: row.try_get(0)?,
        });
    }
    Ok(out)
}

/// The `retention` command's table.
pub fn render(statuses: &[TableStatus]) -> String {
    let header = [
        "table",
        "retention",
        "partitions",
        "oldest kept",
        "created until",
        "default rows",
        "rows (est.)",
        "size",
    ];
    let day = |s: Option<i64>| {
        s.map(|s| format_utc(s).chars().take(10).collect::<String>())
            .unwrap_or_else(|| "-".to_owned())
    };
    let rows: Vec<[String; 8]> = statuses
        .iter()
        .map(|s| {
            [
                s.table.to_owned(),
                s.days
                    .map(|d| format!("{d} d"))
                    .unwrap_or_else(|| "forever".to_owned()),
                s.partitions.to_string(),
                day(s.oldest),
                day(s.newest),
                s.default_rows.to_string(),
                s.rows_estimate.to_string(),
                human_bytes(s.bytes),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(&format!("{c:<w$}"));
        }
        l.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// What a round did, one line per table that changed or failed.
pub fn render_round(round: &Round) -> String {
    if !round.ran {
        return "Another bridge holds the maintenance lock; nothing done.\n".to_owned();
    }
    let mut out = String::new();
    for t in &round.tables {
        if !t.created.is_empty() || !t.dropped.is_empty() || t.pruned > 0 {
            out.push_str(&format!(
                "{}: created {} partition(s){}, dropped {}{}, {} stray row(s) deleted from \
                 the DEFAULT partition\n",
                t.table,
                t.created.len(),
                if t.moved > 0 {
                    format!(" ({} row(s) moved in from DEFAULT)", t.moved)
                } else {
                    String::new()
                },
                t.dropped.len(),
                if t.dropped.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", t.dropped.join(", "))
                },
                t.pruned
            ));
        }
        for e in &t.errors {
            out.push_str(&format!("{}: FAILED {e}\n", t.table));
        }
    }
    if out.is_empty() {
        out.push_str("Partitions already up to date.\n");
    }
    out.push('\n');
    out
}

/// `sitewatch-bridge retention [--apply]`: one maintenance round first
/// when `apply` (what it did, then the table), else only the table.
/// Fails if the round could not do everything, so that a cron job or
/// systemd timer running it notices.
pub async fn command(
    settings: &PostgresSettings,
    retention: &RetentionSettings,
    apply: bool,
) -> anyhow::Result<String> {
    let mut client = super::connect(settings).await?;
    let mut out = String::new();
    let mut failed = false;
    if apply {
        let round = maintain(&mut client, SystemTime::now(), retention)
            .await
            .with_context(|| format!("maintaining the partitions of {}", settings.display))?;
        failed = round.has_errors();
        out.push_str(&render_round(&round));
    }
    let st = status(&client, retention)
        .await
        .with_context(|| format!("reading the history tables of {}", settings.display))?;
    out.push_str(&render(&st));
    if failed {
        anyhow::bail!("{out}partition maintenance failed (see FAILED above)");
    }
    Ok(out)
}

/// `1.5 MiB`-style sizes.
fn human_bytes(b: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = b.max(0) as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Splits a batch for [`super::PgSink::write`]: the decoded messages to
/// store, and a rejection ([`REASON_EXPIRED`]) for each one that is
/// older than its table's retention at `now` (see [`expired`]).
pub(super) fn split<'b>(
    retention: &RetentionSettings,
    batch: &'b Prepared<'_>,
    now: SystemTime,
) -> anyhow::Result<(Vec<&'b Decoded>, Vec<Rejection>)> {
    let mut kept = Vec::with_capacity(batch.decoded.len());
    let mut rejected = Vec::new();
    for d in &batch.decoded {
        match expired(retention, &d.msg, now) {
            None => kept.push(d),
            Some(why) => {
                let raw = batch
                    .msgs
                    .get(d.index)
                    .context("decoded message index out of range")?;
                rejected.push(Rejection::new(d.index, raw, REASON_EXPIRED, &why));
            }
        }
    }
    if !rejected.is_empty() {
        tracing::info!(
            expired = rejected.len(),
            "Messages older than their table's retention are not stored (rejected as expired)."
        );
    }
    Ok((kept, rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn weeks_start_on_monday_utc() {
        // 2026-12-06 23:00 UTC is a Sunday; its week began Monday 11-30.
        let sunday = 1_796_598_000;
        assert_eq!(format_utc(sunday), "2026-12-06 23:00:00+00");
        assert_eq!(format_utc(week_start(sunday)), "2026-11-30 00:00:00+00");
        assert_eq!(week_start(week_start(sunday)), week_start(sunday));
        assert_eq!(format_utc(week_start(0)), "1969-12-29 00:00:00+00");
        assert_eq!(
            partition_name("heartbeats", week_start(sunday)),
            "heartbeats_p20261130"
        );
        assert_eq!(partition_name("x", DAY + 3661), "x_p19700102_010101");
    }

    #[test]
    fn civil_dates_round_trip_known_days() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_453), (2025, 12, 31));
    }

    #[test]
    fn plan_creates_ahead_and_drops_past_retention() {
        let now = 1_796_598_000;
        let w = week_start(now);
        let part = |from: i64| Partition {
            name: partition_name("t", from),
            range: Some((from, from + WEEK_SECS)),
        };
        let default = Partition {
            name: "t_default".into(),
            range: None,
        };
        // Empty: this week and two more.
        let p = plan(std::slice::from_ref(&default), now, Some(30));
        assert_eq!(
            p.create,
            vec![
                (w, w + WEEK_SECS),
                (w + WEEK_SECS, w + 2 * WEEK_SECS),
                (w + 2 * WEEK_SECS, w + 3 * WEEK_SECS)
            ]
        );
        assert!(p.drop.is_empty());
        // Existing weeks are not created again; weeks ending at or before
        // now - 30 d are dropped, the one straddling the cutoff is kept.
        let existing: Vec<Partition> = (-6..=1)
            .map(|i| part(w + i * WEEK_SECS))
            .chain([default])
            .collect();
        let p = plan(&existing, now, Some(30));
        assert_eq!(p.create, vec![(w + 2 * WEEK_SECS, w + 3 * WEEK_SECS)]);
        let cutoff = now - 30 * DAY;
        let want: Vec<String> = (-6..=1)
            .map(|i| w + i * WEEK_SECS)
            .filter(|from| from + WEEK_SECS <= cutoff)
            .map(|from| partition_name("t", from))
            .collect();
        assert_eq!(p.drop, want);
        assert_eq!(want.len(), 2, "{want:?}");
        // Keep forever: nothing dropped.
        assert!(plan(&existing, now, None).drop.is_empty());
    }

    #[test]
    fn config_defaults_bounds_and_absence() {
        assert_eq!(
            settings(None).expect("none"),
            RetentionSettings::keep_forever()
        );
        let s = settings(Some(&RawRetention::default())).expect("defaults");
        assert_eq!(s.days("heartbeats"), Some(30));
        assert_eq!(s.days("disk_usage"), Some(180));
        assert_eq!(s.days("camera_probes"), Some(90));
        assert_eq!(s.days("smart_readings"), Some(730));
        assert_eq!(s.days("ups_readings"), Some(90));
        assert_eq!(s.days("reach_readings"), Some(90));
        assert_eq!(s.days("sites"), None);
        for t in &HISTORY {
            assert_eq!(s.days(t.name), Some(t.default_days), "{}", t.name);
        }
        let bad = RawRetention {
            heartbeats_days: 0,
            events_days: 40_000,
            ups_readings_days: 0,
            maintenance_interval_secs: 5,
            ..RawRetention::default()
        };
        let p = settings(Some(&bad)).expect_err("invalid");
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("retention.heartbeats_days"), "{p:?}");
        assert!(p[2].contains("retention.ups_readings_days"), "{p:?}");
    }

    #[test]
    fn render_aligns_columns() {
        let s = [TableStatus {
            table: "heartbeats",
            days: Some(30),
            partitions: 5,
            oldest: Some(week_start(1_796_598_000)),
            newest: None,
            default_rows: 0,
            rows_estimate: 12,
            bytes: 3 * 1024 * 1024 / 2,
        }];
        let out = render(&s);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("table       retention  partitions  oldest kept"),
            "{out}"
        );
        assert!(
            lines[1].contains("30 d") && lines[1].contains("2026-11-30"),
            "{out}"
        );
        assert!(lines[1].ends_with("1.5 MiB"), "{out}");
    }
}
