//! Rows for the `stream`, `smart` and `event` kinds.
//!
//! These kinds have many optional columns, so each batch is handed to
//! PostgreSQL as one `jsonb` array per table and unpacked server-side with
//! `jsonb_to_recordset` (one round trip per table, like the `UNNEST`
//! inserts of the other kinds, without a dozen parallel arrays). Building
//! the rows is pure; [`super::postgres`] runs the statements.
//!
//! Latest-state tables (`cameras`, `disks`) get one row per camera/disk per
//! batch: the newest message by effective time, with the time since its
//! class/verdict has held (`class_since`), computed across the batch here
//! and against the stored row in SQL.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Value};
use sitewatch_wire::payload::{Event, Smart, Stream};
use sitewatch_wire::Message;

use super::batch::{clamp_i64, unix_ms};

/// The jsonb arguments of one batch; `None` where the batch has no row.
#[derive(Debug, Default)]
pub struct Rows {
    /// `camera_probes` rows.
    pub streams: Option<Value>,
    /// `cameras` rows (newest per camera).
    pub cameras: Option<Value>,
    /// `smart_readings` rows.
    pub smart: Option<Value>,
    /// `disks` rows (newest per disk).
    pub disks: Option<Value>,
    /// `events` rows.
    pub events: Option<Value>,
}

/// Newest message per (site, name) and since when its class has held.
struct Latest<'a, T> {
    msg: &'a T,
    ts: SystemTime,
    since: SystemTime,
}

fn fold_latest<'a, T>(
    map: &mut BTreeMap<(&'a str, &'a str), Latest<'a, T>>,
    key: (&'a str, &'a str),
    msg: &'a T,
    ts: SystemTime,
    class: impl Fn(&T) -> &str,
) {
    match map.get_mut(&key) {
        Some(cur) if cur.ts > ts => {}
        Some(cur) => {
            let since = if class(cur.msg) == class(msg) {
                cur.since
            } else {
                ts
            };
            *cur = Latest { msg, ts, since };
        }
        None => {
            map.insert(key, Latest { msg, ts, since: ts });
        }
    }
}

fn ms(t: SystemTime) -> u64 {
    unix_ms(t)
}

impl Rows {
    /// Builds the rows from `(message, effective time, received at)` in
    /// receive order.
    pub fn collect<'a>(msgs: impl Iterator<Item = (&'a Message, SystemTime, SystemTime)>) -> Rows {
        let mut streams = Vec::new();
        let mut smart = Vec::new();
        let mut events = Vec::new();
        let mut cameras: BTreeMap<(&str, &str), Latest<Stream>> = BTreeMap::new();
        let mut disks: BTreeMap<(&str, &str), Latest<Smart>> = BTreeMap::new();
        for (msg, ts, received_at) in msgs {
            match msg {
                Message::Stream(m) => {
                    streams.push(stream_row(m, ts, received_at));
                    fold_latest(&mut cameras, (&m.site, &m.camera), m, ts, |m| &m.class);
                }
                Message::Smart(m) => {
                    smart.push(smart_row(m, ts, received_at));
                    fold_latest(&mut disks, (&m.site, &m.device), m, ts, |m| &m.verdict);
                }
                Message::Event(m) => events.push(event_row(m, ts, received_at)),
                _ => {}
            }
        }
        let some = |v: Vec<Value>| (!v.is_empty()).then_some(Value::Array(v));
        Rows {
            streams: some(streams),
            cameras: some(cameras.values().map(camera_row).collect()),
            smart: some(smart),
            disks: some(disks.values().map(disk_row).collect()),
            events: some(events),
        }
    }
}

fn stream_row(m: &Stream, ts: SystemTime, received_at: SystemTime) -> Value {
    json!({
        "site": m.site, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(ts), "agent_ms": m.ts.min(super::batch::MAX_TS_MS),
        "received_ms": ms(received_at),
        "camera": m.camera, "url": m.url, "transport": m.transport, "class": m.class,
        "warnings": m.warnings, "detail": m.detail,
        "started_ms": m.started.min(super::batch::MAX_TS_MS),
        "probe_ms": m.probe_ms.min(i32::MAX as u32), "failures": m.failures.min(i32::MAX as u32),
        "status_code": m.status_code, "ttff_ms": m.ttff_ms.map(|v| v.min(i32::MAX as u32)),
        "ttfk_ms": m.ttfk_ms.map(|v| v.min(i32::MAX as u32)), "codec": m.codec,
        "width": m.width.map(|v| v.min(i32::MAX as u32)),
        "height": m.height.map(|v| v.min(i32::MAX as u32)),
        "fps": m.fps, "fps_wall": m.fps_wall,
        "bitrate_kbps": m.bitrate_kbps.map(|v| v.min(i32::MAX as u32)),
        "keyframe_interval_s": m.keyframe_interval_s,
        "frames": m.frames.map(|v| v.min(i32::MAX as u32)),
        "lost_packets": m.lost_packets.map(clamp_i64), "rtp_wall_ratio": m.rtp_wall_ratio,
    })
}

fn camera_row(l: &Latest<Stream>) -> Value {
    let m = l.msg;
    json!({
        "site": m.site, "camera": m.camera, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(l.ts), "since_ms": ms(l.since), "class": m.class,
        "warnings": m.warnings, "detail": m.detail, "url": m.url, "codec": m.codec,
        "width": m.width.map(|v| v.min(i32::MAX as u32)),
        "height": m.height.map(|v| v.min(i32::MAX as u32)), "fps": m.fps,
        "bitrate_kbps": m.bitrate_kbps.map(|v| v.min(i32::MAX as u32)),
        "failures": m.failures.min(i32::MAX as u32),
    })
}

fn smart_row(m: &Smart, ts: SystemTime, received_at: SystemTime) -> Value {
    let big = |v: Option<u64>| v.map(clamp_i64);
    json!({
        "site": m.site, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(ts), "agent_ms": m.ts.min(super::batch::MAX_TS_MS),
        "received_ms": ms(received_at),
        "device": m.device, "path": m.path, "protocol": m.protocol, "source": m.source,
        "state": m.state, "verdict": m.verdict,
        "reasons": m.reasons.iter().map(|r| json!({"code": r.code, "level": r.level, "detail": r.detail})).collect::<Vec<_>>(),
        "model": m.model, "serial": m.serial, "firmware": m.firmware,
        "capacity_bytes": big(m.capacity_bytes), "temperature_c": m.temperature_c,
        "power_on_hours": big(m.power_on_hours), "reallocated": big(m.reallocated),
        "pending": big(m.pending), "uncorrectable": big(m.uncorrectable),
        "crc_errors": big(m.crc_errors),
        "nvme": m.nvme.as_ref().map(|n| json!({
            "critical_warning": n.critical_warning, "available_spare": n.available_spare,
            "spare_threshold": n.spare_threshold, "percentage_used": n.percentage_used,
            "media_errors": n.media_errors, "unsafe_shutdowns": n.unsafe_shutdowns,
            "error_log_entries": n.error_log_entries, "power_cycles": n.power_cycles,
            "data_units_written": n.data_units_written,
        })),
        "attributes": m.attributes.iter().map(|a| json!({
            "id": a.id, "name": a.name, "value": a.value, "worst": a.worst,
            "thresh": a.thresh, "raw": a.raw, "prefail": a.prefail, "failed": a.failed,
        })).collect::<Vec<_>>(),
        "detail": m.detail,
    })
}

fn disk_row(l: &Latest<Smart>) -> Value {
    let m = l.msg;
    json!({
        "site": m.site, "device": m.device, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(l.ts), "since_ms": ms(l.since), "verdict": m.verdict, "state": m.state,
        "reasons": m.reasons.iter().map(|r| json!({"code": r.code, "level": r.level, "detail": r.detail})).collect::<Vec<_>>(),
        "model": m.model, "serial": m.serial, "temperature_c": m.temperature_c,
        "power_on_hours": m.power_on_hours.map(clamp_i64),
    })
}

fn event_row(m: &Event, ts: SystemTime, received_at: SystemTime) -> Value {
    json!({
        "site": m.site, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(ts), "agent_ms": m.ts.min(super::batch::MAX_TS_MS),
        "received_ms": ms(received_at),
        "event": m.event, "severity": m.severity, "subject": m.subject,
        "from_state": m.from, "to_state": m.to, "message": m.message,
        "numbers": m.numbers.iter().map(|(k, v)| (k.clone(), json!(clamp_i64(*v)))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Unix ms (a JSON number) → timestamptz.
macro_rules! ts {
    ($col:literal) => {
        concat!("to_timestamp(x.", $col, " / 1000.0)")
    };
}

/// History of camera probes; returns the identities stored for the first
/// time.
pub const SQL_INSERT_STREAMS: &str = concat!(
    "INSERT INTO camera_probes (site, boot, seq, ts, agent_ts, received_at, camera, url, transport,
    class, warnings, detail, started, probe_ms, failures, status_code, ttff_ms, ttfk_ms, codec,
    width, height, fps, fps_wall, bitrate_kbps, keyframe_interval_s, frames, lost_packets,
    rtp_wall_ratio)
SELECT x.site, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", ",
    ts!("agent_ms"),
    ", ",
    ts!("received_ms"),
    ", x.camera, x.url, x.transport,
    x.class, ARRAY(SELECT jsonb_array_elements_text(x.warnings)), x.detail, ",
    ts!("started_ms"),
    ",
    x.probe_ms, x.failures, x.status_code, x.ttff_ms, x.ttfk_ms, x.codec, x.width, x.height,
    x.fps, x.fps_wall, x.bitrate_kbps, x.keyframe_interval_s, x.frames, x.lost_packets,
    x.rtp_wall_ratio
FROM jsonb_to_recordset($1::jsonb) AS x(site text, boot text, seq int8, ts_ms int8,
    agent_ms int8, received_ms int8, camera text, url text, transport text, class text,
    warnings jsonb, detail text, started_ms int8, probe_ms int4, failures int4,
    status_code int4, ttff_ms int4, ttfk_ms int4, codec text, width int4, height int4,
    fps float4, fps_wall float4, bitrate_kbps int4, keyframe_interval_s float4, frames int4,
    lost_packets int8, rtp_wall_ratio float4)
ON CONFLICT (site, boot, seq) DO NOTHING
RETURNING site, boot, seq"
);

/// Latest probe per camera. A row is replaced only by a later one;
/// `class_since` carries over while the class stays the same.
pub const SQL_UPSERT_CAMERAS: &str = concat!(
    "INSERT INTO cameras AS c (site, camera, boot, seq, ts, class, class_since, warnings, detail,
    url, codec, width, height, fps, bitrate_kbps, failures)
SELECT x.site, x.camera, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", x.class, ",
    ts!("since_ms"),
    ",
    ARRAY(SELECT jsonb_array_elements_text(x.warnings)), x.detail, x.url, x.codec, x.width,
    x.height, x.fps, x.bitrate_kbps, x.failures
FROM jsonb_to_recordset($1::jsonb) AS x(site text, camera text, boot text, seq int8, ts_ms int8,
    since_ms int8, class text, warnings jsonb, detail text, url text, codec text, width int4,
    height int4, fps float4, bitrate_kbps int4, failures int4)
ON CONFLICT (site, camera) DO UPDATE SET
    boot = EXCLUDED.boot, seq = EXCLUDED.seq, ts = EXCLUDED.ts, class = EXCLUDED.class,
    class_since = CASE WHEN c.class = EXCLUDED.class THEN c.class_since ELSE EXCLUDED.class_since END,
    warnings = EXCLUDED.warnings, detail = EXCLUDED.detail, url = EXCLUDED.url,
    codec = EXCLUDED.codec, width = EXCLUDED.width, height = EXCLUDED.height, fps = EXCLUDED.fps,
    bitrate_kbps = EXCLUDED.bitrate_kbps, failures = EXCLUDED.failures
WHERE c.ts < EXCLUDED.ts OR (c.ts = EXCLUDED.ts AND (c.boot, c.seq) < (EXCLUDED.boot, EXCLUDED.seq))"
);

/// History of SMART readings; returns the identities stored for the
/// first time.
pub const SQL_INSERT_SMART: &str = concat!(
    "INSERT INTO smart_readings (site, boot, seq, ts, agent_ts, received_at, device, path, protocol,
    source, state, verdict, reasons, model, serial, firmware, capacity_bytes, temperature_c,
    power_on_hours, reallocated, pending, uncorrectable, crc_errors, nvme, attributes, detail)
SELECT x.site, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", ",
    ts!("agent_ms"),
    ", ",
    ts!("received_ms"),
    ", x.device, x.path, x.protocol,
    x.source, x.state, x.verdict, x.reasons, x.model, x.serial, x.firmware, x.capacity_bytes,
    x.temperature_c, x.power_on_hours, x.reallocated, x.pending, x.uncorrectable, x.crc_errors,
    x.nvme, x.attributes, x.detail
FROM jsonb_to_recordset($1::jsonb) AS x(site text, boot text, seq int8, ts_ms int8, agent_ms int8,
    received_ms int8, device text, path text, protocol text, source text, state text,
    verdict text, reasons jsonb, model text, serial text, firmware text, capacity_bytes int8,
    temperature_c int2, power_on_hours int8, reallocated int8, pending int8, uncorrectable int8,
    crc_errors int8, nvme jsonb, attributes jsonb, detail text)
ON CONFLICT (site, boot, seq) DO NOTHING
RETURNING site, boot, seq"
);

/// Latest reading per disk, like [`SQL_UPSERT_CAMERAS`].
pub const SQL_UPSERT_DISKS: &str = concat!(
    "INSERT INTO disks AS d (site, device, boot, seq, ts, verdict, verdict_since, state, reasons,
    model, serial, temperature_c, power_on_hours)
SELECT x.site, x.device, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", x.verdict, ",
    ts!("since_ms"),
    ", x.state, x.reasons,
    x.model, x.serial, x.temperature_c, x.power_on_hours
FROM jsonb_to_recordset($1::jsonb) AS x(site text, device text, boot text, seq int8, ts_ms int8,
    since_ms int8, verdict text, state text, reasons jsonb, model text, serial text,
    temperature_c int2, power_on_hours int8)
ON CONFLICT (site, device) DO UPDATE SET
    boot = EXCLUDED.boot, seq = EXCLUDED.seq, ts = EXCLUDED.ts, verdict = EXCLUDED.verdict,
    verdict_since = CASE WHEN d.verdict = EXCLUDED.verdict THEN d.verdict_since ELSE EXCLUDED.verdict_since END,
    state = EXCLUDED.state, reasons = EXCLUDED.reasons, model = EXCLUDED.model,
    serial = EXCLUDED.serial, temperature_c = EXCLUDED.temperature_c,
    power_on_hours = EXCLUDED.power_on_hours
WHERE d.ts < EXCLUDED.ts OR (d.ts = EXCLUDED.ts AND (d.boot, d.seq) < (EXCLUDED.boot, EXCLUDED.seq))"
);

/// Events; returns the identities stored for the first time.
pub const SQL_INSERT_EVENTS: &str = concat!(
    "INSERT INTO events (site, boot, seq, ts, agent_ts, received_at, event, severity, subject,
    from_state, to_state, message, numbers)
SELECT x.site, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", ",
    ts!("agent_ms"),
    ", ",
    ts!("received_ms"),
    ", x.event, x.severity, x.subject,
    x.from_state, x.to_state, x.message, x.numbers
FROM jsonb_to_recordset($1::jsonb) AS x(site text, boot text, seq int8, ts_ms int8, agent_ms int8,
    received_ms int8, event text, severity text, subject text, from_state text, to_state text,
    message text, numbers jsonb)
ON CONFLICT (site, boot, seq) DO NOTHING
RETURNING site, boot, seq"
);

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_wire::golden::VALID;
    use std::time::{Duration, UNIX_EPOCH};

    fn msg(file: &str) -> Message {
        let v = VALID.iter().find(|v| v.file == file).expect("vector");
        sitewatch_wire::decode(v.topic, v.payload).expect("decodes")
    }

    #[test]
    fn newest_message_per_camera_wins_and_class_since_holds_across_the_batch() {
        let Message::Stream(ok) = msg("stream-ok.json") else {
            panic!()
        };
        let mut down = ok.clone();
        down.class = "stalled".into();
        down.seq += 1;
        let mut down2 = down.clone();
        down2.seq += 1;
        let (m1, m2, m3) = (
            Message::Stream(ok),
            Message::Stream(down),
            Message::Stream(down2),
        );
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let rows = Rows::collect(
            [
                (&m1, t(10), t(10)),
                (&m2, t(20), t(20)),
                (&m3, t(30), t(30)),
            ]
            .into_iter(),
        );
        assert_eq!(
            rows.streams
                .as_ref()
                .and_then(|v| v.as_array())
                .map(Vec::len),
            Some(3)
        );
        let cams = rows.cameras.expect("cameras");
        let cams = cams.as_array().expect("array");
        assert_eq!(cams.len(), 1);
        assert_eq!(cams[0]["class"], "stalled");
        assert_eq!(cams[0]["ts_ms"], 30_000);
        assert_eq!(
            cams[0]["since_ms"], 20_000,
            "stalled since the first stalled probe"
        );
        assert!(rows.smart.is_none() && rows.events.is_none() && rows.disks.is_none());
    }

    #[test]
    fn an_older_redelivery_does_not_replace_the_newest() {
        let Message::Smart(a) = msg("smart-ata.json") else {
            panic!()
        };
        let mut old = a.clone();
        old.verdict = "ok".into();
        old.seq -= 1;
        let (m1, m2) = (Message::Smart(a), Message::Smart(old));
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let rows = Rows::collect([(&m1, t(50), t(50)), (&m2, t(40), t(60))].into_iter());
        let disks = rows.disks.expect("disks");
        assert_eq!(disks[0]["verdict"], "critical");
    }
}
