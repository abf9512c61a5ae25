-- sitewatch bridge schema, version 12: the agent's periodic UPS readings
-- (wire kind `ups`, docs/wire.md), and each site's latest UPS state.
--
-- 1. `ups_readings`: one row per UPS per message, partitioned by week on
--    the agent's timestamp like the history of version 8 (whose header
--    says why that column), in [retention] as `ups_readings_days` (90
--    days by default: at the default 15 s period one UPS makes 5,760 rows
--    a day). The primary key is the message identity plus the UPS name
--    and the partition column, so a redelivered message is stored once
--    (INSERT ... ON CONFLICT DO NOTHING), as for `disk_usage`. A message
--    with no UPS (upsd could not be read: `error` says why) is stored as
--    one marker row with `ups` = '' so that it counts as received.
-- 2. The latest reading's summary and identity on `sites`, set by the
--    bridge in the UPDATE that already locks and touches each site of a
--    batch (bridge/src/sink/postgres/sites.rs), replaced only by a message
--    with a later (clock-corrected) timestamp, as version 11 does for the
--    heartbeat and disk figures. Why on `sites` and not a table of the
--    latest reading per UPS: the fleet view and its panels read one row
--    per site with no join or partition probe (version 11's measurement:
--    3.2 s at 10,000 sites when the view probed the history); a site's
--    UPSes all come in one message, so the per-UPS current state is that
--    message's rows, fetched by primary key from one partition (the site
--    dashboard's "UPS now", like "Mounts now"); and it costs no statement
--    or row version more per batch, where a separate table would be one
--    more upsert per batch.
-- 3. `fleet` gains the UPS columns at its end (CREATE OR REPLACE VIEW
--    keeps the others as they are).

-- 1. History.
CREATE TABLE ups_readings (
    site            text NOT NULL,
    boot            text NOT NULL,
    seq             bigint NOT NULL,
    -- Effective time (what dashboards plot): the agent's, or the receive
    -- time when the site's clock is off by more than [clock] max_skew_secs.
    ts              timestamptz NOT NULL,
    agent_ts        timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- The agent's reading period ([ups] interval_secs).
    interval_secs   integer NOT NULL,
    -- The UPS's name in upsd; '' for the marker row of a message without
    -- UPS.
    ups             text NOT NULL,
    -- on_line, on_battery, low_battery, unknown (kept as sent: a newer
    -- agent's word is stored, not refused).
    power           text NOT NULL,
    on_line         boolean NOT NULL,
    on_battery      boolean NOT NULL,
    low_battery     boolean NOT NULL,
    -- The raw ups.status flags ('OB DISCHRG').
    status          text NOT NULL,
    -- NULL when the UPS does not report the figure (never 0 for "none").
    charge_pct      real,
    runtime_secs    integer,
    load_pct        real,
    input_voltage_v real,
    -- Why this UPS (or, on the marker row, upsd) could not be read.
    error           text,
    PRIMARY KEY (site, boot, seq, ups, agent_ts)
) PARTITION BY RANGE (agent_ts);
-- The site dashboard's UPS panels: one site, a time range, every UPS.
CREATE INDEX ups_readings_site_ts ON ups_readings (site, ts DESC);

-- A DEFAULT partition, this week and the next two; later weeks are made
-- ahead by the bridge (bridge/src/sink/postgres/retention.rs).
DO $weeks$
DECLARE
    wk timestamptz;
BEGIN
    CREATE TABLE ups_readings_default PARTITION OF ups_readings DEFAULT;
    FOR wk IN SELECT date_trunc('week', now(), 'UTC') + n * interval '168 hours'
              FROM generate_series(0, 2) AS n
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF ups_readings FOR VALUES FROM (%L) TO (%L)',
                       'ups_readings_p' || to_char(wk AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       wk, wk + interval '168 hours');
    END LOOP;
END
$weeks$;

-- 2. Latest state on `sites`.
ALTER TABLE sites
    -- The latest ups message: its effective time and receive time (the
    -- fleet view calls it stale when it is 3 periods older than the
    -- site's last message), and its period.
    ADD COLUMN ups_ts               timestamptz,
    ADD COLUMN ups_received_at      timestamptz,
    ADD COLUMN ups_interval_secs    integer,
    -- Over its UPSes, the worst power state (low_battery, on_battery,
    -- unknown, on_line; unknown when upsd could not be read), how many
    -- are on battery, the lowest charge and runtime, and how many could
    -- not be read (+1 when upsd itself could not be).
    ADD COLUMN ups_power            text,
    ADD COLUMN ups_on_battery       integer,
    ADD COLUMN ups_min_charge_pct   real,
    ADD COLUMN ups_min_runtime_secs integer,
    ADD COLUMN ups_errors           integer,
    -- Its identity, with the partition column: the panels that list the
    -- latest reading's UPSes fetch them by primary key from one partition.
    ADD COLUMN ups_boot             text,
    ADD COLUMN ups_seq              bigint,
    ADD COLUMN ups_agent_ts         timestamptz;

-- 3. The fleet view, version 11's columns then the UPS ones. `ups_power`
-- is `stale` when the latest reading is more than 3 of its periods older
-- than the site's last message (the agent stopped reading UPSes: [ups]
-- removed, or an older agent); NULL when the site never sent one.
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
    g.missing                             AS missing_messages,
    s.ups_ts,
    CASE
        WHEN s.ups_received_at < s.last_seen
                                 - make_interval(secs => 3 * greatest(s.ups_interval_secs, 1))
        THEN 'stale'
        ELSE s.ups_power
    END                                   AS ups_power,
    s.ups_on_battery::bigint              AS ups_on_battery,
    s.ups_min_charge_pct,
    s.ups_min_runtime_secs::bigint        AS ups_min_runtime_secs,
    s.ups_errors::bigint                  AS ups_errors
FROM sites s
LEFT JOIN boot_gaps g ON g.site = s.site AND g.boot = s.boot;

-- The new table gets the grants of versions 3 and 6, as in version 8.
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
