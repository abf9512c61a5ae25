-- Fleet-scale history for scripts/bench/fleet.sh, generated inside
-- PostgreSQL (INSERT ... SELECT ... FROM generate_series: no MQTT, no
-- bridge). Run with psql variables:
--
--   step=setup  sites=N  t_start='...'  t_end='...'   the fleet, its state tables
--   step=hour   h=H                                   hour H of the history
--   step=finish                                       boots, status, events, rejects
--
-- Rates per site (docs/wire.md, the agent's defaults and examples/agent.toml):
-- heartbeat every 60 s; disk every 5 min (2 mounts: "/" and
-- "/srv/recordings"); 4 cameras probed every 5 min; SMART every 30 min (2
-- disks, an ATA and an NVMe); a syslog batch about every 2 min (every
-- minute at noisy sites). Every row's seq is unique per boot:
-- 10 + minute * 10 + slot (0 heartbeat, 1 disk, 2-5 cameras, 6-7 SMART,
-- 8 log, 9 events).
--
-- What goes wrong, by site (bench.site, chosen by hash so runs repeat):
-- 2 % offline (Last Will at a random time in the range), 0.5 % stale
-- (silent for 10 min, no Last Will), 1 % with a clock far off (stored at
-- receive time, agent_ts kept), 3 % with "/" filling up, 0.5 % with the
-- recording disk not mounted, 0.2 % read-only, 1.5 % of cameras frozen,
-- 1 % stalled, 1 % refusing the password, 1 % timing out, 1 % low fps, 1 %
-- of disks SMART warning and 0.3 % critical, 1 % of sites with sequence
-- gaps and agent drops, 10 % noisy syslog.

\if :{?step}
\else
\echo 'step is not set'
\quit
\endif

SELECT :'step' = 'setup' AS is_setup, :'step' = 'hour' AS is_hour, :'step' = 'finish' AS is_finish \gset

\if :is_setup
CREATE SCHEMA bench;
CREATE TABLE bench.params AS
SELECT :'t_start'::timestamptz AS t_start, :'t_end'::timestamptz AS t_end, :sites::int AS sites;

CREATE TABLE bench.site AS
SELECT n,
       format('site-%s', lpad(n::text, 5, '0')) AS site,
       'b' || lpad(to_hex(n::bigint * 2654435761 % 4294967296), 16, '0') AS boot,
       n % 60 AS jitter,
       h1, h2,
       CASE WHEN h1 < 20 THEN p.t_start + (p.t_end - p.t_start) * (h2 / 1000.0)
            WHEN h1 < 25 THEN p.t_end - interval '10 minutes'
            ELSE p.t_end + interval '1 day' END AS end_at,
       h1 < 20 AS offline,
       (CASE WHEN h1 BETWEEN 30 AND 34 THEN -1 ELSE 1 END)
         * CASE WHEN h1 BETWEEN 30 AND 39 THEN (CASE WHEN h2 < 500 THEN 31536000000 ELSE 900000 END)
                ELSE (h2 % 3000) - 1500 END AS skew_ms,
       h1 BETWEEN 40 AND 69 AS root_filling,
       CASE WHEN h1 BETWEEN 70 AND 74 THEN 'not_mounted'
            WHEN h1 BETWEEN 75 AND 76 THEN 'read_only' END AS rec_problem,
       h1 BETWEEN 80 AND 89 AS gaps,
       h2 < 100 AS noisy,
       CASE WHEN h2 BETWEEN 100 AND 109 THEN 'warning'
            WHEN h2 BETWEEN 110 AND 112 THEN 'critical' ELSE 'ok' END AS sda_verdict,
       p.t_start - interval '1 day' * (1 + h2 % 30) AS boot_at
FROM bench.params p,
     generate_series(1, p.sites) n,
     LATERAL (SELECT abs(hashtext('a' || n)) % 1000 AS h1, abs(hashtext('b' || n)) % 1000 AS h2) h;
ALTER TABLE bench.site ADD PRIMARY KEY (n);

CREATE TABLE bench.camera AS
SELECT s.n, s.site, c, (ARRAY['gate', 'lobby', 'yard', 'parking'])[c] AS camera,
       CASE WHEN h < 15 THEN 'frozen' WHEN h < 25 THEN 'stalled' WHEN h < 35 THEN 'auth'
            WHEN h < 45 THEN 'tcp_timeout' WHEN h < 55 THEN 'low_fps' ELSE 'ok' END AS class
FROM bench.site s, generate_series(1, 4) c,
     LATERAL (SELECT abs(hashtext(s.site || c)) % 1000 AS h) x;

-- A SMART attribute table as an ATA disk reports it (12 attributes).
CREATE TABLE bench.ata_attributes AS
SELECT jsonb_agg(jsonb_build_object('id', id, 'name', name, 'value', 100, 'worst', 100,
                                    'thresh', 10, 'raw', raw, 'prefail', id < 10)) AS a
FROM (VALUES (1, 'Raw_Read_Error_Rate', 0), (3, 'Spin_Up_Time', 4500), (4, 'Start_Stop_Count', 40),
             (5, 'Reallocated_Sector_Ct', 0), (7, 'Seek_Error_Rate', 0), (9, 'Power_On_Hours', 25760),
             (10, 'Spin_Retry_Count', 0), (12, 'Power_Cycle_Count', 40), (194, 'Temperature_Celsius', 38),
             (197, 'Current_Pending_Sector', 0), (198, 'Offline_Uncorrectable', 0),
             (199, 'UDMA_CRC_Error_Count', 0)) v(id, name, raw);

-- A partitioned schema (migration 0008): the weekly partitions of the
-- generated range, as the bridge creates them ahead, named like 0008's;
-- a week some partition already covers is skipped.
DO $parts$
DECLARE
    t record;
    wk timestamptz;
BEGIN
    SET LOCAL TimeZone = 'UTC';
    FOR t IN SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' LOOP
        FOR wk IN SELECT generate_series(date_trunc('week', p.t_start), p.t_end, interval '168 hours')
                  FROM bench.params p LOOP
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               t.relname || '_p' || to_char(wk, 'YYYYMMDD'), t.relname,
                               wk, wk + interval '168 hours');
            EXCEPTION WHEN duplicate_table OR invalid_object_definition THEN
                NULL;
            END;
        END LOOP;
    END LOOP;
END
$parts$;

INSERT INTO bridge_sessions (client_id, share_group, last_seen, started_at)
VALUES ('bridge-a', 'sitewatch', now(), now() - interval '3 days'),
       ('bridge-b', 'sitewatch', now(), now() - interval '3 days');
\endif

\if :is_hour
-- Rows of hour :h (minutes :h*60 .. :h*60+59 after t_start), in time order
-- (sites interleaved, as the bridge stores them).
CREATE TEMP TABLE tick AS
SELECT s.*, m, rt, rt + interval '300 milliseconds' AS recv,
       rt + s.skew_ms * interval '1 millisecond' AS agent,
       CASE WHEN abs(s.skew_ms) > 300000 THEN rt + interval '300 milliseconds'
            ELSE rt + s.skew_ms * interval '1 millisecond' END AS eff,
       10 + m::bigint * 10 AS seq0,
       extract(epoch FROM rt - s.boot_at)::bigint AS up
FROM bench.params p,
     generate_series(:h * 60, :h * 60 + 59) m,
     bench.site s,
     LATERAL (SELECT p.t_start + m * interval '1 minute' + s.jitter * interval '1 second' AS rt) t
WHERE rt < s.end_at AND rt < p.t_end;

INSERT INTO heartbeats (site, boot, seq, ts, received_at, agent_version, interval_secs, uptime_secs,
                        agent_uptime_secs, load1, load5, load15, mem_total_bytes, mem_available_bytes,
                        agent_rss_bytes, counters, agent_ts)
SELECT site, boot, seq0, eff, recv, '0.4.0', 60, up, up,
       (0.2 + random())::real, (0.3 + random() * 0.5)::real, (0.3 + random() * 0.3)::real,
       268435456, 90000000 + (random() * 60000000)::bigint, 3000000 + (random() * 800000)::bigint,
       jsonb_build_object('published', m * 3, 'acked', m * 3, 'reconnects', h2 % 3,
                          'connect_errors', h2 % 2, 'dropped', CASE WHEN gaps THEN m / 200 ELSE 0 END,
                          'disk_errors', 0, 'syslog_dropped', CASE WHEN noisy THEN m / 500 ELSE 0 END,
                          'outbox_dropped_log', 0, 'clock_jumps', CASE WHEN abs(skew_ms) > 300000 THEN 1 ELSE 0 END),
       agent
FROM tick ORDER BY rt, n;

INSERT INTO disk_usage (site, boot, seq, ts, received_at, path, fs_type, total_bytes, used_bytes,
                        avail_bytes, used_pct, inodes_total, inodes_free, read_only, error, agent_ts)
SELECT site, boot, seq0 + 1, eff, recv, path, fs, total, used, total - used,
       coalesce(used * 100.0 / nullif(total, 0), 0)::real, inodes, inodes / 2, ro, err, agent
FROM (
    SELECT t.*, '/' AS path, 'ext4' AS fs, 16000000000::bigint AS total,
           (16000000000 * CASE WHEN root_filling
                THEN 0.70 + 0.29 * extract(epoch FROM rt - p.t_start) / extract(epoch FROM p.t_end - p.t_start)
                ELSE 0.20 + (h2 % 400) / 1000.0 + random() * 0.002 END)::bigint AS used,
           1000000 AS inodes, false AS ro, NULL::text AS err
    FROM tick t, bench.params p WHERE (m + jitter) % 5 = 0
    UNION ALL
    SELECT t.*, '/srv/recordings', CASE WHEN rec_problem = 'not_mounted' THEN '' ELSE 'ext4' END,
           CASE WHEN rec_problem = 'not_mounted' THEN 0 ELSE 4000000000000 END,
           CASE WHEN rec_problem = 'not_mounted' THEN 0
                -- recordings grow, the agent's cleanup brings them back to 85 %
                ELSE (4000000000000 * (0.85 + 0.05 * ((m + h2) % 720) / 720.0))::bigint END,
           CASE WHEN rec_problem = 'not_mounted' THEN 0 ELSE 244000000 END,
           coalesce(rec_problem = 'read_only', false),
           CASE WHEN rec_problem = 'not_mounted' THEN 'not_mounted' END
    FROM tick t WHERE (m + jitter) % 5 = 0
) d ORDER BY rt, n, path;

INSERT INTO camera_probes (site, boot, seq, ts, agent_ts, received_at, camera, url, transport, class,
                           warnings, detail, started, probe_ms, failures, status_code, ttff_ms, ttfk_ms,
                           codec, width, height, fps, fps_wall, bitrate_kbps, keyframe_interval_s,
                           frames, lost_packets, rtp_wall_ratio)
SELECT t.site, boot, seq0 + 1 + c.c, eff, agent, recv, c.camera,
       format('rtsp://192.168.1.%s:554/Streaming/Channels/101', 63 + c.c), 'tcp', cls,
       CASE WHEN cls = 'low_fps' THEN ARRAY['low_fps'] ELSE '{}'::text[] END,
       CASE cls WHEN 'ok' THEN '' WHEN 'auth' THEN 'RTSP 401 Unauthorized: check the username and password'
                WHEN 'tcp_timeout' THEN 'no answer from 192.168.1.' || (63 + c.c) || ':554 within 5 s'
                ELSE cls || ': ' || 'see docs/ops.md' END,
       eff - interval '9 seconds', 8000,
       CASE WHEN cls IN ('ok', 'low_fps') THEN 0 ELSE 1 + m % 50 END,
       CASE WHEN cls = 'auth' THEN 401 END,
       CASE WHEN ok THEN 80 END, CASE WHEN ok THEN 80 END,
       CASE WHEN ok THEN 'avc1.640028' END, CASE WHEN ok THEN 1920 END, CASE WHEN ok THEN 1080 END,
       CASE WHEN cls = 'stalled' THEN 3.5 WHEN cls = 'low_fps' THEN 6 WHEN ok THEN 25 END::real,
       CASE WHEN ok THEN 24.9 END::real,
       CASE WHEN cls = 'frozen' THEN 40 WHEN ok THEN 3800 + (random() * 600)::int END,
       CASE WHEN ok THEN 2.0 END::real, CASE WHEN ok THEN 200 END, CASE WHEN ok THEN 0 END,
       CASE WHEN cls = 'frozen' THEN 0.01 WHEN ok THEN 1.0 END::real
FROM tick t
JOIN bench.camera c ON c.n = t.n AND (t.m + t.jitter + c.c) % 5 = 0,
     LATERAL (SELECT CASE WHEN random() < 0.003 THEN 'rtsp_timeout' ELSE c.class END AS cls) k,
     LATERAL (SELECT k.cls IN ('ok', 'low_fps', 'frozen', 'stalled') AS ok) o
ORDER BY t.rt, t.n, c.c;

INSERT INTO smart_readings (site, boot, seq, ts, agent_ts, received_at, device, path, protocol, source,
                            state, verdict, reasons, model, serial, firmware, capacity_bytes,
                            temperature_c, power_on_hours, reallocated, pending, uncorrectable,
                            crc_errors, nvme, attributes, detail)
SELECT site, boot, seq0 + 5 + d, eff, agent, recv,
       CASE d WHEN 1 THEN 'sda' ELSE 'nvme0n1' END, CASE d WHEN 1 THEN '/dev/sda' ELSE '/dev/nvme0n1' END,
       CASE d WHEN 1 THEN 'ata' ELSE 'nvme' END, 'native', 'read', v,
       CASE v WHEN 'critical' THEN '[{"code":"pending_growing","level":"critical","detail":"16 sectors pending reallocation, 4 more than at the last reading"},{"code":"reallocated_stable","level":"warning","detail":"8 reallocated sectors, unchanged"}]'::jsonb
              WHEN 'warning' THEN '[{"code":"reallocated_stable","level":"warning","detail":"8 reallocated sectors, unchanged"}]'::jsonb
              ELSE '[]'::jsonb END,
       CASE d WHEN 1 THEN 'ST4000VX016-3CV104' ELSE 'WD Blue SN570' END,
       CASE d WHEN 1 THEN 'ZW6' ELSE 'SN5' END || lpad(n::text, 5, '0'),
       CASE d WHEN 1 THEN 'CV11' ELSE '234110WD' END,
       CASE d WHEN 1 THEN 4000787030016 ELSE 500107862016 END,
       (35 + h2 % 10)::smallint, 20000 + up / 3600,
       CASE WHEN d = 1 THEN CASE WHEN v = 'ok' THEN 0 ELSE 8 END END,
       CASE WHEN d = 1 THEN CASE WHEN v = 'critical' THEN 16 ELSE 0 END END,
       CASE WHEN d = 1 THEN 0 END, CASE WHEN d = 1 THEN 0 END,
       CASE WHEN d = 2 THEN jsonb_build_object('critical_warning', 0, 'available_spare', 100,
            'spare_threshold', 10, 'percentage_used', 3, 'media_errors', 0, 'unsafe_shutdowns', 5,
            'error_log_entries', 0, 'power_cycles', 40, 'data_units_written', 123456 + m) END,
       CASE WHEN d = 1 THEN (SELECT a FROM bench.ata_attributes) ELSE '[]'::jsonb END,
       NULL
FROM tick t, generate_series(1, 2) d,
     LATERAL (SELECT CASE WHEN d = 1 THEN t.sda_verdict ELSE 'ok' END AS v) x
WHERE (m + jitter) % 30 = 0
ORDER BY rt, n, d;

INSERT INTO log_batches (site, boot, seq, ts, received_at, records, rejected, pushed_at)
SELECT site, boot, seq0 + 8, eff, recv, 1 + (random() * CASE WHEN noisy THEN 400 ELSE 60 END)::int, 0, recv
FROM tick
WHERE noisy OR (m + jitter) % 2 = 0
ORDER BY rt, n;

-- Events: about one every two days at a healthy site, more where
-- something is wrong.
INSERT INTO events (site, boot, seq, ts, agent_ts, received_at, event, severity, subject, from_state,
                    to_state, message, numbers)
SELECT t.site, boot, seq0 + 9, eff, agent, recv, e.event, e.severity, e.subject, e.from_state,
       e.to_state, e.event || ' ' || e.subject || ': ' || e.from_state || ' -> ' || e.to_state,
       '{}'::jsonb
FROM tick t,
     LATERAL (VALUES
        ('camera_class', 'warning', 'lobby', 'ok', 'stalled'),
        ('disk_verdict', 'critical', 'sda', 'warning', 'critical'),
        ('disk_watermark', 'warning', '/', 'below', 'above')) e(event, severity, subject, from_state, to_state)
WHERE random() < CASE WHEN t.root_filling OR t.sda_verdict <> 'ok' THEN 0.002 ELSE 0.0002 END
  AND e.event = (ARRAY['camera_class', 'disk_verdict', 'disk_watermark'])[1 + (t.m % 3)]
ORDER BY t.rt, t.n;
DROP TABLE tick;
\endif

\if :is_finish
-- Statuses: each boot's birth; a reconnect (Last Will, new session) at
-- one site in ten per day; the Last Will of the offline sites.
INSERT INTO status_events (site, boot, session, seq, state, reason, agent_ts, received_at, applied,
                           agent_version, heartbeat_secs)
SELECT site, boot, 1, 1, 'online', NULL, boot_at, boot_at, true, '0.4.0', 60 FROM bench.site;
INSERT INTO status_events (site, boot, session, seq, state, reason, agent_ts, received_at, applied,
                           agent_version, heartbeat_secs)
SELECT s.site, s.boot, 1 + d * 2 + x.k, CASE WHEN x.k = 0 THEN 0 ELSE 10 + (d * 1440 + 700) * 10 + 9 END,
       CASE WHEN x.k = 0 THEN 'offline' ELSE 'online' END, CASE WHEN x.k = 0 THEN 'lost' END,
       t + x.k * interval '2 minutes', t + x.k * interval '2 minutes', true, '0.4.0', 60
FROM bench.site s, bench.params p,
     generate_series(0, ceil(extract(epoch FROM p.t_end - p.t_start) / 86400)::int - 1) d,
     LATERAL (SELECT p.t_start + d * interval '1 day' + interval '11 hours' + s.jitter * interval '1 minute' AS t) tt,
     (VALUES (0), (1)) x(k)
WHERE (s.n + d) % 10 = 0 AND t < s.end_at AND t < p.t_end;
INSERT INTO status_events (site, boot, session, seq, state, reason, agent_ts, received_at, applied,
                           agent_version, heartbeat_secs)
SELECT site, boot, 1000, 0, 'offline', 'lost', end_at, end_at + interval '90 seconds', true, '0.4.0', 60
FROM bench.site WHERE offline;

INSERT INTO boots (site, boot, first_seen, last_seen, max_seq, received)
SELECT s.site, s.boot, s.boot_at, least(s.end_at, p.t_end), hb.max_seq,
       hb.max_seq - CASE WHEN s.gaps THEN 12 + s.h2 % 40 ELSE 0 END
FROM bench.site s, bench.params p,
     LATERAL (SELECT coalesce(max(seq), 1) + 9 AS max_seq FROM heartbeats h
              WHERE h.site = s.site AND h.boot = s.boot) hb;

INSERT INTO sites (site, state, reason, boot, session, state_rank, state_ts, state_changed_at,
                   agent_version, heartbeat_secs, first_seen, last_seen, last_seq, clock_skew_ms, clock_skew_at)
SELECT s.site, CASE WHEN s.offline THEN 'offline' ELSE 'online' END,
       CASE WHEN s.offline THEN 'lost' END, s.boot, st.session,
       CASE WHEN s.offline THEN 2 ELSE 1 END, st.agent_ts, st.received_at, '0.4.0', 60,
       s.boot_at - interval '30 days', least(s.end_at, p.t_end), b.max_seq, s.skew_ms,
       least(s.end_at, p.t_end)
FROM bench.site s, bench.params p,
     LATERAL (SELECT session, agent_ts, received_at FROM status_events e
              WHERE e.site = s.site ORDER BY received_at DESC LIMIT 1) st,
     LATERAL (SELECT max_seq FROM boots b WHERE b.site = s.site) b;

-- Migration 0011's latest figures on `sites`, as the bridge keeps them
-- (the same statements as the migration's own backfill).
SELECT EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_name = 'sites' AND column_name = 'hb_ts') AS has_site_latest \gset
\if :has_site_latest
UPDATE sites s
SET (hb_ts, uptime_secs, load1, mem_available_bytes, mem_total_bytes,
     hb_boot, hb_seq, hb_agent_ts, hb_received_at) = (
    SELECT h.ts, h.uptime_secs, h.load1, h.mem_available_bytes, h.mem_total_bytes,
           h.boot, h.seq, h.agent_ts, h.received_at
    FROM heartbeats h WHERE h.site = s.site ORDER BY h.ts DESC LIMIT 1);
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
    JOIN (SELECT l.boot, l.seq FROM disk_usage l WHERE l.site = s.site
          ORDER BY l.ts DESC LIMIT 1) latest ON du.boot = latest.boot AND du.seq = latest.seq
    WHERE du.site = s.site);
\endif

INSERT INTO cameras (site, camera, boot, seq, ts, class, class_since, warnings, detail, url, codec, width,
                     height, fps, bitrate_kbps, failures)
SELECT c.site, c.camera, l.boot, l.seq, l.ts, c.class,
       CASE WHEN c.class = 'ok' THEN s.boot_at ELSE p.t_start - interval '1 hour' * (s.h2 % 48) END,
       l.warnings, l.detail, l.url, l.codec, l.width, l.height, l.fps, l.bitrate_kbps, l.failures
FROM bench.camera c
JOIN bench.site s USING (n)
CROSS JOIN bench.params p
CROSS JOIN LATERAL (SELECT * FROM camera_probes cp WHERE cp.site = c.site AND cp.camera = c.camera
                    ORDER BY cp.ts DESC LIMIT 1) l;

INSERT INTO disks (site, device, boot, seq, ts, verdict, verdict_since, state, reasons, model, serial,
                   temperature_c, power_on_hours)
SELECT DISTINCT ON (r.site, r.device) r.site, r.device, r.boot, r.seq, r.ts, r.verdict,
       r.ts - interval '3 days', r.state, r.reasons, r.model, r.serial, r.temperature_c, r.power_on_hours
FROM smart_readings r
ORDER BY r.site, r.device, r.ts DESC;

-- Migration 0009's per-minute counts: what the triggers counted for the
-- generated range, plus 90 days before it at the same rates (two bridges).
SELECT to_regclass('ingest_minutes') IS NOT NULL AS has_ingest_minutes \gset
\if :has_ingest_minutes
INSERT INTO ingest_minutes (kind, minute, writer, messages)
SELECT k.kind, t, w, round(p.sites * k.per_minute / 2 * (0.95 + random() * 0.1))::bigint
FROM bench.params p,
     generate_series(p.t_start - interval '90 days', p.t_start - interval '1 minute', interval '1 minute') t,
     (VALUES ('heartbeat', 1.0), ('disk', 0.2), ('log', 0.55), ('status', 0.0002)) k(kind, per_minute),
     (VALUES (1), (2)) wr(w)
WHERE p.sites * k.per_minute / 2 >= 1 OR random() < p.sites * k.per_minute / 2;
\endif

INSERT INTO rejected_messages (received_at, topic, reason, detail, payload, payload_len)
SELECT p.t_start + (p.t_end - p.t_start) * random(),
       format('sitewatch/v1/site-%s/heartbeat', lpad((1 + (random() * (p.sites - 1))::int)::text, 5, '0')),
       (ARRAY['bad_json', 'unknown_field', 'site_mismatch', 'loki_rejected'])[1 + (g % 4)],
       'generated by scripts/bench/fleet.sh', '\x7b7d'::bytea, 2
FROM bench.params p, generate_series(1, greatest(50, p.sites / 20)) g;
\endif
