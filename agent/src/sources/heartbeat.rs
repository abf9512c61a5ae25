//! Heartbeat source: every `[heartbeat] interval_secs`, one `heartbeat`
//! message with host uptime, load and memory, the agent's uptime and RSS,
//! and the agent counters.
//!
//! Reads only `/proc` (fast, never hangs), so it runs inline on the
//! runtime thread. A metric that cannot be read is sent as 0 and logged
//! once.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use sitewatch_wire::payload::HeartbeatOut;
use sitewatch_wire::topic::Kind;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Context, Running, Source};
use crate::check::Row;
use crate::clock::ClockWatch;
use crate::host;
use crate::uplink::publish::{now_ms, Counters, Publisher, AGENT_VERSION};

/// What the heartbeat carries from one beat to the next: the clock
/// check's memory and whether a metric failure was logged.
pub struct Beat {
    interval_secs: u32,
    started: Instant,
    clock: ClockWatch,
    origin: Instant,
    warned: bool,
}

impl Beat {
    /// For heartbeats every `interval`; `started` is when the agent
    /// process started, for `agent_uptime_secs`.
    pub fn new(interval: Duration, started: Instant) -> Beat {
        Beat {
            interval_secs: u32::try_from(interval.as_secs()).unwrap_or(u32::MAX),
            started,
            clock: ClockWatch::default(),
            origin: Instant::now(),
            warned: false,
        }
    }

    /// Samples the host and publishes one heartbeat (one round of [`run`]).
    pub fn once(&mut self, publisher: &Publisher) {
        let (s, err) = host::sample();
        match err {
            Some(e) if !self.warned => {
                tracing::warn!(err = %e, "Cannot read a host metric; it is reported as 0");
                self.warned = true;
            }
            _ => {}
        }
        let state = self.clock.observe(now_ms(), self.origin.elapsed());
        if state != crate::clock::ClockState::Ok {
            tracing::warn!(
                clock = state.as_str(),
                "The wall clock looks wrong; heartbeats say so"
            );
        }
        if state == crate::clock::ClockState::Jumped {
            Counters::inc(&publisher.counters().clock_jumps);
        }
        let counters = publisher.snapshot();
        let agent_uptime_secs = self.started.elapsed().as_secs();
        let interval_secs = self.interval_secs;
        // Queue full or encode errors are counted and logged by the publisher.
        let _ = publisher.publish(Kind::Heartbeat, |h| {
            let mut hb = HeartbeatOut::new(h, AGENT_VERSION, interval_secs);
            hb.uptime_secs = s.uptime_secs;
            hb.agent_uptime_secs = agent_uptime_secs;
            hb.load = s.load;
            hb.mem_total_bytes = s.mem_total_bytes;
            hb.mem_available_bytes = s.mem_available_bytes;
            hb.agent_rss_bytes = s.agent_rss_bytes;
            hb.clock = state.as_str();
            hb.counters = counters;
            hb
        });
        publisher.board().heartbeat();
    }
}

/// Runs the heartbeat source until `stop` is cancelled. Waits for `start`
/// (first broker connection) before the first heartbeat. `started` is when
/// the agent process started, for `agent_uptime_secs`.
pub async fn run(
    publisher: Publisher,
    interval: Duration,
    started: Instant,
    start: impl Future<Output = ()>,
    stop: CancellationToken,
) {
    tokio::select! {
        biased;
        () = stop.cancelled() => return,
        () = start => {}
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut beat = Beat::new(interval, started);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        beat.once(&publisher);
    }
}

fn default_interval_secs() -> u32 {
    30
}

/// `[heartbeat]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRaw {
    #[serde(default = "default_interval_secs")]
    interval_secs: u32,
}

impl Default for HeartbeatRaw {
    fn default() -> Self {
        HeartbeatRaw {
            interval_secs: default_interval_secs(),
        }
    }
}

/// Validated heartbeat settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Period between heartbeats.
    pub interval: Duration,
}

/// The heartbeat source in the registry (always on).
pub struct HeartbeatSource;

impl Source for HeartbeatSource {
    const NAME: &'static str = "heartbeat";
    type Raw = HeartbeatRaw;
    type Config = HeartbeatConfig;

    fn validate(raw: HeartbeatRaw, problems: &mut Vec<String>) -> Option<HeartbeatConfig> {
        super::check_interval("heartbeat.interval_secs", raw.interval_secs, problems).map(|secs| {
            HeartbeatConfig {
                interval: Duration::from_secs(secs.into()),
            }
        })
    }

    fn summary(cfg: &HeartbeatConfig) -> Option<String> {
        Some(format!("heartbeat every {} s", cfg.interval.as_secs()))
    }

    fn start(cx: &Context, cfg: &HeartbeatConfig) -> Option<Box<dyn Running>> {
        let publisher = cx.publisher.clone();
        let (interval, started, first) = (cfg.interval, cx.started, cx.first_connect());
        Some(cx.spawn(move |stop| run(publisher, interval, started, first, stop)))
    }

    async fn check(_cfg: &HeartbeatConfig) -> Vec<Row> {
        // Nothing to probe: the broker rows cover where heartbeats go.
        Vec::new()
    }

    async fn once(p: &Publisher, cfg: &HeartbeatConfig, _note: &mut dyn FnMut(String)) {
        Beat::new(cfg.interval, Instant::now()).once(p)
    }
}

#[cfg(test)]
mod tests {
    use sitewatch_wire::payload::{AgentCounters, Header, HeartbeatOut, HEARTBEAT_BUF_LEN};

    /// With every counter (syslog ones included) and metric at its largest,
    /// a heartbeat still fits the wire's heartbeat buffer.
    #[test]
    fn worst_case_heartbeat_fits() {
        let h = Header {
            site: &"s".repeat(63),
            boot: &"b".repeat(32),
            seq: u64::MAX,
            ts: u64::MAX,
        };
        let m = u64::MAX;
        let mut hb = HeartbeatOut::new(h, "0.1.0-rc.1+build.123456", u32::MAX);
        hb.uptime_secs = m;
        hb.agent_uptime_secs = m;
        hb.load = [-3.402_823_5e38; 3];
        hb.mem_total_bytes = m;
        hb.mem_available_bytes = m;
        hb.agent_rss_bytes = m;
        hb.counters = AgentCounters {
            published: m,
            acked: m,
            reconnects: m,
            connect_errors: m,
            dropped: m,
            disk_errors: m,
            syslog_received: m,
            syslog_rfc5424: m,
            syslog_rfc3164: m,
            syslog_vendor: m,
            syslog_no_timestamp: m,
            syslog_raw: m,
            syslog_truncated: m,
            syslog_rate_limited: m,
            syslog_denied: m,
            syslog_dropped: m,
            syslog_tcp_refused: m,
            outbox_depth: m,
            outbox_bytes: m,
            outbox_in_flight: m,
            outbox_dropped_log: m,
            outbox_dropped_series: m,
            outbox_dropped_state: m,
            outbox_dropped_event: m,
            outbox_replaced: m,
            outbox_requeued: m,
            outbox_replayed: m,
            outbox_corrupt: m,
            outbox_fsyncs: m,
            outbox_disk_errors: m,
            clock_jumps: m,
            rtsp_probes: m,
            smart_reads: m,
            smart_errors: m,
            cleanup_deleted: m,
            cleanup_errors: m,
        };
        hb.clock = "before_build";
        let mut buf = [0u8; HEARTBEAT_BUF_LEN * 2];
        let n = sitewatch_wire::encode(&hb, &mut buf).expect("encodes");
        assert!(n <= HEARTBEAT_BUF_LEN, "worst-case heartbeat is {n} bytes");
    }
}
