-- sitewatch bridge schema, version 10: camera reachability from the centre.
--
-- Written by `sitewatch-live` (live/), which probes each camera that its
-- config lists through the site's public host (DDNS name) and port
-- forward: DNS, TCP connect, RTSP DESCRIBE with the NVR's viewer account.
-- The bridge stays the one schema owner: this file is a bridge migration,
-- and sitewatch-live only inserts and updates (it never runs DDL), with an
-- account in `sitewatch_writer` or the bridge's own.
--
-- `class` is one of ok, dns, tcp_refused, tcp_timeout, auth, not_found,
-- rtsp_error; `detail` says what was seen in plain words (never a
-- password: camera URLs in sitewatch-live's config cannot hold one).
-- `addr` is what the host name resolved to (NULL when it did not).
--
-- History is a plain table (one row per probe: with the default 5-minute
-- interval, 288 rows per camera-day); it is not partitioned and not
-- dropped by [retention] yet.
CREATE TABLE camera_reachability (
    site        text NOT NULL,
    camera      text NOT NULL,
    ts          timestamptz NOT NULL,
    class       text NOT NULL
                CHECK (class IN ('ok', 'dns', 'tcp_refused', 'tcp_timeout', 'auth',
                                 'not_found', 'rtsp_error')),
    detail      text NOT NULL,
    host        text NOT NULL,
    addr        inet,
    duration_ms integer NOT NULL,
    PRIMARY KEY (site, camera, ts)
);
CREATE INDEX camera_reachability_ts ON camera_reachability (ts);

-- The latest probe per camera; `class_since` is when the class last changed.
CREATE TABLE camera_reachability_now (
    site        text NOT NULL,
    camera      text NOT NULL,
    ts          timestamptz NOT NULL,
    class       text NOT NULL,
    class_since timestamptz NOT NULL,
    detail      text NOT NULL,
    host        text NOT NULL,
    url         text NOT NULL,
    addr        inet,
    duration_ms integer NOT NULL,
    PRIMARY KEY (site, camera)
);

-- The roles of versions 3 and 6 get these tables through their default
-- privileges when the same account created them; granted here as well
-- for an owner whose defaults were set by hand.
DO $reach$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitewatch_grafana') THEN
        GRANT SELECT ON camera_reachability, camera_reachability_now TO sitewatch_grafana;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sitewatch_writer') THEN
        GRANT SELECT, INSERT, UPDATE ON camera_reachability, camera_reachability_now
            TO sitewatch_writer;
    END IF;
END
$reach$;
