//! Disk source: every `[disk] interval_secs`, one `disk` message with the
//! usage of each configured mount point.
//!
//! Recording disks are often NFS/CIFS shares or USB disks, so each probe
//! runs on a blocking thread under `statvfs_timeout_ms`: a hung network
//! mount is reported as `timeout` and never stalls the agent. A probe that
//! is still stuck is not started again on the next round (that would pile
//! up threads); the mount is reported as `timeout` until it returns.
//!
//! Failed probes still produce an entry (zeros plus an `error` code), and
//! each one counts in `counters.disk_errors`. Error state changes are
//! logged once, not every round.

mod check;
pub mod config;
pub mod mountinfo;
pub mod probe;

use crate::config::Doc;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::spawn::Blocking;
use sitewatch_wire::payload::{DiskOut, MountOut};
use sitewatch_wire::topic::Kind;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use config::DiskConfig;

use super::{Context, Running, Source};
use crate::check::Row;
use crate::uplink::publish::{Counters, Publisher};
use probe::{Mounted, ProbeError};

/// Where the kernel describes this process's view of the mounts.
const MOUNTINFO: &str = "/proc/self/mountinfo";

type ProbeResult = Result<Mounted, ProbeError>;

/// Per configured path: the result of the last round and a probe that may
/// still be running.
struct Slot {
    path: String,
    running: Option<Blocking<ProbeResult>>,
    last_error: Option<ProbeError>,
}

/// Samples every configured mount once. Probes run concurrently, all under
/// one deadline.
async fn sample_round(slots: &mut [Slot], timeout: Duration) -> Vec<ProbeResult> {
    let table: Arc<[mountinfo::MountEntry]> = match std::fs::read_to_string(MOUNTINFO) {
        Ok(text) => mountinfo::parse(&text).into(),
        Err(e) => {
            let err = ProbeError::Failed(format!("cannot read {MOUNTINFO}: {e}"));
            return slots.iter().map(|_| Err(err.clone())).collect();
        }
    };
    let deadline = Instant::now() + timeout;
    // Start probes, except where the previous one is still stuck.
    let mut stuck = vec![false; slots.len()];
    for (slot, stuck) in slots.iter_mut().zip(&mut stuck) {
        if slot.running.as_ref().is_some_and(|h| !h.is_finished()) {
            *stuck = true;
            continue;
        }
        let path = slot.path.clone();
        let table = Arc::clone(&table);
        slot.running = Some(crate::spawn::spawn_blocking(move || {
            probe::probe(&path, &table)
        }));
    }
    let mut out = Vec::with_capacity(slots.len());
    for (slot, stuck) in slots.iter_mut().zip(stuck) {
        if stuck {
            out.push(Err(ProbeError::Timeout));
            continue;
        }
        let Some(handle) = slot.running.as_mut() else {
            out.push(Err(ProbeError::Failed("probe not started".into())));
            continue;
        };
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(joined) => {
                slot.running = None;
                out.push(
                    joined
                        .unwrap_or_else(|e| Err(ProbeError::Failed(format!("probe failed: {e}")))),
                );
            }
            // Keep the handle: the probe is stuck, see `stuck` above.
            Err(_) => out.push(Err(ProbeError::Timeout)),
        }
    }
    out
}

/// Logs error state changes per mount and counts errors.
fn account(slots: &mut [Slot], results: &[ProbeResult], counters: &Counters) {
    for (slot, res) in slots.iter_mut().zip(results) {
        let err = res.as_ref().err();
        if err.is_some() {
            Counters::inc(&counters.disk_errors);
        }
        if err != slot.last_error.as_ref() {
            match err {
                Some(e) => tracing::warn!(path = %slot.path, error = e.code(), "Disk problem: {e}"),
                None => tracing::info!(path = %slot.path, "Disk is back to normal"),
            }
            slot.last_error = err.cloned();
        }
    }
}

/// Publishes one `disk` message from `results` (aligned with `slots`).
fn publish(publisher: &Publisher, slots: &[Slot], results: &[ProbeResult]) {
    let mounts: Vec<MountOut<'_>> = slots
        .iter()
        .zip(results)
        .map(|(slot, res)| match res {
            Ok(m) => MountOut {
                path: &slot.path,
                fs_type: &m.fs_type,
                total_bytes: m.usage.total_bytes,
                used_bytes: m.usage.used_bytes,
                avail_bytes: m.usage.avail_bytes,
                used_pct: m.usage.used_pct,
                inodes_total: m.usage.inodes_total,
                inodes_free: m.usage.inodes_free,
                read_only: m.read_only,
                error: None,
            },
            Err(e) => MountOut {
                path: &slot.path,
                fs_type: "",
                total_bytes: 0,
                used_bytes: 0,
                avail_bytes: 0,
                used_pct: 0.0,
                inodes_total: 0,
                inodes_free: 0,
                read_only: false,
                error: Some(e.code()),
            },
        })
        .collect();
    // Queue full or encode errors are counted and logged by the publisher.
    let _ = publisher.publish(Kind::Disk, |h| DiskOut::new(h, &mounts));
    publisher.board().disk(
        mounts
            .iter()
            .map(|m| crate::status::MountStatus {
                path: m.path.to_owned(),
                used_pct: m.used_pct,
                avail_bytes: m.avail_bytes,
                total_bytes: m.total_bytes,
                error: m.error.map(str::to_owned),
            })
            .collect(),
    );
}

fn slots(cfg: &DiskConfig) -> Vec<Slot> {
    cfg.mounts
        .iter()
        .map(|p| Slot {
            path: p.clone(),
            running: None,
            last_error: None,
        })
        .collect()
}

/// Samples every configured mount once and publishes one `disk` message,
/// as one round of [`run`] does (`sitewatch-agent once`). Nothing is
/// published without mounts.
pub async fn once(publisher: &Publisher, cfg: &DiskConfig) {
    if cfg.mounts.is_empty() {
        return;
    }
    let mut slots = slots(cfg);
    let results = sample_round(&mut slots, cfg.statvfs_timeout).await;
    account(&mut slots, &results, publisher.counters());
    publish(publisher, &slots, &results);
}

/// Runs the disk source until `stop` is cancelled. Waits for `start`
/// (first broker connection) before the first sample.
pub async fn run(
    publisher: Publisher,
    cfg: DiskConfig,
    start: impl std::future::Future<Output = ()>,
    stop: CancellationToken,
) {
    if cfg.mounts.is_empty() {
        tracing::info!("No mounts configured; disk reporting is off");
        return;
    }
    tokio::select! {
        biased;
        () = stop.cancelled() => return,
        () = start => {}
    }
    let mut slots = slots(&cfg);
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let results = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = sample_round(&mut slots, cfg.statvfs_timeout) => r,
        };
        account(&mut slots, &results, publisher.counters());
        publish(&publisher, &slots, &results);
    }
}

/// The disk source in the registry (off when `[disk] mounts` is empty).
pub struct DiskSource;

impl Source for DiskSource {
    const NAME: &'static str = "disk";
    type Raw = config::DiskRaw;
    type Config = DiskConfig;

    fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        super::read_section(doc, Self::NAME, problems, config::read)
    }

    fn validate(raw: config::DiskRaw, problems: &mut Vec<String>) -> Option<DiskConfig> {
        config::validate(raw, problems)
    }

    fn summary(cfg: &DiskConfig) -> Option<String> {
        Some(if cfg.mounts.is_empty() {
            "disk reporting off (no mounts)".to_owned()
        } else {
            format!(
                "disk every {} s: {}",
                cfg.interval.as_secs(),
                cfg.mounts.join(", ")
            )
        })
    }

    fn start(cx: &Context, cfg: &DiskConfig) -> Option<Box<dyn Running>> {
        let (publisher, cfg, first) = (cx.publisher.clone(), cfg.clone(), cx.first_connect());
        Some(cx.spawn(move |stop| run(publisher, cfg, first, stop)))
    }

    fn check(cfg: &DiskConfig) -> impl Future<Output = Vec<Row>> {
        check::rows(cfg)
    }

    async fn once(p: &Publisher, cfg: &DiskConfig, note: &mut dyn FnMut(String)) {
        if cfg.mounts.is_empty() {
            note("disk: no mounts configured; nothing to report".into());
        } else {
            once(p, cfg).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(path: &str) -> Slot {
        Slot {
            path: path.into(),
            running: None,
            last_error: None,
        }
    }

    #[tokio::test]
    async fn round_reports_each_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().to_str().expect("utf8").to_owned();
        let mut slots = vec![slot("/"), slot("/nonexistent/x"), slot(&plain)];
        let r = sample_round(&mut slots, Duration::from_secs(5)).await;
        assert!(r[0].is_ok(), "{r:?}");
        assert_eq!(r[1], Err(ProbeError::Missing));
        assert!(matches!(r[2], Err(ProbeError::NotMounted)), "{r:?}");
        assert!(slots.iter().all(|s| s.running.is_none()));
    }

    #[tokio::test]
    async fn stuck_probe_is_not_restarted() {
        let mut slots = vec![slot("/")];
        // Simulate a probe stuck on a hung NFS server.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        slots[0].running = Some(crate::spawn::spawn_blocking(move || {
            let _ = rx.recv_timeout(Duration::from_secs(30));
            Err(ProbeError::Failed("late".into()))
        }));
        let r = sample_round(&mut slots, Duration::from_millis(50)).await;
        assert_eq!(r, vec![Err(ProbeError::Timeout)]);
        assert!(slots[0].running.is_some(), "stuck handle must be kept");
        // Once it returns, the next round probes afresh.
        drop(tx);
        while !slots[0].running.as_ref().is_some_and(|h| h.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = sample_round(&mut slots, Duration::from_secs(5)).await;
        assert!(r[0].is_ok(), "{r:?}");
    }
}
