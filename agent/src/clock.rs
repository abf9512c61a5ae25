//! Is the wall clock plausible? Most OpenWrt routers have no battery-backed
//! clock: they boot at the firmware's build date (or 1970) and jump when
//! NTP first syncs. The agent cannot fix that, but it says so in every
//! heartbeat (`clock`) so ops know why a site's timestamps look odd; the
//! bridge stores such a site's data at receive time (docs/wire.md).
//!
//! Pure: callers pass the wall and monotonic readings.

use std::time::Duration;

/// Build time of this binary, Unix seconds (`build.rs`: `SOURCE_DATE_EPOCH`
/// when set, else the time of the build). A clock before it is wrong.
pub const BUILD_UNIX_SECS: u64 = match u64::from_str_radix(env!("SITEWATCH_BUILD_UNIX"), 10) {
    Ok(v) => v,
    Err(_) => 0,
};

/// How far wall time may drift from monotonic time between two readings
/// before it counts as a jump (NTP slews far less than this).
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(60);

/// What the clock looks like, as the heartbeat's `clock` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    /// Nothing suspicious.
    Ok,
    /// Earlier than the agent's own build time.
    BeforeBuild,
    /// Moved more than [`JUMP_THRESHOLD`] against the monotonic clock since
    /// the previous reading.
    Jumped,
}

impl ClockState {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClockState::Ok => "ok",
            ClockState::BeforeBuild => "before_build",
            ClockState::Jumped => "jumped",
        }
    }
}

/// Follows the wall clock against the monotonic clock between readings.
#[derive(Debug, Default)]
pub struct ClockWatch {
    last: Option<(u64, Duration)>,
    jumps: u64,
}

impl ClockWatch {
    /// Takes one reading: `wall_ms` (Unix ms) and `mono` (any monotonic
    /// origin). A jump is reported once, on the reading that sees it.
    pub fn observe(&mut self, wall_ms: u64, mono: Duration) -> ClockState {
        let jumped = match self.last {
            Some((w0, m0)) => {
                let wall = i128::from(wall_ms) - i128::from(w0);
                let mono = i128::try_from(mono.saturating_sub(m0).as_millis()).unwrap_or(i128::MAX);
                (wall - mono).unsigned_abs() > JUMP_THRESHOLD.as_millis()
            }
            None => false,
        };
        self.last = Some((wall_ms, mono));
        if jumped {
            self.jumps += 1;
            ClockState::Jumped
        } else if wall_ms / 1000 < BUILD_UNIX_SECS {
            ClockState::BeforeBuild
        } else {
            ClockState::Ok
        }
    }

    /// Jumps seen so far.
    pub fn jumps(&self) -> u64 {
        self.jumps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn build_time_is_recent() {
        // 2025-01-01: any build of this code is later.
        const { assert!(BUILD_UNIX_SECS > 1_735_689_600) };
    }

    #[test]
    fn steady_clock_is_ok() {
        let mut w = ClockWatch::default();
        let t = (BUILD_UNIX_SECS + 1) * 1000;
        assert_eq!(w.observe(t, Duration::from_secs(5)), ClockState::Ok);
        assert_eq!(
            w.observe(t + 30_000, Duration::from_secs(35)),
            ClockState::Ok
        );
        // NTP slewing a few seconds is not a jump.
        assert_eq!(
            w.observe(t + 62_000, Duration::from_secs(65)),
            ClockState::Ok
        );
        assert_eq!(w.jumps(), 0);
    }

    #[test]
    fn a_router_at_its_firmware_date_is_before_build_then_jumps_on_ntp_sync() {
        let mut w = ClockWatch::default();
        let firmware = 1_600_000_000_000; // 2020
        assert_eq!(w.observe(firmware, Duration::ZERO), ClockState::BeforeBuild);
        assert_eq!(
            w.observe(firmware + 30_000, Duration::from_secs(30)),
            ClockState::BeforeBuild
        );
        let synced = NOW.max((BUILD_UNIX_SECS + 10) * 1000);
        assert_eq!(
            w.observe(synced, Duration::from_secs(60)),
            ClockState::Jumped
        );
        assert_eq!(
            w.observe(synced + 30_000, Duration::from_secs(90)),
            ClockState::Ok
        );
        assert_eq!(w.jumps(), 1);
    }

    #[test]
    fn a_backwards_jump_counts_too() {
        let mut w = ClockWatch::default();
        let t = NOW.max((BUILD_UNIX_SECS + 10_000) * 1000);
        w.observe(t, Duration::from_secs(100));
        assert_eq!(
            w.observe(t - 3_600_000, Duration::from_secs(130)),
            ClockState::Jumped
        );
    }
}
