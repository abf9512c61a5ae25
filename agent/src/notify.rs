//! systemd service notifications (`sd_notify`): readiness, status line,
//! watchdog keep-alives and stopping.
//!
//! All of it is a no-op when `NOTIFY_SOCKET` is unset (OpenWrt/procd, a
//! shell, the tests), so callers never need to know whether they run under
//! systemd. A failed send is logged once at debug level and otherwise
//! ignored: notifications must never stop the agent.
//!
//! Who sends what:
//! - [`ready`]: `READY=1` + `STATUS=` once the config is loaded and the
//!   sources run ([`crate::run`]); never waits for the broker, so an
//!   offline site still starts;
//! - [`status`]: `STATUS=` on connect, disconnect and reload;
//! - [`Watchdog`]: `WATCHDOG=1` at half of `WATCHDOG_USEC`, from the MQTT
//!   loop task itself (a hung loop stops feeding it and systemd restarts
//!   the agent), including while it waits in reconnect backoff;
//! - [`stopping`]: `STOPPING=1` when shutdown begins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Set after the first failed send, so a broken socket is logged once.
static FAILED: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        if !FAILED.swap(true, Ordering::Relaxed) {
            tracing::debug!(err = %e, "Cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
}

/// `READY=1` with a status line.
pub fn ready(status_line: &str) {
    tracing::debug!(status = status_line, "Notifying systemd: ready");
    send(&[NotifyState::Ready, NotifyState::Status(status_line)]);
}

/// `STATUS=…`: one line shown by `systemctl status`.
pub fn status(status_line: &str) {
    send(&[NotifyState::Status(status_line)]);
}

/// `RELOADING=1` … (systemd 253+ uses it with `Type=notify-reload`; older
/// versions ignore it). Followed by [`reloaded`].
pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// `READY=1` + status after a reload.
pub fn reloaded(status_line: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status_line)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Shutting down")]);
}

/// Watchdog keep-alives, fed by the MQTT loop.
#[derive(Debug)]
pub struct Watchdog {
    ticker: Option<tokio::time::Interval>,
}

impl Watchdog {
    /// From the environment: enabled when systemd set `WATCHDOG_USEC` (and
    /// `WATCHDOG_PID`, if set, is ours); kicks at half that period.
    pub fn from_env() -> Watchdog {
        Watchdog::every(sd_notify::watchdog_enabled().map(|p| p / 2))
    }

    /// Kicks every `period`, or never with `None`.
    pub fn every(period: Option<Duration>) -> Watchdog {
        let ticker = period.filter(|p| !p.is_zero()).map(|p| {
            let mut t = tokio::time::interval(p);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        if let Some(t) = &ticker {
            tracing::debug!(every = ?t.period(), "systemd watchdog enabled");
        }
        Watchdog { ticker }
    }

    /// Completes when the next keep-alive is due (never when disabled).
    /// Cancel-safe: use it in `select!` next to the loop's real work.
    pub async fn tick(&mut self) {
        match &mut self.ticker {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Sends `WATCHDOG=1`.
    pub fn kick(&self) {
        send(&[NotifyState::Watchdog]);
    }
}
