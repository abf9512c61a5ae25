//! SMART's forwarder: each reading becomes the disk's retained
//! `smart/{device}` state, each verdict change a `disk_verdict` event.

use sitewatch_wire::payload::{truncate, MAX_TEXT_LEN};
use sitewatch_wire::topic::Kind;
use tokio::sync::mpsc;

use crate::sources::forward::event;
use crate::uplink::publish::{Counters, Publisher};

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
