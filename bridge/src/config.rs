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
//! This module never opens a socket. The only I/O it does is what
//! [`BrokerConfig::problems`] does (checking that named files are
//! readable), reading `postgres.password_file` and the `[loki]` secret
//! files, checking that `loki.ca_file` is readable, and reading the host
//! name for the default client id.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sitewatch_mqtt::{BrokerConfig, Secret};

/// Environment variable that overrides `postgres.url`.
pub const ENV_POSTGRES_URL: &str = "SITEWATCH_POSTGRES_URL";
/// Environment variable that overrides `loki.url` (and enables Loki when
/// the file has no `[loki]` section).
pub const ENV_LOKI_URL: &str = "SITEWATCH_LOKI_URL";
/// Environment variable that overrides `loki.tenant`.
pub const ENV_LOKI_TENANT: &str = "SITEWATCH_LOKI_TENANT";
/// Environment variable that overrides `loki.username`.
pub const ENV_LOKI_USERNAME: &str = "SITEWATCH_LOKI_USERNAME";
/// Environment variable that overrides `loki.password` (and replaces
/// `loki.password_file`).
pub const ENV_LOKI_PASSWORD: &str = "SITEWATCH_LOKI_PASSWORD";
/// Environment variable that overrides `loki.bearer_token` (and replaces
/// `loki.bearer_token_file`).
pub const ENV_LOKI_BEARER_TOKEN: &str = "SITEWATCH_LOKI_BEARER_TOKEN";

/// Loki's push path, appended to `loki.url`.
pub const LOKI_PUSH_PATH: &str = "/loki/api/v1/push";

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

/// `[postgres]`: database settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    /// libpq-style URL or key/value string, e.g.
    /// `postgresql://sitewatch@db.example/sitewatch`. Overridden by the
    /// environment variable `SITEWATCH_POSTGRES_URL`.
    #[serde(default)]
    pub url: Option<String>,
    /// File whose first line is the password (keeps it out of the URL).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Timeout for establishing a connection.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Longest one batch transaction may take; after that the connection
    /// is dropped and the batch retried.
    #[serde(default = "default_write_timeout_secs")]
    pub write_timeout_secs: u64,
    /// Create or upgrade the schema at start (needs an account that owns
    /// the schema). `false` for a least-privilege account (a member of
    /// `sitewatch_writer`): the bridge then only checks that the schema is
    /// current and an admin runs `sitewatch-bridge migrate` with the owner.
    #[serde(default = "default_true")]
    pub migrate: bool,
}

fn default_true() -> bool {
    true
}

/// `[batch]`: how many messages go into one transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// Most messages per transaction. Also the MQTT Receive Maximum: the
    /// broker never has more unacknowledged messages in flight to us.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Longest a message waits for its batch to fill up.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            max_messages: default_max_messages(),
            max_wait_ms: default_max_wait_ms(),
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

/// `[loki]`: Grafana Loki push settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoki {
    /// Base URL, e.g. `https://loki.example.com` or
    /// `http://127.0.0.1:3100` (`/loki/api/v1/push` is appended unless the
    /// URL already ends with it). Overridden by `SITEWATCH_LOKI_URL`.
    #[serde(default)]
    pub url: Option<String>,
    /// Tenant sent as `X-Scope-OrgID` (multi-tenant Loki).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Basic auth user name (needs a password).
    #[serde(default)]
    pub username: Option<String>,
    /// Basic auth password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File whose first line is the basic auth password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Bearer token (instead of basic auth).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// File whose first line is the bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// PEM CA certificate(s) for `https://`; default: the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allows `http://` to a host that is not this machine.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Longest one push request may take (connect, send, answer).
    #[serde(default = "default_loki_timeout_secs")]
    pub timeout_secs: u64,
    /// Largest difference between a device's own timestamp and the
    /// agent's receive time for the device time to be used.
    #[serde(default = "default_loki_max_clock_skew_secs")]
    pub max_clock_skew_secs: u64,
    /// Entries older than this (by the bridge's clock) get the bridge's
    /// receive time instead; keep below Loki's
    /// `reject_old_samples_max_age` (default 7 days).
    #[serde(default = "default_loki_max_age_secs")]
    pub max_age_secs: u64,
    /// Target size of one push request before compression.
    #[serde(default = "default_loki_max_push_bytes")]
    pub max_push_bytes: usize,
    /// Lines longer than this are cut (Loki's `max_line_size`, default
    /// 256 KiB, refuses them otherwise).
    #[serde(default = "default_loki_max_line_bytes")]
    pub max_line_bytes: usize,
    /// First retry delay after a failed push.
    #[serde(default = "default_loki_min_backoff_ms")]
    pub min_backoff_ms: u64,
    /// Longest retry delay (a `Retry-After` from Loki may ask for more,
    /// up to 5 minutes).
    #[serde(default = "default_loki_max_backoff_secs")]
    pub max_backoff_secs: u64,
}

impl Default for RawLoki {
    fn default() -> Self {
        RawLoki {
            url: None,
            tenant: None,
            username: None,
            password: None,
            password_file: None,
            bearer_token: None,
            bearer_token_file: None,
            ca_file: None,
            allow_plaintext: false,
            timeout_secs: default_loki_timeout_secs(),
            max_clock_skew_secs: default_loki_max_clock_skew_secs(),
            max_age_secs: default_loki_max_age_secs(),
            max_push_bytes: default_loki_max_push_bytes(),
            max_line_bytes: default_loki_max_line_bytes(),
            min_backoff_ms: default_loki_min_backoff_ms(),
            max_backoff_secs: default_loki_max_backoff_secs(),
        }
    }
}

fn default_loki_timeout_secs() -> u64 {
    10
}
fn default_loki_max_clock_skew_secs() -> u64 {
    600
}
fn default_loki_max_age_secs() -> u64 {
    7 * 24 * 3600 - 3600
}
fn default_loki_max_push_bytes() -> usize {
    1024 * 1024
}
fn default_loki_max_line_bytes() -> usize {
    256 * 1024
}
fn default_loki_min_backoff_ms() -> u64 {
    500
}
fn default_loki_max_backoff_secs() -> u64 {
    30
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
fn default_connect_timeout_secs() -> u64 {
    5
}
fn default_write_timeout_secs() -> u64 {
    30
}
fn default_max_messages() -> usize {
    500
}
fn default_max_wait_ms() -> u64 {
    200
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
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Graceful shutdown deadline.
    pub shutdown_timeout: Duration,
    /// Loki, when configured; `None`: log batches are rejected as
    /// `no_log_sink`.
    pub loki: Option<LokiSettings>,
    /// See [`RawClock::max_skew_secs`]; `None` when 0 (no correction).
    pub max_clock_skew: Option<Duration>,
}

/// How the bridge authenticates to Loki.
#[derive(Debug, Clone, PartialEq)]
pub enum LokiAuth {
    /// No `Authorization` header.
    None,
    /// HTTP basic auth.
    Basic {
        /// User name.
        username: String,
        /// Password (redacted in `Debug`).
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// Validated Loki settings. `Debug` never shows a secret.
#[derive(Debug, Clone)]
pub struct LokiSettings {
    /// Full push URL (`.../loki/api/v1/push`); holds no credentials.
    pub push_url: String,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
    /// Credentials.
    pub auth: LokiAuth,
    /// CA file for `https://`.
    pub ca_file: Option<PathBuf>,
    /// Longest one request may take.
    pub timeout: Duration,
    /// See [`RawLoki::max_clock_skew_secs`].
    pub max_clock_skew: Duration,
    /// See [`RawLoki::max_age_secs`].
    pub max_age: Duration,
    /// See [`RawLoki::max_push_bytes`].
    pub max_push_bytes: usize,
    /// See [`RawLoki::max_line_bytes`].
    pub max_line_bytes: usize,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

/// Validated database settings.
#[derive(Clone)]
pub struct PostgresSettings {
    /// Parsed connection settings (may hold a password: never log this).
    pub config: tokio_postgres::Config,
    /// `user@host:port/dbname`, safe to log.
    pub display: String,
    /// Longest one batch transaction may take.
    pub write_timeout: Duration,
    /// Run migrations at start (else only verify the schema version).
    pub migrate: bool,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &self.display)
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

/// Every problem found in a configuration, in plain words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigProblems(pub Vec<String>);

impl Config {
    /// Reads and validates a config file, applying environment overrides
    /// from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigProblems> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigProblems(vec![format!("cannot read {}: {e}", path.display())]))?;
        Config::from_toml(&text, |k| std::env::var(k).ok()).map_err(|ConfigProblems(p)| {
            ConfigProblems(
                p.into_iter()
                    .map(|m| format!("{}: {m}", path.display()))
                    .collect(),
            )
        })
    }

    /// Parses TOML text and validates it; `env` looks up environment
    /// overrides (tests pass a closure instead of touching the process
    /// environment).
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigProblems> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigProblems(vec![format!(
                "not a valid config: {}",
                e.to_string().trim()
            )])
        })?;
        Config::from_raw(raw, env)
    }

    /// Applies environment overrides and validates, collecting every
    /// problem rather than stopping at the first.
    pub fn from_raw(
        mut raw: RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigProblems> {
        raw.mqtt.apply_env(&env);
        if let Some(url) = env(ENV_POSTGRES_URL).filter(|u| !u.trim().is_empty()) {
            raw.postgres.url = Some(url);
        }
        apply_loki_env(&mut raw.loki, &env);
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

        let postgres = match postgres_settings(&raw.postgres) {
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

        let loki = match raw.loki.as_ref().map(loki_settings) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(mut p)) => {
                problems.append(&mut p);
                None
            }
        };

        match (postgres, http_listen) {
            (Some(postgres), Some(http_listen)) if problems.is_empty() => Ok(Config {
                mqtt: raw.mqtt,
                client_id,
                filter,
                session_expiry: Duration::from_secs(u64::from(raw.consumer.session_expiry_secs)),
                takeover_after: (raw.consumer.share_group.is_some() && takeover > 0)
                    .then(|| Duration::from_secs(u64::from(takeover))),
                share_group: raw.consumer.share_group,
                postgres,
                batch_max_messages: raw.batch.max_messages,
                batch_max_wait: Duration::from_millis(raw.batch.max_wait_ms),
                http_listen,
                shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs),
                loki,
                max_clock_skew: (raw.clock.max_skew_secs > 0)
                    .then(|| Duration::from_secs(raw.clock.max_skew_secs)),
            }),
            _ => Err(ConfigProblems(problems)),
        }
    }
}

fn postgres_settings(raw: &RawPostgres) -> Result<PostgresSettings, Vec<String>> {
    let mut problems = Vec::new();
    let url = match raw.url.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(vec![format!(
                "postgres.url: missing; set it in the file or in {ENV_POSTGRES_URL}"
            )])
        }
    };
    let mut config = match tokio_postgres::Config::from_str(url) {
        Ok(c) => c,
        // The parser's message never echoes the password.
        Err(e) => return Err(vec![format!("postgres.url: not valid: {e}")]),
    };
    if config.get_hosts().is_empty() {
        problems.push("postgres.url: names no host".to_owned());
    }
    if config.get_user().is_none() {
        problems.push("postgres.url: names no user (e.g. postgresql://sitewatch@host/db)".into());
    }
    if matches!(
        config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    ) || url.contains("sslmode=verify")
    {
        problems.push(
            "postgres.url: TLS to PostgreSQL is not supported by this build; use a local \
             socket, a loopback address or a TLS tunnel, and sslmode=prefer or disable"
                .to_owned(),
        );
    }
    if let Some(file) = &raw.password_file {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let pw = text.lines().next().unwrap_or_default().trim();
                if pw.is_empty() {
                    problems.push(format!(
                        "postgres.password_file: {} is empty",
                        file.display()
                    ));
                }
                config.password(pw);
            }
            Err(e) => problems.push(format!(
                "postgres.password_file: cannot read {}: {e}",
                file.display()
            )),
        }
    }
    if raw.connect_timeout_secs == 0 || raw.connect_timeout_secs > 600 {
        problems.push(format!(
            "postgres.connect_timeout_secs: must be 1 to 600, not {}",
            raw.connect_timeout_secs
        ));
    }
    if raw.write_timeout_secs == 0 || raw.write_timeout_secs > 3600 {
        problems.push(format!(
            "postgres.write_timeout_secs: must be 1 to 3600, not {}",
            raw.write_timeout_secs
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    config.connect_timeout(Duration::from_secs(raw.connect_timeout_secs));
    config.application_name("sitewatch-bridge");
    Ok(PostgresSettings {
        display: redacted(&config),
        config,
        write_timeout: Duration::from_secs(raw.write_timeout_secs),
        migrate: raw.migrate,
    })
}

fn apply_loki_env(loki: &mut Option<RawLoki>, env: &impl Fn(&str) -> Option<String>) {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if let Some(url) = get(ENV_LOKI_URL) {
        loki.get_or_insert_with(RawLoki::default).url = Some(url);
    }
    let Some(l) = loki.as_mut() else {
        return;
    };
    if let Some(t) = get(ENV_LOKI_TENANT) {
        l.tenant = Some(t);
    }
    if let Some(u) = get(ENV_LOKI_USERNAME) {
        l.username = Some(u);
    }
    if let Some(p) = get(ENV_LOKI_PASSWORD) {
        l.password = Some(Secret::new(p));
        l.password_file = None;
    }
    if let Some(t) = get(ENV_LOKI_BEARER_TOKEN) {
        l.bearer_token = Some(Secret::new(t));
        l.bearer_token_file = None;
    }
}

/// First line of a secret file, trimmed; problems in plain words.
fn read_secret_file(key: &str, file: &Path, problems: &mut Vec<String>) -> Option<Secret> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let v = text.lines().next().unwrap_or_default().trim();
            if v.is_empty() {
                problems.push(format!("{key}: {} is empty", file.display()));
                None
            } else {
                Some(Secret::new(v))
            }
        }
        Err(e) => {
            problems.push(format!("{key}: cannot read {}: {e}", file.display()));
            None
        }
    }
}

/// The push URL from `loki.url`, or a problem.
pub fn loki_push_url(url: &str, allow_plaintext: bool) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "loki.url: must start with http:// or https://, not {url:?}"
        ));
    };
    if rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "loki.url: {url:?} must have no query, fragment or spaces"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(
            "loki.url: must not hold credentials; use loki.username and loki.password_file"
                .to_owned(),
        );
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(format!("loki.url: {url:?} names no host"));
    }
    if let Some((_, port)) = authority
        .rsplit_once(':')
        .filter(|_| !authority.ends_with(']'))
    {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("loki.url: {port:?} is not a valid port"));
        }
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !tls && !loopback && !allow_plaintext {
        return Err(format!(
            "loki.url: refusing plain http:// to {host} (logs and credentials would cross \
             the network in clear text); use https:// or set loki.allow_plaintext = true"
        ));
    }
    let full = if path.ends_with(LOKI_PUSH_PATH) {
        url.to_owned()
    } else {
        format!("{url}{LOKI_PUSH_PATH}")
    };
    if full.parse::<hyper::Uri>().is_err() {
        return Err(format!("loki.url: {url:?} is not a valid URL"));
    }
    Ok(full)
}

/// Loki's rule for tenant ids (`tenant.ValidTenantID`): 1 to 150 of
/// `[a-zA-Z0-9!-_.*'()]`, not `.` or `..`.
fn check_tenant(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 150 || t == "." || t == ".." {
        return Err(format!("{t:?} must be 1 to 150 characters and not . or .."));
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b))
    {
        return Err(format!(
            "{t:?} may contain only ASCII letters, digits and ! - _ . * ' ( )"
        ));
    }
    Ok(())
}

fn loki_settings(raw: &RawLoki) -> Result<LokiSettings, Vec<String>> {
    let mut problems = Vec::new();
    let push_url = match raw.url.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => match loki_push_url(u, raw.allow_plaintext) {
            Ok(u) => Some(u),
            Err(p) => {
                problems.push(p);
                None
            }
        },
        _ => {
            problems.push(format!(
                "loki.url: missing; set it in the file or in {ENV_LOKI_URL}, or remove the \
                 [loki] section (log batches are then rejected as no_log_sink)"
            ));
            None
        }
    };
    if let Some(t) = &raw.tenant {
        if let Err(p) = check_tenant(t) {
            problems.push(format!("loki.tenant: {p}"));
        }
    }
    let password = match (&raw.password, &raw.password_file) {
        (Some(_), Some(_)) => {
            problems.push("loki.password and loki.password_file are both set; keep one".into());
            None
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => read_secret_file("loki.password_file", f, &mut problems),
        (None, None) => None,
    };
    let token = match (&raw.bearer_token, &raw.bearer_token_file) {
        (Some(_), Some(_)) => {
            problems
                .push("loki.bearer_token and loki.bearer_token_file are both set; keep one".into());
            None
        }
        (Some(t), None) => Some(t.clone()),
        (None, Some(f)) => read_secret_file("loki.bearer_token_file", f, &mut problems),
        (None, None) => None,
    };
    let basic_wanted =
        raw.username.is_some() || raw.password.is_some() || raw.password_file.is_some();
    let bearer_wanted = raw.bearer_token.is_some() || raw.bearer_token_file.is_some();
    let auth = if basic_wanted && bearer_wanted {
        problems.push(
            "loki: set either username and password (basic auth) or bearer_token, not both".into(),
        );
        LokiAuth::None
    } else if bearer_wanted {
        // A missing or empty token file is already reported.
        token.map_or(LokiAuth::None, LokiAuth::Bearer)
    } else if basic_wanted {
        match (&raw.username, password) {
            (None, _) => {
                problems.push("loki: a password is set but no loki.username".into());
                LokiAuth::None
            }
            (Some(u), _) if u.is_empty() || u.contains(':') => {
                problems.push("loki.username: must be non-empty and contain no ':'".into());
                LokiAuth::None
            }
            (Some(_), None) => {
                if raw.password.is_none() && raw.password_file.is_none() {
                    problems.push(
                        "loki.username is set but no password; set loki.password_file (or \
                         SITEWATCH_LOKI_PASSWORD)"
                            .into(),
                    );
                }
                LokiAuth::None
            }
            (Some(u), Some(p)) => LokiAuth::Basic {
                username: u.clone(),
                password: p,
            },
        }
    } else {
        LokiAuth::None
    };
    if let Some(ca) = &raw.ca_file {
        if let Err(e) = std::fs::metadata(ca) {
            problems.push(format!("loki.ca_file: cannot read {}: {e}", ca.display()));
        }
    }
    let range = |problems: &mut Vec<String>, key: &str, v: u64, lo: u64, hi: u64| {
        if v < lo || v > hi {
            problems.push(format!("loki.{key}: must be {lo} to {hi}, not {v}"));
        }
    };
    range(&mut problems, "timeout_secs", raw.timeout_secs, 1, 300);
    range(
        &mut problems,
        "max_clock_skew_secs",
        raw.max_clock_skew_secs,
        0,
        7 * 86_400,
    );
    range(
        &mut problems,
        "max_age_secs",
        raw.max_age_secs,
        3600,
        365 * 86_400,
    );
    range(
        &mut problems,
        "max_push_bytes",
        u64::try_from(raw.max_push_bytes).unwrap_or(u64::MAX),
        16 * 1024,
        64 * 1024 * 1024,
    );
    range(
        &mut problems,
        "max_line_bytes",
        u64::try_from(raw.max_line_bytes).unwrap_or(u64::MAX),
        1024,
        16 * 1024 * 1024,
    );
    range(
        &mut problems,
        "min_backoff_ms",
        raw.min_backoff_ms,
        10,
        60_000,
    );
    range(
        &mut problems,
        "max_backoff_secs",
        raw.max_backoff_secs,
        1,
        3600,
    );
    if raw.max_backoff_secs.saturating_mul(1000) < raw.min_backoff_ms {
        problems.push("loki.max_backoff_secs: must not be below loki.min_backoff_ms".into());
    }
    match push_url {
        Some(push_url) if problems.is_empty() => Ok(LokiSettings {
            push_url,
            tenant: raw.tenant.clone(),
            auth,
            ca_file: raw.ca_file.clone(),
            timeout: Duration::from_secs(raw.timeout_secs),
            max_clock_skew: Duration::from_secs(raw.max_clock_skew_secs),
            max_age: Duration::from_secs(raw.max_age_secs),
            max_push_bytes: raw.max_push_bytes,
            max_line_bytes: raw.max_line_bytes,
            min_backoff: Duration::from_millis(raw.min_backoff_ms),
            max_backoff: Duration::from_secs(raw.max_backoff_secs),
        }),
        _ => Err(problems),
    }
}

/// `user@host:port/dbname` without the password.
pub fn redacted(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgresql://{}@{}/{}",
        config.get_user().unwrap_or("?"),
        hosts.join(","),
        config
            .get_dbname()
            .unwrap_or_else(|| config.get_user().unwrap_or(""))
    )
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
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[mqtt]
url = "mqtt://127.0.0.1:1883"

[postgres]
url = "postgresql://sitewatch@127.0.0.1/sitewatch"
"#;

    fn no_env(_: &str) -> Option<String> {
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
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL, no_env).expect("valid");
        assert!(c.client_id.starts_with("sitewatch-bridge"));
        assert_eq!(c.filter, "sitewatch/v1/+/#");
        assert_eq!(c.session_expiry, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(c.batch_max_messages, 500);
        assert_eq!(c.batch_max_wait, Duration::from_millis(200));
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
            "http.listen",
            "shutdown_timeout_secs",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(p.len(), 8, "{all}");
    }

    #[test]
    fn unknown_field_is_named() {
        let text = format!("{MINIMAL}\n[batch]\nmax_mesages = 3\n");
        let ConfigProblems(p) = Config::from_toml(&text, no_env).expect_err("invalid");
        assert!(p[0].contains("max_mesages"), "{p:?}");
    }

    #[test]
    fn missing_postgres_url_is_reported() {
        let text = "[mqtt]\nurl = \"mqtt://127.0.0.1\"\n";
        let ConfigProblems(p) = Config::from_toml(text, no_env).expect_err("invalid");
        assert!(
            p.iter().any(|m| m.contains("SITEWATCH_POSTGRES_URL")),
            "{p:?}"
        );
    }

    #[test]
    fn password_never_in_display_or_debug() {
        let text = MINIMAL.replace("sitewatch@", "sitewatch:hunter2@");
        let c = Config::from_toml(&text, no_env).expect("valid");
        assert!(!c.postgres.display.contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn password_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        let text = format!(
            "{MINIMAL}password_file = {:?}\n",
            file.display().to_string()
        );
        let c = Config::from_toml(&text, no_env).expect("valid");
        assert_eq!(c.postgres.config.get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn no_loki_section_means_no_loki() {
        let c = Config::from_toml(MINIMAL, no_env).expect("valid");
        assert!(c.loki.is_none());
    }

    #[test]
    fn loki_section_defaults_and_push_url() {
        let text = format!("{MINIMAL}\n[loki]\nurl = \"https://loki.example.com/\"\n");
        let c = Config::from_toml(&text, no_env).expect("valid");
        let l = c.loki.expect("loki");
        assert_eq!(l.push_url, "https://loki.example.com/loki/api/v1/push");
        assert_eq!(l.auth, LokiAuth::None);
        assert_eq!(l.tenant, None);
        assert_eq!(l.timeout, Duration::from_secs(10));
        assert_eq!(l.max_clock_skew, Duration::from_secs(600));
        assert_eq!(l.max_line_bytes, 256 * 1024);
        assert_eq!(l.max_push_bytes, 1024 * 1024);
        for (url, want) in [
            (
                "http://127.0.0.1:3100",
                "http://127.0.0.1:3100/loki/api/v1/push",
            ),
            (
                "http://localhost:3100/loki/api/v1/push",
                "http://localhost:3100/loki/api/v1/push",
            ),
            (
                "https://gw.example/loki",
                "https://gw.example/loki/loki/api/v1/push",
            ),
            ("http://[::1]:3100", "http://[::1]:3100/loki/api/v1/push"),
        ] {
            assert_eq!(loki_push_url(url, false).as_deref(), Ok(want), "{url}");
        }
        for bad in [
            "loki.example.com",
            "ftp://loki",
            "http://loki.example.com:3100",
            "https://user:pw@loki.example.com",
            "https://loki.example.com?x=1",
            "https://:3100",
            "http://127.0.0.1:99999",
        ] {
            assert!(loki_push_url(bad, false).is_err(), "{bad} must be refused");
        }
        assert!(loki_push_url("http://loki.internal:3100", true).is_ok());
    }

    #[test]
    fn loki_env_enables_and_overrides() {
        let env = |k: &str| match k {
            "SITEWATCH_LOKI_URL" => Some("http://127.0.0.1:3100".to_owned()),
            "SITEWATCH_LOKI_TENANT" => Some("ops".to_owned()),
            "SITEWATCH_LOKI_BEARER_TOKEN" => Some("t0ken".to_owned()),
            _ => None,
        };
        let c = Config::from_toml(MINIMAL, env).expect("valid");
        let l = c.loki.expect("enabled by the environment");
        assert_eq!(l.push_url, "http://127.0.0.1:3100/loki/api/v1/push");
        assert_eq!(l.tenant.as_deref(), Some("ops"));
        assert_eq!(l.auth, LokiAuth::Bearer(Secret::new("t0ken")));
        let debug = format!("{l:?}");
        assert!(!debug.contains("t0ken"), "{debug}");
    }

    #[test]
    fn loki_basic_auth_from_file_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").expect("write");
        let text = format!(
            "{MINIMAL}\n[loki]\nurl = \"https://loki.example.com\"\nusername = \"sw\"\n\
             password_file = {:?}\n",
            file.display().to_string()
        );
        let c = Config::from_toml(&text, no_env).expect("valid");
        let l = c.loki.expect("loki");
        assert_eq!(
            l.auth,
            LokiAuth::Basic {
                username: "sw".into(),
                password: Secret::new("hunter2")
            }
        );
        assert!(!format!("{l:?}").contains("hunter2"));
    }

    #[test]
    fn loki_reports_every_problem() {
        let text = format!(
            "{MINIMAL}\n[loki]\nurl = \"http://loki.example.com\"\ntenant = \"a b\"\n\
             username = \"u\"\nbearer_token = \"t\"\npassword_file = \"/nonexistent/pw\"\n\
             ca_file = \"/nonexistent/ca.pem\"\ntimeout_secs = 0\nmax_push_bytes = 10\n\
             max_line_bytes = 0\nmin_backoff_ms = 5000\nmax_backoff_secs = 1\n"
        );
        let ConfigProblems(p) = Config::from_toml(&text, no_env).expect_err("invalid");
        let all = p.join("\n");
        for needle in [
            "refusing plain http://",
            "loki.tenant",
            "either username and password",
            "loki.password_file: cannot read",
            "loki.ca_file",
            "loki.timeout_secs",
            "loki.max_push_bytes",
            "loki.max_line_bytes",
            "must not be below loki.min_backoff_ms",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let text = format!("{MINIMAL}\n[loki]\nusername = \"u\"\n");
        let ConfigProblems(p) = Config::from_toml(&text, no_env).expect_err("invalid");
        let all = p.join("\n");
        assert!(all.contains("loki.url: missing"), "{all}");
        assert!(all.contains("no password"), "{all}");
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
