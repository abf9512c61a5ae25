//! Turns what the camera, disk and cleanup sources find into wire
//! messages: the retained `stream/{camera}` and `smart/{device}` state and
//! `event`s for changes.
//!
//! Sources stay free of MQTT and wire types: each one sends its own
//! reports over a small channel, and a forwarder here maps them with the
//! wire's bounds (texts truncated, lists capped) and hands them to the
//! [`Publisher`]. A full outbox drops by class there, never here.

use std::collections::HashMap;

use sitewatch_wire::payload::{
    truncate, EventOut, Header, NumbersOut, StreamOut, MAX_TEXT_LEN, MAX_URL_LEN, MAX_WARNINGS,
};
use sitewatch_wire::topic::Kind;
use tokio::sync::mpsc;

use crate::publish::{Counters, Publisher};
use crate::rtsp;

/// Builds an `event` payload.
#[allow(clippy::too_many_arguments)]
pub fn event<'a>(
    h: Header<'a>,
    event: &'a str,
    severity: &'a str,
    subject: &'a str,
    from: Option<&'a str>,
    to: Option<&'a str>,
    message: &'a str,
    numbers: &'a [(&'a str, u64)],
) -> EventOut<'a> {
    EventOut {
        v: sitewatch_wire::SCHEMA_VERSION,
        site: h.site,
        boot: h.boot,
        seq: h.seq,
        ts: h.ts,
        event,
        severity,
        subject: truncate(subject, sitewatch_wire::payload::MAX_PATH_LEN),
        from,
        to,
        message: truncate(message, MAX_TEXT_LEN),
        numbers: NumbersOut(
            &numbers[..numbers
                .len()
                .min(sitewatch_wire::payload::MAX_EVENT_NUMBERS)],
        ),
    }
}

fn clamp_u32(v: Option<u64>) -> Option<u32> {
    v.map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

/// Publishes one probe as the camera's retained `stream` state.
pub fn publish_probe(p: &Publisher, r: &rtsp::ProbeReport, failures: u32) {
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

/// Binary prefixes for byte counts in event messages.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// The `cleanup` event for one root's pass: `info` when the disk got back
/// under its low watermark without errors, `warning` otherwise (errors, or
/// still full: nothing more may be deleted under the rules).
pub fn publish_cleanup(p: &Publisher, r: &crate::cleanup::CleanupReport) {
    let errors = r.errors.total;
    let severity = if errors == 0 && r.target_reached {
        "info"
    } else {
        "warning"
    };
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let mut message = format!(
        "{verb} {} files ({}) under {}; disk {:.1}% -> {:.1}% used",
        r.deleted_files,
        human_bytes(r.deleted_bytes),
        r.root,
        r.used_pct_before,
        r.used_pct_after
    );
    if !r.target_reached {
        message.push_str(
            "; still above the low watermark (files too young, kept newest, or the run's limit)",
        );
    }
    if errors > 0 {
        message.push_str(&format!("; {errors} error(s), first: "));
        if let Some((path, why)) = r.errors.list.first() {
            message.push_str(&format!("{path}: {why}"));
        }
    }
    let pct = |v: f32| (v.clamp(0.0, 100.0) * 100.0).round() as u64;
    let mut numbers: Vec<(&str, u64)> = vec![
        ("deleted_files", r.deleted_files),
        ("deleted_bytes", r.deleted_bytes),
        ("errors", errors),
        ("used_pct_before_x100", pct(r.used_pct_before)),
        ("used_pct_after_x100", pct(r.used_pct_after)),
        ("dry_run", u64::from(r.dry_run)),
    ];
    if let Some(t) = r.oldest_kept_mtime.and_then(|t| u64::try_from(t).ok()) {
        numbers.push(("oldest_kept_unix", t));
    }
    if let Some(t) = r.newest_deleted_mtime.and_then(|t| u64::try_from(t).ok()) {
        numbers.push(("newest_deleted_unix", t));
    }
    let _ = p.publish(Kind::Event, |h| {
        event(
            h, "cleanup", severity, &r.root, None, None, &message, &numbers,
        )
    });
}

/// Forwards cleanup reports until the channel closes.
pub async fn forward_cleanup(p: Publisher, mut rx: mpsc::Receiver<crate::cleanup::CleanupReport>) {
    while let Some(r) = rx.recv().await {
        if !r.dry_run {
            Counters::add(&p.counters().cleanup_deleted, r.deleted_files);
        }
        Counters::add(&p.counters().cleanup_errors, r.errors.total);
        publish_cleanup(&p, &r);
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_in_words() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(21_474_836_480), "20.0 GiB");
    }
}
