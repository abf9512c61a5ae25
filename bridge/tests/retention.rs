//! Bounded storage (issue 17, item 1): weekly partitions created ahead and
//! dropped past retention as time moves forward, messages older than
//! retention rejected (never stored again, never failing the writer), the
//! in-place conversion of a version-7 database keeping every row, and the
//! `retention` command's table.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sitewatch_bridge::sink::migrations::{migrate, MIGRATIONS};
use sitewatch_bridge::sink::postgres::retention::{
    self, maintain, partition_name, week_start, RetentionSettings, HISTORY, WEEK_SECS,
};
use sitewatch_bridge::Config;
use tokio_postgres::Client;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);
const DAY: i64 = 86_400;

/// A private PostgreSQL with database `bridge`, and a config for it (the
/// broker URL is never dialled by these tests).
fn pg_only(extra: &str) -> (sitewatch_testkit::Postgres, Config) {
    blocking(|| {
        let pg = sitewatch_testkit::Postgres::start().expect("start postgres");
        let url = pg.create_database("bridge").expect("create database");
        let config = config_for("mqtt://127.0.0.1:1", &url, "retention-test", extra);
        (pg, config)
    })
}

async fn client(config: &Config) -> Client {
    sitewatch_bridge::sink::postgres::connect(&config.postgres)
        .await
        .expect("connect")
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn partition_names(c: &Client, table: &str) -> Vec<String> {
    retention::partitions(c, table)
        .await
        .expect("partitions")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).expect("after 1970"))
}

fn now_secs() -> i64 {
    retention::unix_secs(SystemTime::now())
}

/// One heartbeat row at agent time `secs`, written as the bridge would.
async fn insert_heartbeat(c: &Client, seq: i64, secs: i64) {
    c.execute(
        "INSERT INTO heartbeats (site, boot, seq, ts, agent_ts, agent_version, interval_secs,
             uptime_secs, agent_uptime_secs, load1, load5, load15, mem_total_bytes,
             mem_available_bytes, agent_rss_bytes, counters)
         VALUES ('s1', 'b1', $1, $2, $2, '0.1.0', 60, 1, 1, 0, 0, 0, 1, 1, 1, '{}')",
        &[&seq, &at(secs)],
    )
    .await
    .expect("insert heartbeat");
}

/// Time moves forward ten weeks, one maintenance round a week and one
/// heartbeat a day: each round has this week and the next two created
/// ahead, weeks wholly older than 30 days are dropped (with their rows),
/// the newer rows stay, and nothing lands in the DEFAULT partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_created_ahead_and_dropped_as_time_moves_forward() {
    let (_pg, config) = pg_only("[retention]\nheartbeats_days = 30\n");
    let mut c = client(&config).await;
    migrate(&mut c).await.expect("migrate");
    let retention = config.retention.clone();

    let start = week_start(now_secs()) + 3 * WEEK_SECS;
    let mut seq = 0;
    let mut longest = Duration::ZERO;
    for week in 0..10 {
        let now = start + week * WEEK_SECS;
        let started = Instant::now();
        let round = maintain(&mut c, at(now), &retention).await.expect("round");
        let took = started.elapsed();
        assert!(round.ran && !round.has_errors(), "{round:?}");
        for t in &round.tables {
            longest = longest.max(t.longest_step);
        }
        eprintln!("week {week}: round {took:?}");
        let names = partition_names(&c, "heartbeats").await;
        for ahead in 0..=2 {
            let want = partition_name("heartbeats", week_start(now) + ahead * WEEK_SECS);
            assert!(
                names.contains(&want),
                "week {week}: {want} missing in {names:?}"
            );
        }
        // Every table gets its weeks ahead, whatever its retention.
        for t in &HISTORY {
            let want = partition_name(t.name, week_start(now) + 2 * WEEK_SECS);
            assert!(partition_names(&c, t.name).await.contains(&want), "{want}");
        }
        for day in 0..7 {
            seq += 1;
            insert_heartbeat(&c, seq, now + day * DAY).await;
        }
    }
    eprintln!("longest create/drop step: {longest:?}");

    // The last round ran at `last`; one more, a week later, drops the
    // weeks that ended 30 days before it.
    let last = start + 10 * WEEK_SECS;
    let round = maintain(&mut c, at(last), &retention).await.expect("round");
    let hb = round
        .tables
        .iter()
        .find(|t| t.table == "heartbeats")
        .expect("heartbeats round");
    assert!(!hb.dropped.is_empty(), "{round:?}");
    let cutoff = last - 30 * DAY;
    let parts = retention::partitions(&c, "heartbeats")
        .await
        .expect("parts");
    let oldest = parts
        .iter()
        .filter_map(|p| p.range)
        .map(|r| r.0)
        .min()
        .expect("some partitions");
    assert!(
        oldest + WEEK_SECS > cutoff,
        "a week wholly past retention is kept"
    );
    assert!(
        oldest <= cutoff,
        "a week straddling the cutoff is dropped too early"
    );
    // Rows: exactly those of the weeks kept; none in DEFAULT.
    let kept = count(
        &c,
        &format!("SELECT count(*) FROM heartbeats WHERE agent_ts >= to_timestamp({oldest})"),
    )
    .await;
    assert_eq!(count(&c, "SELECT count(*) FROM heartbeats").await, kept);
    assert_eq!(
        count(&c, "SELECT count(*) FROM heartbeats_default").await,
        0
    );
    let newest_day = start + 9 * WEEK_SECS + 6 * DAY;
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM heartbeats WHERE agent_ts = to_timestamp({newest_day})")
        )
        .await,
        1,
        "the newest rows stay"
    );
    assert!(kept < seq, "old rows are gone ({kept} of {seq} kept)");
    let dropped: Vec<String> = (0..10)
        .map(|w| start + w * WEEK_SECS)
        .filter(|from| from + WEEK_SECS <= cutoff)
        .map(|from| partition_name("heartbeats", from))
        .collect();
    let names = partition_names(&c, "heartbeats").await;
    for d in &dropped {
        assert!(!names.contains(d), "{d} should be dropped: {names:?}");
    }
    // smart_readings (730 d) dropped nothing.
    assert!(round
        .tables
        .iter()
        .find(|t| t.table == "smart_readings")
        .is_some_and(|t| t.dropped.is_empty()));

    // A second bridge's round while the lock is held does nothing.
    let mut other = client(&config).await;
    let held: bool = c
        .query_one(
            "SELECT pg_try_advisory_lock(x'5177a7c400000002'::int8)",
            &[],
        )
        .await
        .expect("lock")
        .get(0);
    assert!(held);
    let round = maintain(&mut other, at(last), &retention)
        .await
        .expect("round");
    assert!(!round.ran);
    c.execute("SELECT pg_advisory_unlock(x'5177a7c400000002'::int8)", &[])
        .await
        .expect("unlock");
}

/// A row whose week has no partition (an agent clock far ahead) goes to
/// the DEFAULT partition; creating its week later moves it there, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_ahead_of_the_partitions_wait_in_default_and_move_in() {
    let (_pg, config) = pg_only("[retention]\n");
    let mut c = client(&config).await;
    migrate(&mut c).await.expect("migrate");
    let future = week_start(now_secs()) + 8 * WEEK_SECS + DAY;
    insert_heartbeat(&c, 1, future).await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM heartbeats_default").await,
        1
    );
    let round = maintain(&mut c, at(future), &config.retention)
        .await
        .expect("round");
    assert!(!round.has_errors(), "{round:?}");
    let hb = &round.tables[0];
    assert_eq!((hb.table, hb.moved), ("heartbeats", 1));
    assert_eq!(
        count(&c, "SELECT count(*) FROM heartbeats_default").await,
        0
    );
    let name = partition_name("heartbeats", week_start(future));
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM \"{name}\"")).await,
        1
    );
    // The same message again conflicts in its partition.
    let again = c
        .execute(
            "INSERT INTO heartbeats (site, boot, seq, ts, agent_ts, agent_version,
                 interval_secs, uptime_secs, agent_uptime_secs, load1, load5, load15,
                 mem_total_bytes, mem_available_bytes, agent_rss_bytes, counters)
             VALUES ('s1', 'b1', 1, now(), $1, '0.1.0', 60, 1, 1, 0, 0, 0, 1, 1, 1, '{}')
             ON CONFLICT DO NOTHING",
            &[&at(future)],
        )
        .await
        .expect("insert");
    assert_eq!(again, 0);
}

fn heartbeat_at(site: &str, seq: u64, ts_ms: u64) -> Msg {
    let payload = serde_json::json!({
        "v": 1, "site": site, "boot": "b0000000000000001", "seq": seq, "ts": ts_ms,
        "agent_version": "0.1.0", "interval_secs": 30,
        "uptime_secs": 60, "agent_uptime_secs": 30,
        "load": [0.25, 0.5, 1.125],
        "mem_total_bytes": 268_435_456u64, "mem_available_bytes": 134_217_728u64,
        "agent_rss_bytes": 3_145_728u64,
        "counters": {"published": seq, "dropped": 0}
    });
    Msg::new(
        format!("sitewatch/v1/{site}/heartbeat"),
        serde_json::to_vec(&payload).expect("json"),
    )
}

/// Through a real bridge: a message older than its table's retention
/// (whether a first delivery or a redelivery of one whose partition was
/// dropped) is rejected as `expired`, counted and acknowledged, and never
/// stored; the writer goes on storing the next messages. A message
/// within retention but older than the first partition is stored once in
/// DEFAULT, its redelivery absorbed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_rejected_as_expired_and_never_stored_twice() {
    let env = Env::start();
    let config = env.config("bridge-retention", "[retention]\nheartbeats_days = 30\n");
    let bridge = start_bridge(config).await;
    let addr = bridge.http_addr();
    let now = now_ms();
    let old = now - 40 * 86_400_000;
    let recent = now - 20 * 86_400_000;
    let msgs = [
        heartbeat_at("r1", 1, old),
        heartbeat_at("r1", 1, old),
        heartbeat_at("r1", 2, recent),
        heartbeat_at("r1", 2, recent),
        heartbeat_at("r1", 3, now),
    ];
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "the fresh heartbeat", || {
        env.try_count("SELECT count(*) FROM heartbeats WHERE seq = 3") == Some(1)
    })
    .await;
    assert_eq!(
        env.count("SELECT count(*) FROM heartbeats WHERE seq = 1"),
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM heartbeats WHERE seq = 2"),
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM rejected_messages WHERE reason = 'expired'"),
        2
    );
    let detail = env.sql("SELECT detail FROM rejected_messages LIMIT 1");
    assert!(
        detail.contains("30-day retention of heartbeats"),
        "{detail}"
    );
    eventually(WAIT, "the expired metric", || {
        metric(addr, "sitewatch_bridge_rejected_total{reason=\"expired\"}") == Some(2.0)
    })
    .await;
    // Still ingesting after the rejections.
    publish_all(&env.broker.url(), &[heartbeat_at("r1", 4, now_ms())]).await;
    eventually(WAIT, "the next heartbeat", || {
        env.try_count("SELECT count(*) FROM heartbeats WHERE seq = 4") == Some(1)
    })
    .await;
    bridge.stop().await.expect("clean stop");
}

/// Applies migrations 1 to 7 only, as a database made by an older bridge.
async fn migrate_to_7(c: &mut Client) {
    c.batch_execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .expect("schema_migrations");
    for m in MIGRATIONS.iter().filter(|m| m.version <= 7) {
        c.batch_execute(m.sql).await.expect("old migration");
        c.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .expect("record");
    }
}

/// Rows across several weeks, plus a 1970 clock and a 2037 clock.
const POPULATE: &str = "
INSERT INTO sites (site, first_seen, last_seen, state) SELECT 's' || i, now(), now(), 'online'
    FROM generate_series(1, 20) i;
INSERT INTO heartbeats (site, boot, seq, ts, agent_ts, agent_version, interval_secs,
        uptime_secs, agent_uptime_secs, load1, load5, load15, mem_total_bytes,
        mem_available_bytes, agent_rss_bytes, counters)
    SELECT 's' || (i % 20 + 1), 'b', i, t, t, '0.1.0', 60, i, i, 0.5, 0.5, 0.5, 100, 50, 10,
           jsonb_build_object('published', i)
    FROM generate_series(1, HB_ROWS) i,
         LATERAL (SELECT now() - (i % 60) * interval '1 day' - i * interval '1 ms' AS t) x;
INSERT INTO heartbeats (site, boot, seq, ts, agent_ts, agent_version, interval_secs,
        uptime_secs, agent_uptime_secs, load1, load5, load15, mem_total_bytes,
        mem_available_bytes, agent_rss_bytes, counters)
    VALUES ('s1', 'bogus', 1, now(), '1970-01-01 00:00:10+00', '0.1.0', 60, 1, 1, 0, 0, 0, 1, 1, 1, '{}'),
           ('s1', 'bogus', 2, now(), '2037-03-01 00:00:00+00', '0.1.0', 60, 1, 1, 0, 0, 0, 1, 1, 1, '{}');
INSERT INTO disk_usage (site, boot, seq, ts, agent_ts, path, fs_type, total_bytes, used_bytes,
        avail_bytes, used_pct, inodes_total, inodes_free, read_only, error)
    SELECT 's' || (i % 20 + 1), 'b', i, t, t, p, 'ext4', 100, 50, 50, 50, 10, 5, false, NULL
    FROM generate_series(1, 3000) i, unnest(ARRAY['/a', '/b']) p,
         LATERAL (SELECT now() - (i % 100) * interval '1 day' AS t) x;
INSERT INTO status_events (site, boot, session, seq, state, agent_ts, applied, agent_version,
        heartbeat_secs)
    SELECT 's1', 'b', 1, i, 'online', now() - i * interval '1 hour', true, '0.1.0', 60
    FROM generate_series(1, 500) i;
INSERT INTO log_batches (site, boot, seq, ts, records)
    SELECT 's2', 'b', i, now() - i * interval '1 hour', 3 FROM generate_series(1, 500) i;
INSERT INTO camera_probes (site, boot, seq, ts, agent_ts, camera, url, transport, class,
        warnings, detail, started, probe_ms, failures)
    SELECT 's3', 'b', i, t, t, 'cam1', 'rtsp://x', 'tcp', 'ok', '{}', '', t, 100, 0
    FROM generate_series(1, 500) i, LATERAL (SELECT now() - i * interval '3 hours' AS t) x;
INSERT INTO smart_readings (site, boot, seq, ts, agent_ts, device, path, protocol, source,
        state, verdict, reasons, attributes)
    SELECT 's4', 'b', i, t, t, 'sda', '/dev/sda', 'ata', 'ioctl', 'ok', 'ok', '[]', '[]'
    FROM generate_series(1, 500) i, LATERAL (SELECT now() - i * interval '1 day' AS t) x;
INSERT INTO events (site, boot, seq, ts, agent_ts, event, severity, subject, message, numbers)
    SELECT 's5', 'b', i, t, t, 'camera_down', 'warning', 'cam1', 'down', '{}'
    FROM generate_series(1, 500) i, LATERAL (SELECT now() - i * interval '6 hours' AS t) x;
";

/// Per message table of migration 8 (the first seven of [`HISTORY`]; the
/// others came later): row count and a digest of every row's text.
async fn fingerprint(c: &Client) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for t in &HISTORY[..7] {
        let row = c
            .query_one(
                &format!(
                    // NULLs stripped: a later migration's new nullable
                    // columns (13: heartbeats.wan_*) leave rows unchanged.
                    "SELECT count(*), coalesce(md5(string_agg(j, '|' ORDER BY j)), '')
                     FROM (SELECT jsonb_strip_nulls(to_jsonb(x))::text AS j FROM {} x) r",
                    t.name
                ),
                &[],
            )
            .await
            .expect("fingerprint");
        out.push((t.name.to_owned(), row.get(0), row.get(1)));
    }
    out
}

/// A database populated at version 7 is converted in place by migration
/// 8: every row of every history table is still there, unchanged; the
/// tables are partitioned; the fleet view still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_8_converts_a_populated_database_without_losing_rows() {
    let (_pg, config) = pg_only("");
    let mut c = client(&config).await;
    migrate_to_7(&mut c).await;
    let hb_rows: i64 = std::env::var("SITEWATCH_MIGRATION_HB_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    c.batch_execute(&POPULATE.replace("HB_ROWS", &hb_rows.to_string()))
        .await
        .expect("populate");
    let fleet_before = count(&c, "SELECT count(*) FROM fleet").await;
    let before = fingerprint(&c).await;
    assert_eq!(before[0].1, hb_rows + 2);

    let started = Instant::now();
    let report = migrate(&mut c).await.expect("migrate 8");
    let took = started.elapsed();
    assert_eq!(report.applied.first(), Some(&8), "{report:?}");
    eprintln!(
        "migration 8: {took:?} for {} rows",
        before.iter().map(|b| b.1).sum::<i64>()
    );

    let after = fingerprint(&c).await;
    assert_eq!(before, after, "every row kept, unchanged");
    for t in &HISTORY {
        let kind: String = c
            .query_one(
                "SELECT relkind::text FROM pg_class WHERE oid = $1::text::regclass",
                &[&t.name],
            )
            .await
            .expect("relkind")
            .get(0);
        assert_eq!(kind, "p", "{} is partitioned", t.name);
    }
    assert_eq!(count(&c, "SELECT count(*) FROM fleet").await, fleet_before);
    // The bogus clocks got their own weeks; nothing needed DEFAULT.
    assert_eq!(
        count(&c, "SELECT count(*) FROM heartbeats_default").await,
        0
    );
    let names = partition_names(&c, "heartbeats").await;
    assert!(
        names.contains(&"heartbeats_p19691229".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"heartbeats_p20370223".to_owned()),
        "{names:?}"
    );
    // Keys still de-duplicate: the same message again is absorbed.
    let n = c
        .execute(
            "INSERT INTO heartbeats SELECT * FROM heartbeats WHERE seq = 1 ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .expect("reinsert");
    assert_eq!(n, 0);

    // A first round with retention drops the old weeks; the 1970 one too.
    let retention = sitewatch_bridge::sink::postgres::retention::settings(Some(
        &retention::RawRetention::default(),
    ))
    .expect("defaults");
    let started = Instant::now();
    let round = maintain(&mut c, SystemTime::now(), &retention)
        .await
        .expect("round");
    eprintln!(
        "first maintenance round after migration: {:?}",
        started.elapsed()
    );
    assert!(!round.has_errors(), "{round:?}");
    assert!(!partition_names(&c, "heartbeats")
        .await
        .contains(&"heartbeats_p19691229".to_owned()));
    let cutoff_rows = count(
        &c,
        "SELECT count(*) FROM heartbeats WHERE agent_ts < now() - interval '37 days'",
    )
    .await;
    assert_eq!(cutoff_rows, 0, "weeks past 30 days (+ one week) dropped");
}

/// `sitewatch-bridge retention` prints a line per history table with its
/// retention, partitions and size; `--apply` first says what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_command_prints_every_table() {
    let (_pg, config) = pg_only("[retention]\nheartbeats_days = 14\n");
    let mut c = client(&config).await;
    migrate(&mut c).await.expect("migrate");
    let out = retention::command(&config.postgres, &config.retention, true)
        .await
        .expect("retention --apply");
    eprintln!("{out}");
    assert!(out.contains("Partitions already up to date."), "{out}");
    let table_start = out.find("table ").expect("header");
    let lines: Vec<&str> = out[table_start..].lines().collect();
    assert_eq!(lines.len(), 1 + HISTORY.len(), "{out}");
    for (line, t) in lines[1..].iter().zip(HISTORY.iter()) {
        assert!(line.starts_with(t.name), "{line}");
        assert!(line.contains(" 3 "), "three weekly partitions: {line}");
        assert!(line.contains("KiB") || line.contains(" B"), "{line}");
    }
    assert!(lines[1].contains("14 d"), "{}", lines[1]);
    assert!(lines[4].contains("730 d"), "{}", lines[4]);

    let forever = RetentionSettings::keep_forever();
    let out = retention::command(&config.postgres, &forever, false)
        .await
        .expect("retention");
    assert!(
        out.lines().nth(1).is_some_and(|l| l.contains("forever")),
        "{out}"
    );
}

/// The tables of migration 0011's retention (the disk rollup, the live
/// service's probe history, the per-minute counts) are created ahead and
/// dropped by partition like the message tables, each by its own setting;
/// stray rows of their DEFAULT partitions are pruned by their own time
/// column (they have no `received_at`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_probe_and_count_tables_follow_their_own_retention() {
    let (_pg, config) = pg_only(
        "[retention]\ndisk_hourly_days = 14\ncamera_reachability_days = 14\n\
         ingest_minutes_days = 21\n",
    );
    let mut c = client(&config).await;
    migrate(&mut c).await.expect("migrate");
    let retention = config.retention.clone();
    let start = week_start(now_secs()) + 3 * WEEK_SECS;
    // A row a day for five weeks in each table; the round of each week
    // creates the partitions ahead first.
    for day in 0..35 {
        let t = at(start + day * DAY + 3600);
        if day % 7 == 0 {
            let round = maintain(&mut c, t, &retention).await.expect("round");
            assert!(!round.has_errors(), "{round:?}");
        }
        c.execute(
            "INSERT INTO disk_hourly VALUES ('s', '/', date_trunc('hour', $1::timestamptz), 1,
                 0, 0, 0, 0, $1, $1, 1, 1, 1)",
            &[&t],
        )
        .await
        .expect("disk_hourly");
        c.execute(
            "INSERT INTO camera_reachability (site, camera, ts, class, detail, host, duration_ms)
             VALUES ('s', 'c', $1, 'ok', 'ok', 'h', 1)",
            &[&t],
        )
        .await
        .expect("camera_reachability");
        c.execute(
            "INSERT INTO ingest_minutes VALUES ('heartbeat', date_trunc('minute', $1::timestamptz), 1, 1)",
            &[&t],
        )
        .await
        .expect("ingest_minutes");
    }
    // Mid-week, so that the oldest week kept straddles each cutoff.
    let now = start + 38 * DAY;
    let round = maintain(&mut c, at(now), &retention).await.expect("round");
    assert!(!round.has_errors(), "{round:?}");
    for (table, col, days) in [
        ("disk_hourly", "hour", 14),
        ("camera_reachability", "ts", 14),
        ("ingest_minutes", "minute", 21),
    ] {
        let tr = round
            .tables
            .iter()
            .find(|t| t.table == table)
            .expect("table in round");
        assert!(!tr.dropped.is_empty(), "{table}: {tr:?}");
        let oldest = count(
            &c,
            &format!("SELECT extract(epoch FROM min({col}))::int8 FROM {table}"),
        )
        .await;
        let cutoff = now - days * DAY;
        assert!(
            oldest >= week_start(cutoff),
            "{table}: a row of a week past {days} days is left"
        );
        assert!(oldest < cutoff, "{table}: rows within {days} days dropped");
        assert_eq!(
            count(&c, &format!("SELECT count(*) FROM {table}_default")).await,
            0
        );
    }
    // A stray row in DEFAULT (no partition for its week) older than the
    // retention is pruned by the table's own time column.
    let stray = at(week_start(now) - 60 * WEEK_SECS);
    c.execute(
        "INSERT INTO camera_reachability (site, camera, ts, class, detail, host, duration_ms)
         VALUES ('s', 'c', $1, 'ok', 'ok', 'h', 1)",
        &[&stray],
    )
    .await
    .expect("stray");
    let round = maintain(&mut c, at(now), &retention).await.expect("round");
    let tr = round
        .tables
        .iter()
        .find(|t| t.table == "camera_reachability")
        .expect("table in round");
    assert_eq!(tr.pruned, 1, "{tr:?}");
}

/// A table with its own `<table>_days` (here 14) is created ahead and
/// dropped by partition by that setting alone, whatever the other tables
/// keep (`other` keeps its `other_days`): 35 days of one row a day,
/// `insert` taking the seq and the timestamp.
async fn follows_its_own_retention(table: &str, insert: &str, other: &str, other_days: u32) {
    let (_pg, config) = pg_only(&format!("[retention]\n{table}_days = 14\n"));
    let mut c = client(&config).await;
    migrate(&mut c).await.expect("migrate");
    let retention = config.retention.clone();
    assert_eq!(retention.days(table), Some(14));
    assert_eq!(
        retention.days(other),
        Some(other_days),
        "the others keep theirs"
    );
    let start = week_start(now_secs()) + 3 * WEEK_SECS;
    for day in 0..35 {
        let t = at(start + day * DAY + 3600);
        if day % 7 == 0 {
            let round = maintain(&mut c, t, &retention).await.expect("round");
            assert!(!round.has_errors(), "{round:?}");
        }
        c.execute(insert, &[&day, &t]).await.expect(table);
    }
    let now = start + 38 * DAY;
    let round = maintain(&mut c, at(now), &retention).await.expect("round");
    assert!(!round.has_errors(), "{round:?}");
    let tr = round
        .tables
        .iter()
        .find(|t| t.table == table)
        .expect("the table in the round");
    assert!(!tr.dropped.is_empty(), "{tr:?}");
    let oldest = count(
        &c,
        &format!("SELECT extract(epoch FROM min(agent_ts))::int8 FROM {table}"),
    )
    .await;
    let cutoff = now - 14 * DAY;
    assert!(oldest >= week_start(cutoff), "a week past 14 days is left");
    assert!(oldest < cutoff, "rows within 14 days dropped");
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM {table}_default")).await,
        0
    );
}

/// `ups_readings` (migration 0012) follows `ups_readings_days`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ups_readings_follow_their_own_retention() {
    follows_its_own_retention(
        "ups_readings",
        "INSERT INTO ups_readings (site, boot, seq, ts, agent_ts, interval_secs, ups, power,
             on_line, on_battery, low_battery, status, charge_pct)
         VALUES ('s', 'b', $1, $2, $2, 15, 'rack', 'on_line', true, false, false, 'OL', 100)",
        "heartbeats",
        30,
    )
    .await;
}

/// `reach_readings` (migration 0014) follows `reach_readings_days`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reach_readings_follow_their_own_retention() {
    follows_its_own_retention(
        "reach_readings",
        "INSERT INTO reach_readings (site, boot, seq, ts, agent_ts, interval_secs, target,
             address, kind, state, sent, received, refused, loss_pct)
         VALUES ('s', 'b', $1, $2, $2, 30, 'NVR', '10.0.0.1', 'icmp', 'up', 3, 3, 0, 0)",
        "ups_readings",
        90,
    )
    .await;
}
