//! `sitewatch-live` configuration: TOML file, raw then validated.
//!
//! As everywhere in sitewatch:
//! 1. [`RawConfig`]: what serde reads (`deny_unknown_fields`, defaults as
//!    `default_*` functions, units in every duration name);
//! 2. [`Config::from_raw`]: validation that collects *every* problem in
//!    plain words (what `sitewatch-live check` prints) and builds typed
//!    settings;
//! 3. the I/O modules use a [`Config`].
//!
//! This module never opens a socket. The only I/O it does is reading the
//! password files (`sites.password_file`, `postgres.password_file`).
//! Passwords live in [`Secret`], whose `Debug` prints nothing, and camera
//! URLs never carry credentials (a URL with `user:pass@` is refused), so a
//! URL can be logged and shown as it is.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sitewatch_bridge::sink::postgres::config::{self as pg_config, PostgresSettings, RawPostgres};

/// Most sites in one file (a bound on the work `check` and the prober do).
pub const MAX_SITES: usize = 10_000;
/// Most cameras per site.
pub const MAX_CAMERAS_PER_SITE: usize = 256;
/// Longest password file read (only the first line is used).
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

/// The whole file, as read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// HTTP listener (`/healthz`, `/metrics`).
    #[serde(default)]
    pub http: RawHttp,
    /// The bridge's database (same section and rules as the bridge's
    /// `[postgres]`; `migrate` is ignored: the bridge owns the schema).
    #[serde(default)]
    pub postgres: RawPostgres,
    /// The reachability probe.
    #[serde(default)]
    pub probe: RawProbe,
    /// Live-view session limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Who may watch (live view and the page). Without it every request
    /// but `/healthz` and `/metrics` answers 401: no anonymous access.
    #[serde(default)]
    pub auth: RawAuth,
    /// How the centre reaches each site's cameras.
    #[serde(default)]
    pub sites: Vec<RawSite>,
}

/// `[auth]`: who may watch.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// File whose first line is the viewer token (at least 16
    /// characters), sent as `Authorization: Bearer TOKEN`, or once as
    /// `/?token=TOKEN` (which sets an HttpOnly cookie).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A header set by an authenticating reverse proxy (e.g.
    /// `X-WEBAUTH-USER`); a request carrying it is let in. Only for a
    /// service reachable through that proxy alone (listen on loopback).
    #[serde(default)]
    pub trusted_header: Option<String>,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Listen address, `host:port`; port 0 picks a free one (logged).
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

/// `[probe]`: the centre-side reachability check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// Probe every camera once per interval; the cameras are spread
    /// evenly over it. 0 turns the probe off.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
    /// Most probes running at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// DNS lookup timeout.
    #[serde(default = "default_dns_timeout_ms")]
    pub dns_timeout_ms: u64,
    /// TCP connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest the RTSP DESCRIBE (with its authentication round) may take.
    #[serde(default = "default_rtsp_timeout_ms")]
    pub rtsp_timeout_ms: u64,
    /// A camera that keeps failing is probed less often: after its second
    /// failure in a row every 2, then 4, ... intervals, at most this long
    /// apart; back to every interval after an `ok`. 0: every interval.
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: u64,
    /// After a good DESCRIBE, also PLAY for this long and expect a video
    /// frame (`no_frames` when none comes). 0: off (DESCRIBE only).
    #[serde(default)]
    pub play_secs: u64,
}

impl Default for RawProbe {
    fn default() -> Self {
        RawProbe {
            interval_secs: default_interval_secs(),
            concurrency: default_concurrency(),
            dns_timeout_ms: default_dns_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            rtsp_timeout_ms: default_rtsp_timeout_ms(),
            backoff_max_secs: default_backoff_max_secs(),
            play_secs: 0,
        }
    }
}

/// `[limits]`: concurrent live-view sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Most RTSP sessions open at once, all sites together.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// Most RTSP sessions per site (its uplink is small), unless the site
    /// sets `max_sessions`.
    #[serde(default = "default_sessions_per_site")]
    pub sessions_per_site: usize,
    /// A session with no viewer for this long is closed.
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            sessions: default_sessions(),
            sessions_per_site: default_sessions_per_site(),
            idle_secs: default_idle_secs(),
        }
    }
}

/// `[[sites]]`: one site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// Site id, as its agent publishes it (wire rules).
    pub site: String,
    /// Public host name of the site's router (DDNS), or an address.
    pub host: String,
    /// Default RTSP port of its cameras (the router's port forward).
    #[serde(default = "default_rtsp_port")]
    pub port: u16,
    /// URL for cameras without `path`: `rtsp://` with the placeholders
    /// `{host}`, `{port}`, `{channel}` and `{camera}`.
    #[serde(default)]
    pub url_template: Option<String>,
    /// RTSP user name (a viewer account on the NVR).
    #[serde(default)]
    pub username: Option<String>,
    /// File whose first line is the RTSP password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Name of an environment variable that holds the RTSP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Most live sessions for this site (default `limits.sessions_per_site`).
    #[serde(default)]
    pub max_sessions: Option<usize>,
    /// The site's cameras.
    #[serde(default)]
    pub cameras: Vec<RawCamera>,
}

/// `[[sites.cameras]]`: one camera.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCamera {
    /// Camera name, as the agent publishes it (`stream/{camera}`).
    pub camera: String,
    /// Port, when not the site's.
    #[serde(default)]
    pub port: Option<u16>,
    /// Path and query on the host, e.g. `/Streaming/Channels/102`. Without
    /// it the site's `url_template` is used.
    #[serde(default)]
    pub path: Option<String>,
    /// `{channel}` in the site's `url_template`.
    #[serde(default)]
    pub channel: Option<u32>,
}

fn default_http_listen() -> String {
    "127.0.0.1:9188".to_owned()
}
fn default_interval_secs() -> u64 {
    300
}
fn default_concurrency() -> usize {
    8
}
fn default_dns_timeout_ms() -> u64 {
    3000
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
fn default_rtsp_timeout_ms() -> u64 {
    5000
}
fn default_backoff_max_secs() -> u64 {
    // 20 min: a failing camera still has a probe inside the 30-minute
    // window of the alert "Cameras unreachable from the centre".
    1200
}
fn default_sessions() -> usize {
    16
}
fn default_sessions_per_site() -> usize {
    2
}
fn default_idle_secs() -> u64 {
    30
}
fn default_rtsp_port() -> u16 {
    554
}

/// A password. `Debug` and `Display` print `***`, so it cannot leak
/// through a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    /// The password itself, for the RTSP client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// RTSP credentials of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// Validated `[probe]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Period; `None`: probe off.
    pub interval: Option<Duration>,
    /// Most probes at once (1..=256).
    pub concurrency: usize,
    /// DNS timeout.
    pub dns_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// RTSP DESCRIBE timeout.
    pub rtsp_timeout: Duration,
    /// Longest gap between probes of a failing camera; zero: no backoff.
    pub backoff_max: Duration,
    /// Short PLAY after DESCRIBE, if on.
    pub play: Option<Duration>,
}

/// Validated `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most sessions, all sites.
    pub sessions: usize,
    /// Idle time before a session closes.
    pub idle: Duration,
}

/// One camera the centre can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Camera {
    /// Camera name (wire rules).
    pub name: String,
    /// RTSP URL, without credentials (safe to log and show).
    pub url: url::Url,
    /// Host to resolve (the URL's).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// One site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Site id (wire rules).
    pub id: String,
    /// Public host (DDNS name).
    pub host: String,
    /// RTSP credentials, if the cameras need them.
    pub credentials: Option<Credentials>,
    /// Most live sessions at once.
    pub max_sessions: usize,
    /// Cameras.
    pub cameras: Vec<Camera>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Database (the bridge's).
    pub postgres: PostgresSettings,
    /// Probe settings.
    pub probe: ProbeSettings,
    /// Session limits.
    pub limits: Limits,
    /// Viewer token, if configured.
    pub token: Option<Secret>,
    /// Trusted reverse-proxy header (lowercase), if configured.
    pub trusted_header: Option<String>,
    /// Sites, in file order.
    pub sites: Vec<Site>,
}

/// Every problem found in a configuration, in plain words (the bridge's
/// type: both services report config problems the same way).
pub use sitewatch_bridge::config::ConfigProblems;

impl Config {
    /// Reads and validates a file; environment variables named by
    /// `password_env` and `SITEWATCH_POSTGRES_URL` come from the process.
    pub fn load(path: &Path) -> Result<Config, ConfigProblems> {
        sitewatch_bridge::config::load_file(path, |text| {
            Config::from_toml(text, |k| std::env::var(k).ok())
        })
    }

    /// Parses TOML text and validates it; `env` looks up environment
    /// variables (tests pass a closure).
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigProblems> {
        Config::from_raw(sitewatch_bridge::config::parse_toml(text)?, env)
    }

    /// Validates, collecting every problem rather than stopping at the
    /// first.
    pub fn from_raw(
        mut raw: RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigProblems> {
        let mut problems = Vec::new();
        pg_config::apply_env(&mut raw.postgres, &env);
        let postgres = match pg_config::settings(&raw.postgres) {
            Ok(p) => Some(p),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        };
        let http_listen = match SocketAddr::from_str(raw.http.listen.trim()) {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "http.listen: must be an address and port such as 127.0.0.1:9188, not {:?}",
                    raw.http.listen
                ));
                None
            }
        };
        let probe = probe_settings(&raw.probe, &mut problems);
        let l = &raw.limits;
        if l.sessions == 0 || l.sessions > 1024 {
            problems.push(format!(
                "limits.sessions: must be 1 to 1024, not {}",
                l.sessions
            ));
        }
        if l.sessions_per_site == 0 || l.sessions_per_site > 64 {
            problems.push(format!(
                "limits.sessions_per_site: must be 1 to 64, not {}",
                l.sessions_per_site
            ));
        }
        if l.idle_secs == 0 || l.idle_secs > 3600 {
            problems.push(format!(
                "limits.idle_secs: must be 1 to 3600, not {}",
                l.idle_secs
            ));
        }
        if raw.sites.len() > MAX_SITES {
            problems.push(format!(
                "sites: at most {MAX_SITES} sites, not {}",
                raw.sites.len()
            ));
        }
        let token = match &raw.auth.token_file {
            None => None,
            Some(path) => match read_password_file(path) {
                Ok(t) if t.len() >= 16 => Some(Secret::new(t)),
                Ok(_) => {
                    problems.push(format!(
                        "auth.token_file: the token in {} must be at least 16 characters",
                        path.display()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("auth.token_file: {e}"));
                    None
                }
            },
        };
        let trusted_header = match raw.auth.trusted_header.as_deref().map(str::trim) {
            None => None,
            Some(h)
                if !h.is_empty()
                    && h.len() <= 64
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                Some(h.to_ascii_lowercase())
            }
            Some(h) => {
                problems.push(format!(
                    "auth.trusted_header: must be a header name such as X-WEBAUTH-USER, not {h:?}"
                ));
                None
            }
        };
        let mut seen = HashSet::new();
        let mut sites = Vec::new();
        for (i, s) in raw.sites.iter().enumerate().take(MAX_SITES) {
            if let Some(site) = site(i, s, l.sessions_per_site, &env, &mut problems) {
                if !seen.insert(site.id.clone()) {
                    problems.push(format!("sites[{i}]: site {:?} appears twice", site.id));
                }
                sites.push(site);
            }
        }
        match (postgres, http_listen) {
            (Some(postgres), Some(http_listen)) if problems.is_empty() => Ok(Config {
                http_listen,
                postgres,
                probe,
                limits: Limits {
                    sessions: l.sessions,
                    idle: Duration::from_secs(l.idle_secs),
                },
                token,
                trusted_header,
                sites,
            }),
            _ => Err(ConfigProblems(problems)),
        }
    }

    /// Every configured camera, with its site.
    pub fn cameras(&self) -> impl Iterator<Item = (&Site, &Camera)> {
        self.sites
            .iter()
            .flat_map(|s| s.cameras.iter().map(move |c| (s, c)))
    }
}

fn probe_settings(p: &RawProbe, problems: &mut Vec<String>) -> ProbeSettings {
    if p.interval_secs != 0 && !(10..=86_400).contains(&p.interval_secs) {
        problems.push(format!(
            "probe.interval_secs: must be 10 to 86400 (or 0 to turn the probe off), not {}",
            p.interval_secs
        ));
    }
    if p.concurrency == 0 || p.concurrency > 256 {
        problems.push(format!(
            "probe.concurrency: must be 1 to 256, not {}",
            p.concurrency
        ));
    }
    for (name, v) in [
        ("dns_timeout_ms", p.dns_timeout_ms),
        ("connect_timeout_ms", p.connect_timeout_ms),
        ("rtsp_timeout_ms", p.rtsp_timeout_ms),
    ] {
        if !(100..=60_000).contains(&v) {
            problems.push(format!("probe.{name}: must be 100 to 60000, not {v}"));
        }
    }
    if p.backoff_max_secs != 0 && !(p.interval_secs.max(10)..=86_400).contains(&p.backoff_max_secs)
    {
        problems.push(format!(
            "probe.backoff_max_secs: must be probe.interval_secs ({}) to 86400, or 0 for no \
             backoff, not {}",
            p.interval_secs, p.backoff_max_secs
        ));
    }
    if p.play_secs > 30 {
        problems.push(format!(
            "probe.play_secs: must be 0 (off) to 30, not {} (each probe holds one of the \
             site's streams that long)",
            p.play_secs
        ));
    }
    ProbeSettings {
        backoff_max: Duration::from_secs(p.backoff_max_secs),
        play: (p.play_secs > 0).then(|| Duration::from_secs(p.play_secs)),
        interval: (p.interval_secs > 0).then(|| Duration::from_secs(p.interval_secs)),
        concurrency: p.concurrency,
        dns_timeout: Duration::from_millis(p.dns_timeout_ms),
        connect_timeout: Duration::from_millis(p.connect_timeout_ms),
        rtsp_timeout: Duration::from_millis(p.rtsp_timeout_ms),
    }
}

fn site(
    i: usize,
    s: &RawSite,
    per_site_default: usize,
    env: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<Site> {
    let before = problems.len();
    let at = format!("sites[{i}] ({:?})", s.site);
    if let Err(e) = sitewatch_wire::topic::validate_site(&s.site) {
        problems.push(format!("{at}.site: {e}"));
    }
    let host = s.host.trim();
    if host.is_empty() || host.len() > 253 || host.contains(['/', '@', ' ', '?', '#']) {
        problems.push(format!(
            "{at}.host: must be a host name or address such as abc123.sn.mynetname.net, not {:?}",
            s.host
        ));
    }
    if s.port == 0 {
        problems.push(format!("{at}.port: must be 1 to 65535"));
    }
    let credentials = credentials(&at, s, env, problems);
    let max_sessions = s.max_sessions.unwrap_or(per_site_default);
    if max_sessions == 0 || max_sessions > 64 {
        problems.push(format!(
            "{at}.max_sessions: must be 1 to 64, not {max_sessions}"
        ));
    }
    if s.cameras.is_empty() {
        problems.push(format!("{at}.cameras: list at least one camera"));
    }
    if s.cameras.len() > MAX_CAMERAS_PER_SITE {
        problems.push(format!(
            "{at}.cameras: at most {MAX_CAMERAS_PER_SITE}, not {}",
            s.cameras.len()
        ));
    }
    if let Some(t) = &s.url_template {
        if !t.contains("{host}") {
            problems.push(format!(
                "{at}.url_template: must contain {{host}} (the site's public host), not {t:?}"
            ));
        }
    }
    let mut names = HashSet::new();
    let mut cameras = Vec::new();
    for (j, c) in s.cameras.iter().enumerate().take(MAX_CAMERAS_PER_SITE) {
        let cat = format!("{at}.cameras[{j}] ({:?})", c.camera);
        if let Err(e) = sitewatch_wire::topic::validate_name(&c.camera) {
            problems.push(format!("{cat}.camera: {e}"));
        }
        if !names.insert(c.camera.as_str()) {
            problems.push(format!("{cat}: camera {:?} appears twice", c.camera));
        }
        if c.port == Some(0) {
            problems.push(format!("{cat}.port: must be 1 to 65535"));
        }
        let port = c.port.unwrap_or(s.port);
        let text = match (&c.path, &s.url_template) {
            (Some(path), _) => {
                if !path.starts_with('/') {
                    problems.push(format!(
                        "{cat}.path: must start with '/', e.g. /Streaming/Channels/102, not {path:?}"
                    ));
                    continue;
                }
                format!("rtsp://{host}:{port}{path}")
            }
            (None, Some(t)) => {
                if t.contains("{channel}") && c.channel.is_none() {
                    problems.push(format!(
                        "{cat}.channel: the site's url_template has {{channel}}: set channel"
                    ));
                    continue;
                }
                t.replace("{host}", host)
                    .replace("{port}", &port.to_string())
                    .replace("{camera}", &c.camera)
                    .replace("{channel}", &c.channel.unwrap_or(0).to_string())
            }
            (None, None) => {
                problems.push(format!(
                    "{cat}: set path (e.g. /Streaming/Channels/102) or the site's url_template"
                ));
                continue;
            }
        };
        match camera_url(&text) {
            Ok(url) => {
                let h = url.host_str().unwrap_or_default().to_owned();
                let p = url.port().unwrap_or(554);
                cameras.push(Camera {
                    name: c.camera.clone(),
                    url,
                    host: h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    port: p,
                });
            }
            Err(e) => problems.push(format!("{cat}: the camera URL {e}")),
        }
    }
    (problems.len() == before).then(|| Site {
        id: s.site.clone(),
        host: host.to_owned(),
        credentials,
        max_sessions,
        cameras,
    })
}

/// Parses an `rtsp://` URL and refuses credentials in it (they belong in
/// `password_file` or `password_env`, where they are never shown).
fn camera_url(text: &str) -> Result<url::Url, String> {
    // The message never echoes a URL with credentials.
    let url = url::Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "holds a user name or password: use username with password_file or password_env"
                .to_owned(),
        );
    }
    if url.scheme() != "rtsp" {
        return Err(format!("must start with rtsp://, not {}://", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.as_str().contains(['{', '}']) || url.as_str().contains("%7B") {
        return Err(format!("{text:?} has an unknown {{placeholder}}"));
    }
    Ok(url)
}

fn credentials(
    at: &str,
    s: &RawSite,
    env: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<Credentials> {
    let password = match (&s.password_file, &s.password_env) {
        (Some(_), Some(_)) => {
            problems.push(format!("{at}: set password_file or password_env, not both"));
            return None;
        }
        (Some(path), None) => match read_password_file(path) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("{at}.password_file: {e}"));
                return None;
            }
        },
        (None, Some(var)) => match env(var).filter(|v| !v.is_empty()) {
            Some(p) => Some(p),
            None => {
                problems.push(format!(
                    "{at}.password_env: the environment variable {var} is not set or empty"
                ));
                return None;
            }
        },
        (None, None) => None,
    };
    match (&s.username, password) {
        (Some(u), p) if !u.is_empty() => Some(Credentials {
            username: u.clone(),
            password: Secret::new(p.unwrap_or_default()),
        }),
        (_, Some(_)) => {
            problems.push(format!("{at}.username: a password is set but no user name"));
            None
        }
        _ => None,
    }
}

fn read_password_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_PASSWORD_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[postgres]
url = "postgresql://sitewatch@127.0.0.1/sitewatch"
"#;

    fn env(k: &str) -> Option<String> {
        (k == "SHOP_PW").then(|| "pa55-word".to_owned())
    }

    #[test]
    fn example_file_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").expect("write");
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "0123456789abcdef\n").expect("write");
        let text = include_str!("../../examples/live.toml")
            .replace(
                "/etc/sitewatch/live/shop-12.password",
                &pw.display().to_string(),
            )
            .replace(
                "/etc/sitewatch/live/viewer.token",
                &tok.display().to_string(),
            );
        let c = Config::from_toml(&text, |k| {
            (k == "SITEWATCH_LIVE_PW_DEPOT_3").then(|| "x".to_owned())
        })
        .unwrap_or_else(|e| panic!("examples/live.toml: {e}"));
        assert!(c.cameras().count() >= 3);
    }

    #[test]
    fn path_and_template_build_urls() {
        let text = format!(
            r#"{BASE}
[[sites]]
site = "shop-12"
host = "abc123.sn.mynetname.net"
url_template = "rtsp://{{host}}:{{port}}/cam/realmonitor?channel={{channel}}&subtype=1"
username = "viewer"
password_env = "SHOP_PW"
[[sites.cameras]]
camera = "door"
channel = 1
[[sites.cameras]]
camera = "till"
port = 10554
path = "/Streaming/Channels/102"
"#
        );
        let c = Config::from_toml(&text, env).expect("valid");
        let s = &c.sites[0];
        assert_eq!(
            s.cameras[0].url.as_str(),
            "rtsp://abc123.sn.mynetname.net:554/cam/realmonitor?channel=1&subtype=1"
        );
        assert_eq!(
            s.cameras[1].url.as_str(),
            "rtsp://abc123.sn.mynetname.net:10554/Streaming/Channels/102"
        );
        assert_eq!(s.cameras[1].port, 10554);
        let cr = s.credentials.as_ref().expect("creds");
        assert_eq!(cr.password.expose(), "pa55-word");
        assert!(!format!("{c:?}").contains("pa55-word"));
        assert_eq!(s.max_sessions, 2);
        assert_eq!(c.probe.interval, Some(Duration::from_secs(300)));
    }

    #[test]
    fn every_problem_is_reported() {
        let text = format!(
            r#"{BASE}
[probe]
concurrency = 0
[[sites]]
site = "Shop 12"
host = "h.example"
password_env = "NOPE"
[[sites.cameras]]
camera = "Door"
path = "cam"
[[sites.cameras]]
camera = "x"
"#
        );
        let ConfigProblems(p) = Config::from_toml(&text, env).expect_err("invalid");
        let all = p.join("\n");
        for want in [
            "probe.concurrency",
            ".site:",
            "password_env",
            ".camera:",
            ".path:",
            "set path",
        ] {
            assert!(all.contains(want), "{want} missing in:\n{all}");
        }
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_echoing_them() {
        let text = format!(
            r#"{BASE}
[[sites]]
site = "s1"
host = "h.example"
url_template = "rtsp://admin:hunter2@{{host}}:{{port}}/x"
[[sites.cameras]]
camera = "c"
"#
        );
        let ConfigProblems(p) = Config::from_toml(&text, env).expect_err("invalid");
        let all = p.join("\n");
        assert!(all.contains("user name or password"), "{all}");
        assert!(!all.contains("hunter2"), "{all}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = format!("{BASE}\n[probe]\ninterval = 5\n");
        assert!(Config::from_toml(&text, env).is_err());
    }

    #[test]
    fn password_file_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\nignored\n").expect("write");
        let text = format!(
            r#"{BASE}
[[sites]]
site = "s1"
host = "h.example"
username = "u"
password_file = "{}"
[[sites.cameras]]
camera = "c"
path = "/x"
"#,
            f.display()
        );
        let c = Config::from_toml(&text, env).expect("valid");
        let cr = c.sites[0].credentials.as_ref().expect("creds");
        assert_eq!(cr.password.expose(), "s3cret");
    }
}
