//! The `[syslog]` table: raw TOML form, validation into [`SyslogConfig`],
//! and the per-sender policy lookup ([`SyslogConfig::policy`]).
//!
//! Pure: parses and checks text only; it never binds a socket (so
//! `sitewatch-agent check` stays safe). Problems are appended to the
//! config's shared list in plain words, all of them at once.
//!
//! ```toml
//! [syslog]
//! udp = ["0.0.0.0:514"]          # listen addresses; [] turns UDP off
//! tcp = ["0.0.0.0:514"]
//! max_line_bytes = 8192          # longer lines are cut and flagged
//! max_tcp_connections = 64
//! tcp_idle_timeout_secs = 600
//! batch_max_wait_ms = 1000       # a log batch is sent at most this late
//! pending_max_bytes = 4194304    # logs waiting for the uplink; oldest dropped beyond
//! timezone = "+07:00"            # for lines whose timestamp has no zone
//! rate_limit_per_sec = 1000      # per sender address; 0 = no limit
//! rate_limit_burst = 2000
//! allow = ["private"]            # who may send: "private", "any", CIDRs, addresses
//!
//! [syslog.hosts]                 # friendly names for senders
//! "192.168.1.64" = "nvr-1"
//!
//! [[syslog.source]]              # per-sender overrides, most specific match wins
//! match = "192.168.1.0/24"
//! timezone = "+08:00"
//! rate_limit_per_sec = 200
//! rate_limit_burst = 400
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::fields::{self, Absent, Res, Value};
use sitewatch_wire::payload::{LOG_FIELD_MAX_BYTES, LOG_MSG_MAX_BYTES};

use super::time;

/// Default listen addresses (UDP and TCP).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:514";
/// The unprivileged alternative port, as in the seed's syslog-ng setup.
pub const UNPRIVILEGED_PORT: u16 = 1514;

const MAX_LISTENERS: usize = 8;
const MAX_SOURCES: usize = 256;
const MAX_HOSTS: usize = 4096;
const MAX_ALLOW: usize = 256;

fn default_listen() -> Vec<String> {
    vec![DEFAULT_LISTEN.to_owned()]
}
fn default_max_line() -> usize {
    8192
}
fn default_max_tcp() -> usize {
    64
}
fn default_idle_secs() -> u64 {
    600
}
fn default_wait_ms() -> u64 {
    1000
}
fn default_pending() -> usize {
    4 * 1024 * 1024
}
fn default_rate() -> u32 {
    1000
}
fn default_allow() -> Vec<String> {
    vec!["private".to_owned()]
}
fn default_tz() -> String {
    "+00:00".to_owned()
}

/// `[syslog]` as written in the file.
#[derive(Debug, Clone)]
pub struct SyslogRaw {
    udp: Vec<String>,
    tcp: Vec<String>,
    max_line_bytes: usize,
    max_tcp_connections: usize,
    tcp_idle_timeout_secs: u64,
    batch_max_wait_ms: u64,
    pending_max_bytes: usize,
    timezone: String,
    rate_limit_per_sec: u32,
    rate_limit_burst: Option<u32>,
    allow: Vec<String>,
    hosts: BTreeMap<String, String>,
    source: Vec<SourceRaw>,
}

/// One `[[syslog.source]]` as written.
#[derive(Debug, Clone, Default)]
struct SourceRaw {
    /// `match` in the file.
    matches: String,
    timezone: Option<String>,
    rate_limit_per_sec: Option<u32>,
    rate_limit_burst: Option<u32>,
    host: Option<String>,
}

/// Reads `[syslog]` (serde's words: `crate::config::fields`).
pub fn read(v: &Value<'_>) -> Res<SyslogRaw> {
    use fields::{string, strings, u32, u64, usize};
    const FIELDS: &[(&str, Absent)] = &[
        ("udp", Absent::Default),
        ("tcp", Absent::Default),
        ("max_line_bytes", Absent::Default),
        ("max_tcp_connections", Absent::Default),
        ("tcp_idle_timeout_secs", Absent::Default),
        ("batch_max_wait_ms", Absent::Default),
        ("pending_max_bytes", Absent::Default),
        ("timezone", Absent::Default),
        ("rate_limit_per_sec", Absent::Default),
        ("rate_limit_burst", Absent::Default),
        ("allow", Absent::Default),
        ("hosts", Absent::Default),
        ("source", Absent::Default),
    ];
    let mut r = SyslogRaw {
        udp: default_listen(),
        tcp: default_listen(),
        max_line_bytes: default_max_line(),
        max_tcp_connections: default_max_tcp(),
        tcp_idle_timeout_secs: default_idle_secs(),
        batch_max_wait_ms: default_wait_ms(),
        pending_max_bytes: default_pending(),
        timezone: default_tz(),
        rate_limit_per_sec: default_rate(),
        rate_limit_burst: None,
        allow: default_allow(),
        hosts: BTreeMap::new(),
        source: Vec::new(),
    };
    fields::fields(v, "struct SyslogRaw", FIELDS, &mut |i, v| {
        match i {
            0 => r.udp = strings(v)?,
            1 => r.tcp = strings(v)?,
            2 => r.max_line_bytes = usize(v)?,
            3 => r.max_tcp_connections = usize(v)?,
            4 => r.tcp_idle_timeout_secs = u64(v)?,
            5 => r.batch_max_wait_ms = u64(v)?,
            6 => r.pending_max_bytes = usize(v)?,
            7 => r.timezone = string(v)?,
            8 => r.rate_limit_per_sec = u32(v)?,
            9 => r.rate_limit_burst = Some(u32(v)?),
            10 => r.allow = strings(v)?,
            11 => r.hosts = fields::string_map(v)?,
            _ => r.source = fields::list(v, read_source)?,
        }
        Ok(())
    })?;
    Ok(r)
}

fn read_source(v: &Value<'_>) -> Res<SourceRaw> {
    use fields::{string, u32};
    const FIELDS: &[(&str, Absent)] = &[
        ("match", Absent::Required),
        ("timezone", Absent::Default),
        ("rate_limit_per_sec", Absent::Default),
        ("rate_limit_burst", Absent::Default),
        ("host", Absent::Default),
    ];
    let mut r = SourceRaw::default();
    fields::fields(v, "struct SourceRaw", FIELDS, &mut |i, v| {
        match i {
            0 => r.matches = string(v)?,
            1 => r.timezone = Some(string(v)?),
            2 => r.rate_limit_per_sec = Some(u32(v)?),
            3 => r.rate_limit_burst = Some(u32(v)?),
            _ => r.host = Some(string(v)?),
        }
        Ok(())
    })?;
    Ok(r)
}

/// An address or network (`192.168.1.0/24`, `10.0.0.7`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `addr` or `addr/prefix`. IPv4-mapped IPv6 is not special.
    pub fn parse(text: &str) -> Result<Net, String> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0 to {max}"))?,
        };
        Ok(Net { addr, prefix })
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }

    /// Prefix length (specificity).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

/// The networks `"private"` stands for in `allow`: loopback, RFC 1918,
/// link-local, and IPv6 unique-local.
pub fn private_nets() -> [Net; 7] {
    let v4 = |a, b, c, d, prefix| Net {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        prefix,
    };
    let v6 = |addr: Ipv6Addr, prefix| Net {
        addr: IpAddr::V6(addr),
        prefix,
    };
    [
        v4(127, 0, 0, 0, 8),
        v4(10, 0, 0, 0, 8),
        v4(172, 16, 0, 0, 12),
        v4(192, 168, 0, 0, 16),
        v4(169, 254, 0, 0, 16),
        v6(Ipv6Addr::LOCALHOST, 128),
        v6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    ]
}

/// Token-bucket settings. `per_sec == 0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained lines per second per sender.
    pub per_sec: u32,
    /// Bucket size: lines a sender may send at once.
    pub burst: u32,
}

/// A `[[syslog.source]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRule {
    /// Which senders it applies to.
    pub net: Net,
    /// Zone for timestamps without one, seconds east of UTC.
    pub tz_offset_secs: Option<i32>,
    /// Rate limit for each sender it matches.
    pub rate_limit: Option<RateLimit>,
    /// Host name for the sender (only for a single-address match).
    pub host: Option<String>,
}

/// What applies to one sender, resolved from the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy<'a> {
    /// Zone for timestamps without one.
    pub tz_offset_secs: i32,
    /// Per-sender rate limit.
    pub rate_limit: RateLimit,
    /// Configured host name, if any.
    pub host: Option<&'a str>,
}

/// Validated `[syslog]` settings. Present in [`crate::config::Config`] only when
/// the file has a `[syslog]` table: the receiver is off otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// UDP listen addresses (may be empty).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses (may be empty).
    pub tcp: Vec<SocketAddr>,
    /// Longest line kept; longer lines are cut and flagged `truncated`.
    pub max_line_bytes: usize,
    /// Open TCP connections at most; further ones are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection silent this long is closed.
    pub tcp_idle_timeout: Duration,
    /// A batch is published at most this long after its first record.
    pub batch_max_wait: Duration,
    /// Bound on memory held by logs not yet handed to the MQTT client.
    pub pending_max_bytes: usize,
    /// Default zone for timestamps without one, seconds east of UTC.
    pub tz_offset_secs: i32,
    /// Default per-sender rate limit.
    pub rate_limit: RateLimit,
    /// Who may send; empty means everyone (`allow = ["any"]`).
    pub allow: Vec<Net>,
    /// Per-sender rules.
    pub sources: Vec<SourceRule>,
    /// Friendly names by sender address (`[syslog.hosts]`).
    pub hosts: Vec<(IpAddr, String)>,
}

impl SyslogConfig {
    /// Whether `ip` may send.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip))
    }

    /// The settings for sender `ip`: the most specific matching
    /// `[[syslog.source]]` (longest prefix; first on a tie) over the
    /// defaults; a `[syslog.hosts]` entry names the host if the rule does
    /// not.
    pub fn policy(&self, ip: IpAddr) -> Policy<'_> {
        let rule = self.sources.iter().filter(|r| r.net.contains(ip)).fold(
            None::<&SourceRule>,
            |best, r| match best {
                Some(b) if b.net.prefix() >= r.net.prefix() => Some(b),
                _ => Some(r),
            },
        );
        let host = rule.and_then(|r| r.host.as_deref()).or_else(|| {
            self.hosts
                .iter()
                .find(|(a, _)| *a == ip)
                .map(|(_, h)| h.as_str())
        });
        Policy {
            tz_offset_secs: rule
                .and_then(|r| r.tz_offset_secs)
                .unwrap_or(self.tz_offset_secs),
            rate_limit: rule.and_then(|r| r.rate_limit).unwrap_or(self.rate_limit),
            host,
        }
    }

    /// One line for `check`'s summary.
    pub fn summary(&self) -> String {
        let list = |v: &[SocketAddr]| {
            if v.is_empty() {
                "off".to_owned()
            } else {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        format!(
            "syslog UDP {} and TCP {}, zone {}, {} source rule(s), {} host name(s)",
            list(&self.udp),
            list(&self.tcp),
            time::format_offset(self.tz_offset_secs),
            self.sources.len(),
            self.hosts.len()
        )
    }
}

fn check_host_name(key: &str, name: &str, problems: &mut Vec<String>) -> bool {
    if name.is_empty() || name.len() > LOG_FIELD_MAX_BYTES {
        problems.push(format!(
            "{key} `{name}`: a host name must be 1 to {LOG_FIELD_MAX_BYTES} bytes"
        ));
        return false;
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        problems.push(format!(
            "{key} `{name}`: a host name must not contain spaces or control characters"
        ));
        return false;
    }
    true
}

fn rate_limit(
    key: &str,
    per_sec: u32,
    burst: Option<u32>,
    problems: &mut Vec<String>,
) -> RateLimit {
    if per_sec > 1_000_000 {
        problems.push(format!(
            "{key}rate_limit_per_sec = {per_sec}: at most 1000000 (0 turns the limit off)"
        ));
    }
    let burst = burst.unwrap_or_else(|| per_sec.saturating_mul(2));
    if per_sec > 0 && burst == 0 {
        problems.push(format!(
            "{key}rate_limit_burst = 0: must be at least 1 when a rate limit is set"
        ));
    }
    RateLimit { per_sec, burst }
}

fn listen_addrs(key: &str, list: &[String], problems: &mut Vec<String>) -> Vec<SocketAddr> {
    if list.len() > MAX_LISTENERS {
        problems.push(format!(
            "syslog.{key} lists {} addresses; at most {MAX_LISTENERS}",
            list.len()
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in list {
        match a.parse::<SocketAddr>() {
            Ok(s) if s.port() == 0 => problems.push(format!(
                "syslog.{key} `{a}`: give a port (514, or {UNPRIVILEGED_PORT} without privileges)"
            )),
            Ok(s) if out.contains(&s) => {
                problems.push(format!("syslog.{key} `{a}` is listed twice"))
            }
            Ok(s) => out.push(s),
            Err(_) => problems.push(format!(
                "syslog.{key} `{a}` is not an address:port (for example \"0.0.0.0:514\" or \"[::]:1514\")"
            )),
        }
    }
    out
}

/// Validates `[syslog]`, appending every problem to `problems`.
pub(crate) fn validate(raw: SyslogRaw, problems: &mut Vec<String>) -> Option<SyslogConfig> {
    let before = problems.len();
    let udp = listen_addrs("udp", &raw.udp, problems);
    let tcp = listen_addrs("tcp", &raw.tcp, problems);
    if raw.udp.is_empty() && raw.tcp.is_empty() {
        problems.push(
            "syslog: both udp and tcp are empty; remove the [syslog] table to turn syslog off"
                .into(),
        );
    }
    if !(256..=LOG_MSG_MAX_BYTES).contains(&raw.max_line_bytes) {
        problems.push(format!(
            "syslog.max_line_bytes = {}: must be between 256 and {LOG_MSG_MAX_BYTES}",
            raw.max_line_bytes
        ));
    }
    if !(1..=1024).contains(&raw.max_tcp_connections) {
        problems.push(format!(
            "syslog.max_tcp_connections = {}: must be between 1 and 1024",
            raw.max_tcp_connections
        ));
    }
    if !(1..=86_400).contains(&raw.tcp_idle_timeout_secs) {
        problems.push(format!(
            "syslog.tcp_idle_timeout_secs = {}: must be between 1 and 86400",
            raw.tcp_idle_timeout_secs
        ));
    }
    if !(10..=60_000).contains(&raw.batch_max_wait_ms) {
        problems.push(format!(
            "syslog.batch_max_wait_ms = {}: must be between 10 and 60000",
            raw.batch_max_wait_ms
        ));
    }
    const MIN_PENDING: usize = 256 * 1024;
    const MAX_PENDING: usize = 256 * 1024 * 1024;
    if !(MIN_PENDING..=MAX_PENDING).contains(&raw.pending_max_bytes) {
        problems.push(format!(
            "syslog.pending_max_bytes = {}: must be between {MIN_PENDING} and {MAX_PENDING}",
            raw.pending_max_bytes
        ));
    }
    let tz = time::parse_offset(&raw.timezone);
    if tz.is_none() {
        problems.push(format!(
            "syslog.timezone `{}`: use a fixed offset such as \"+07:00\" or \"UTC\" \
             (zone names are not supported)",
            raw.timezone
        ));
    }
    let rl = rate_limit(
        "syslog.",
        raw.rate_limit_per_sec,
        raw.rate_limit_burst,
        problems,
    );

    if raw.allow.len() > MAX_ALLOW {
        problems.push(format!("syslog.allow has more than {MAX_ALLOW} entries"));
    }
    let mut allow = Vec::new();
    let mut any = false;
    for a in &raw.allow {
        match a.as_str() {
            "any" => any = true,
            "private" => allow.extend(private_nets()),
            other => match Net::parse(other) {
                Ok(n) => allow.push(n),
                Err(e) => problems.push(format!(
                    "syslog.allow: {e} (use \"private\", \"any\", an address or a network such as \"192.168.1.0/24\")"
                )),
            },
        }
    }
    if raw.allow.is_empty() {
        problems.push(
            "syslog.allow is empty, which would refuse every sender; use [\"private\"] or [\"any\"]"
                .into(),
        );
    }
    if any {
        allow.clear();
    }

    if raw.source.len() > MAX_SOURCES {
        problems.push(format!(
            "syslog.source has {} entries; at most {MAX_SOURCES}",
            raw.source.len()
        ));
    }
    let mut sources = Vec::new();
    for (i, s) in raw.source.iter().enumerate() {
        let key = format!("syslog.source[{}] (match = \"{}\"): ", i + 1, s.matches);
        let net = match Net::parse(&s.matches) {
            Ok(n) => Some(n),
            Err(e) => {
                problems.push(format!("{key}{e}"));
                None
            }
        };
        let tz = match &s.timezone {
            None => Some(None),
            Some(t) => match time::parse_offset(t) {
                Some(o) => Some(Some(o)),
                None => {
                    problems.push(format!(
                        "{key}timezone `{t}`: use a fixed offset such as \"+07:00\""
                    ));
                    None
                }
            },
        };
        let rate = match (s.rate_limit_per_sec, s.rate_limit_burst) {
            (None, None) => None,
            (per_sec, burst) => Some(rate_limit(
                &key,
                per_sec.unwrap_or(raw.rate_limit_per_sec),
                burst,
                problems,
            )),
        };
        if let Some(h) = &s.host {
            if !check_host_name(&format!("{key}host"), h, problems) {
                continue;
            }
            if net.is_some_and(|n| n.prefix() != if n.addr.is_ipv4() { 32 } else { 128 }) {
                problems.push(format!(
                    "{key}host = \"{h}\" needs a single address in match, not a network"
                ));
                continue;
            }
        }
        if let (Some(net), Some(tz)) = (net, tz) {
            sources.push(SourceRule {
                net,
                tz_offset_secs: tz,
                rate_limit: rate,
                host: s.host.clone(),
            });
        }
    }

    if raw.hosts.len() > MAX_HOSTS {
        problems.push(format!("syslog.hosts has more than {MAX_HOSTS} entries"));
    }
    let mut hosts = Vec::new();
    for (addr, name) in &raw.hosts {
        match addr.parse::<IpAddr>() {
            Ok(ip) => {
                if check_host_name(&format!("syslog.hosts.\"{addr}\""), name, problems) {
                    hosts.push((ip.to_canonical(), name.clone()));
                }
            }
            Err(_) => problems.push(format!(
                "syslog.hosts: `{addr}` is not an IP address (write \"192.168.1.64\" = \"nvr-1\")"
            )),
        }
    }

    if problems.len() != before {
        return None;
    }
    Some(SyslogConfig {
        udp,
        tcp,
        max_line_bytes: raw.max_line_bytes,
        max_tcp_connections: raw.max_tcp_connections,
        tcp_idle_timeout: Duration::from_secs(raw.tcp_idle_timeout_secs),
        batch_max_wait: Duration::from_millis(raw.batch_max_wait_ms),
        pending_max_bytes: raw.pending_max_bytes,
        tz_offset_secs: tz?,
        rate_limit: rl,
        allow,
        sources,
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SyslogConfig, Vec<String>> {
        let raw = crate::config::read_root_for_test(text, read).map_err(|e| vec![e])?;
        let mut problems = Vec::new();
        validate(raw, &mut problems).ok_or(problems)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn defaults() {
        let c = parse("").expect("valid");
        assert_eq!(c.udp, vec!["0.0.0.0:514".parse::<SocketAddr>().expect("a")]);
        assert_eq!(c.tcp, c.udp);
        assert_eq!(c.max_line_bytes, 8192);
        assert_eq!(c.batch_max_wait, Duration::from_secs(1));
        assert_eq!(c.tz_offset_secs, 0);
        assert_eq!(
            c.rate_limit,
            RateLimit {
                per_sec: 1000,
                burst: 2000
            }
        );
        assert!(c.allowed(ip("192.168.1.64")));
        assert!(c.allowed(ip("10.1.2.3")));
        assert!(c.allowed(ip("127.0.0.1")));
        assert!(c.allowed(ip("fd12::1")));
        assert!(!c.allowed(ip("8.8.8.8")));
        assert!(!c.allowed(ip("100.64.0.1")));
    }

    #[test]
    fn policy_most_specific_rule_wins() {
        let c = parse(
            r#"
timezone = "+07:00"
allow = ["any"]
[hosts]
"192.168.1.64" = "nvr-1"
"192.168.1.65" = "nvr-2"
[[source]]
match = "192.168.1.0/24"
timezone = "+08:00"
rate_limit_per_sec = 10
[[source]]
match = "192.168.1.65"
host = "gate-nvr"
"#,
        )
        .expect("valid");
        assert!(c.allowed(ip("8.8.8.8")));
        let p = c.policy(ip("192.168.1.64"));
        assert_eq!((p.tz_offset_secs, p.host), (8 * 3600, Some("nvr-1")));
        assert_eq!(
            p.rate_limit,
            RateLimit {
                per_sec: 10,
                burst: 20
            }
        );
        let p = c.policy(ip("192.168.1.65"));
        assert_eq!(p.host, Some("gate-nvr"));
        assert_eq!(p.tz_offset_secs, 7 * 3600, "the /32 rule has no zone");
        let p = c.policy(ip("10.0.0.1"));
        assert_eq!((p.tz_offset_secs, p.host), (7 * 3600, None));
    }

    #[test]
    fn every_problem_is_reported() {
        let e = parse(
            r#"
udp = ["0.0.0.0", "0.0.0.0:0"]
tcp = ["0.0.0.0:1514", "0.0.0.0:1514"]
max_line_bytes = 100
timezone = "Asia/Jakarta"
allow = ["192.168.1.0/33"]
[hosts]
"nvr" = "x"
"10.0.0.1" = "has space"
[[source]]
match = "10.0.0.0/8"
host = "all"
"#,
        )
        .expect_err("invalid");
        let all = e.join("\n");
        for needle in [
            "not an address:port",
            "give a port",
            "listed twice",
            "max_line_bytes",
            "Asia/Jakarta",
            "prefix length",
            "`nvr` is not an IP",
            "spaces",
            "single address",
        ] {
            assert!(all.contains(needle), "missing {needle}:\n{all}");
        }
        assert_eq!(e.len(), 9, "{all}");
    }

    #[test]
    fn nets() {
        let n = Net::parse("192.168.1.0/24").expect("net");
        assert!(n.contains(ip("192.168.1.255")) && !n.contains(ip("192.168.2.1")));
        assert!(!n.contains(ip("::1")));
        assert!(Net::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("1.2.3.4")));
        assert!(Net::parse("fe80::/10").expect("ll").contains(ip("fe80::1")));
        assert!(Net::parse("nope").is_err());
    }
}
