//! `[reach]` and its `[[reach.target]]` entries: read from the parsed
//! table → [`ReachRaw`] → validated [`ReachConfig`]. Off without the
//! table. Validation is pure: host names are resolved at each round, not
//! here.
//!
//! The table is walked by hand (as `[status]` is) rather than through a
//! derived deserializer: the two derives (section and target list) cost
//! the aarch64 agent about 7 KB.

use std::net::IpAddr;
use std::time::Duration;

use toml::de::DeValue;

/// Most targets: a round probes them all at once, one socket each.
pub const MAX_TARGETS: usize = 64;
/// Most probes per round.
pub const MAX_COUNT: u32 = 10;
/// Time between two probes of one round: ping's shortest unprivileged
/// interval, so a round stays short and no device sees a burst.
pub const PROBE_SPACING: Duration = Duration::from_millis(200);

/// `[reach]` as written in the file (defaults filled in).
#[derive(Debug, Clone)]
pub struct ReachRaw {
    interval_secs: u32,
    count: u32,
    timeout_ms: u32,
    target: Vec<TargetRaw>,
}

impl Default for ReachRaw {
    fn default() -> ReachRaw {
        ReachRaw {
            interval_secs: 30,
            count: 3,
            timeout_ms: 1000,
            target: Vec::new(),
        }
    }
}

/// One `[[reach.target]]` as written.
#[derive(Debug, Clone, Default)]
pub struct TargetRaw {
    name: String,
    address: String,
    kind: String,
    port: Option<i64>,
}

use crate::config::walk::{integer, number, text};

/// Reads `[reach]` (`Some(None)`: absent), pushing a problem for each key
/// that is unknown or of the wrong type; `None` if there was one.
pub fn read(table: Option<&DeValue<'_>>, problems: &mut Vec<String>) -> Option<Option<ReachRaw>> {
    let Some(table) = table else {
        return Some(None);
    };
    let before = problems.len();
    let mut raw = ReachRaw::default();
    let Some(table) = table.as_table() else {
        problems.push("reach must be a table: [reach]".into());
        return None;
    };
    for (key, value) in table {
        let value = value.get_ref();
        match key.get_ref().as_ref() {
            "interval_secs" => number(
                "reach.interval_secs",
                value,
                &mut raw.interval_secs,
                problems,
            ),
            "count" => number("reach.count", value, &mut raw.count, problems),
            "timeout_ms" => number("reach.timeout_ms", value, &mut raw.timeout_ms, problems),
            "target" => {
                let Some(list) = value.as_array() else {
                    problems.push("reach.target must be a list of tables: [[reach.target]]".into());
                    continue;
                };
                for (i, t) in list.iter().enumerate() {
                    raw.target.push(read_target(i, t.get_ref(), problems));
                }
            }
            other => problems.push(format!(
                "unknown setting reach.{other} (known: interval_secs, count, timeout_ms, target)"
            )),
        }
    }
    (problems.len() == before).then_some(Some(raw))
}

fn read_target(i: usize, t: &DeValue<'_>, problems: &mut Vec<String>) -> TargetRaw {
    let mut raw = TargetRaw {
        kind: "icmp".into(),
        ..TargetRaw::default()
    };
    let at = format!("reach.target #{}", i + 1);
    let Some(table) = t.as_table() else {
        problems.push(format!("{at} must be a table: [[reach.target]]"));
        return raw;
    };
    for (key, value) in table {
        let value = value.get_ref();
        match key.get_ref().as_ref() {
            "name" => text(&format!("{at} name"), value, &mut raw.name, problems),
            "address" => text(&format!("{at} address"), value, &mut raw.address, problems),
            "kind" => text(&format!("{at} kind"), value, &mut raw.kind, problems),
            "port" => raw.port = Some(integer(value).unwrap_or(-1)),
            other => problems.push(format!(
                "{at}: unknown setting {other} (known: name, address, kind, port)"
            )),
        }
    }
    raw
}

/// How a target is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// ICMP echo (IPv4).
    Icmp,
    /// TCP connect to this port.
    Tcp(u16),
}

/// One validated target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name ops know it by (the event's `subject`).
    pub name: String,
    /// IP address or host name, as written.
    pub address: String,
    /// ICMP or TCP.
    pub probe: Probe,
}

impl Target {
    /// `NVR 192.168.1.10` or `NVR 192.168.1.10:554`: the target in rows
    /// and messages.
    pub fn label(&self) -> String {
        match self.probe {
            Probe::Icmp => format!("{} {}", self.name, self.address),
            Probe::Tcp(p) if self.address.contains(':') => {
                format!("{} [{}]:{p}", self.name, self.address)
            }
            Probe::Tcp(p) => format!("{} {}:{p}", self.name, self.address),
        }
    }

    /// The TCP port, if any.
    pub fn port(&self) -> Option<u16> {
        match self.probe {
            Probe::Icmp => None,
            Probe::Tcp(p) => Some(p),
        }
    }
}

/// Validated reachability settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachConfig {
    /// Every target, in the file's order.
    pub targets: Vec<Target>,
    /// Period between rounds.
    pub interval: Duration,
    /// Probes per target per round.
    pub count: u32,
    /// How long a probe waits for its answer.
    pub timeout: Duration,
}

/// A host name as DNS allows it (letters, digits, `-`, dots).
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Validates `[reach]`, collecting every problem.
pub fn validate(raw: Option<ReachRaw>, problems: &mut Vec<String>) -> Option<Option<ReachConfig>> {
    let Some(r) = raw else {
        return Some(None);
    };
    let before = problems.len();
    let interval = crate::sources::check_interval("reach.interval_secs", r.interval_secs, problems);
    if !(1..=MAX_COUNT).contains(&r.count) {
        problems.push(format!(
            "reach.count = {}: must be between 1 and {MAX_COUNT} probes",
            r.count
        ));
    }
    if !(100..=10_000).contains(&r.timeout_ms) {
        problems.push(format!(
            "reach.timeout_ms = {}: must be between 100 and 10000 milliseconds",
            r.timeout_ms
        ));
    }
    let round_ms = u64::from(r.count.saturating_sub(1)) * PROBE_SPACING.as_millis() as u64
        + u64::from(r.timeout_ms);
    if interval.is_some_and(|i| round_ms >= u64::from(i) * 1000) {
        problems.push(format!(
            "reach: a round takes up to {round_ms} ms ({} probes 200 ms apart, then timeout_ms), \
             longer than interval_secs = {}: raise interval_secs or lower count or timeout_ms",
            r.count, r.interval_secs
        ));
    }
    if r.target.is_empty() {
        problems
            .push("reach: no [[reach.target]]: add one (name, address) or remove [reach]".into());
    }
    if r.target.len() > MAX_TARGETS {
        problems.push(format!(
            "reach lists {} targets; at most {MAX_TARGETS} are allowed",
            r.target.len()
        ));
    }
    let mut targets = Vec::with_capacity(r.target.len());
    for (i, t) in r.target.into_iter().enumerate() {
        let at = format!("reach.target #{} ({:?})", i + 1, t.name);
        if t.name.is_empty() || t.name.len() > 64 || t.name.chars().any(char::is_control) {
            // (An absent name is empty.)
            problems.push(format!(
                "{at}: name must be 1-64 bytes without control characters"
            ));
        } else if targets.iter().any(|o: &Target| o.name == t.name) {
            problems.push(format!("{at}: another target has this name"));
        }
        let ip = t.address.parse::<IpAddr>().ok();
        if ip.is_none() && !valid_host(&t.address) {
            problems.push(format!(
                "{at}: address {:?} is neither an IP address nor a host name",
                t.address
            ));
        }
        let probe = match (t.kind.as_str(), t.port) {
            ("icmp", None) if ip.is_some_and(|a| a.is_ipv6()) => {
                problems.push(format!(
                    "{at}: ICMP probes are IPv4 only; use kind = \"tcp\" and a port for an IPv6 address"
                ));
                Probe::Icmp
            }
            ("icmp", None) => Probe::Icmp,
            ("icmp", Some(_)) => {
                problems.push(format!(
                    "{at}: port is for kind = \"tcp\"; ping has no port"
                ));
                Probe::Icmp
            }
            ("tcp", Some(p)) if (1..=65535).contains(&p) => Probe::Tcp(p as u16),
            ("tcp", _) => {
                problems.push(format!(
                    "{at}: kind = \"tcp\" needs a port (1-65535), e.g. 554 for RTSP"
                ));
                Probe::Icmp
            }
            (k, _) => {
                problems.push(format!("{at}: kind = {k:?}: must be \"icmp\" or \"tcp\""));
                Probe::Icmp
            }
        };
        targets.push(Target {
            name: t.name,
            address: t.address,
            probe,
        });
    }
    if problems.len() != before {
        return None;
    }
    Some(Some(ReachConfig {
        targets,
        interval: Duration::from_secs(u64::from(interval?)),
        count: r.count,
        timeout: Duration::from_millis(u64::from(r.timeout_ms)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Option<ReachConfig>, Vec<String>> {
        let doc = crate::config::Doc::parse(t).map_err(|e| vec![e])?;
        let mut p = Vec::new();
        read(doc.get(&["reach"]), &mut p)
            .and_then(|raw| validate(raw, &mut p))
            .ok_or(p)
    }

    #[test]
    fn defaults_and_off() {
        assert_eq!(parse("").unwrap(), None);
        let c = parse(
            "[[reach.target]]\nname = \"NVR\"\naddress = \"192.168.1.10\"\n\
             [[reach.target]]\nname = \"switch\"\naddress = \"sw1.lan\"\nkind = \"tcp\"\nport = 80\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.interval, c.count, c.timeout),
            (Duration::from_secs(30), 3, Duration::from_millis(1000))
        );
        assert_eq!(c.targets[0].probe, Probe::Icmp);
        assert_eq!(c.targets[0].label(), "NVR 192.168.1.10");
        assert_eq!(c.targets[1].probe, Probe::Tcp(80));
        assert_eq!(c.targets[1].label(), "switch sw1.lan:80");
    }

    #[test]
    fn example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/agent.toml");
        let text = std::fs::read_to_string(path).expect("examples/agent.toml");
        let block: String = text
            .lines()
            .skip_while(|l| *l != "#[reach]")
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{}\n", l.trim_start_matches('#')))
            .collect();
        let c = parse(&block).expect("valid").expect("on");
        assert_eq!(c.targets.len(), 2, "{block}");
        assert_eq!(c.targets[1].probe, Probe::Tcp(80));
    }

    #[test]
    fn problems_are_collected() {
        let p = parse(
            "[reach]\ninterval_secs = 1\ncount = 11\ntimeout_ms = 50\n\
             [[reach.target]]\nname = \"a\"\naddress = \"bad host\"\n\
             [[reach.target]]\nname = \"a\"\naddress = \"10.0.0.1\"\nport = 80\n\
             [[reach.target]]\nname = \"b\"\naddress = \"10.0.0.2\"\nkind = \"tcp\"\n\
             [[reach.target]]\nname = \"c\"\naddress = \"::1\"\n\
             [[reach.target]]\nname = \"d\"\naddress = \"10.0.0.3\"\nkind = \"udp\"\n",
        )
        .unwrap_err();
        // count, timeout, round too long, bad host, duplicate name, port
        // with icmp, tcp without port, ICMP over IPv6, unknown kind.
        assert_eq!(p.len(), 9, "{p:#?}");
        assert!(parse("[reach]\n").unwrap_err()[0].contains("no [[reach.target]]"));
        let p = parse(
            "[reach]\ncount = \"3\"\nretries = 1\n[[reach.target]]\nname = 1\naddress = \"a\"\nport = 0\nhost = 2\n",
        )
        .unwrap_err();
        // count not a number, retries unknown, name not a string, host unknown.
        assert_eq!(p.len(), 4, "{p:#?}");
    }
}
