//! The forwarders of the reporting sources (rtsp, smart, cleanup): they
//! turn what those sources find into wire messages: the retained
//! `stream/{camera}` and `smart/{device}` state and `event`s for changes.
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

use crate::sources::rtsp;
use crate::uplink::publish::{Counters, Publisher};

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

/// Binary prefixes for byte counts in event messages and `status`.
pub(crate) fn human_bytes(b: u64) -> String {
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
pub fn publish_cleanup(p: &Publisher, r: &crate::sources::cleanup::CleanupReport) {
    p.board().cleanup(r);
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
pub async fn forward_cleanup(
    p: Publisher,
    mut rx: mpsc::Receiver<crate::sources::cleanup::CleanupReport>,
) {
    while let Some(r) = rx.recv().await {
        if !r.dry_run {
            Counters::add(&p.counters().cleanup_deleted, r.deleted_files);
        }
        Counters::add(&p.counters().cleanup_errors, r.errors.total);
        publish_cleanup(&p, &r);
    }
}

/// Publishes one disk reading as the disk's retained `smart` state.
pub fn publish_smart(p: &Publisher, r: &crate::sources::smart::DiskReport) {
    p.board().smart(r);
    use crate::sources::smart::{ata::AttrState, Reading, Source};
    use sitewatch_wire::payload::{
        AttributeOut, NvmeOut, ReasonOut, SmartOut, MAX_ATTRIBUTES, MAX_REASONS, MAX_REASON_LEN,
    };
    let reasons: Vec<ReasonOut> = r
        .verdict
        .reasons
        .iter()
        .take(MAX_REASONS)
        .map(|x| ReasonOut {
            code: x.code,
            level: x.level.as_str(),
            detail: truncate(&x.detail, MAX_REASON_LEN),
        })
        .collect();
    let (protocol, state) = match &r.reading {
        Reading::Ata { .. } => ("ata", "read"),
        Reading::Nvme { .. } => ("nvme", "read"),
        Reading::Scsi { .. } => ("scsi", "read"),
        Reading::Standby => ("unknown", "standby"),
        Reading::Unsupported { .. } => ("unknown", "unsupported"),
    };
    let attrs: Vec<AttributeOut> = match &r.reading {
        Reading::Ata { attributes, .. } => attributes
            .iter()
            .take(MAX_ATTRIBUTES)
            .map(|a| AttributeOut {
                id: a.id,
                name: truncate(a.name(), sitewatch_wire::payload::MAX_CODE_LEN),
                value: a.current,
                worst: a.worst,
                thresh: a.threshold,
                raw: a.raw_value(),
                prefail: a.prefail(),
                failed: match a.state() {
                    AttrState::Ok => None,
                    AttrState::FailingNow => Some("now"),
                    AttrState::FailedPast => Some("past"),
                },
            })
            .collect(),
        _ => Vec::new(),
    };
    let raw = |id: u8| match &r.reading {
        Reading::Ata { attributes, .. } => attributes
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.raw_value()),
        _ => None,
    };
    let nvme = match &r.reading {
        Reading::Nvme { health: h, .. } => Some(NvmeOut {
            critical_warning: h.critical_warning,
            available_spare: h.available_spare,
            spare_threshold: h.spare_threshold,
            percentage_used: h.percentage_used,
            media_errors: h.media_errors,
            unsafe_shutdowns: h.unsafe_shutdowns,
            error_log_entries: h.error_log_entries,
            power_cycles: h.power_cycles,
            data_units_written: h.data_units_written,
        }),
        _ => None,
    };
    let (firmware, capacity) = match &r.reading {
        Reading::Ata { identity, .. } => {
            (Some(identity.firmware.as_str()), identity.capacity_bytes)
        }
        Reading::Nvme { identity, .. } => (Some(identity.firmware.as_str()), None),
        Reading::Scsi { identity, .. } => (Some(identity.revision.as_str()), None),
        _ => (None, None),
    };
    let detail = match &r.reading {
        Reading::Unsupported { reason } => Some(truncate(reason, MAX_TEXT_LEN)),
        Reading::Standby => Some("the disk was spun down and was not woken"),
        _ => None,
    };
    let path = r.path.to_string_lossy();
    fn ident(s: Option<&str>) -> Option<&str> {
        s.filter(|s| !s.is_empty())
            .map(|s| truncate(s, sitewatch_wire::payload::MAX_IDENT_LEN))
    }
    let _ = p.publish_named(Kind::Smart, &r.device, |h| SmartOut {
        v: sitewatch_wire::SCHEMA_VERSION,
        site: h.site,
        boot: h.boot,
        seq: h.seq,
        ts: h.ts,
        device: &r.device,
        path: truncate(&path, sitewatch_wire::payload::MAX_PATH_LEN),
        protocol,
        source: match r.source {
            Source::Native => "native",
            Source::Smartctl => "smartctl",
        },
        state,
        verdict: r.verdict.level.as_str(),
        reasons: &reasons,
        model: ident(r.reading.model()),
        serial: ident(r.reading.serial()),
        firmware: ident(firmware),
        capacity_bytes: capacity,
        temperature_c: r.reading.temperature_c(),
        power_on_hours: r.reading.power_on_hours(),
        reallocated: raw(5),
        pending: raw(197),
        uncorrectable: raw(198),
        crc_errors: raw(199),
        nvme,
        attributes: &attrs,
        detail,
    });
}

/// Forwards the SMART task's output until its channel closes.
pub async fn forward_smart(
    p: Publisher,
    mut rx: mpsc::Receiver<crate::sources::smart::task::Output>,
) {
    use crate::sources::smart::task::Output;
    use crate::sources::smart::{Level, Reading};
    while let Some(out) = rx.recv().await {
        match out {
            Output::Read(r) => {
                Counters::inc(&p.counters().smart_reads);
                if matches!(r.reading, Reading::Unsupported { .. }) {
                    Counters::inc(&p.counters().smart_errors);
                }
                publish_smart(&p, &r);
            }
            Output::Changed {
                device,
                from,
                to,
                report,
            } => {
                let severity = match to {
                    Level::Critical => "critical",
                    Level::Warning => "warning",
                    Level::Ok | Level::Unknown => "info",
                };
                let why = report
                    .verdict
                    .reasons
                    .first()
                    .map(|r| r.detail.as_str())
                    .unwrap_or("no finding");
                let model = report.reading.model().unwrap_or("disk");
                let serial = report.reading.serial().unwrap_or("-");
                let message = format!(
                    "disk {device} ({model}, serial {serial}) went from {} to {}: {why}",
                    from.as_str(),
                    to.as_str()
                );
                let _ = p.publish(Kind::Event, |h| {
                    event(
                        h,
                        "disk_verdict",
                        severity,
                        &device,
                        Some(from.as_str()),
                        Some(to.as_str()),
                        &message,
                        &[],
                    )
                });
            }
        }
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
