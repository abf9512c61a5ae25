-- sitewatch bridge schema, version 16: `ingest_minutes` (version 9)
-- counts every kind the bridge stores, not only heartbeat, disk, status
-- and log.
--
-- The fleet dashboard's "Messages stored per interval" reads only
-- `ingest_minutes`. Since version 9 it missed camera probes (`stream`,
-- often the largest share of a CCTV site's messages), SMART readings,
-- events, UPS readings (version 12) and reachability rounds (version
-- 14), so an ingest stall of those kinds showed nowhere. The same
-- statement-level AFTER INSERT trigger now also runs on their tables;
-- kinds stored as several rows per message (disk: a row per mount, ups:
-- per UPS, reach: per target) count distinct (site, boot, seq).
--
-- Version 15 is left to the change that is numbered so (the uplink's
-- address); migrations are applied by version, so the order in which
-- they reach a database does not matter.
--
-- What is already stored is not counted for the new kinds: the panel
-- shows them from this upgrade on. (Version 9 counted its four kinds'
-- history inside its transaction: 52 s for 1 day of 10,000 sites; the
-- history of camera probes alone is twice that.)

CREATE OR REPLACE FUNCTION sitewatch_count_ingest() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Rows in key order, so that two sessions never lock in opposite order.
    IF TG_ARGV[0] IN ('disk', 'ups', 'reach') THEN
        INSERT INTO ingest_minutes AS m (kind, minute, writer, messages)
        SELECT TG_ARGV[0], date_trunc('minute', received_at), pg_backend_pid(),
               count(DISTINCT (site, boot, seq))
        FROM sitewatch_new_rows GROUP BY 2 ORDER BY 2
        ON CONFLICT (minute, kind, writer) DO UPDATE SET messages = m.messages + excluded.messages;
    ELSE
        INSERT INTO ingest_minutes AS m (kind, minute, writer, messages)
        SELECT TG_ARGV[0], date_trunc('minute', received_at), pg_backend_pid(), count(*)
        FROM sitewatch_new_rows GROUP BY 2 ORDER BY 2
        ON CONFLICT (minute, kind, writer) DO UPDATE SET messages = m.messages + excluded.messages;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER camera_probes_ingest_minutes AFTER INSERT ON camera_probes
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('stream');
CREATE TRIGGER smart_readings_ingest_minutes AFTER INSERT ON smart_readings
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('smart');
CREATE TRIGGER events_ingest_minutes AFTER INSERT ON events
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('event');
CREATE TRIGGER ups_readings_ingest_minutes AFTER INSERT ON ups_readings
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('ups');
CREATE TRIGGER reach_readings_ingest_minutes AFTER INSERT ON reach_readings
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('reach');
