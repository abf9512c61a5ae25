-- sitewatch bridge schema, version 8: history tables partitioned by week,
-- so that old history is removed by dropping a partition, never by DELETE.
--
-- The seven history tables (status_events, heartbeats, disk_usage,
-- log_batches, camera_probes, smart_readings, events) become
-- `PARTITION BY RANGE` on the agent's timestamp of the message:
-- `agent_ts`, or `ts` for log_batches (which has no agent_ts: its `ts` is
-- the agent's). State tables (sites, cameras, disks, boots,
-- bridge_sessions, rejected_messages) are not partitioned.
--
-- Why the agent's timestamp: a partitioned table's unique keys must
-- include the partition column, and the de-duplication of redelivered
-- messages rests on those keys (INSERT ... ON CONFLICT DO NOTHING). The
-- agent's timestamp is part of the message, so a redelivery carries the
-- same value, lands in the same partition and conflicts there as before.
-- `ts` (the effective time) or `received_at` would not: they depend on
-- when and in which batch the bridge received the message. The keys are
-- now (site, boot, seq, agent_ts) and similar: the message identity plus
-- a value that is a function of it.
--
-- Partitions are one week each, Monday 00:00 UTC to the next Monday,
-- named <table>_pYYYYMMDD (the Monday). Each table also has a DEFAULT
-- partition, <table>_default, for a row whose week has no partition (an
-- agent clock far ahead of the partitions created in advance, or a
-- message older than the first partition but not yet expired), so such a
-- row never fails its batch. The bridge creates the coming weeks ahead
-- and drops the weeks past the retention of `[retention]`; see
-- bridge/src/sink/postgres/retention.rs and docs/storage.md.
--
-- Conversion in place, in this one transaction: each table is renamed,
-- a partitioned table with the same columns takes its name, one
-- partition is created for every week that holds rows (and for this week
-- and the next two), every row is copied, the keys and indexes are built
-- after the copy (faster than maintaining them row by row), and the old
-- table is dropped. Views that read the history tables (`fleet`) are
-- dropped and created again from their own definition. No row is
-- lost: the copy is `INSERT ... SELECT *` of every row, and a row whose
-- week has no partition goes to the DEFAULT one.

SET LOCAL TimeZone = 'UTC';

-- Views on the history tables, to create again after the swap.
CREATE TEMP TABLE sitewatch_v8_views ON COMMIT DROP AS
SELECT DISTINCT v.oid, v.oid::regclass::text AS name, pg_get_viewdef(v.oid) AS def
FROM pg_depend d
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class
WHERE d.classid = 'pg_rewrite'::regclass
  AND d.refclassid = 'pg_class'::regclass
  AND v.relkind = 'v'
  AND v.oid <> d.refobjid
  AND d.refobjid IN ('status_events'::regclass, 'heartbeats'::regclass,
                     'disk_usage'::regclass, 'log_batches'::regclass,
                     'camera_probes'::regclass, 'smart_readings'::regclass,
                     'events'::regclass);

DO $views$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT name FROM sitewatch_v8_views LOOP
        EXECUTE format('DROP VIEW %s', v.name);
    END LOOP;
END
$views$;

-- Converts one table: `tbl` partitioned on `col`, primary key `pk`.
CREATE FUNCTION pg_temp.sitewatch_partition(tbl text, col text, pk text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    old text := tbl || '_v7';
    wk timestamptz;
BEGIN
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tbl, old);
    EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', old, tbl || '_pkey', old || '_pkey');
    EXECUTE format(
        'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS '
        'INCLUDING STORAGE) PARTITION BY RANGE (%I)', tbl, old, col);
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);
    FOR wk IN EXECUTE format(
        'SELECT DISTINCT date_trunc(''week'', %I, ''UTC'') FROM %I '
        'UNION SELECT date_trunc(''week'', now(), ''UTC'') + n * interval ''168 hours'' '
        'FROM generate_series(0, 2) AS n', col, old)
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       tbl || '_p' || to_char(wk AT TIME ZONE 'UTC', 'YYYYMMDD'), tbl,
                       wk, wk + interval '168 hours');
    END LOOP;
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', tbl, old);
    EXECUTE format('DROP TABLE %I', old);
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (%s)', tbl, pk);
END
$fn$;

SELECT pg_temp.sitewatch_partition('status_events', 'agent_ts', 'site, boot, session, seq, agent_ts');
CREATE INDEX status_events_site_received ON status_events (site, received_at DESC);

SELECT pg_temp.sitewatch_partition('heartbeats', 'agent_ts', 'site, boot, seq, agent_ts');
CREATE INDEX heartbeats_site_ts ON heartbeats (site, ts DESC);

SELECT pg_temp.sitewatch_partition('disk_usage', 'agent_ts', 'site, boot, seq, path, agent_ts');
CREATE INDEX disk_usage_site_path_ts ON disk_usage (site, path, ts DESC);
CREATE INDEX disk_usage_site_ts ON disk_usage (site, ts DESC);

SELECT pg_temp.sitewatch_partition('log_batches', 'ts', 'site, boot, seq, ts');
CREATE INDEX log_batches_site_received ON log_batches (site, received_at DESC);

SELECT pg_temp.sitewatch_partition('camera_probes', 'agent_ts', 'site, boot, seq, agent_ts');
CREATE INDEX camera_probes_site_camera_ts ON camera_probes (site, camera, ts DESC);

SELECT pg_temp.sitewatch_partition('smart_readings', 'agent_ts', 'site, boot, seq, agent_ts');
CREATE INDEX smart_readings_site_device_ts ON smart_readings (site, device, ts DESC);

SELECT pg_temp.sitewatch_partition('events', 'agent_ts', 'site, boot, seq, agent_ts');
CREATE INDEX events_site_ts ON events (site, ts DESC);
CREATE INDEX events_ts ON events (ts DESC);

DROP FUNCTION pg_temp.sitewatch_partition(text, text, text);

DO $views$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT name, def FROM sitewatch_v8_views ORDER BY oid LOOP
        EXECUTE format('CREATE VIEW %s AS %s', v.name, v.def);
    END LOOP;
END
$views$;

-- The new tables (and the views made again) get the grants of versions 3
-- and 6; partitions need none of their own (access goes through the
-- partitioned table), but ALL TABLES covers them too, as default
-- privileges will cover the partitions the bridge creates later.
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
