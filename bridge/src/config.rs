//! Bridge configuration: TOML file plus environment overrides.
//!
//! Three stages, as everywhere in sitewatch:
//! 1. [`RawConfig`]: what serde reads (`deny_unknown_fields`, defaults as
//!    `default_*` functions, units in every duration name);
//! 2. [`Config::from_raw`]: pure validation that collects *every* problem
//!    in plain words (used by `sitewatch-bridge check`) and produces typed
//!    settings;
//! 3. the I/O modules build connections from a [`Config`].
//!
//! Each sink owns its section: `[postgres]` is in
//! [`crate::sink::postgres::config`], `[loki]` in
//! [`crate::sink::loki::config`]; this module holds the rest of the file
//! and runs their checks in place, so `check` reports every problem in
//! one list whatever section it is in.
//!
//! This module never opens a socket. The only I/O it does is what
//! [`BrokerConfig::problems`] does (checking that named files are
//! readable), reading `postgres.password_file` and the `[loki]` secret
//! files, checking that `loki.ca_file` is readable (in the sinks' config
//! modules), and reading the host name for the default client id.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sitewatch_mqtt::BrokerConfig;

use crate::sink::loki::config::{self as loki_config, LokiSettings, RawLoki};
use crate::sink::postgres::config::{self as postgres_config, PostgresSettings, RawPostgres};
use crate::sink::postgres::retention::{self, RawRetention, RetentionSettings};

/// The whole file, as read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Broker connection (shared with the agent; see `sitewatch-mqtt`).
    pub mqtt: BrokerConfig,
    /// How the bridge subscribes.
    #[serde(default)]
    pub consumer: RawConsumer,
    /// Database connection.
    #[serde(default)]
    pub postgres: RawPostgres,
    /// Batching of writes.
    #[serde(default)]
    pub batch: RawBatch,
    /// HTTP endpoint for `/healthz` and `/metrics`.
    #[serde(default)]
    pub http: RawHttp,
    /// Where syslog batches (`log` messages) go. Without it they are
    /// stored in `rejected_messages` as `no_log_sink`.
    #[serde(default)]
    pub loki: Option<RawLoki>,
    /// Clock sanity checks on agent timestamps.
    #[serde(default)]
    pub clock: RawClock,
    /// How long the history tables keep their rows. Without it nothing
    /// is dropped (see [`crate::sink::postgres::retention`]).
    #[serde(default)]
    pub retention: Option<RawRetention>,
    /// Longest a graceful shutdown may take before the bridge gives up on
    /// the current batch (it is then redelivered by the broker later).
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
}

/// `[consumer]`: subscription and MQTT session settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    /// Shared-subscription group. When set, the bridge subscribes to
    /// `$share/<group>/sitewatch/v1/+/#` so that several bridges with the
    /// same group (and different client ids) split the messages.
    #[serde(default)]
    pub share_group: Option<String>,
    /// How long the broker keeps the bridge's session (its subscription
    /// and queued messages) while the bridge is disconnected. Must be > 0:
    /// MQTT 5 deletes a session with expiry 0 at disconnect.
    #[serde(default = "default_session_expiry_secs")]
    pub session_expiry_secs: u32,
    /// With a share group: take over (drain) the session of a group member
    /// that has been gone this long, so that its queued share is stored by
    /// a live bridge rather than waiting for it to come back. 0 turns
    /// takeover off. See [`crate::takeover`].
    #[serde(default = "default_takeover_after_secs")]
    pub takeover_after_secs: u32,
}

impl Default for RawConsumer {
    fn default() -> Self {
        RawConsumer {
            share_group: None,
            session_expiry_secs: default_session_expiry_secs(),
            takeover_after_secs: default_takeover_after_secs(),
        }
    }
}

/// `[batch]`: how many messages go into one transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// Most messages per transaction. `in_flight + 1` times this is the
    /// MQTT Receive Maximum: the broker never has more unacknowledged
    /// messages in flight to us (the next batch arrives while the
    /// others commit).
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Longest a message waits for its batch to fill up.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Batches written at once, each in its own transaction on its own
    /// database connection, so that one batch's statements run while
    /// another commits. 1: one at a time.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            max_messages: default_max_messages(),
            max_wait_ms: default_max_wait_ms(),
            in_flight: default_in_flight(),
        }
    }
}

/// `[http]`: the health and metrics endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Listen address, `host:port`. Port 0 picks a free port (logged).
    #[serde(default = "default_http_listen")]
    pub listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: default_http_listen(),
        }
    }
}

fn default_shutdown_timeout_secs() -> u64 {
    10
}
fn default_session_expiry_secs() -> u32 {
    7 * 24 * 3600
}
/// Long enough that a bridge restarted by systemd (RestartSec=5s) is back
/// before a peer drains its session; short next to any session expiry.
fn default_takeover_after_secs() -> u32 {
    20
}
fn default_max_messages() -> usize {
    500
}
fn default_max_wait_ms() -> u64 {
    200
}
fn default_in_flight() -> usize {
    2
}
fn default_http_listen() -> String {
    "127.0.0.1:9187".to_owned()
}

/// `[clock]`: how far an agent's clock may be off before its time series
/// are stored at the bridge's receive time instead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClock {
    /// Largest |agent timestamp - bridge receive time| (seconds) for a
    /// site's heartbeat and disk rows to keep the agent's time as `ts`.
    /// Beyond it `ts` is the receive time and `agent_ts` keeps the
    /// agent's. 0 disables the correction (skew is still measured).
    /// Default 86400 (one day).
    #[serde(default = "default_max_skew_secs")]
    pub max_skew_secs: u64,
}

impl Default for RawClock {
    fn default() -> Self {
        RawClock {
            max_skew_secs: default_max_skew_secs(),
        }
    }
}

/// One day: a gateway without a battery-backed clock is typically off by
/// days to years (OpenWrt restores the last saved time or its build
/// date), while a correct clock whose messages were held back (the
/// agent's outbox during a link outage, a broker queue) only looks
/// skewed by the outage length; a smaller bound would misfile such
/// backlogs at their arrival time.
fn default_max_skew_secs() -> u64 {
    86_400
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Broker settings, with environment overrides applied.
    pub mqtt: BrokerConfig,
    /// MQTT client id (from `mqtt.client_id`, or `sitewatch-bridge-<host>`).
    /// Must be stable across restarts: it names the persistent session.
    pub client_id: String,
    /// Subscription filter, `$share/...` included when configured.
    pub filter: String,
    /// MQTT session expiry.
    pub session_expiry: Duration,
    /// Share group, when configured.
    pub share_group: Option<String>,
    /// Take over a share-group member's session after it has been gone
    /// this long (`None`: no share group, or takeover off). A share-group
    /// member holds its session lease either way.
    pub takeover_after: Option<Duration>,
    /// Database settings.
    pub postgres: PostgresSettings,
    /// Most messages per batch (1..=65535).
    pub batch_max_messages: usize,
    /// Longest wait for a batch to fill.
    pub batch_max_wait: Duration,
    /// Batches written at once, each on its own connection (1..=8).
    pub batch_in_flight: usize,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Graceful shutdown deadline.
    pub shutdown_timeout: Duration,
    /// Loki, when configured; `None`: log batches are rejected as
    /// `no_log_sink`.
    pub loki: Option<LokiSettings>,
    /// See [`RawClock::max_skew_secs`]; `None` when 0 (no correction).
    pub max_clock_skew: Option<Duration>,
    /// `[retention]`: per-table retention and the maintenance interval.
    pub retention: RetentionSettings,
}

/// Every problem found in a configuration, in plain words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigProblems(pub Vec<String>);

/// Reads a config file and hands its text to `parse`; every problem,
/// the file being unreadable included, is prefixed with the path (the
/// same for every centre service: bridge and sitewatch-live).
pub fn load_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ConfigProblems>,
) -> Result<T, ConfigProblems> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigProblems(vec![format!("cannot read {}: {e}", path.display())]))?;
    parse(&text).map_err(|ConfigProblems(p)| {
        ConfigProblems(
            p.into_iter()
                .map(|m| format!("{}: {m}", path.display()))
                .collect(),
        )
    })
}

/// TOML text into a raw (unvalidated) config, or one problem in plain
/// words with the line and column TOML reports.
pub fn parse_toml<R: serde::de::DeserializeOwned>(text: &str) -> Result<R, ConfigProblems> {
    toml::from_str(text).map_err(|e| {
        ConfigProblems(vec![format!(
            "not a valid config: {}",
            e.to_string().trim()
        )])
    })
}

/// Most batches in flight: each holds a database connection.
const MAX_IN_FLIGHT: usize = 8;

impl Config {
    /// The MQTT Receive Maximum, and the size of the channel to the
    /// writer: one batch more than are written at once, so the next batch
    /// arrives while those commit; capped at MQTT's 65,535.
    pub fn receive_maximum(&self) -> usize {
        (self.batch_in_flight + 1)
            .saturating_mul(self.batch_max_messages)
            .min(usize::from(u16::MAX))
    }

    /// Reads and validates a config file, applying environment overrides
    /// from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigProblems> {
        load_file(path, |text| {
            Config::from_toml(text, |k| std::env::var(k).ok())
        })
    }

    /// Parses TOML text and validates it; `env` looks up environment
    /// overrides (tests pass a closure instead of touching the process
    /// environment).
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigProblems> {
        Config::from_raw(parse_toml(text)?, env)
    }

    /// Applies environment overrides and validates, collecting every
    /// problem rather than stopping at the first.
    pub fn from_raw(
        mut raw: RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigProblems> {
        raw.mqtt.apply_env(&env);
        postgres_config::apply_env(&mut raw.postgres, &env);
        loki_config::apply_env(&mut raw.loki, &env);
        let mut problems: Vec<String> = raw.mqtt.problems().into_iter().collect();

        let client_id = match raw.mqtt.client_id.as_deref() {
            Some(id) => {
                if let Err(p) = check_client_id(id) {
                    problems.push(format!("mqtt.client_id: {p}"));
                }
                id.to_owned()
            }
            None => default_client_id(),
        };

        let filter = match raw.consumer.share_group.as_deref() {
            None => sitewatch_wire::topic::FILTER_ALL.to_owned(),
            Some(group) => {
                if let Err(p) = check_share_group(group) {
                    problems.push(format!("consumer.share_group: {p}"));
                }
                format!("$share/{group}/{}", sitewatch_wire::topic::FILTER_ALL)
            }
        };
        if raw.consumer.session_expiry_secs == 0 {
            problems.push(
                "consumer.session_expiry_secs: must be more than 0, or the broker drops \
                 the session (and every queued message) whenever the bridge disconnects"
                    .to_owned(),
            );
        }
        let takeover = raw.consumer.takeover_after_secs;
        if takeover > 0
            && raw.consumer.share_group.is_some()
            && raw.consumer.session_expiry_secs > 0
            && u64::from(takeover) * 2 > u64::from(raw.consumer.session_expiry_secs)
        {
            problems.push(format!(
                "consumer.takeover_after_secs: {takeover} s is more than half of \
                 session_expiry_secs ({} s); the broker would drop a dead bridge's queued \
                 messages before a peer could take them over",
                raw.consumer.session_expiry_secs
            ));
        }

        let postgres = match postgres_config::settings(&raw.postgres) {
            Ok(p) => Some(p),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        };

        let b = &raw.batch;
        if b.max_messages == 0 || b.max_messages > usize::from(u16::MAX) {
            problems.push(format!(
                "batch.max_messages: must be 1 to 65535 (it is also the MQTT Receive \
                 Maximum), not {}",
                b.max_messages
            ));
        }
        if b.in_flight == 0 || b.in_flight > MAX_IN_FLIGHT {
            problems.push(format!(
                "batch.in_flight: must be 1 to {MAX_IN_FLIGHT} (batches written at once, \
                 each on its own database connection), not {}",
                b.in_flight
            ));
        }
        if b.max_wait_ms == 0 || b.max_wait_ms > 60_000 {
            problems.push(format!(
                "batch.max_wait_ms: must be 1 to 60000, not {}",
                b.max_wait_ms
            ));
        }

        let http_listen = match SocketAddr::from_str(raw.http.listen.trim()) {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "http.listen: must be an address and port such as 127.0.0.1:9187, \
                     not {:?}",
                    raw.http.listen
                ));
                None
            }
        };
        if raw.shutdown_timeout_secs == 0 || raw.shutdown_timeout_secs > 3600 {
            problems.push(format!(
                "shutdown_timeout_secs: must be 1 to 3600, not {}",
                raw.shutdown_timeout_secs
            ));
        }

        let loki = match raw.loki.as_ref().map(loki_config::settings) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(mut p)) => {
                problems.append(&mut p);
                None
            }
        };

        let retention = match retention::settings(raw.retention.as_ref()) {
            Ok(r) => Some(r),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        };

        match (postgres, http_listen, retention) {
            (Some(postgres), Some(http_listen), Some(retention)) if problems.is_empty() => {
                Ok(Config {
                    mqtt: raw.mqtt,
                    client_id,
                    filter,
                    session_expiry: Duration::from_secs(u64::from(
                        raw.consumer.session_expiry_secs,
                    )),
                    takeover_after: (raw.consumer.share_group.is_some() && takeover > 0)
                        .then(|| Duration::from_secs(u64::from(takeover))),
                    share_group: raw.consumer.share_group,
                    postgres,
                    batch_max_messages: raw.batch.max_messages,
                    batch_max_wait: Duration::from_millis(raw.batch.max_wait_ms),
                    batch_in_flight: raw.batch.in_flight,
                    http_listen,
                    shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs),
                    loki,
                    max_clock_skew: (raw.clock.max_skew_secs > 0)
                        .then(|| Duration::from_secs(raw.clock.max_skew_secs)),
                    retention,
                })
            }
            _ => Err(ConfigProblems(problems)),
        }
    }
}

fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("must be 1 to 128 characters".to_owned());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(format!(
            "{id:?} may contain only ASCII letters, digits, '-', '_', '.' and ':'"
        ));
    }
    Ok(())
}

fn check_share_group(group: &str) -> Result<(), String> {
    if group.is_empty() {
        return Err("must not be empty (leave it out to disable sharing)".to_owned());
    }
    if group.contains(['/', '+', '#']) {
        return Err(format!("{group:?} must not contain '/', '+' or '#'"));
    }
    Ok(())
}

/// `sitewatch-bridge-<hostname>`, with the host name reduced to characters
/// that [`check_client_id`] accepts.
fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(64)
        .collect();
    if host.is_empty() {
        "sitewatch-bridge".to_owned()
    } else {
        format!("sitewatch-bridge-{host}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The smallest valid file (also used by the sinks' config tests).
    pub(crate) const MINIMAL: &str = r#"
[mqtt]
url = "mqtt://127.0.0.1:1883"

[postgres]
url = "postgresql://sitewatch@127.0.0.1/sitewatch"
"#;

    /// No environment overrides.
    pub(crate) fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn clock_bound_default_explicit_and_off() {
        let c = Config::from_toml(MINIMAL, no_env).expect("valid");
        assert_eq!(c.max_clock_skew, Some(Duration::from_secs(86_400)));
        let c = Config::from_toml(
            &format!("{MINIMAL}\n[clock]\nmax_skew_secs = 300\n"),
            no_env,
        )
        .expect("valid");
        assert_eq!(c.max_clock_skew, Some(Duration::from_secs(300)));
        let c = Config::from_toml(&format!("{MINIMAL}\n[clock]\nmax_skew_secs = 0\n"), no_env)
            .expect("valid");
        assert_eq!(c.max_clock_skew, None);
        assert!(Config::from_toml(&format!("{MINIMAL}\n[clock]\nmax_skew = 1\n"), no_env).is_err());
    }

    #[test]
    fn retention_absent_present_and_invalid() {
        let c = Config::from_toml(MINIMAL, no_env).expect("valid");
        assert_eq!(c.retention, RetentionSettings::keep_forever());
        let c = Config::from_toml(
            &format!("{MINIMAL}\n[retention]\nheartbeats_days = 7\n"),
            no_env,
        )
        .expect("valid");
        assert_eq!(c.retention.days("heartbeats"), Some(7));
        assert_eq!(c.retention.days("smart_readings"), Some(730));
        let text =
            format!("{MINIMAL}\n[retention]\ndisk_usage_days = 0\nmaintenance_interval_secs = 1\n");
        let ConfigProblems(p) = Config::from_toml(&text, no_env).expect_err("invalid");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            Config::from_toml(&format!("{MINIMAL}\n[retention]\nheartbeats = 7\n"), no_env)
                .is_err()
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL, no_env).expect("valid");
        assert!(c.client_id.starts_with("sitewatch-bridge"));
        assert_eq!(c.filter, "sitewatch/v1/+/#");
        assert_eq!(c.session_expiry, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(c.batch_max_messages, 500);
        assert_eq!(c.batch_max_wait, Duration::from_millis(200));
        assert_eq!(c.batch_in_flight, 2);
        assert_eq!(c.receive_maximum(), 1500);
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:9187");
        assert_eq!(
            c.postgres.display,
            "postgresql://sitewatch@127.0.0.1:5432/sitewatch"
        );
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../examples/bridge.toml");
        let c = Config::from_toml(text, no_env).expect("examples/bridge.toml is valid");
        assert_eq!(c.filter, "$share/sitewatch/sitewatch/v1/+/#");
        assert_eq!(c.retention.days("heartbeats"), Some(30));
        let l = c.loki.expect("the example configures Loki");
        assert_eq!(l.push_url, "https://loki.example.com/loki/api/v1/push");
    }

    #[test]
    fn env_overrides_urls() {
        let env = |k: &str| match k {
            "SITEWATCH_POSTGRES_URL" => Some("postgresql://other@db.invalid:6000/x".to_owned()),
            "SITEWATCH_MQTT_URL" => Some("mqtt://127.0.0.2:2000".to_owned()),
            _ => None,
        };
        let c = Config::from_toml(MINIMAL, env).expect("valid");
        assert_eq!(c.postgres.display, "postgresql://other@db.invalid:6000/x");
        assert_eq!(c.mqtt.url, "mqtt://127.0.0.2:2000");
    }

    #[test]
    fn share_group_builds_filter() {
        let text = format!("{MINIMAL}\n[consumer]\nshare_group = \"g1\"\n");
        let c = Config::from_toml(&text, no_env).expect("valid");
        assert_eq!(c.filter, "$share/g1/sitewatch/v1/+/#");
        assert_eq!(c.takeover_after, Some(Duration::from_secs(20)));
    }

    #[test]
    fn takeover_needs_a_share_group_and_a_longer_session() {
        let c = Config::from_toml(MINIMAL, no_env).expect("valid");
        assert_eq!(
            c.takeover_after, None,
            "no share group, nothing to take over"
        );
        let off = format!("{MINIMAL}\n[consumer]\nshare_group = \"g\"\ntakeover_after_secs = 0\n");
        assert_eq!(
            Config::from_toml(&off, no_env)
                .expect("valid")
                .takeover_after,
            None
        );
        let tight = format!(
            "{MINIMAL}\n[consumer]\nshare_group = \"g\"\nsession_expiry_secs = 30\n\
             takeover_after_secs = 20\n"
        );
        let err = Config::from_toml(&tight, no_env)
            .expect_err("expiry too short")
            .to_string();
        assert!(
            err.contains("takeover_after_secs") && err.contains("30 s"),
            "{err}"
        );
    }

    #[test]
    fn reports_every_problem() {
        let text = r#"
shutdown_timeout_secs = 0
[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "bad id"
[consumer]
share_group = "a/b"
session_expiry_secs = 0
[postgres]
url = "postgresql://127.0.0.1/x"
[batch]
max_messages = 70000
max_wait_ms = 0
in_flight = 9
[http]
listen = "nowhere"
"#;
        let ConfigProblems(p) = Config::from_toml(text, no_env).expect_err("invalid");
        let all = p.join("\n");
        for needle in [
            "client_id",
            "share_group",
            "session_expiry_secs",
            "no user",
            "max_messages",
            "max_wait_ms",
            "batch.in_flight: must be 1 to 8",
            "http.listen",
            "shutdown_timeout_secs",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(p.len(), 9, "{all}");
    }

    #[test]
    fn unknown_field_is_named() {
        let text = format!("{MINIMAL}\n[batch]\nmax_mesages = 3\n");
        let ConfigProblems(p) = Config::from_toml(&text, no_env).expect_err("invalid");
        assert!(p[0].contains("max_mesages"), "{p:?}");
    }

    #[test]
    fn client_id_rules() {
        assert!(check_client_id("sitewatch-bridge-a.b_c:1").is_ok());
        assert!(check_client_id("").is_err());
        assert!(check_client_id("a b").is_err());
        assert!(check_client_id(&"a".repeat(129)).is_err());
        assert!(check_client_id(&default_client_id()).is_ok());
    }
}
