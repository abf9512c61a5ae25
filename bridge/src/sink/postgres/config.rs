//! `[postgres]`: the database settings, raw (serde) and validated.
//!
//! Pure apart from reading `postgres.password_file`; never opens a
//! socket. [`crate::config`] calls [`apply_env`] and [`settings`] while it
//! validates the whole file, so problems keep their place and wording.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::tls::{self, PgTls, SslMode, UrlTls};

/// Environment variable that overrides `postgres.url`.
pub const ENV_POSTGRES_URL: &str = "SITEWATCH_POSTGRES_URL";

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
    /// TLS, with libpq's values: `disable`, `prefer` (the default, as in
    /// libpq), `require`, `verify-ca`, `verify-full`. May also be given in
    /// the URL (`?sslmode=…`); a different value in both is an error.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// CA bundle (PEM) that signs the server's certificate; without it the
    /// `verify-*` modes use the system's trust store.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate (PEM), for a server that asks for one.
    #[serde(default)]
    pub sslcert: Option<PathBuf>,
    /// Key of `sslcert` (PEM).
    #[serde(default)]
    pub sslkey: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
fn default_connect_timeout_secs() -> u64 {
    5
}
fn default_write_timeout_secs() -> u64 {
    30
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
    /// TLS to the server.
    pub tls: PgTls,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &self.display)
            .field("write_timeout", &self.write_timeout)
            .field("sslmode", &self.tls.mode.as_str())
            .finish_non_exhaustive()
    }
}

/// Applies `SITEWATCH_POSTGRES_URL` (a blank value is ignored).
pub fn apply_env(raw: &mut RawPostgres, env: &impl Fn(&str) -> Option<String>) {
    if let Some(url) = env(ENV_POSTGRES_URL).filter(|u| !u.trim().is_empty()) {
        raw.url = Some(url);
    }
}

/// Validates `[postgres]`: every problem, in plain words, or the
/// settings (the password file is read here).
pub fn settings(raw: &RawPostgres) -> Result<PostgresSettings, Vec<String>> {
    let mut problems = Vec::new();
    let url = match raw.url.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(vec![format!(
                "postgres.url: missing; set it in the file or in {ENV_POSTGRES_URL}"
            )])
        }
    };
    // tokio-postgres rejects verify-* and the ssl*cert parameters: take
    // them out of the URL first.
    let (url, in_url) = tls::split_url(url);
    let mut config = match tokio_postgres::Config::from_str(&url) {
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
    let tls = tls_settings(raw, &in_url, &mut problems);
    if let Some(t) = &tls {
        config.ssl_mode(match t.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
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
    let Some(tls) = tls.filter(|_| problems.is_empty()) else {
        return Err(problems);
    };
    config.connect_timeout(Duration::from_secs(raw.connect_timeout_secs));
    config.application_name("sitewatch-bridge");
    Ok(PostgresSettings {
        display: redacted(&config),
        config,
        write_timeout: Duration::from_secs(raw.write_timeout_secs),
        migrate: raw.migrate,
        tls,
    })
}

/// `sslmode`, `sslrootcert`, `sslcert`, `sslkey` from the file or the URL
/// (the file wins only where the URL is silent; a conflict is a problem),
/// with the rustls configuration built, so a bad CA file shows in `check`.
fn tls_settings(raw: &RawPostgres, in_url: &UrlTls, problems: &mut Vec<String>) -> Option<PgTls> {
    let before = problems.len();
    let mut pick_path = |key: &str, file: &Option<PathBuf>, url: &Option<String>| match (file, url)
    {
        (Some(f), Some(u)) if f.as_path() != std::path::Path::new(u) => {
            problems.push(format!(
                "postgres.{key}: {} in the file but {u} in postgres.url; keep one",
                f.display()
            ));
            None
        }
        (Some(f), _) => Some(f.clone()),
        (None, Some(u)) => Some(PathBuf::from(u)),
        (None, None) => None,
    };
    let rootcert = pick_path("sslrootcert", &raw.sslrootcert, &in_url.sslrootcert);
    let cert = pick_path("sslcert", &raw.sslcert, &in_url.sslcert);
    let key = pick_path("sslkey", &raw.sslkey, &in_url.sslkey);
    let mode = match (raw.sslmode.as_deref(), in_url.sslmode.as_deref()) {
        (Some(f), Some(u)) if f != u => {
            problems.push(format!(
                "postgres.sslmode: {f:?} in the file but {u:?} in postgres.url; keep one"
            ));
            None
        }
        (Some(m), _) | (None, Some(m)) => match SslMode::parse(m) {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(format!("postgres.sslmode: {e}"));
                None
            }
        },
        (None, None) => Some(SslMode::Prefer),
    };
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            problems.push("postgres.sslcert and postgres.sslkey: set both or neither".into());
            None
        }
    };
    let mode = mode?;
    if mode == SslMode::Disable && (rootcert.is_some() || client.is_some()) {
        problems.push(
            "postgres.sslmode: \"disable\" but sslrootcert/sslcert is set; \
             use verify-full to check the server"
                .into(),
        );
    }
    if problems.len() > before {
        return None;
    }
    let client_paths = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    match tls::build(mode, rootcert.as_deref(), client_paths) {
        Ok(config) => Some(PgTls {
            mode,
            rootcert,
            client,
            config,
        }),
        Err(e) => {
            problems.push(format!("postgres TLS ({}): {e:#}", mode.as_str()));
            None
        }
    }
}

impl PostgresSettings {
    /// A warning when the server is reached over the network without its
    /// certificate being checked (`prefer`, `require` without a CA,
    /// `disable`): anyone on the path could pose as the database. `None`
    /// for a Unix socket or a loopback address, or a verifying mode.
    pub fn tls_warning(&self) -> Option<String> {
        use tokio_postgres::config::Host;
        let remote = self.config.get_hosts().iter().any(|h| match h {
            Host::Unix(_) => false,
            Host::Tcp(name) => {
                !(name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback()))
            }
        });
        let tls = &self.tls;
        (remote && !tls.mode.verifies(tls.rootcert.is_some())).then(|| {
            format!(
                "postgres: {} is reached over the network with sslmode={} and no \
                 certificate check; set sslmode = \"verify-full\" (and sslrootcert for \
                 a private CA) so nobody on the path can pose as the database",
                self.display,
                tls.mode.as_str()
            )
        })
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

#[cfg(test)]
mod tests {
    use crate::config::tests::{no_env, MINIMAL};
    use crate::config::{Config, ConfigProblems};

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
}
