//! Heartbeat source: every `[heartbeat] interval_secs`, one `heartbeat`
//! message with host uptime, load and memory, the agent's uptime and RSS,
//! the agent counters, and the uplink interface's counters (`wan`).
//!
//! Reads only `/proc` and `/sys` (fast, never hangs), so it runs inline
//! on the runtime thread. A metric that cannot be read is sent as 0 and
//! logged once; uplink counters that cannot be read are left out.
//!
//! The uplink is, by default, the interface of the IPv4 default route,
//! looked up at every beat: when a site fails over from its fixed line
//! to an LTE modem, `wan.if` says so at the centre.

use crate::config::Doc;
use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use sitewatch_wire::payload::{HeartbeatOut, WanOut};
use sitewatch_wire::topic::Kind;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Context, Running, Source};
use crate::check::row::{row, Verdict};
use crate::check::Row;
use crate::clock::ClockWatch;
use crate::host;
use crate::sources::forward::human_bytes;
use crate::uplink::publish::{now_ms, Counters, Publisher, AGENT_VERSION};

/// Which interface's counters heartbeats carry (`[heartbeat]
/// wan_interface`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wan {
    /// None (`"off"`).
    Off,
    /// The IPv4 default route's, looked up at each beat (`"auto"`).
    Auto,
    /// This one.
    Named(String),
}

impl Wan {
    /// The interface to read now and its counters, or why not.
    pub fn read(&self) -> Result<Option<(String, host::WanCounters)>, String> {
        let iface = match self {
            Wan::Off => return Ok(None),
            Wan::Named(n) => n.clone(),
            Wan::Auto => {
                let routes = std::fs::read_to_string("/proc/net/route")
                    .map_err(|e| format!("/proc/net/route: {e}"))?;
                match host::parse_default_route(&routes) {
                    Some(i) => i.to_owned(),
                    None => return Err("no IPv4 default route".into()),
                }
            }
        };
        let c = host::read_wan_counters("/sys/class/net", &iface)?;
        Ok(Some((iface, c)))
    }
}

/// What the heartbeat carries from one beat to the next: the clock
/// check's memory and whether a metric failure was logged.
pub struct Beat {
    interval_secs: u32,
    started: Instant,
    clock: ClockWatch,
    origin: Instant,
    warned: bool,
    wan: Wan,
    /// The last reason the uplink counters could not be read, so each
    /// new one is logged once.
    wan_problem: Option<String>,
}

impl Beat {
    /// For heartbeats every `interval` carrying `wan`'s counters;
    /// `started` is when the agent process started, for
    /// `agent_uptime_secs`.
    pub fn new(interval: Duration, started: Instant, wan: Wan) -> Beat {
        Beat {
            interval_secs: u32::try_from(interval.as_secs()).unwrap_or(u32::MAX),
            started,
            clock: ClockWatch::default(),
            origin: Instant::now(),
            warned: false,
            wan,
            wan_problem: None,
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
        let wan = match self.wan.read() {
            Ok(w) => {
                self.wan_problem = None;
                w
            }
            Err(e) => {
                if self.wan_problem.as_ref() != Some(&e) {
                    tracing::warn!(err = %e, "Cannot read the uplink's counters; heartbeats leave them out");
                    self.wan_problem = Some(e);
                }
                None
            }
        };
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
            hb.wan = wan.as_ref().map(|(iface, c)| WanOut {
                iface,
                rx_bytes: c[0],
                tx_bytes: c[1],
                rx_errors: c[2],
                tx_errors: c[3],
                rx_dropped: c[4],
                tx_dropped: c[5],
                ..WanOut::default()
            });
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
    wan: Wan,
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
    let mut beat = Beat::new(interval, started, wan);
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
    /// `"auto"` (default), `"off"` or an interface name.
    #[serde(default)]
    wan_interface: Option<String>,
}

impl Default for HeartbeatRaw {
    fn default() -> Self {
        HeartbeatRaw {
            interval_secs: default_interval_secs(),
            wan_interface: None,
        }
    }
}

/// Validated heartbeat settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Period between heartbeats.
    pub interval: Duration,
    /// Whose counters heartbeats carry.
    pub wan: Wan,
}

fn validate_wan(name: Option<String>, problems: &mut Vec<String>) -> Option<Wan> {
    match name.as_deref() {
        None | Some("auto") => Some(Wan::Auto),
        Some("off") => Some(Wan::Off),
        Some(n) if host::valid_ifname(n) => Some(Wan::Named(n.to_owned())),
        Some(n) => {
            problems.push(format!(
                "heartbeat.wan_interface = \"{n}\": use \"auto\" (the default route's \
                 interface), \"off\", or an interface name such as \"eth1\" or \"pppoe-wan\" \
                 (1-15 characters, no '/' or spaces)"
            ));
            None
        }
    }
}

/// The heartbeat source in the registry (always on).
pub struct HeartbeatSource;

impl Source for HeartbeatSource {
    const NAME: &'static str = "heartbeat";
    type Raw = HeartbeatRaw;
    type Config = HeartbeatConfig;

    fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        super::read_section(doc, Self::NAME, problems)
    }

    fn validate(raw: HeartbeatRaw, problems: &mut Vec<String>) -> Option<HeartbeatConfig> {
        let interval =
            super::check_interval("heartbeat.interval_secs", raw.interval_secs, problems);
        let wan = validate_wan(raw.wan_interface, problems);
        Some(HeartbeatConfig {
            interval: Duration::from_secs(interval?.into()),
            wan: wan?,
        })
    }

    fn summary(cfg: &HeartbeatConfig) -> Option<String> {
        let wan = match &cfg.wan {
            Wan::Off => String::new(),
            Wan::Auto => ", with the default route's interface counters".to_owned(),
            Wan::Named(n) => format!(", with {n}'s counters"),
        };
        Some(format!("heartbeat every {} s{wan}", cfg.interval.as_secs()))
    }

    fn start(cx: &Context, cfg: &HeartbeatConfig) -> Option<Box<dyn Running>> {
        let publisher = cx.publisher.clone();
        let (interval, started, first) = (cfg.interval, cx.started, cx.first_connect());
        let wan = cfg.wan.clone();
        Some(cx.spawn(move |stop| run(publisher, interval, wan, started, first, stop)))
    }

    async fn check(cfg: &HeartbeatConfig) -> Vec<Row> {
        // The broker rows cover where heartbeats go; this is the uplink.
        let what = "uplink interface";
        match cfg.wan.read() {
            Ok(None) => Vec::new(),
            Ok(Some((iface, c))) => vec![row(
                what,
                Verdict::Ok,
                format!(
                    "{iface}: {} in, {} out since it came up; {} receive and {} send errors",
                    human_bytes(c[0]),
                    human_bytes(c[1]),
                    c[2],
                    c[3]
                ),
                "",
            )],
            Err(e) => vec![row(
                what,
                Verdict::Warning,
                e,
                "heartbeats go without uplink counters; set [heartbeat] wan_interface to the \
                 uplink's name (ip route shows it), or \"off\"",
            )],
        }
    }

    async fn once(p: &Publisher, cfg: &HeartbeatConfig, _note: &mut dyn FnMut(String)) {
        Beat::new(cfg.interval, Instant::now(), cfg.wan.clone()).once(p)
    }
}

#[cfg(test)]
mod tests {
    use super::{validate_wan, Wan};

    #[test]
    fn wan_interface_is_auto_off_or_a_checked_name() {
        let mut problems = Vec::new();
        assert_eq!(validate_wan(None, &mut problems), Some(Wan::Auto));
        assert_eq!(
            validate_wan(Some("auto".into()), &mut problems),
            Some(Wan::Auto)
        );
        assert_eq!(
            validate_wan(Some("off".into()), &mut problems),
            Some(Wan::Off)
        );
        assert_eq!(
            validate_wan(Some("pppoe-wan".into()), &mut problems),
            Some(Wan::Named("pppoe-wan".into()))
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(validate_wan(Some("../../etc".into()), &mut problems), None);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("heartbeat.wan_interface"),
            "{problems:?}"
        );
    }
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
        hb.wan = Some(sitewatch_wire::payload::WanOut {
            iface: "abcdefghijklmno",
            rx_bytes: m,
            tx_bytes: m,
            rx_errors: m,
            tx_errors: m,
            rx_dropped: m,
            tx_dropped: m,
            ..sitewatch_wire::payload::WanOut::default()
        });
        let mut buf = [0u8; HEARTBEAT_BUF_LEN * 2];
        let n = sitewatch_wire::encode(&hb, &mut buf).expect("encodes");
        assert!(n <= HEARTBEAT_BUF_LEN, "worst-case heartbeat is {n} bytes");
    }
}
