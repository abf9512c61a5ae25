-- sitewatch bridge schema, version 5: camera streams, disk health, events.
--
-- Each kind has a history table keyed like every message, (site, boot,
-- seq), so redelivered messages are dropped by the primary key; and the
-- two retained kinds also have a latest-state table keyed by what they
-- describe (a camera, a disk). The latest-state row is replaced only by a
-- message with a later effective time, so a late redelivery or a retained
-- copy from an earlier boot never rolls the state back.
--
-- `ts` is the effective time (the agent's clock, or the bridge's receive
-- time for a site whose clock is off, see version 4); `agent_ts` is the
-- agent's own clock.

CREATE TABLE camera_probes (
    site                 text NOT NULL,
    boot                 text NOT NULL,
    seq                  bigint NOT NULL,
    ts                   timestamptz NOT NULL,
    agent_ts             timestamptz NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    camera               text NOT NULL,
    url                  text NOT NULL,
    transport            text NOT NULL,
    -- ok, dns, tcp_refused, tcp_timeout, rtsp_timeout, auth, not_found,
    -- rtsp_status, no_video, no_frames, stalled, low_fps, frozen (docs/wire.md)
    class                text NOT NULL,
    warnings             text[] NOT NULL,
    detail               text NOT NULL,
    started              timestamptz NOT NULL,
    probe_ms             integer NOT NULL,
    failures             integer NOT NULL,
    status_code          integer,
    ttff_ms              integer,
    ttfk_ms              integer,
    codec                text,
    width                integer,
    height               integer,
    fps                  real,
    fps_wall             real,
    bitrate_kbps         integer,
    keyframe_interval_s  real,
    frames               integer,
    lost_packets         bigint,
    rtp_wall_ratio       real,
    PRIMARY KEY (site, boot, seq)
);
CREATE INDEX camera_probes_site_camera_ts ON camera_probes (site, camera, ts DESC);

-- Latest probe per camera, plus since when the camera has been in its
-- class (for "camera down for more than N minutes").
CREATE TABLE cameras (
    site         text NOT NULL,
    camera       text NOT NULL,
    boot         text NOT NULL,
    seq          bigint NOT NULL,
    ts           timestamptz NOT NULL,
    class        text NOT NULL,
    class_since  timestamptz NOT NULL,
    warnings     text[] NOT NULL,
    detail       text NOT NULL,
    url          text NOT NULL,
    codec        text,
    width        integer,
    height       integer,
    fps          real,
    bitrate_kbps integer,
    failures     integer NOT NULL,
    PRIMARY KEY (site, camera)
);

CREATE TABLE smart_readings (
    site            text NOT NULL,
    boot            text NOT NULL,
    seq             bigint NOT NULL,
    ts              timestamptz NOT NULL,
    agent_ts        timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    device          text NOT NULL,
    path            text NOT NULL,
    protocol        text NOT NULL,
    source          text NOT NULL,
    state           text NOT NULL,
    -- ok, warning, critical, unknown
    verdict         text NOT NULL,
    -- [{code, level, detail}], worst first
    reasons         jsonb NOT NULL,
    model           text,
    serial          text,
    firmware        text,
    capacity_bytes  bigint,
    temperature_c   smallint,
    power_on_hours  bigint,
    reallocated     bigint,
    pending         bigint,
    uncorrectable   bigint,
    crc_errors      bigint,
    nvme            jsonb,
    attributes      jsonb NOT NULL,
    detail          text,
    PRIMARY KEY (site, boot, seq)
);
CREATE INDEX smart_readings_site_device_ts ON smart_readings (site, device, ts DESC);

-- Latest reading per disk.
CREATE TABLE disks (
    site           text NOT NULL,
    device         text NOT NULL,
    boot           text NOT NULL,
    seq            bigint NOT NULL,
    ts             timestamptz NOT NULL,
    verdict        text NOT NULL,
    verdict_since  timestamptz NOT NULL,
    state          text NOT NULL,
    reasons        jsonb NOT NULL,
    model          text,
    serial         text,
    temperature_c  smallint,
    power_on_hours bigint,
    PRIMARY KEY (site, device)
);

CREATE TABLE events (
    site         text NOT NULL,
    boot         text NOT NULL,
    seq          bigint NOT NULL,
    ts           timestamptz NOT NULL,
    agent_ts     timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    event        text NOT NULL,
    severity     text NOT NULL,
    subject      text NOT NULL,
    from_state   text,
    to_state     text,
    message      text NOT NULL,
    numbers      jsonb NOT NULL,
    PRIMARY KEY (site, boot, seq)
);
CREATE INDEX events_site_ts ON events (site, ts DESC);
CREATE INDEX events_ts ON events (ts DESC);
