//! `[loki]`: the Loki push settings, raw (serde) and validated.
//!
//! Pure apart from reading the secret files and checking that `ca_file`
//! is readable; never opens a socket. [`crate::config`] calls
//! [`apply_env`] and [`settings`] while it validates the whole file, so
//! problems keep their place and wording.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sitewatch_mqtt::Secret;

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

/// Applies the `SITEWATCH_LOKI_*` overrides; `SITEWATCH_LOKI_URL` creates
/// the section when the file has none.
pub fn apply_env(loki: &mut Option<RawLoki>, env: &impl Fn(&str) -> Option<String>) {
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

/// Validates `[loki]`: every problem, in plain words, or the settings
/// (secret files are read, `ca_file` checked for readability).
pub fn settings(raw: &RawLoki) -> Result<LokiSettings, Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{no_env, MINIMAL};
    use crate::config::{Config, ConfigProblems};

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
}
