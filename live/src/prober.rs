//! The periodic probe: every camera once per interval, spread evenly
//! over it (camera k of n starts at k·interval/n), at most
//! `probe.concurrency` at once, each result handed to one database
//! writer through a bounded queue.
//!
//! Backoff: a camera that keeps failing is skipped for whole rounds
//! ([`backoff_rounds`]): a dead site is not hammered every interval, and
//! since it keeps its slot in the round the spread is kept. One failure
//! is retried at the next round (a blip clears fast); from the second in
//! a row the gap doubles up to `probe.backoff_max_secs`; an `ok` resets it.
//!
//! When the queue is full (the database is slower than the probes) a
//! result is dropped and counted in `sitewatch_live_probe_store_failures`;
//! the next round brings a fresh one. A failing write drops the
//! connection; the next result reconnects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::{ClassLabel, Metrics};
use crate::probe::{self, Class, Outcome};

/// Results waiting for the database writer; when full, new ones are
/// dropped and counted.
const QUEUE: usize = 1024;

/// One finished probe: indexes into `config.sites[site].cameras[camera]`.
struct Done {
    site: usize,
    camera: usize,
    outcome: Outcome,
}

/// Rounds until the next probe of a camera whose last `failures` probes
/// in a row were not `ok`: 1 for none or one failure, then 2, 4, 8, ...
/// capped at `max_rounds` (at least 1).
pub fn backoff_rounds(failures: u32, max_rounds: u64) -> u64 {
    let doubled = match failures {
        0 | 1 => 1,
        f => 1u64.checked_shl(f - 1).unwrap_or(u64::MAX),
    };
    doubled.min(max_rounds.max(1))
}

/// The backoff cap in rounds: `backoff_max / interval`, at least 1 (a
/// zero `backoff_max` turns backoff off).
pub fn max_backoff_rounds(interval: Duration, backoff_max: Duration) -> u64 {
    let i = interval.as_secs().max(1);
    (backoff_max.as_secs() / i).max(1)
}

/// A camera's place in the backoff: failures in a row, next round due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Due {
    failures: u32,
    round: u64,
}

/// Runs probe rounds until cancelled.
pub async fn run(config: Arc<Config>, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let Some(interval) = config.probe.interval else {
        return;
    };
    let targets: Vec<(usize, usize)> = config
        .sites
        .iter()
        .enumerate()
        .flat_map(|(i, s)| (0..s.cameras.len()).map(move |j| (i, j)))
        .collect();
    metrics.cameras.set(targets.len() as i64);
    if targets.is_empty() {
        return;
    }
    let (tx, rx) = mpsc::channel::<Done>(QUEUE);
    let writer = tokio::spawn(write(config.clone(), metrics.clone(), rx, cancel.clone()));
    let sem = Arc::new(Semaphore::new(config.probe.concurrency));
    let step = interval / u32::try_from(targets.len()).unwrap_or(u32::MAX);
    // A random start within the first step, so that several services (or
    // restarts) do not all probe at the same second.
    let jitter = Duration::from_millis(fastrand::u64(0..=step.as_millis().min(60_000) as u64));
    let mut round_start = Instant::now() + jitter;
    let max_rounds = max_backoff_rounds(interval, config.probe.backoff_max);
    let due = Arc::new(std::sync::Mutex::new(vec![Due::default(); targets.len()]));
    let mut round: u64 = 0;
    loop {
        for (k, &(si, ci)) in targets.iter().enumerate() {
            if due
                .lock()
                .ok()
                .and_then(|d| d.get(k).copied())
                .is_some_and(|d| d.round > round)
            {
                continue; // backing off: keeps its slot in a later round
            }
            let at = round_start + step * u32::try_from(k).unwrap_or(u32::MAX);
            let permit = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                p = async {
                    tokio::time::sleep_until(at).await;
                    sem.clone().acquire_owned().await
                } => p,
            };
            let Ok(permit) = permit else { break };
            let config = config.clone();
            let tx = tx.clone();
            let metrics = metrics.clone();
            let cancel = cancel.clone();
            let due = due.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let site = &config.sites[si];
                let camera = &site.cameras[ci];
                let outcome = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    o = probe::probe(site, camera, &config.probe) => o,
                };
                if let Some(d) = due.lock().ok().as_mut().and_then(|d| d.get_mut(k)) {
                    d.failures = if outcome.class == Class::Ok {
                        0
                    } else {
                        d.failures.saturating_add(1)
                    };
                    d.round = round + backoff_rounds(d.failures, max_rounds);
                    if d.failures > 1 {
                        tracing::debug!(site = %site.id, camera = %camera.name,
                            failures = d.failures, next_in_rounds = d.round - round,
                            "Failing again: probing it less often.");
                    }
                }
                tracing::debug!(site = %site.id, camera = %camera.name,
                    class = outcome.class.as_str(), detail = %outcome.detail, "Probed.");
                if tx
                    .try_send(Done {
                        site: si,
                        camera: ci,
                        outcome,
                    })
                    .is_err()
                {
                    metrics.store_failures.inc();
                }
            });
        }
        if cancel.is_cancelled() {
            break;
        }
        round_start += interval;
        round += 1;
    }
    drop(tx);
    let _ = writer.await;
}

async fn write(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Done>,
    cancel: CancellationToken,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut latest: HashMap<(usize, usize), Class> = HashMap::new();
    loop {
        let done = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            d = rx.recv() => match d { Some(d) => d, None => return },
        };
        metrics
            .probes
            .get_or_create(&ClassLabel {
                class: done.outcome.class.as_str(),
            })
            .inc();
        latest.insert((done.site, done.camera), done.outcome.class);
        metrics
            .cameras_ok
            .set(latest.values().filter(|c| **c == Class::Ok).count() as i64);
        let site = &config.sites[done.site];
        let camera = &site.cameras[done.camera];
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match connect(&config).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    metrics.db_up.set(0);
                    metrics.store_failures.inc();
                    tracing::warn!(err = %format!("{e:#}"), "Cannot store a probe result.");
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        match crate::store::store(c, site, camera, &done.outcome).await {
            Ok(note) => {
                metrics.db_up.set(1);
                if let Some(note) = note {
                    tracing::debug!(site = %site.id, camera = %camera.name, "{note}");
                }
            }
            Err(e) => {
                metrics.db_up.set(0);
                metrics.store_failures.inc();
                client = None;
                tracing::warn!(site = %site.id, camera = %camera.name,
                    err = %format!("{e:#}"), "Cannot store a probe result.");
            }
        }
    }
}

/// Connects to the bridge's database and checks its schema version.
pub async fn connect(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let client = sitewatch_bridge::sink::postgres::connect(&config.postgres).await?;
    crate::store::check_schema(&client).await?;
    Ok(client)
}

/// Probes every camera once, now, at most `probe.concurrency` at once;
/// results in config order (for `sitewatch-live probe`).
pub async fn round(config: &Config) -> Vec<(usize, usize, Outcome)> {
    let sem = Arc::new(Semaphore::new(config.probe.concurrency));
    let mut set = tokio::task::JoinSet::new();
    let config = Arc::new(config.clone());
    for (si, s) in config.sites.iter().enumerate() {
        for ci in 0..s.cameras.len() {
            let sem = sem.clone();
            let config = config.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let site = &config.sites[si];
                let o = probe::probe(site, &site.cameras[ci], &config.probe).await;
                (si, ci, o)
            });
        }
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            out.push(r);
        }
    }
    out.sort_by_key(|(s, c, _)| (*s, *c));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_failure_up_to_the_cap() {
        let got: Vec<u64> = (0..8).map(|f| backoff_rounds(f, 4)).collect();
        assert_eq!(got, [1, 1, 2, 4, 4, 4, 4, 4]);
        let got: Vec<u64> = (0..8).map(|f| backoff_rounds(f, 100)).collect();
        assert_eq!(got, [1, 1, 2, 4, 8, 16, 32, 64]);
        // No overflow however long a camera fails; a cap of 0 means 1.
        assert_eq!(backoff_rounds(u32::MAX, u64::MAX), u64::MAX);
        assert_eq!(backoff_rounds(70, 4), 4);
        assert_eq!(backoff_rounds(5, 0), 1);
    }

    #[test]
    fn cap_in_rounds_from_the_config() {
        let s = Duration::from_secs;
        // The defaults: every 5 min, at most 20 min apart.
        assert_eq!(max_backoff_rounds(s(300), s(1200)), 4);
        assert_eq!(max_backoff_rounds(s(300), s(1000)), 3);
        // Off.
        assert_eq!(max_backoff_rounds(s(300), s(0)), 1);
        assert_eq!(max_backoff_rounds(s(0), s(60)), 60);
    }

    /// The schedule a failing camera gets, then its return to every round
    /// after an ok: which rounds it is probed in.
    #[test]
    fn schedule_of_a_camera_failing_then_back() {
        let mut d = Due::default();
        let mut probed = Vec::new();
        for round in 0..30u64 {
            if d.round > round {
                continue;
            }
            probed.push(round);
            let ok = round >= 20;
            d.failures = if ok { 0 } else { d.failures + 1 };
            d.round = round + backoff_rounds(d.failures, 4);
        }
        assert_eq!(probed, [0, 1, 3, 7, 11, 15, 19, 23, 24, 25, 26, 27, 28, 29]);
    }
}
