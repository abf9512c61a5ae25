//! systemd service notifications (`Type=notify`): readiness after the
//! schema is current, a status line while waiting for the database, and a
//! watchdog fed only while the writer task is being run.
//!
//! Everything is a no-op without `NOTIFY_SOCKET` (a shell, containers, the
//! library tests), and a failed send is logged once at debug level:
//! notifications must never stop the bridge.
//!
//! Why the watchdog follows the writer: the writer is the one task that
//! must keep running for anything to be stored and acknowledged. It
//! [`Beat::now`]s on every loop turn and, through [`beating`], every
//! [`BEAT_EVERY`] while it waits on the database or Loki (each of those
//! waits has its own timeout and backoff, so waiting is not hanging). The
//! watchdog task kicks systemd only while the last beat is recent, so a
//! writer that died or whose task is no longer scheduled (a worker thread
//! blocked in a synchronous call, a deadlock) stops the kicks and systemd
//! restarts the service. A slow database is not a reason to restart: it
//! shows in `/healthz` and the metrics instead.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a waiting writer beats.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

static FAILED: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        if !FAILED.swap(true, Ordering::Relaxed) {
            tracing::debug!(err = %e, "Cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
}

/// `READY=1` with a status line: the schema is current and messages are
/// being taken.
pub fn ready(status_line: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status_line)]);
}

/// `STATUS=…`, shown by `systemctl status`.
pub fn status(status_line: &str) {
    send(&[NotifyState::Status(status_line)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Shutting down")]);
}

/// The writer's last sign of life, read by [`watchdog`].
#[derive(Debug, Clone)]
pub struct Beat {
    start: Instant,
    /// Milliseconds after `start` of the last beat.
    last_ms: Arc<AtomicU64>,
}

impl Default for Beat {
    fn default() -> Self {
        Beat {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Beat {
    /// Records a sign of life now.
    pub fn now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Runs `fut`, beating every [`BEAT_EVERY`] while it waits.
pub async fn beating<F: Future>(beat: &Beat, fut: F) -> F::Output {
    beating_every(beat, BEAT_EVERY, fut).await
}

async fn beating_every<F: Future>(beat: &Beat, period: Duration, fut: F) -> F::Output {
    tokio::pin!(fut);
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = every.tick() => beat.now(),
        }
    }
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`, for this
/// process), or `None`.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|p| !p.is_zero())
}

/// Sends `WATCHDOG=1` every `period / 2` while `beat` is younger than
/// `period / 2`; returns when `stop` is cancelled.
pub async fn watchdog(period: Duration, beat: Beat, stop: CancellationToken) {
    let half = period / 2;
    let mut every = tokio::time::interval(half);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut starved = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let age = beat.age();
        if age <= half.max(BEAT_EVERY * 3) {
            send(&[NotifyState::Watchdog]);
            starved = false;
        } else if !starved {
            starved = true;
            tracing::error!(
                last_beat_ago = ?age,
                "The writer has not run for too long; no longer feeding the systemd \
                 watchdog, so systemd restarts the bridge."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beating_beats_while_waiting() {
        let beat = Beat::default();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(beat.age() >= Duration::from_millis(300));
        let period = Duration::from_millis(10);
        beating_every(
            &beat,
            period,
            tokio::time::sleep(Duration::from_millis(300)),
        )
        .await;
        // The last beat was at most one period (plus scheduling) before
        // the wait ended; without beats the age would be 600 ms.
        assert!(beat.age() < Duration::from_millis(250), "{:?}", beat.age());
    }
}
