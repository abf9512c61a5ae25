//! Retention cleanup's forwarder: each pass becomes a `cleanup` event.

use sitewatch_wire::topic::Kind;
use tokio::sync::mpsc;

use crate::sources::forward::{event, human_bytes};
use crate::uplink::publish::{Counters, Publisher};

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
