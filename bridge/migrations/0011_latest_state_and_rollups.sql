-- sitewatch bridge schema, version 11: the fleet view from latest-state
-- columns, an hourly disk rollup for the forecast, and the tables of
-- versions 9 and 10 partitioned so that [retention] bounds them too.
--
-- Measured with scripts/bench/fleet.sh (10,000 sites, one day of history,
-- 2-core machine): the fleet view probed every weekly partition of
-- `heartbeats` and `disk_usage` per site for its latest row, so "Sites
-- (worst first)" took 3.2 s (1.6 s of it JIT compiling the plan); the
-- "Disk forecast full" alert regressed a day of raw disk samples (5.5 M
-- rows) per evaluation, about 3-4 s. Both now read rows the bridge (or a
-- trigger) keeps current as it stores the messages.
--
-- 1. `sites` gains the latest heartbeat's figures and the latest disk
--    message's summary and identity. The bridge sets them in the UPDATE that already
--    locks and touches each site of a batch (bridge/src/sink/postgres/
--    sites.rs), so a site row still gets one new version per batch. A
--    value is replaced only by a message with a later (clock-corrected)
--    timestamp: a late redelivery does not move them back. They outlive
--    the history's retention (the last known figures stay on the
--    dashboard when the rows are dropped).
-- 2. `disk_hourly`: per site, mount and hour, the least-squares sums of
--    (seconds, free bytes) and the hour's last sample, kept by a
--    statement-level AFTER INSERT trigger on `disk_usage` (rows skipped by
--    ON CONFLICT DO NOTHING, i.e. redeliveries, are not in the transition
--    table, so nothing is counted twice). x is seconds since 2020-01-01
--    UTC, not since 1970: smaller sums, less cancellation in
--    n*sxy - sx*sy. Partitioned by week on `hour`, in [retention]
--    (`disk_hourly_days`, two years by default): the long-range views
--    outlive the raw samples.
-- 3. `camera_reachability` (version 10) and `ingest_minutes` (version 9)
--    become partitioned by week like the history of version 8, rows kept,
--    so [retention] drops them by partition too; `camera_reachability`
--    also accepts the class `no_frames` (sitewatch-live's short PLAY; the
--    agent's name for the same finding).
--
-- Cost at upgrade: one pass over `disk_usage` (the rollup of what is
-- stored) and one index probe per site into `heartbeats` and
-- `disk_usage`; the two small tables are copied.

-- 1. Latest state on `sites`.
ALTER TABLE sites
    ADD COLUMN hb_ts                 timestamptz,
    ADD COLUMN uptime_secs           bigint,
    ADD COLUMN load1                 real,
    ADD COLUMN mem_available_bytes   bigint,
    ADD COLUMN mem_total_bytes       bigint,
    -- That heartbeat's identity (with the partition column) and receive
    -- time: its counters are fetched by primary key from one partition.
    ADD COLUMN hb_boot               text,
    ADD COLUMN hb_seq                bigint,
    ADD COLUMN hb_agent_ts           timestamptz,
    ADD COLUMN hb_received_at        timestamptz,
    -- The latest disk message: its time and, over its mounts sampled
    -- without error, the fullest one; mounts read-only or failed.
    ADD COLUMN disk_ts               timestamptz,
    ADD COLUMN disk_max_used_pct     real,
    ADD COLUMN disk_fullest_path     text,
    ADD COLUMN disk_read_only_mounts integer,
    ADD COLUMN disk_failed_mounts    integer,
    -- Its identity, with the partition column: the panels and alerts that
    -- list the latest message's mounts fetch them by primary key from the
    -- one partition that holds them, however many weeks are kept.
    ADD COLUMN disk_boot             text,
    ADD COLUMN disk_seq              bigint,
    ADD COLUMN disk_agent_ts         timestamptz;

UPDATE sites s
SET (hb_ts, uptime_secs, load1, mem_available_bytes, mem_total_bytes,
     hb_boot, hb_seq, hb_agent_ts, hb_received_at) = (
    SELECT h.ts, h.uptime_secs, h.load1, h.mem_available_bytes, h.mem_total_bytes,
           h.boot, h.seq, h.agent_ts, h.received_at
    FROM heartbeats h
    WHERE h.site = s.site
    ORDER BY h.ts DESC
    LIMIT 1
);

UPDATE sites s
SET (disk_ts, disk_max_used_pct, disk_fullest_path, disk_read_only_mounts, disk_failed_mounts,
     disk_boot, disk_seq, disk_agent_ts) = (
    SELECT max(du.ts),
           max(du.used_pct) FILTER (WHERE du.error IS NULL),
           (array_agg(du.path ORDER BY du.used_pct DESC) FILTER (WHERE du.error IS NULL))[1],
           count(*) FILTER (WHERE du.read_only),
           count(*) FILTER (WHERE du.error IS NOT NULL AND du.path <> ''),
           min(du.boot), min(du.seq), min(du.agent_ts)
    FROM disk_usage du
    JOIN (
        SELECT l.boot, l.seq
        FROM disk_usage l
        WHERE l.site = s.site
        ORDER BY l.ts DESC
        LIMIT 1
    ) latest ON du.boot = latest.boot AND du.seq = latest.seq
    WHERE du.site = s.site
);

-- Same columns, names and types as version 1's view.
CREATE OR REPLACE VIEW fleet AS
SELECT
    s.site,
    CASE
        WHEN s.state = 'online'
             AND s.heartbeat_secs > 0
             AND s.last_seen < now() - make_interval(secs => 3 * s.heartbeat_secs)
        THEN 'stale'
        ELSE s.state
    END                                   AS effective_state,
    s.state,
    s.reason                              AS offline_reason,
    s.state_changed_at,
    s.last_seen,
    date_trunc('second', now() - s.last_seen) AS silent_for,
    s.agent_version,
    s.heartbeat_secs,
    s.boot,
    s.session,
    s.uptime_secs,
    s.load1,
    s.mem_available_bytes,
    s.mem_total_bytes,
    s.disk_ts,
    s.disk_max_used_pct,
    s.disk_fullest_path,
    s.disk_read_only_mounts::bigint       AS disk_read_only_mounts,
    s.disk_failed_mounts::bigint          AS disk_failed_mounts,
    g.missing                             AS missing_messages
FROM sites s
LEFT JOIN boot_gaps g ON g.site = s.site AND g.boot = s.boot;

-- Weekly partitions of `tbl` on `col` for the weeks its rows (or, for a
-- new table, `src`'s rows) fall in, this week and two ahead, plus DEFAULT.
CREATE FUNCTION pg_temp.sitewatch_weeks(tbl text, col text, src text, src_col text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    wk timestamptz;
BEGIN
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);
    FOR wk IN EXECUTE format(
        'SELECT DISTINCT date_trunc(''week'', %I, ''UTC'') FROM %I '
        'UNION SELECT date_trunc(''week'', now(), ''UTC'') + n * interval ''168 hours'' '
        'FROM generate_series(0, 2) AS n', src_col, src)
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       tbl || '_p' || to_char(wk AT TIME ZONE 'UTC', 'YYYYMMDD'), tbl,
                       wk, wk + interval '168 hours');
    END LOOP;
END
$fn$;

-- 2. Hourly disk rollup.
CREATE TABLE disk_hourly (
    site             text NOT NULL,
    path             text NOT NULL,
    -- date_trunc('hour', ts) of the samples (`disk_usage.ts`: the agent's
    -- clock, or the receive time when the site's clock is off).
    hour             timestamptz NOT NULL,
    samples          integer NOT NULL,
    -- Sums over the hour's samples of x = seconds since 2020-01-01 UTC and
    -- y = avail_bytes: the slope of a range of hours is
    -- (n*sum_xy - sum_x*sum_y) / (n*sum_xx - sum_x^2).
    sum_x            float8 NOT NULL,
    sum_y            float8 NOT NULL,
    sum_xx           float8 NOT NULL,
    sum_xy           float8 NOT NULL,
    first_ts         timestamptz NOT NULL,
    last_ts          timestamptz NOT NULL,
    -- The sample at last_ts.
    last_avail_bytes bigint NOT NULL,
    last_used_pct    real NOT NULL,
    max_used_pct     real NOT NULL,
    PRIMARY KEY (site, path, hour)
) PARTITION BY RANGE (hour);
SELECT pg_temp.sitewatch_weeks('disk_hourly', 'hour', 'disk_usage', 'ts');

-- Adds the rows of one insert statement (sitewatch_new_rows) to the
-- rollup; mounts sampled with an error and the marker rows of messages
-- without mounts are left out, as the forecast leaves them out.
CREATE FUNCTION sitewatch_roll_disk() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Rows in key order, so that two sessions never lock in opposite order.
    INSERT INTO disk_hourly AS r (site, path, hour, samples, sum_x, sum_y, sum_xx, sum_xy,
                                  first_ts, last_ts, last_avail_bytes, last_used_pct, max_used_pct)
    SELECT site, path, date_trunc('hour', ts), count(*), sum(x), sum(y), sum(x * x), sum(x * y),
           min(ts), max(ts),
           (array_agg(avail_bytes ORDER BY ts DESC))[1],
           (array_agg(used_pct ORDER BY ts DESC))[1],
           max(used_pct)
    FROM (SELECT site, path, ts, avail_bytes, used_pct,
                 extract(epoch FROM ts)::float8 - 1577836800 AS x,
                 avail_bytes::float8 AS y
          FROM sitewatch_new_rows
          WHERE path <> '' AND error IS NULL) n
    GROUP BY site, path, date_trunc('hour', ts)
    ORDER BY 1, 2, 3
    ON CONFLICT (site, path, hour) DO UPDATE SET
        samples = r.samples + excluded.samples,
        sum_x = r.sum_x + excluded.sum_x,
        sum_y = r.sum_y + excluded.sum_y,
        sum_xx = r.sum_xx + excluded.sum_xx,
        sum_xy = r.sum_xy + excluded.sum_xy,
        first_ts = least(r.first_ts, excluded.first_ts),
        last_ts = greatest(r.last_ts, excluded.last_ts),
        last_avail_bytes = CASE WHEN excluded.last_ts >= r.last_ts
                                THEN excluded.last_avail_bytes ELSE r.last_avail_bytes END,
        last_used_pct = CASE WHEN excluded.last_ts >= r.last_ts
                             THEN excluded.last_used_pct ELSE r.last_used_pct END,
        max_used_pct = greatest(r.max_used_pct, excluded.max_used_pct);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER disk_usage_hourly AFTER INSERT ON disk_usage
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_roll_disk();

-- What is already stored.
INSERT INTO disk_hourly (site, path, hour, samples, sum_x, sum_y, sum_xx, sum_xy,
                         first_ts, last_ts, last_avail_bytes, last_used_pct, max_used_pct)
SELECT site, path, date_trunc('hour', ts), count(*), sum(x), sum(y), sum(x * x), sum(x * y),
       min(ts), max(ts),
       (array_agg(avail_bytes ORDER BY ts DESC))[1],
       (array_agg(used_pct ORDER BY ts DESC))[1],
       max(used_pct)
FROM (SELECT site, path, ts, avail_bytes, used_pct,
             extract(epoch FROM ts)::float8 - 1577836800 AS x,
             avail_bytes::float8 AS y
      FROM disk_usage
      WHERE path <> '' AND error IS NULL) n
GROUP BY site, path, date_trunc('hour', ts);

-- 3. camera_reachability and ingest_minutes, partitioned with their rows.
ALTER TABLE camera_reachability RENAME TO camera_reachability_v10;
ALTER TABLE camera_reachability_v10 RENAME CONSTRAINT camera_reachability_pkey
    TO camera_reachability_v10_pkey;
ALTER INDEX camera_reachability_ts RENAME TO camera_reachability_v10_ts;
CREATE TABLE camera_reachability (
    LIKE camera_reachability_v10 INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
    PRIMARY KEY (site, camera, ts)
) PARTITION BY RANGE (ts);
-- `no_frames`: the optional short PLAY of sitewatch-live got a session but
-- no frame (the agent's class of that name) (the DESCRIBE classes of version 10 stay as they are).
ALTER TABLE camera_reachability DROP CONSTRAINT camera_reachability_class_check;
ALTER TABLE camera_reachability ADD CONSTRAINT camera_reachability_class_check
    CHECK (class IN ('ok', 'dns', 'tcp_refused', 'tcp_timeout', 'auth', 'not_found',
                     'rtsp_error', 'no_frames'));
SELECT pg_temp.sitewatch_weeks('camera_reachability', 'ts', 'camera_reachability_v10', 'ts');
INSERT INTO camera_reachability SELECT * FROM camera_reachability_v10;
DROP TABLE camera_reachability_v10;
CREATE INDEX camera_reachability_ts ON camera_reachability (ts);

ALTER TABLE ingest_minutes RENAME TO ingest_minutes_v9;
ALTER TABLE ingest_minutes_v9 RENAME CONSTRAINT ingest_minutes_pkey TO ingest_minutes_v9_pkey;
CREATE TABLE ingest_minutes (
    LIKE ingest_minutes_v9 INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
    PRIMARY KEY (minute, kind, writer)
) PARTITION BY RANGE (minute);
SELECT pg_temp.sitewatch_weeks('ingest_minutes', 'minute', 'ingest_minutes_v9', 'minute');
INSERT INTO ingest_minutes SELECT * FROM ingest_minutes_v9;
DROP TABLE ingest_minutes_v9;

DROP FUNCTION pg_temp.sitewatch_weeks(text, text, text, text);

-- The new tables get the grants of versions 3 and 6, as in version 8
-- (the triggers run as the writing account, so it needs disk_hourly).
DO $grants$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitewatch_grafana') THEN
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO sitewatch_grafana', current_schema());
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitewatch_writer') THEN
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA %I TO sitewatch_writer', current_schema());
    END IF;
END
$grants$;
