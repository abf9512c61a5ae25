-- sitewatch bridge schema, version 9: messages stored per minute, for
-- the fleet dashboard at fleet scale.
--
-- The fleet dashboard's "Messages stored per interval" counted the
-- history tables' rows by received_at. No index has received_at first
-- (and the history is partitioned by the agent's timestamp, version 8),
-- so every refresh read every heartbeat, disk, status and log row of the
-- range: at 1,000 sites, 1.8 s for the last 6 hours and 4 s for 24 hours
-- on a 2-core machine, ten times that at 10,000 sites
-- (scripts/bench/fleet.sh). An index on received_at would still count
-- about 10 million rows per 6 hours at 10,000 sites.
--
-- `ingest_minutes` holds the same counts per minute, kept by
-- statement-level AFTER INSERT triggers on the four tables: each insert
-- statement of the bridge (one per kind per batch) adds its rows, counted
-- from the statement's transition table, so rows skipped by
-- ON CONFLICT DO NOTHING (redeliveries) are not counted; disk counts
-- messages, not mount rows, as the panel did. A row per writing session
-- (`writer` = its backend pid): two bridges never wait on each other's
-- counter row. The rows of the history already stored are counted here
-- once (writer 0).
--
-- Size: 4 kinds x 1,440 minutes x the number of writing bridges rows a
-- day, about 110 bytes each with the key: 0.6 MB a day per bridge,
-- whatever the fleet size (90 days of two bridges: 1 M rows, 137 MB
-- measured with the former extra index). It is not partitioned and not in
-- [retention] yet: old rows can be deleted by minute.

CREATE TABLE ingest_minutes (
    -- heartbeat, disk, status or log.
    kind     text NOT NULL,
    -- date_trunc('minute', received_at) of the rows counted.
    minute   timestamptz NOT NULL,
    -- Backend pid of the writing session (0: counted by this migration).
    writer   integer NOT NULL,
    messages bigint NOT NULL,
    -- minute first: the panel reads a range of minutes.
    PRIMARY KEY (minute, kind, writer)
);

CREATE FUNCTION sitewatch_count_ingest() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Rows in key order, so that two sessions never lock in opposite order.
    IF TG_ARGV[0] = 'disk' THEN
        INSERT INTO ingest_minutes AS m (kind, minute, writer, messages)
        SELECT 'disk', date_trunc('minute', received_at), pg_backend_pid(),
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

CREATE TRIGGER heartbeats_ingest_minutes AFTER INSERT ON heartbeats
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('heartbeat');
CREATE TRIGGER disk_usage_ingest_minutes AFTER INSERT ON disk_usage
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('disk');
CREATE TRIGGER status_events_ingest_minutes AFTER INSERT ON status_events
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('status');
CREATE TRIGGER log_batches_ingest_minutes AFTER INSERT ON log_batches
    REFERENCING NEW TABLE AS sitewatch_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sitewatch_count_ingest('log');

-- What is already stored.
INSERT INTO ingest_minutes (kind, minute, writer, messages)
SELECT 'heartbeat', date_trunc('minute', received_at), 0, count(*) FROM heartbeats GROUP BY 2
UNION ALL
SELECT 'disk', date_trunc('minute', received_at), 0, count(DISTINCT (site, boot, seq)) FROM disk_usage GROUP BY 2
UNION ALL
SELECT 'status', date_trunc('minute', received_at), 0, count(*) FROM status_events GROUP BY 2
UNION ALL
SELECT 'log', date_trunc('minute', received_at), 0, count(*) FROM log_batches GROUP BY 2;
