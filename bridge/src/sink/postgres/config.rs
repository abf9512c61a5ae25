//! `[postgres]`: the database settings, raw (serde) and validated.
//!
//! Pure apart from reading `postgres.password_file`; never opens a
//! socket. [`crate::config`] calls [`apply_env`] and [`settings`] while it
//! validates the whole file, so problems keep their place and wording.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

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
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &self.display)
            .field("write_timeout", &self.write_timeout)
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
