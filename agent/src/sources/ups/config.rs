//! `[ups]`: raw struct (read with `crate::config::fields`) → validated
//! [`UpsConfig`]. Off without the
//! table. Validation only reads the password file it names.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::fields::{self, Absent, Res, Value};

/// Most UPS names in `[ups] names`.
pub const MAX_UPS: usize = 8;

fn default_server() -> String {
    "127.0.0.1:3493".to_owned()
}
fn default_interval_secs() -> u32 {
    15
}
fn default_timeout_secs() -> u32 {
    5
}

/// `[ups]` as written in the file.
#[derive(Debug, Clone)]
pub struct UpsRaw {
    server: String,
    names: Vec<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    interval_secs: u32,
    timeout_secs: u32,
}

/// Reads `[ups]` (serde's words: `crate::config::fields`).
pub fn read(v: &Value<'_>) -> Res<UpsRaw> {
    const FIELDS: &[(&str, Absent)] = &[
        ("server", Absent::Default),
        ("names", Absent::Default),
        ("username", Absent::None),
        ("password_file", Absent::None),
        ("interval_secs", Absent::Default),
        ("timeout_secs", Absent::Default),
    ];
    let mut r = UpsRaw {
        server: default_server(),
        names: Vec::new(),
        username: None,
        password_file: None,
        interval_secs: default_interval_secs(),
        timeout_secs: default_timeout_secs(),
    };
    fields::fields(v, "struct UpsRaw", FIELDS, &mut |i, v| {
        match i {
            0 => r.server = fields::string(v)?,
            1 => r.names = fields::strings(v)?,
            2 => r.username = Some(fields::string(v)?),
            3 => r.password_file = Some(fields::path(v)?),
            4 => r.interval_secs = fields::u32(v)?,
            _ => r.timeout_secs = fields::u32(v)?,
        }
        Ok(())
    })?;
    Ok(r)
}

/// A upsd login. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// `USERNAME`.
    pub username: String,
    /// `PASSWORD` (from `password_file`).
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login({}, <redacted>)", self.username)
    }
}

/// Validated UPS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsConfig {
    /// upsd's `host:port`.
    pub server: String,
    /// UPS names to read; empty: every UPS `LIST UPS` names.
    pub names: Vec<String>,
    /// Optional login (reading variables needs none on a default upsd).
    pub login: Option<Login>,
    /// Period between readings.
    pub interval: Duration,
    /// Bound on one whole round (connect, login, every list).
    pub timeout: Duration,
}

/// A UPS name as ups.conf allows it: printable, no spaces or quotes.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// Validates `[ups]`, collecting every problem.
pub fn validate(raw: Option<UpsRaw>, problems: &mut Vec<String>) -> Option<Option<UpsConfig>> {
    let Some(r) = raw else {
        return Some(None);
    };
    let before = problems.len();
    let interval = crate::sources::check_interval("ups.interval_secs", r.interval_secs, problems);
    if !(1..=60).contains(&r.timeout_secs) {
        problems.push(format!(
            "ups.timeout_secs = {}: must be between 1 and 60 seconds",
            r.timeout_secs
        ));
    }
    let port_ok = r
        .server
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        problems.push(format!(
            "ups.server = \"{}\": must be host:port, e.g. 127.0.0.1:3493",
            r.server
        ));
    }
    if r.names.len() > MAX_UPS {
        problems.push(format!(
            "ups.names lists {} UPSes; at most {MAX_UPS} are allowed",
            r.names.len()
        ));
    }
    for n in &r.names {
        if !valid_name(n) {
            problems.push(format!(
                "ups.names: `{n}` is not a UPS name (as in ups.conf: no spaces or quotes)"
            ));
        }
    }
    let login = match (&r.username, &r.password_file) {
        (None, None) => None,
        (Some(u), Some(f)) if valid_name(u) => match read_password_file(f) {
            Ok(password) => Some(Login {
                username: u.clone(),
                password,
            }),
            Err(e) => {
                problems.push(format!("ups.password_file: {e}"));
                None
            }
        },
        (Some(_), Some(_)) => {
            problems.push("ups.username: not a upsd user name (no spaces or quotes)".into());
            None
        }
        _ => {
            problems.push("ups: username and password_file go together".into());
            None
        }
    };
    if problems.len() != before {
        return None;
    }
    Some(Some(UpsConfig {
        server: r.server,
        names: r.names,
        login,
        interval: Duration::from_secs(u64::from(interval?)),
        timeout: Duration::from_secs(u64::from(r.timeout_secs)),
    }))
}

/// The first line of `path`, bounded; never logged.
fn read_password_file(path: &std::path::Path) -> Result<String, String> {
    crate::config::read_password_file(path, crate::sources::rtsp::config::MAX_CREDENTIAL_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Option<UpsConfig>, Vec<String>> {
        let raw = crate::config::read_for_test(t, "ups", read).map_err(|e| vec![e])?;
        let mut p = Vec::new();
        validate(raw, &mut p).ok_or(p)
    }

    #[test]
    fn defaults_and_off() {
        assert_eq!(parse("").unwrap(), None);
        let c = parse("[ups]\n").unwrap().unwrap();
        assert_eq!(c.server, "127.0.0.1:3493");
        assert!(c.names.is_empty() && c.login.is_none());
        assert_eq!(c.interval, Duration::from_secs(15));
    }

    #[test]
    fn problems_are_collected() {
        let p = parse(
            "[ups]\nserver = \"nohost\"\nnames = [\"a b\"]\ninterval_secs = 0\nusername = \"u\"\n",
        )
        .unwrap_err();
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn password_never_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").expect("write");
        let c = parse(&format!(
            "[ups]\nusername = \"mon\"\npassword_file = \"{}\"\n",
            f.display()
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            c.login.as_ref().map(|l| l.password.as_str()),
            Some("s3cret")
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
