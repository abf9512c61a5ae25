//! The probe scheduler: every camera once per interval, spread over the
//! interval with jitter, at most `max_concurrent` at a time, with backoff
//! for cameras that keep failing.
//!
//! Memory is bounded by design: one small state per camera, and a probe
//! task exists only while it runs (a permit is taken *before* spawning),
//! so 64 cameras never means 64 sessions or 64 tasks waiting.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{CameraConfig, RtspConfig};
use super::probe::{probe, ProbeReport};
use super::verdict::{ChangeKind, Class};

/// A failing camera waits at most this many intervals between probes.
pub const MAX_BACKOFF_FACTOR: u32 = 4;

/// How long running probes get to stop after shutdown.
const STOP_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the scheduler hands to the publisher.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The latest result for one camera (publish retained on `stream`).
    Probed(Box<ProbeReport>),
    /// A camera changed class (publish an `event`). Sent after the
    /// camera's `Probed`.
    Changed {
        /// Camera name.
        camera: String,
        /// The previous class; `None` for the first probe (only sent when
        /// that first probe is not `ok`).
        from: Option<Class>,
        /// The new class.
        to: Class,
        /// Down, up or degraded.
        kind: ChangeKind,
        /// The probe that saw the change.
        report: Box<ProbeReport>,
    },
}

/// Per-camera scheduling state.
struct Slot {
    cam: CameraConfig,
    due: Instant,
    running: bool,
    failures: u32,
    last: Option<Box<ProbeReport>>,
}

/// The delay before the next probe: the interval ±10 % jitter, times
/// 2^(failures−1) for failing cameras, capped at [`MAX_BACKOFF_FACTOR`].
pub fn next_delay(interval: Duration, failures: u32, jitter: f64) -> Duration {
    let factor = match failures {
        0 => 1,
        n => (1u32 << (n - 1).min(8)).min(MAX_BACKOFF_FACTOR),
    };
    let base = interval.saturating_mul(factor);
    // jitter in [0, 1) → [0.9, 1.1).
    base.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// Whether an output is due for a change from `from` to `to`.
pub fn change(from: Option<Class>, to: Class) -> Option<ChangeKind> {
    match from {
        None if to.is_ok() => None,
        None => Some(to.kind()),
        Some(f) if f == to => None,
        Some(_) => Some(to.kind()),
    }
}

/// Runs probes until `shutdown`; results go to `tx` (bounded: a slow
/// receiver slows the probes, it never grows memory). Returns when
/// `shutdown` fires or the receiver is gone.
pub async fn run(cfg: RtspConfig, tx: mpsc::Sender<Output>, shutdown: CancellationToken) {
    let start = Instant::now();
    let mut slots: Vec<Slot> = cfg
        .cameras
        .into_iter()
        .map(|cam| {
            // First probes spread evenly-ish over one interval, so 64
            // cameras never start together.
            let first = cam.interval.mul_f64(fastrand::f64());
            Slot {
                cam,
                due: start + first.min(Duration::from_secs(3600)),
                running: false,
                failures: 0,
                last: None,
            }
        })
        .collect();
    if slots.is_empty() {
        return;
    }
    let max = cfg.max_concurrent.max(1);
    let mut tasks: JoinSet<(usize, ProbeReport)> = JoinSet::new();
    // Which camera each running task probes (for a task that panics).
    let mut ids: Vec<(tokio::task::Id, usize)> = Vec::with_capacity(max);
    tracing::info!(
        cameras = slots.len(),
        max_concurrent = max,
        "RTSP probes scheduled"
    );
    loop {
        let next = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.running)
            .min_by_key(|(_, s)| s.due)
            .map(|(i, s)| (i, s.due));
        let can_start = tasks.len() < max && next.is_some();
        let wake = next
            .map(|(_, d)| d)
            .unwrap_or_else(|| start + Duration::from_secs(86_400));
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (i, report) = match done {
                    Ok((id, (i, report))) => {
                        ids.retain(|(t, _)| *t != id);
                        (i, report)
                    }
                    Err(e) => {
                        // A panicked probe: free its camera for the next
                        // interval, as if it had failed.
                        tracing::error!(err = %e, "An RTSP probe task failed");
                        if let Some(pos) = ids.iter().position(|(t, _)| *t == e.id()) {
                            let (_, i) = ids.swap_remove(pos);
                            if let Some(s) = slots.get_mut(i) {
                                s.running = false;
                                s.failures = s.failures.saturating_add(1);
                                s.due = Instant::now()
                                    + next_delay(s.cam.interval, s.failures, fastrand::f64());
                            }
                        }
                        continue;
                    }
                };
                let Some(slot) = slots.get_mut(i) else { continue };
                slot.running = false;
                slot.failures = if report.class.is_ok() { 0 } else { slot.failures.saturating_add(1) };
                slot.due = Instant::now() + next_delay(slot.cam.interval, slot.failures, fastrand::f64());
                let from = slot.last.as_ref().map(|r| r.class);
                let report = Box::new(report);
                tracing::debug!(
                    camera = %report.camera,
                    class = report.class.as_str(),
                    detail = %report.detail,
                    "RTSP probe done"
                );
                let changed = change(from, report.class).map(|kind| Output::Changed {
                    camera: report.camera.clone(),
                    from,
                    to: report.class,
                    kind,
                    report: report.clone(),
                });
                slot.last = Some(report.clone());
                for out in std::iter::once(Output::Probed(report)).chain(changed) {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        r = tx.send(out) => if r.is_err() { return },
                    }
                }
            }
            () = tokio::time::sleep_until(wake), if can_start => {
                let Some((i, _)) = next else { continue };
                let slot = &mut slots[i];
                slot.running = true;
                let cam = slot.cam.clone();
                let prev = slot.last.as_ref().map(|r| r.measurements.clone());
                let stop = shutdown.child_token();
                let h = crate::spawn::spawn_in(&mut tasks, async move {
                    let r = probe(&cam.target, cam.timing, prev.as_ref(), &stop).await;
                    (i, r)
                });
                ids.push((h.id(), i));
            }
        }
    }
    // Shutdown: probes stop reading at once and tear down; give them a
    // moment, then abort what is left.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_TIMEOUT, drain).await.is_err() {
        tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        let i = Duration::from_secs(300);
        assert_eq!(next_delay(i, 0, 0.5), i);
        assert_eq!(next_delay(i, 1, 0.5), i);
        assert_eq!(next_delay(i, 2, 0.5), i * 2);
        assert_eq!(next_delay(i, 3, 0.5), i * 4);
        assert_eq!(next_delay(i, 100, 0.5), i * 4);
        assert_eq!(next_delay(i, 0, 0.0), Duration::from_secs(270));
        assert!(next_delay(i, 0, 0.999) < Duration::from_secs(330));
    }

    #[test]
    fn changes() {
        assert_eq!(change(None, Class::Ok), None);
        assert_eq!(change(None, Class::Auth), Some(ChangeKind::Down));
        assert_eq!(change(Some(Class::Ok), Class::Ok), None);
        assert_eq!(
            change(Some(Class::Ok), Class::LowFps),
            Some(ChangeKind::Degraded)
        );
        assert_eq!(
            change(Some(Class::Stalled), Class::Ok),
            Some(ChangeKind::Up)
        );
        assert_eq!(
            change(Some(Class::RtspStatus(453)), Class::RtspStatus(503)),
            Some(ChangeKind::Down)
        );
    }
}
