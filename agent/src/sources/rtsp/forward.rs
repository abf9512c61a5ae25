//! The camera probes' forwarder: each probe becomes the camera's retained
//! `stream/{camera}` state, each class change an `event`.

use std::collections::HashMap;

use sitewatch_wire::payload::{truncate, StreamOut, MAX_TEXT_LEN, MAX_URL_LEN, MAX_WARNINGS};
use sitewatch_wire::topic::Kind;
use tokio::sync::mpsc;

use crate::sources::forward::event;
use crate::sources::rtsp;
use crate::uplink::publish::{Counters, Publisher};

fn clamp_u32(v: Option<u64>) -> Option<u32> {
    v.map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

/// Publishes one probe as the camera's retained `stream` state.
pub fn publish_probe(p: &Publisher, r: &rtsp::ProbeReport, failures: u32) {
    p.board().camera(r, failures);
    let warnings: Vec<&str> = r
        .warnings
        .iter()
        .take(MAX_WARNINGS)
        .map(|w| w.as_str())
        .collect();
    let m = &r.measurements;
    let _ = p.publish_named(Kind::Stream, &r.camera, |h| StreamOut {
        v: sitewatch_wire::SCHEMA_VERSION,
        site: h.site,
        boot: h.boot,
        seq: h.seq,
        ts: h.ts,
        camera: &r.camera,
        url: truncate(&r.url, MAX_URL_LEN),
        transport: r.transport.as_str(),
        class: r.class.as_str(),
        warnings: &warnings,
        detail: truncate(&r.detail, MAX_TEXT_LEN),
        started: r.started_at_ms,
        probe_ms: u32::try_from(r.duration_ms).unwrap_or(u32::MAX),
        failures,
        status_code: r.status(),
        ttff_ms: clamp_u32(m.ttff_ms),
        ttfk_ms: clamp_u32(m.ttfk_ms),
        codec: m
            .codec
            .as_deref()
            .map(|c| truncate(c, sitewatch_wire::payload::MAX_IDENT_LEN)),
        width: m.width,
        height: m.height,
        fps: m.fps_rtp,
        fps_wall: m.fps_wall,
        bitrate_kbps: m.bitrate_kbps,
        keyframe_interval_s: m.keyframe_interval_s,
        frames: m.frames,
        lost_packets: m.loss,
        rtp_wall_ratio: m.rtp_wall_ratio,
    });
}

/// Forwards the RTSP scheduler's output until its channel closes.
pub async fn forward_rtsp(p: Publisher, mut rx: mpsc::Receiver<rtsp::Output>) {
    // Failed probes in a row per camera (the scheduler keeps its own for
    // backoff; this one is what ops see).
    let mut failures: HashMap<String, u32> = HashMap::new();
    while let Some(out) = rx.recv().await {
        match out {
            rtsp::Output::Probed(r) => {
                Counters::inc(&p.counters().rtsp_probes);
                let n = failures.entry(r.camera.clone()).or_default();
                *n = if r.class == rtsp::Class::Ok {
                    0
                } else {
                    n.saturating_add(1)
                };
                publish_probe(&p, &r, *n);
            }
            rtsp::Output::Changed {
                camera,
                from,
                to,
                kind,
                report,
            } => {
                let (name, severity) = match kind {
                    rtsp::ChangeKind::Down => ("camera_down", "critical"),
                    rtsp::ChangeKind::Degraded => ("camera_degraded", "warning"),
                    rtsp::ChangeKind::Up => ("camera_up", "info"),
                };
                let message = match from {
                    Some(f) => format!(
                        "camera {camera} went from {} to {}: {}",
                        f.as_str(),
                        to.as_str(),
                        report.detail
                    ),
                    None => format!("camera {camera} is {}: {}", to.as_str(), report.detail),
                };
                let _ = p.publish(Kind::Event, |h| {
                    event(
                        h,
                        name,
                        severity,
                        &camera,
                        from.map(rtsp::Class::as_str),
                        Some(to.as_str()),
                        &message,
                        &[],
                    )
                });
            }
        }
    }
}
