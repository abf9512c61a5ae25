-- sitewatch bridge schema, version 1.
--
-- Written by sitewatch-bridge at start (see bridge/src/sink/migrations.rs);
-- never edit a released migration, add a new file instead.
--
-- Conventions:
-- * `ts` columns are the agent's wall clock (Unix ms from the payload);
--   `received_at` / `last_seen` / `first_seen` are the bridge's clock.
-- * Unsigned 64-bit wire values are stored as bigint; values above
--   9223372036854775807 are clamped to it by the bridge.
-- * Every data table is keyed by the message identity (site, boot, seq),
--   so a redelivered MQTT message is stored once (INSERT ... ON CONFLICT
--   DO NOTHING).

-- Current state of each site: one row per site ever seen.
CREATE TABLE sites (
    site             text PRIMARY KEY,
    -- 'unknown' until a status message is applied.
    state            text NOT NULL DEFAULT 'unknown'
                     CHECK (state IN ('unknown', 'online', 'offline')),
    -- Why offline: 'shutdown' (clean stop) or 'lost' (Last Will).
    reason           text,
    -- Boot and session of the applied status.
    boot             text,
    session          integer,
    -- 1 = online, 2 = offline; orders statuses within one session.
    state_rank       smallint,
    -- Agent timestamp of the applied status.
    state_ts         timestamptz,
    -- Bridge time when `state` last changed value.
    state_changed_at timestamptz,
    agent_version    text,
    heartbeat_secs   integer,
    first_seen       timestamptz NOT NULL,
    -- Bridge receive time of the latest live message of any kind
    -- (retained copies replayed by the broker do not count).
    last_seen        timestamptz NOT NULL,
    -- Highest seq seen for the current boot.
    last_seq         bigint
);

-- Every status message (birth, clean death, Last Will).
CREATE TABLE status_events (
    site          text NOT NULL,
    boot          text NOT NULL,
    session       integer NOT NULL,
    -- 0 for the Last Will, so (session, seq) is unique within a boot.
    seq           bigint NOT NULL,
    state         text NOT NULL,
    reason        text,
    agent_ts      timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    -- Whether this status changed `sites` when it was first stored
    -- (false for late or out-of-order statuses).
    applied       boolean NOT NULL,
    agent_version text NOT NULL,
    heartbeat_secs integer NOT NULL,
    PRIMARY KEY (site, boot, session, seq)
);
CREATE INDEX status_events_site_received ON status_events (site, received_at DESC);

CREATE TABLE heartbeats (
    site                text NOT NULL,
    boot                text NOT NULL,
    seq                 bigint NOT NULL,
    ts                  timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    agent_version       text NOT NULL,
    interval_secs       integer NOT NULL,
    uptime_secs         bigint NOT NULL,
    agent_uptime_secs   bigint NOT NULL,
    load1               real NOT NULL,
    load5               real NOT NULL,
    load15              real NOT NULL,
    mem_total_bytes     bigint NOT NULL,
    mem_available_bytes bigint NOT NULL,
    agent_rss_bytes     bigint NOT NULL,
    -- Agent counters by name (unknown names kept).
    counters            jsonb NOT NULL,
    PRIMARY KEY (site, boot, seq)
);
CREATE INDEX heartbeats_site_ts ON heartbeats (site, ts DESC);

-- One row per mount per disk message. A disk message with no mounts is
-- stored as one row with path '' and error 'no_mounts', so that every
-- stored message has a row (boots.received relies on it).
CREATE TABLE disk_usage (
    site          text NOT NULL,
    boot          text NOT NULL,
    seq           bigint NOT NULL,
    ts            timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    path          text NOT NULL,
    fs_type       text NOT NULL,
    total_bytes   bigint NOT NULL,
    used_bytes    bigint NOT NULL,
    avail_bytes   bigint NOT NULL,
    used_pct      real NOT NULL,
    inodes_total  bigint NOT NULL,
    inodes_free   bigint NOT NULL,
    read_only     boolean NOT NULL,
    -- Why the agent could not sample this mount (e.g. 'not_mounted').
    error         text,
    PRIMARY KEY (site, boot, seq, path)
);
-- Per-mount time series (dashboards) and latest sample per site (fleet).
CREATE INDEX disk_usage_site_path_ts ON disk_usage (site, path, ts DESC);
CREATE INDEX disk_usage_site_ts ON disk_usage (site, ts DESC);

-- One row per agent boot (process start): how many messages arrived.
CREATE TABLE boots (
    site       text NOT NULL,
    boot       text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    -- Highest seq seen (0 if only the Last Will arrived).
    max_seq    bigint NOT NULL,
    -- Distinct messages with seq >= 1 stored; redeliveries do not count.
    received   bigint NOT NULL,
    PRIMARY KEY (site, boot)
);

-- Messages lost between agent and bridge, per boot. Messages still in
-- flight (or queued on the agent) count as missing until they arrive.
CREATE VIEW boot_gaps AS
SELECT site, boot, first_seen, last_seen, max_seq, received,
       GREATEST(max_seq - received, 0) AS missing
FROM boots;

-- Messages the bridge refused, kept for diagnosis. `reason` is a stable
-- code (sitewatch_wire::DecodeError::reason(), or 'db_error').
CREATE TABLE rejected_messages (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL,
    -- First 64 KiB of the payload; payload_len is the full length.
    payload     bytea NOT NULL,
    payload_len integer NOT NULL
);
CREATE INDEX rejected_messages_received ON rejected_messages (received_at DESC);

-- One row per site, for dashboards.
--
-- effective_state is 'stale' when the site claims to be online but has
-- been silent for more than three heartbeat periods (a crashed broker
-- connection whose Last Will has not arrived, or a hung agent).
CREATE VIEW fleet AS
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
    hb.uptime_secs,
    hb.load1,
    hb.mem_available_bytes,
    hb.mem_total_bytes,
    d.ts                                  AS disk_ts,
    d.max_used_pct                        AS disk_max_used_pct,
    d.fullest_path                        AS disk_fullest_path,
    d.read_only_mounts                    AS disk_read_only_mounts,
    d.failed_mounts                       AS disk_failed_mounts,
    g.missing                             AS missing_messages
FROM sites s
LEFT JOIN LATERAL (
    SELECT h.uptime_secs, h.load1, h.mem_available_bytes, h.mem_total_bytes
    FROM heartbeats h
    WHERE h.site = s.site
    ORDER BY h.ts DESC
    LIMIT 1
) hb ON true
LEFT JOIN LATERAL (
    SELECT max(du.ts) AS ts,
           max(du.used_pct) FILTER (WHERE du.error IS NULL) AS max_used_pct,
           (array_agg(du.path ORDER BY du.used_pct DESC)
                FILTER (WHERE du.error IS NULL))[1] AS fullest_path,
           count(*) FILTER (WHERE du.read_only) AS read_only_mounts,
           count(*) FILTER (WHERE du.error IS NOT NULL AND du.path <> '') AS failed_mounts
    FROM disk_usage du
    JOIN (
        SELECT l.boot, l.seq
        FROM disk_usage l
        WHERE l.site = s.site
        ORDER BY l.ts DESC
        LIMIT 1
    ) latest ON du.boot = latest.boot AND du.seq = latest.seq
    WHERE du.site = s.site
) d ON true
LEFT JOIN boot_gaps g ON g.site = s.site AND g.boot = s.boot;
