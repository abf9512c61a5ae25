-- sitewatch bridge schema, version 7: share-group members and their leases.
--
-- One row per bridge MQTT session (client id) in a share group. A running
-- bridge holds a session-level advisory lock on (1398227539, id) ("SWBS") for as
-- long as its database connection lives and refreshes last_seen every few
-- seconds. A peer that finds last_seen unchanged for
-- `consumer.takeover_after_secs` and can take the lock drains that
-- session (see bridge/src/takeover.rs); the lock makes sure one MQTT
-- session is never driven by two bridges at once.
CREATE TABLE bridge_sessions (
    id          serial PRIMARY KEY,
    client_id   text NOT NULL UNIQUE,
    share_group text NOT NULL,
    -- Database clock, so that bridges on different hosts agree.
    last_seen   timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz NOT NULL DEFAULT now(),
    -- Last time a peer drained this session, and who.
    taken_over_at timestamptz,
    taken_over_by text,
    taken_over_messages bigint NOT NULL DEFAULT 0
);
