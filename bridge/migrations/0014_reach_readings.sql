-- sitewatch bridge schema, version 14: the agent's periodic reachability
-- readings (wire kind `reach`, docs/wire.md): per `[[reach.target]]`
-- (NVR, PoE switch, router...) and round, probes sent and answered, loss
-- and round trips; and each target's latest state.
--
-- 1. `reach_readings`: one row per target per message, partitioned by
--    week on the agent's timestamp like the history of version 8 (whose
--    header says why that column), in [retention] as
--    `reach_readings_days` (90 days by default: at the default 30 s
--    period one target makes 2,880 rows a day). The primary key is the
--    message identity plus the target name and the partition column, so
--    a redelivered message is stored once (INSERT ... ON CONFLICT DO
--    NOTHING), as for `ups_readings`. A message always lists at least one
--    target (the decoder refuses an empty one), so no marker row.
-- 2. `reach_targets`: the latest round per (site, target), with since
--    when its state has held and when it last answered, upserted in the
--    same transaction (one row per target per batch, replaced only by a
--    later effective time), like `cameras` for `stream`. Why a table and
--    not the latest message's identity on `sites` as for `ups`: a round
--    of more than 16 targets comes as several messages, so "the latest
--    message" is not the whole site; and "last answered" of a target
--    that is down would otherwise need a scan back through the history.
--    It is a state table: not partitioned, never expires (a target
--    removed from the agent's config stays, its `received_at` ageing;
--    the dashboard calls it stale).
--
-- Loss is stored as computed by the bridge (`loss_pct`, NULL when no
-- probe was sent: a round that could not be run), so panels need no
-- arithmetic; `sent`, `received` and `refused` are kept as sent.

-- 1. History.
CREATE TABLE reach_readings (
    site          text NOT NULL,
    boot          text NOT NULL,
    seq           bigint NOT NULL,
    -- Effective time (what dashboards plot): the agent's, or the receive
    -- time when the site's clock is off by more than [clock] max_skew_secs.
    ts            timestamptz NOT NULL,
    agent_ts      timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    -- The agent's round period ([reach] interval_secs).
    interval_secs integer NOT NULL,
    -- [[reach.target]] name, address as written, icmp or tcp (and port).
    target        text NOT NULL,
    address       text NOT NULL,
    kind          text NOT NULL,
    port          integer,
    -- up, down, unknown (the round could not be run: `error`); kept as
    -- sent, a newer agent's word is stored, not refused.
    state         text NOT NULL,
    sent          integer NOT NULL,
    received      integer NOT NULL,
    -- TCP: connections refused (the device answered, the port is closed).
    refused       integer NOT NULL,
    -- Probes without any answer, percent of `sent`; NULL when none sent.
    loss_pct      real,
    -- Round trips in ms; NULL when nothing answered (never 0 for "none").
    rtt_min_ms    real,
    rtt_avg_ms    real,
    rtt_max_ms    real,
    error         text,
    PRIMARY KEY (site, boot, seq, target, agent_ts)
) PARTITION BY RANGE (agent_ts);
-- The site dashboard's RTT and loss graphs: one site, a time range.
CREATE INDEX reach_readings_site_ts ON reach_readings (site, ts DESC);

-- A DEFAULT partition, this week and the next two; later weeks are made
-- ahead by the bridge (bridge/src/sink/postgres/retention.rs).
DO $weeks$
DECLARE
    wk timestamptz;
BEGIN
    CREATE TABLE reach_readings_default PARTITION OF reach_readings DEFAULT;
    FOR wk IN SELECT date_trunc('week', now(), 'UTC') + n * interval '168 hours'
              FROM generate_series(0, 2) AS n
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF reach_readings FOR VALUES FROM (%L) TO (%L)',
                       'reach_readings_p' || to_char(wk AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       wk, wk + interval '168 hours');
    END LOOP;
END
$weeks$;

-- 2. Latest state per target.
CREATE TABLE reach_targets (
    site          text NOT NULL,
    target        text NOT NULL,
    -- The latest round's message and times.
    boot          text NOT NULL,
    seq           bigint NOT NULL,
    ts            timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    interval_secs integer NOT NULL,
    address       text NOT NULL,
    kind          text NOT NULL,
    port          integer,
    state         text NOT NULL,
    -- Since when `state` has held (across batches and within one).
    state_since   timestamptz NOT NULL,
    -- The latest round in which the target answered; NULL: never seen up.
    last_up_at    timestamptz,
    sent          integer NOT NULL,
    received      integer NOT NULL,
    refused       integer NOT NULL,
    loss_pct      real,
    rtt_min_ms    real,
    rtt_avg_ms    real,
    rtt_max_ms    real,
    error         text,
    PRIMARY KEY (site, target)
);

-- The new tables get the grants of versions 3 and 6, as in version 8.
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
