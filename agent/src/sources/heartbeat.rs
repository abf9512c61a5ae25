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
//! to an LTE modem, `wan.if` says so at the centre. Its own addresses go
//! along (`wan.addr`, `addr_class`, `addr6`): the primary IPv4 address
//! (one `SIOCGIFADDR` ioctl) classified by
//! [`sitewatch_wire::payload::wan_addr_class`], and a global IPv6 address
//! (`/proc/net/if_inet6`). A change of the IPv4 address is logged and sent
//! as a `wan_addr_changed` event.

use crate::config::Doc;
use std::future::Future;
use std::time::Duration;

use crate::config::fields::{self, Absent, Res, Value};
use sitewatch_wire::payload::{wan_addr_class, HeartbeatOut, WanOut};
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

/// One reading of the uplink interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Its name.
    pub iface: String,
    /// Its kernel counters.
    pub counters: host::WanCounters,
    /// Its primary IPv4 address, if any (`None` also when it could not
    /// be read: the counters matter more than the address).
    pub addr: Option<std::net::Ipv4Addr>,
    /// A global IPv6 address of it, if any.
    pub addr6: Option<std::net::Ipv6Addr>,
}

impl Wan {
    /// The interface to read now, its counters and addresses, or why not.
    pub fn read(&self) -> Result<Option<Uplink>, String> {
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
        let counters = host::read_wan_counters("/sys/class/net", &iface)?;
        let addr = host::read_wan_addr4(&iface).ok().flatten();
        let addr6 = host::read_wan_addr6(&iface);
        Ok(Some(Uplink {
            iface,
            counters,
            addr,
            addr6,
        }))
    }
}

/// What an uplink address class means, in words: what the address is,
/// and what to do about it; `None` for a public address (nothing to do).
/// Shared by `check`, the `wan_addr_changed` event and `status`.
pub fn addr_advice(class: &str) -> Option<(&'static str, &'static str)> {
    match class {
        "public" => None,
        "cgnat" => Some((
            "in the ISP's carrier-grade NAT range (100.64.0.0/10): the site has no public \
             IPv4 address",
            "port forwards cannot work from here, so live view through the DDNS name will \
             fail; ask the ISP for a public IP (often a paid option), or use a VPN or relay \
             the site dials out to",
        )),
        "private" => Some((
            "a private address: the router is behind another NAT (an LTE modem or the \
             ISP's box)",
            "port forwards need a second forward on that device upstream (or put it in \
             bridge / IP passthrough mode); if it is itself behind carrier-grade NAT, ask \
             the ISP for a public IP",
        )),
        _ => Some((
            "not an Internet address",
            "the uplink has no usable address: check its cable or modem, DHCP or PPPoE \
             login, and [heartbeat] wan_interface",
        )),
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
    /// The uplink's IPv4 address at the last beat that read it (`None`
    /// before the first), for `wan_addr_changed`.
    wan_addr: Option<Option<std::net::Ipv4Addr>>,
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
            wan_addr: None,
        }
    }

    /// Logs the uplink's IPv4 address at the first reading and each
    /// change, and publishes a change as `wan_addr_changed`.
    fn watch_addr(&mut self, publisher: &Publisher, up: &Uplink) {
        let before = self.wan_addr.replace(up.addr);
        if before == Some(up.addr) {
            return;
        }
        let class = |a: Option<std::net::Ipv4Addr>| a.map_or("none", wan_addr_class);
        let words = |a: Option<std::net::Ipv4Addr>| {
            a.map_or("no IPv4 address".to_owned(), |a| {
                format!("{a} ({})", wan_addr_class(a))
            })
        };
        let to = class(up.addr);
        let advice = addr_advice(to).map_or("", |a| a.1);
        let (from, message) = match before {
            // The first reading: logged, not an event.
            None => ("", format!("{}: {}", up.iface, words(up.addr))),
            Some(b) => (
                class(b),
                format!("{}: {} -> {}", up.iface, words(b), words(up.addr)),
            ),
        };
        // One line for both (each tracing call site costs code).
        tracing::warn!(advice, "Uplink address: {message}");
        if before.is_none() {
            return;
        }
        let message = if advice.is_empty() {
            message
        } else {
            format!("{message}; {advice}")
        };
        let severity = if advice.is_empty() { "info" } else { "warning" };
        let _ = publisher.publish(Kind::Event, |h| {
            crate::sources::forward::event(
                h,
                "wan_addr_changed",
                severity,
                &up.iface,
                Some(from),
                Some(to),
                &message,
                &[],
            )
        });
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
                if let Some(up) = &w {
                    self.watch_addr(publisher, up);
                }
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
        // Formatted once, for the heartbeat and the status file.
        let (addr, addr6) = wan.as_ref().map_or((None, None), |u| {
            (
                u.addr.map(|a| a.to_string()),
                u.addr6.map(|a| a.to_string()),
            )
        });
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
            hb.wan = wan.as_ref().map(|u| {
                let c = u.counters;
                WanOut {
                    iface: &u.iface,
                    rx_bytes: c[0],
                    tx_bytes: c[1],
                    rx_errors: c[2],
                    tx_errors: c[3],
                    rx_dropped: c[4],
                    tx_dropped: c[5],
                    addr: addr.as_deref(),
                    addr_class: u.addr.map(wan_addr_class),
                    addr6: addr6.as_deref(),
                }
            });
            hb
        });
        publisher.board().heartbeat();
        publisher
            .board()
            .uplink(wan.map(|u| crate::status::UplinkStatus {
                addr_class: u.addr.map_or("", wan_addr_class).to_owned(),
                addr: addr.unwrap_or_default(),
                addr6: addr6.unwrap_or_default(),
                iface: u.iface,
                rx_bytes: u.counters[0],
                tx_bytes: u.counters[1],
                at_ms: now_ms(),
            }));
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
#[derive(Debug, Clone)]
pub struct HeartbeatRaw {
    interval_secs: u32,
    /// `"auto"` (default), `"off"` or an interface name.
    wan_interface: Option<String>,
}

/// Reads `[heartbeat]` (serde's words: `crate::config::fields`).
fn read(v: &Value<'_>) -> Res<HeartbeatRaw> {
    const FIELDS: &[(&str, Absent)] = &[
        ("interval_secs", Absent::Default),
        ("wan_interface", Absent::Default),
    ];
    let mut raw = HeartbeatRaw::default();
    fields::fields(v, "struct HeartbeatRaw", FIELDS, &mut |i, v| {
        match i {
            0 => raw.interval_secs = fields::u32(v)?,
            _ => raw.wan_interface = Some(fields::string(v)?),
        }
        Ok(())
    })?;
    Ok(raw)
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
        super::read_section(doc, Self::NAME, problems, read)
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
            Ok(Some(up)) => {
                let c = up.counters;
                let iface = &up.iface;
                let counters = row(
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
                );
                vec![counters, addr_row(&up)]
            }
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

/// The `check` row for the uplink's own address: whether port forwards
/// to this site can work at all.
fn addr_row(up: &Uplink) -> Row {
    let what = "uplink address";
    let iface = &up.iface;
    let v6 = up.addr6.map(|a| format!("; IPv6 {a}")).unwrap_or_default();
    let Some(a) = up.addr else {
        return row(
            what,
            Verdict::Warning,
            format!("{iface} has no IPv4 address{v6}"),
            "port forwards to this site cannot work over IPv4; check the uplink (cable, \
             modem, DHCP or PPPoE login) and [heartbeat] wan_interface",
        );
    };
    match addr_advice(wan_addr_class(a)) {
        None => row(
            what,
            Verdict::Ok,
            format!("{iface}: {a}, a public address: port forwards can work{v6}"),
            "",
        ),
        Some((what_it_is, todo)) => row(
            what,
            Verdict::Warning,
            format!("{iface}: {a} is {what_it_is}{v6}"),
            todo,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{addr_row, validate_wan, Uplink, Wan};
    use crate::check::row::Verdict;

    #[test]
    fn address_row_says_when_port_forwards_cannot_work() {
        let up = |a: &str| Uplink {
            iface: "pppoe-wan".into(),
            counters: [0; 6],
            addr: a.parse().ok(),
            addr6: None,
        };
        let r = addr_row(&up("81.2.69.142"));
        assert_eq!(r.verdict, Verdict::Ok);
        assert!(r.result.contains("public"), "{r:?}");
        let r = addr_row(&up("100.72.18.9"));
        assert_eq!(r.verdict, Verdict::Warning);
        assert!(r.result.contains("carrier-grade NAT"), "{r:?}");
        assert!(r.todo.contains("port forwards cannot work"), "{r:?}");
        assert!(r.todo.contains("ask the ISP for a public IP"), "{r:?}");
        let r = addr_row(&up("192.168.8.100"));
        assert!(r.result.contains("behind another NAT"), "{r:?}");
        assert!(r.todo.contains("second forward"), "{r:?}");
        let r = addr_row(&up(""));
        assert!(r.result.contains("no IPv4 address"), "{r:?}");
    }

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
            addr: Some("255.255.255.255"),
            addr_class: Some("link_local"),
            addr6: Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        });
        let mut buf = [0u8; HEARTBEAT_BUF_LEN * 2];
        let n = sitewatch_wire::encode(&hb, &mut buf).expect("encodes");
        assert!(n <= HEARTBEAT_BUF_LEN, "worst-case heartbeat is {n} bytes");
    }
}
