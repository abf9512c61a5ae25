-- sitewatch bridge schema, version 15: the site's uplink address, from
-- the heartbeat's `wan.addr`, `wan.addr_class` and `wan.addr6`
-- (docs/wire.md): the centre cannot learn it from the broker (mosquitto
-- does not tell subscribers a client's address), and sitewatch-live
-- compares it with what the site's DDNS name resolves to.
--
-- 1. `heartbeats` gains the three fields as columns, like the counters of
--    version 13 (same reasons: one set per message, same identity,
--    partitions and retention, no statement more per batch). This is the
--    address history: a change is a row whose address differs from the
--    previous heartbeat's (lag() over one site), about 20 bytes a row.
-- 2. `sites` gains the latest heartbeat's address, class and IPv6
--    address, and `wan_addr_since`, when the stored address started
--    (the effective time of the first heartbeat with it that the bridge
--    stored, to within one batch). They belong to the latest-heartbeat
--    group of version 11: set by the UPDATE that already touches each
--    site of a batch, only by a heartbeat at or after `hb_ts`, so a late
--    redelivery never moves them back. NULL: the latest heartbeat carried
--    none (older agent, `wan_interface = "off"`, no IPv4 address).
-- 3. `camera_reachability` and `camera_reachability_now` gain `ddns`:
--    sitewatch-live's comparison of the addresses the probed host name
--    resolved to with the site's public `wan_addr` (true: one of them is
--    it; false: none is, the router's DDNS client is not updating; NULL:
--    not compared, no public address known or the name did not resolve).
-- 4. The `fleet` view gains the address columns at its end.
--
-- Nullable columns without a default: catalog changes only, no rewrite
-- (on the partitioned parents and every partition alike).

ALTER TABLE heartbeats
    ADD COLUMN wan_addr       text,
    ADD COLUMN wan_addr_class text,
    ADD COLUMN wan_addr6      text;

ALTER TABLE sites
    ADD COLUMN wan_addr       text,
    ADD COLUMN wan_addr_class text,
    ADD COLUMN wan_addr6      text,
    ADD COLUMN wan_addr_since timestamptz;

ALTER TABLE camera_reachability ADD COLUMN ddns boolean;
ALTER TABLE camera_reachability_now ADD COLUMN ddns boolean;

-- Version 12's view, plus the address at the end.
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
    s.ups_errors::bigint                  AS ups_errors,
    s.wan_addr,
    s.wan_addr_class,
    s.wan_addr6,
    s.wan_addr_since
FROM sites s
LEFT JOIN boot_gaps g ON g.site = s.site AND g.boot = s.boot;
