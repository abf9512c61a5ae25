//! `stream` messages (camera probes): every probe in `camera_probes`, and
//! the newest per camera in `cameras` (with `class_since`). Written
//! through `jsonb_to_recordset`; see [`super::jsonb`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Value};
use sitewatch_wire::payload::Stream;
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::jsonb::{array, fold_latest, ms, ts, Latest};
use super::{timed, Clock, Counts};
use crate::sink::batch::{clamp_i64, Decoded, MAX_TS_MS};

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
    upsert_cameras: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_STREAMS).await?,
            upsert_cameras: c.prepare(SQL_UPSERT_CAMERAS).await?,
        })
    }
}

/// Inserts the batch's probes and moves each camera's latest state.
pub(super) async fn write_streams<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    clock: &Clock,
    decoded: &[&Decoded],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    let rows = rows(timed(clock, decoded));
    if let Some(rows) = &rows.probes {
        let ids = tx.query(&st.insert, &[rows]).await?;
        counts.rows.camera_probes = counts.stored_from(&ids)?;
    }
    if let Some(rows) = &rows.cameras {
        tx.execute(&st.upsert_cameras, &[rows]).await?;
    }
    Ok(counts)
}

/// The jsonb arguments of one batch; `None` where the batch has no row.
#[derive(Debug, Default)]
pub(super) struct Rows {
    /// `camera_probes` rows.
    pub(super) probes: Option<Value>,
    /// `cameras` rows (newest per camera).
    pub(super) cameras: Option<Value>,
}

/// Builds the rows from `(message, effective time, received at)` in
/// receive order.
pub(super) fn rows<'a>(msgs: impl Iterator<Item = (&'a Message, SystemTime, SystemTime)>) -> Rows {
    let mut probes = Vec::new();
    let mut cameras: BTreeMap<(&str, &str), Latest<Stream>> = BTreeMap::new();
    for (msg, ts, received_at) in msgs {
        if let Message::Stream(m) = msg {
            probes.push(stream_row(m, ts, received_at));
            fold_latest(&mut cameras, (&m.site, &m.camera), m, ts, |m| &m.class);
        }
    }
    Rows {
        probes: array(probes),
        cameras: array(cameras.values().map(camera_row).collect()),
    }
}

fn stream_row(m: &Stream, ts: SystemTime, received_at: SystemTime) -> Value {
    json!({
        "site": m.site, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(ts), "agent_ms": m.ts.min(MAX_TS_MS),
        "received_ms": ms(received_at),
        "camera": m.camera, "url": m.url, "transport": m.transport, "class": m.class,
        "warnings": m.warnings, "detail": m.detail,
        "started_ms": m.started.min(MAX_TS_MS),
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

/// History of camera probes; returns the identities stored for the first
/// time.
const SQL_INSERT_STREAMS: &str = concat!(
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
ON CONFLICT DO NOTHING
RETURNING site, boot, seq"
);

/// Latest probe per camera. A row is replaced only by a later one;
/// `class_since` carries over while the class stays the same.
const SQL_UPSERT_CAMERAS: &str = concat!(
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
        let batch = [
            (&m1, t(10), t(10)),
            (&m2, t(20), t(20)),
            (&m3, t(30), t(30)),
        ];
        let rows = rows(batch.into_iter());
        assert_eq!(
            rows.probes
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
        let smart = super::super::smart::rows(batch.into_iter());
        assert!(smart.readings.is_none() && smart.disks.is_none());
        assert!(super::super::events::rows(batch.into_iter()).is_none());
    }
}
