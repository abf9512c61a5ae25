//! Broker connection settings shared by the sitewatch agent and bridge.
//!
//! Holds the `[mqtt]` config table ([`BrokerConfig`]), broker URL parsing
//! ([`BrokerUrl`]), TLS set-up with rustls and the ring provider, credential
//! handling that never leaks secrets into logs ([`Secret`]), and the jittered
//! [`Backoff`] both reconnect loops use.
//!
//! It builds a [`rumqttc::Transport`], which both rumqttc's v4 client (agent)
//! and v5 client (bridge) accept, and never opens a socket itself.
#![deny(missing_docs)]

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Environment variable overriding [`BrokerConfig::url`].
pub const ENV_URL: &str = "SITEWATCH_MQTT_URL";
/// Environment variable overriding [`BrokerConfig::username`].
pub const ENV_USERNAME: &str = "SITEWATCH_MQTT_USERNAME";
/// Environment variable overriding [`BrokerConfig::password`].
pub const ENV_PASSWORD: &str = "SITEWATCH_MQTT_PASSWORD";
/// Environment variable overriding [`BrokerConfig::ca_file`].
pub const ENV_CA_FILE: &str = "SITEWATCH_MQTT_CA_FILE";

/// A secret string. `Debug` and `Display` print `<redacted>`, so a config
/// struct can derive `Debug` and be logged without leaking it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; call only where it is handed to the protocol.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A parsed broker URL: `mqtt://host[:port]` (default 1883) or
/// `mqtts://host[:port]` (default 8883). IPv6 hosts go in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS (`mqtts://`) or plain TCP (`mqtt://`).
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BrokerUrl {
    /// Parses a broker URL; the error is a plain-words sentence.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let url = url.trim();
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("ssl://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("tcp://") {
            (false, r)
        } else {
            return Err(format!(
                "broker URL `{url}` must start with mqtts:// (TLS) or mqtt:// (plain)"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(
                "broker URL must not contain credentials; set mqtt.username and mqtt.password"
                    .into(),
            );
        }
        if rest.contains('/') || rest.contains('?') {
            return Err(format!("broker URL `{url}` must not have a path or query"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| format!("broker URL `{url}`: missing `]` after IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p, url)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("broker URL `{url}`: junk after `]`")),
            };
            (h.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(p, url)?),
                None => (rest.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("broker URL `{url}` has no host"));
        }
        Ok(BrokerUrl { tls, host, port })
    }

    /// Whether the host is this machine (`localhost`, 127.0.0.0/8, `::1`),
    /// the only place plain MQTT is allowed without `allow_plaintext`.
    pub fn is_loopback(&self) -> bool {
        if self.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        self.host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(p: &str, url: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "broker URL `{url}`: port `{p}` is not a number from 1 to 65535"
        )),
        Ok(n) => Ok(n),
    }
}

fn default_keep_alive_secs() -> u16 {
    30
}

/// The `[mqtt]` config table, shared by agent and bridge.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Broker URL, `mqtts://host:8883` or `mqtt://127.0.0.1:1883`.
    pub url: String,
    /// MQTT client id; each binary derives a default when unset.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Username for the broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the broker (prefer `password_file` or the environment).
    #[serde(default)]
    pub password: Option<Secret>,
    /// File whose first line is the password; keeps secrets out of the config.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA certificate(s) that signed the broker's
    /// certificate. When unset, the operating system's trust store is used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (X.509 v3). Needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Allows `mqtt://` (no TLS) to a broker that is not on this machine.
    /// Off by default: credentials and site data would cross the network in
    /// clear text.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// MQTT keep-alive; a dead link is noticed after about 1.5x this.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u16,
}

impl BrokerConfig {
    /// A config with only the URL set and defaults elsewhere.
    pub fn with_url(url: impl Into<String>) -> Self {
        BrokerConfig {
            url: url.into(),
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            allow_plaintext: false,
            keep_alive_secs: default_keep_alive_secs(),
        }
    }

    /// Applies the `SITEWATCH_MQTT_*` overrides. `get` looks a variable up
    /// (pass `|k| std::env::var(k).ok()`); tests pass a map instead.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(ENV_URL) {
            self.url = v;
        }
        if let Some(v) = get(ENV_USERNAME) {
            self.username = Some(v);
        }
        if let Some(v) = get(ENV_PASSWORD) {
            self.password = Some(Secret::new(v));
            // An explicit password wins over a file set in the config.
            self.password_file = None;
        }
        if let Some(v) = get(ENV_CA_FILE) {
            self.ca_file = Some(PathBuf::from(v));
        }
    }

    /// The parsed URL.
    pub fn url(&self) -> anyhow::Result<BrokerUrl> {
        BrokerUrl::parse(&self.url).map_err(anyhow::Error::msg)
    }

    /// Every problem with these settings, in plain words, each prefixed with
    /// the config key it concerns. Reads the named files (existence, PEM
    /// syntax) but never opens a socket. Empty means usable.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match BrokerUrl::parse(&self.url) {
            Err(e) => out.push(format!("mqtt.url: {e}")),
            Ok(u) => {
                if !u.tls && !u.is_loopback() && !self.allow_plaintext {
                    out.push(format!(
                        "mqtt.url: `{u}` is plain MQTT to another machine; use mqtts:// \
                         (TLS), or set mqtt.allow_plaintext = true if you really mean it"
                    ));
                }
                if !u.tls {
                    for (key, set) in [
                        ("ca_file", self.ca_file.is_some()),
                        ("client_cert_file", self.client_cert_file.is_some()),
                    ] {
                        if set {
                            out.push(format!(
                                "mqtt.{key} is set but mqtt.url is not mqtts://, so it \
                                 would be ignored"
                            ));
                        }
                    }
                }
            }
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 {
                out.push("mqtt.client_id: must be 1 to 128 characters".into());
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            out.push("mqtt.password and mqtt.password_file are both set; keep one".into());
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            out.push("mqtt.password is set but mqtt.username is not".into());
        }
        if let Some(p) = &self.password_file {
            if let Err(e) = read_password_file(p) {
                out.push(format!("mqtt.password_file: {e:#}"));
            }
        }
        if self.keep_alive_secs < 5 {
            out.push("mqtt.keep_alive_secs: must be at least 5".into());
        }
        if let Some(ca) = &self.ca_file {
            if let Err(e) = load_certs(ca) {
                out.push(format!("mqtt.ca_file: {e:#}"));
            }
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => {
                if let Err(e) = load_certs(c) {
                    out.push(format!("mqtt.client_cert_file: {e:#}"));
                }
                if let Err(e) = load_key(k) {
                    out.push(format!("mqtt.client_key_file: {e:#}"));
                }
            }
            (Some(_), None) => out.push(
                "mqtt.client_cert_file is set but mqtt.client_key_file is not; mutual TLS \
                 needs both"
                    .into(),
            ),
            (None, Some(_)) => out.push(
                "mqtt.client_key_file is set but mqtt.client_cert_file is not; mutual TLS \
                 needs both"
                    .into(),
            ),
            (None, None) => {}
        }
        out
    }

    /// `(username, password)` when a username is set; reads `password_file`.
    pub fn credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let pass = match (&self.password, &self.password_file) {
            (Some(p), _) => p.expose().to_owned(),
            (None, Some(f)) => read_password_file(f)?,
            (None, None) => String::new(),
        };
        Ok(Some((user.clone(), pass)))
    }

    /// The rumqttc transport: plain TCP for `mqtt://`; for `mqtts://`, rustls
    /// with the ring provider, trusting `ca_file` (or the OS store), with the
    /// client certificate when configured.
    pub fn transport(&self) -> anyhow::Result<rumqttc::Transport> {
        let url = self.url()?;
        if !url.tls {
            if !url.is_loopback() && !self.allow_plaintext {
                bail!(
                    "refusing plain MQTT to {url}: use mqtts:// or set mqtt.allow_plaintext = true"
                );
            }
            return Ok(rumqttc::Transport::Tcp);
        }
        let cfg = self.rustls_config()?;
        Ok(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            Arc::new(cfg),
        )))
    }

    /// The rustls client configuration used for `mqtts://`; public so that
    /// installer checks can run a bare TLS handshake with the same settings.
    pub fn rustls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(ca) => {
                for cert in load_certs(ca)? {
                    roots
                        .add(cert)
                        .with_context(|| format!("adding CA from {}", ca.display()))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    bail!(
                        "no mqtt.ca_file set and no usable CA certificates in the system \
                         trust store (install ca-certificates or set mqtt.ca_file)"
                    );
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("setting TLS protocol versions")?
            .with_root_certificates(roots);
        let cfg = match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(load_certs(c)?, load_key(k)?)
                .with_context(|| {
                    format!(
                        "client certificate {} does not match key {}",
                        c.display(),
                        k.display()
                    )
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => bail!("mutual TLS needs both mqtt.client_cert_file and mqtt.client_key_file"),
        };
        Ok(cfg)
    }
}

fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    if line.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(line)
}

/// Every certificate of a PEM file (a CA bundle or a chain); an error
/// names the file. Shared with the bridge's TLS to PostgreSQL.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a valid PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1); an error names
/// the file.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&data).with_context(|| {
        format!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// Exponential backoff with full jitter, for reconnect and retry loops.
///
/// Jitter keeps a fleet of gateways from reconnecting in lock-step after a
/// broker restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start at `min` and grow to at most `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay: uniform in `[min, min(max, min * 2^attempt)]`.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        let cap = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let lo = self.min.as_millis() as u64;
        let hi = cap.as_millis() as u64;
        Duration::from_millis(if hi > lo { fastrand::u64(lo..=hi) } else { lo })
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_urls() {
        let u = BrokerUrl::parse("mqtts://broker.example.com").expect("ok");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "broker.example.com", 8883)
        );
        let u = BrokerUrl::parse("mqtt://127.0.0.1:18830").expect("ok");
        assert_eq!((u.tls, u.port), (false, 18830));
        assert!(u.is_loopback());
        let u = BrokerUrl::parse("mqtts://[::1]:8884/").expect("ok");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8884));
        assert!(u.is_loopback());
        assert_eq!(u.to_string(), "mqtts://[::1]:8884");
        assert!(!BrokerUrl::parse("mqtt://10.0.0.1")
            .expect("ok")
            .is_loopback());
        assert!(BrokerUrl::parse("mqtt://localhost")
            .expect("ok")
            .is_loopback());
    }

    #[test]
    fn rejects_bad_urls_in_plain_words() {
        for (url, needle) in [
            ("http://x", "must start with"),
            ("mqtt://user:pw@host", "credentials"),
            ("mqtt://host:99999", "port"),
            ("mqtt://host:0", "port"),
            ("mqtts://", "no host"),
            ("mqtt://host/path", "path"),
        ] {
            let e = BrokerUrl::parse(url).expect_err(url);
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn plaintext_to_remote_needs_opt_in() {
        let mut c = BrokerConfig::with_url("mqtt://broker.example.com");
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("allow_plaintext"));
        assert!(c.transport().is_err());
        c.allow_plaintext = true;
        assert!(c.problems().is_empty());
        assert!(matches!(c.transport(), Ok(rumqttc::Transport::Tcp)));
        let local = BrokerConfig::with_url("mqtt://127.0.0.1:1883");
        assert!(local.problems().is_empty());
    }

    #[test]
    fn reports_every_problem() {
        let c = BrokerConfig {
            password: Some(Secret::new("pw")),
            client_cert_file: Some("/nonexistent/cert.pem".into()),
            keep_alive_secs: 1,
            ..BrokerConfig::with_url("mqtts://broker:8883")
        };
        let p = c.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().any(|s| s.contains("username")));
        assert!(p.iter().any(|s| s.contains("client_key_file")));
        assert!(p.iter().any(|s| s.contains("keep_alive")));
    }

    #[test]
    fn missing_and_invalid_pem_files_are_named() {
        let dir = std::env::temp_dir().join(format!("sw-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let c = BrokerConfig {
            ca_file: Some(junk.clone()),
            ..BrokerConfig::with_url("mqtts://broker:8883")
        };
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("junk.pem"), "{p:?}");
        let c = BrokerConfig {
            ca_file: Some(dir.join("absent.pem")),
            ..BrokerConfig::with_url("mqtts://broker:8883")
        };
        assert!(c.problems()[0].contains("cannot read"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn env_overrides_and_redaction() {
        let env: HashMap<&str, &str> = [
            (ENV_URL, "mqtts://central:8883"),
            (ENV_USERNAME, "site1"),
            (ENV_PASSWORD, "s3cret"),
        ]
        .into();
        let mut c: BrokerConfig =
            toml::from_str("url = \"mqtt://127.0.0.1\"\npassword_file = \"/etc/pw\"\n")
                .expect("toml");
        c.apply_env(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(c.url, "mqtts://central:8883");
        assert_eq!(
            c.credentials().expect("creds"),
            Some(("site1".into(), "s3cret".into()))
        );
        assert!(c.password_file.is_none());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<BrokerConfig, _> = toml::from_str("url = \"mqtt://x\"\npasword = \"x\"\n");
        assert!(r.is_err());
    }

    #[test]
    fn backoff_grows_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut last_cap = Duration::ZERO;
        for i in 0..10 {
            let d = b.next_delay();
            let cap = (Duration::from_millis(100) * 2u32.pow(i)).min(Duration::from_secs(2));
            assert!(d >= Duration::from_millis(100) && d <= cap, "{i}: {d:?}");
            last_cap = cap;
        }
        assert_eq!(last_cap, Duration::from_secs(2));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
