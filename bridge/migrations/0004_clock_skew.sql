-- sitewatch bridge schema, version 4: clock sanity.
--
-- Gateways without a battery-backed clock (most OpenWrt routers) boot
-- with a wrong date until NTP syncs. The bridge measures each site's
-- clock skew (agent timestamp minus bridge receive time, from the
-- freshest live message of each batch) and keeps the latest measurement
-- in `sites`. When |skew| exceeds `[clock] max_skew_secs` (default 300),
-- the site's time-series rows (heartbeats, disk_usage) are stored with
-- `ts` = the bridge's receive time, and the agent's own timestamp is kept
-- in `agent_ts`.
--
-- From this version on, `ts` of heartbeats and disk_usage is the
-- *effective* time (what dashboards plot); `agent_ts` is always the
-- agent's clock. Rows stored before this version are backfilled with
-- agent_ts = ts (they were stored at agent time).
--
-- Statuses are not affected: status_events.agent_ts and sites.state_ts
-- stay the agent's time (the ordering rule compares agent timestamps).

ALTER TABLE sites
    -- Agent timestamp minus bridge receive time, in ms (positive: the
    -- agent's clock is ahead); NULL until a live message is seen.
    ADD COLUMN clock_skew_ms bigint,
    -- Bridge receive time of the message the skew was measured on.
    ADD COLUMN clock_skew_at timestamptz;

ALTER TABLE heartbeats ADD COLUMN agent_ts timestamptz;
UPDATE heartbeats SET agent_ts = ts;
ALTER TABLE heartbeats ALTER COLUMN agent_ts SET NOT NULL;

ALTER TABLE disk_usage ADD COLUMN agent_ts timestamptz;
UPDATE disk_usage SET agent_ts = ts;
ALTER TABLE disk_usage ALTER COLUMN agent_ts SET NOT NULL;
