//! Agent configuration: TOML file → parsed document → raw structs (read
//! by [`fields`], in serde's words) → validated [`Config`].
//!
//! Loading is pure except for reading the config file and the files it names
//! (CA, client certificate, password file), which are checked for existence
//! and PEM syntax. It never opens a socket, so `sitewatch-agent check` is
//! safe to run anywhere.
//!
//! Every mistake is collected, not just the first: each top-level section is
//! read on its own, and validation appends to one list of plain-words
//! problems, so an installer fixes a config in one round.
//!
//! Environment overrides (for install scripts) are applied before
//! validation: `SITEWATCH_SITE_ID`, and via [`BrokerConfig::apply_env`]
//! `SITEWATCH_MQTT_URL`, `SITEWATCH_MQTT_USERNAME`, `SITEWATCH_MQTT_PASSWORD`
//! and `SITEWATCH_MQTT_CA_FILE`.

use sitewatch_mqtt::{BrokerConfig, Secret};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::sources::{self, Sections};

/// Environment variable overriding `site_id`.
pub const ENV_SITE_ID: &str = "SITEWATCH_SITE_ID";

/// Where `sitewatch-agent` looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sitewatch/agent.toml";

/// The TOML that OpenWrt's init script generates from UCI
/// (`openwrt/files/sitewatch.init`); the fallback when
/// [`DEFAULT_CONFIG_PATH`] does not exist, so `check`, `probe` and
/// `cleanup` work on a router without `--config`.
pub const OPENWRT_CONFIG_PATH: &str = "/var/etc/sitewatch/agent.toml";

/// The config path used when `--config` is not given: [`DEFAULT_CONFIG_PATH`]
/// if it exists, else [`OPENWRT_CONFIG_PATH`] if that exists, else
/// [`DEFAULT_CONFIG_PATH`] (whose absence [`Config::load`] then explains).
pub fn default_path() -> PathBuf {
    default_path_with(|p| p.exists())
}

/// [`default_path`] with the existence test given (for tests).
pub fn default_path_with(exists: impl Fn(&Path) -> bool) -> PathBuf {
    [DEFAULT_CONFIG_PATH, OPENWRT_CONFIG_PATH]
        .into_iter()
        .map(Path::new)
        .find(|p| exists(p))
        .unwrap_or(Path::new(DEFAULT_CONFIG_PATH))
        .to_path_buf()
}

pub mod fields;

use fields::{Absent, Res, Value};

/// `[log]` as written in the file.
#[derive(Debug, Clone, Default)]
struct LogRaw {
    level: Option<String>,
}

/// Reads `[log]` (as its derived deserializer did).
fn read_log(v: &Value<'_>) -> Res<LogRaw> {
    let mut raw = LogRaw::default();
    fields::fields(
        v,
        "struct LogRaw",
        &[("level", Absent::Default)],
        &mut |_, v| {
            raw.level = Some(fields::string(v)?);
            Ok(())
        },
    )?;
    Ok(raw)
}

/// Reads `[mqtt]` into sitewatch_mqtt's [`BrokerConfig`] with the words
/// of its derived deserializer, which the agent no longer compiles.
fn read_mqtt(v: &Value<'_>) -> Res<BrokerConfig> {
    use fields::{path, string};
    const FIELDS: &[(&str, Absent)] = &[
        ("url", Absent::Required),
        ("client_id", Absent::Default),
        ("username", Absent::Default),
        ("password", Absent::Default),
        ("password_file", Absent::Default),
        ("ca_file", Absent::Default),
        ("client_cert_file", Absent::Default),
        ("client_key_file", Absent::Default),
        ("allow_plaintext", Absent::Default),
        ("keep_alive_secs", Absent::Default),
    ];
    let mut m = BrokerConfig::with_url(String::new());
    fields::fields(v, "struct BrokerConfig", FIELDS, &mut |i, v| {
        match i {
            0 => m.url = string(v)?,
            1 => m.client_id = Some(string(v)?),
            2 => m.username = Some(string(v)?),
            3 => m.password = Some(Secret::new(string(v)?)),
            4 => m.password_file = Some(path(v)?),
            5 => m.ca_file = Some(path(v)?),
            6 => m.client_cert_file = Some(path(v)?),
            7 => m.client_key_file = Some(path(v)?),
            8 => m.allow_plaintext = fields::boolean(v)?,
            _ => m.keep_alive_secs = fields::u16(v)?,
        }
        Ok(())
    })?;
    Ok(m)
}

/// Top-level keys besides the sources' sections (`crate::sources::NAMES`).
const OWN_KEYS: [&str; 5] = ["site_id", "mqtt", "log", "outbox", "status"];

/// The config document, parsed once. Each section is read from its own
/// part of it, so a mistake in one section does not hide a mistake in
/// another, and each problem names its line (the spans are the
/// document's).
///
/// Why not `toml::from_str` per section (as before): it parses the whole
/// text again for every section, and each section needed a one-field
/// wrapper struct whose deserializer, with toml's document layer, was
/// compiled once per section; on the gateway that was dead weight.
pub struct Doc<'a> {
    text: &'a str,
    root: toml::de::DeTable<'a>,
}

impl<'a> Doc<'a> {
    /// Parses `text`; `Err` is a syntax error, as [`toml_problem`] words it.
    pub fn parse(text: &'a str) -> Result<Doc<'a>, String> {
        match toml::de::DeTable::parse(text) {
            Ok(root) => Ok(Doc {
                text,
                root: root.into_inner(),
            }),
            Err(e) => Err(toml_problem(text, "", &e)),
        }
    }

    /// The top-level keys, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.root.keys().map(|k| k.get_ref().as_ref())
    }

    /// The value at `path` (`["rtsp", "camera"]`), if every step is there.
    pub fn get(&self, path: &[&str]) -> Option<&toml::de::DeValue<'a>> {
        let (first, rest) = path.split_first()?;
        let mut v = self.root.get(*first)?.get_ref();
        for key in rest {
            v = v.get(*key)?.get_ref();
        }
        Some(v)
    }

    /// Reads the top-level `key` with `read` (`Some(None)`: absent); on a
    /// mistake records a problem with its line (`prefix` names the
    /// section) and returns `None`.
    pub fn section<T>(
        &self,
        key: &str,
        prefix: &str,
        problems: &mut Vec<String>,
        read: fn(&Value<'a>) -> Res<T>,
    ) -> Option<Option<T>> {
        let Some(value) = self.root.get(key) else {
            return Some(None);
        };
        match read(value) {
            Ok(v) => Some(Some(v)),
            Err(e) => {
                problems.push(problem_at(self.text, prefix, &e.message, Some(e.span)));
                None
            }
        }
    }
}

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (file path), for messages.
    pub origin: String,
    /// Site id, valid as an MQTT topic segment.
    pub site_id: String,
    /// Broker settings; `client_id` is always set (default
    /// `sitewatch-agent-{site_id}`). Its `Debug` redacts the password.
    pub mqtt: BrokerConfig,
    /// Every source's settings, one field per source (`[heartbeat]`,
    /// `[disk]`, `[syslog]`, …; see [`crate::sources`]).
    pub sources: Sections,
    /// `tracing` filter directive from `[log] level` (`info`, `debug`,
    /// `info,rumqttc=warn`…); `RUST_LOG` wins when set.
    pub log_level: Option<String>,
    /// Store-and-forward outbox (defaults when there is no `[outbox]`).
    pub outbox: crate::uplink::outbox::OutboxConfig,
    /// `[status]`: where `sitewatch-agent status` finds this agent's
    /// state (always on; defaults when the table is absent).
    pub status: crate::status::StatusConfig,
}

/// Every problem found in a config, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    /// Where the config came from (file path).
    pub origin: String,
    /// One sentence per problem, in file order where possible.
    pub list: Vec<String>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.list.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        writeln!(f, "{}: {n} {noun}:", self.origin)?;
        for (i, p) in self.list.iter().enumerate() {
            // Indent continuation lines of multi-line messages.
            let p = p.replace('\n', "\n     ");
            writeln!(f, "  {}. {p}", i + 1)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Config {
    /// Reads and validates the config file at `path`, applying the process
    /// environment overrides.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// Like [`Config::load`], with environment lookups through `env` (tests
    /// pass a map so they need not touch the process environment).
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Problems> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &origin, env),
            Err(e) => {
                let mut problem = format!("cannot read the config file {origin}: {e}");
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_CONFIG_PATH)
                {
                    problem.push_str(&format!(
                        " (nor is there OpenWrt's generated {OPENWRT_CONFIG_PATH}); \
                         name the file with --config FILE"
                    ));
                }
                Err(Problems {
                    list: vec![problem],
                    origin,
                })
            }
        }
    }

    /// Parses and validates config text. `origin` names it in messages.
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Problems> {
        let mut problems = Vec::new();
        let fail = |list| Problems {
            origin: origin.to_owned(),
            list,
        };

        // Syntax first: nothing else can be checked in a broken document.
        let doc = match Doc::parse(text) {
            Ok(d) => d,
            Err(problem) => return Err(fail(vec![problem])),
        };
        for key in doc.keys() {
            if !OWN_KEYS.contains(&key) && !sources::NAMES.contains(&key) {
                let known: Vec<String> = sources::NAMES.iter().map(|n| format!("[{n}]")).collect();
                problems.push(format!(
                    "unknown setting `{key}` (known: site_id, [mqtt], {}, [log], [outbox], [status])",
                    known.join(", ")
                ));
            }
        }

        let site = doc
            .section("site_id", "", &mut problems, fields::string)
            .flatten();
        let mqtt = doc.section("mqtt", "[mqtt] ", &mut problems, read_mqtt);
        let raw_sources = sources::RawSections::read(&doc, &mut problems);
        let log = doc
            .section("log", "[log] ", &mut problems, read_log)
            .map(Option::unwrap_or_default);
        let status = crate::status::from_table(doc.get(&["status"]), &mut problems);
        let outbox = doc
            .section(
                "outbox",
                "[outbox] ",
                &mut problems,
                crate::uplink::outbox::OutboxConfig::read,
            )
            .and_then(|o| {
                let o = o.unwrap_or_default();
                let before = problems.len();
                problems.extend(o.problems());
                (problems.len() == before).then_some(o)
            });

        // Site id, with its override.
        let site = env(ENV_SITE_ID).or(site);
        let site_id = match site {
            None => {
                problems.push(format!(
                    "site_id is missing: set site_id = \"...\" at the top of the file \
                     or {ENV_SITE_ID} in the environment"
                ));
                None
            }
            Some(s) => match sitewatch_wire::topic::validate_site(&s) {
                Ok(()) => Some(s),
                Err(e) => {
                    problems.push(format!("site_id `{s}`: {e}"));
                    None
                }
            },
        };

        // Broker. A missing [mqtt] table is fine when the URL comes from the
        // environment (installer scripts).
        let mqtt = match mqtt {
            None => None, // parse error already reported
            Some(Some(mut m)) => {
                m.apply_env(&env);
                Some(m)
            }
            Some(None) => match env(sitewatch_mqtt::ENV_URL) {
                Some(url) => {
                    let mut m = BrokerConfig::with_url(url);
                    m.apply_env(&env);
                    Some(m)
                }
                None => {
                    problems.push(format!(
                        "the [mqtt] section is missing: add [mqtt] with url = \"mqtts://...\" \
                         or set {} in the environment",
                        sitewatch_mqtt::ENV_URL
                    ));
                    None
                }
            },
        };
        let mqtt = mqtt.and_then(|mut m| {
            let before = problems.len();
            problems.extend(m.problems());
            if m.client_id.is_none() {
                if let Some(site) = &site_id {
                    m.client_id = Some(format!("sitewatch-agent-{site}"));
                }
            }
            (problems.len() == before).then_some(m)
        });

        let sources = raw_sources.validate(&mut problems);
        let log_level = log.and_then(|l| validate_log(l, &mut problems));

        match (site_id, mqtt, sources, log_level, outbox) {
            (Some(site_id), Some(mqtt), Some(sources), Some(log_level), Some(outbox))
                if problems.is_empty() =>
            {
                Ok(Config {
                    origin: origin.to_owned(),
                    site_id,
                    mqtt,
                    sources,
                    log_level,
                    outbox,
                    // Every problem above (a bad [status] too) fails the guard.
                    status: status.unwrap_or_default(),
                })
            }
            _ => {
                if problems.is_empty() {
                    // Cannot happen: every None above pushed a problem.
                    problems.push("the config is incomplete".into());
                }
                Err(fail(problems))
            }
        }
    }

    /// The MQTT client id (always set after validation).
    pub fn client_id(&self) -> &str {
        self.mqtt.client_id.as_deref().unwrap_or("sitewatch-agent")
    }

    /// A one-paragraph summary for `check`, without secrets.
    pub fn summary(&self) -> String {
        let m = &self.mqtt;
        let mut s = format!("site {}; broker {}", self.site_id, m.url);
        if let Ok(u) = m.url() {
            if u.tls {
                match &m.ca_file {
                    Some(ca) => s.push_str(&format!(" (TLS, CA {})", ca.display())),
                    None => s.push_str(" (TLS, system trust store)"),
                }
                if let Some(c) = &m.client_cert_file {
                    s.push_str(&format!(", client certificate {}", c.display()));
                }
            } else {
                s.push_str(" (plain MQTT, not encrypted)");
            }
        }
        s.push_str(&format!("; client id {}", self.client_id()));
        if let Some(u) = &m.username {
            let pw = match (&m.password, &m.password_file) {
                (Some(_), _) => "password set".to_owned(),
                (None, Some(f)) => format!("password from {}", f.display()),
                (None, None) => "no password".to_owned(),
            };
            s.push_str(&format!("; username {u} ({pw})"));
        }
        self.sources.summary(&mut s);
        s
    }
}

/// The first line of a password file, for the sources that take one
/// (`[[rtsp.camera]]`, `[ups]`): bounded (file 4 KB, password `max_len`
/// bytes), never logged; every problem in plain words with the path.
pub(crate) fn read_password_file(path: &Path, max_len: usize) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > 4096 {
        return Err(format!("{} is larger than 4 KB", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if line.len() > max_len {
        return Err(format!(
            "{}: the password is longer than {max_len} bytes",
            path.display()
        ));
    }
    Ok(line.to_owned())
}

/// Reads the top-level `key` of `text` with `read`: the problem as
/// [`Config::parse`] words it, without a prefix (unit tests of a section).
#[cfg(test)]
pub(crate) fn read_for_test<T>(
    text: &str,
    key: &str,
    read: for<'r, 'a> fn(&'r Value<'a>) -> Res<T>,
) -> Result<Option<T>, String> {
    let doc = Doc::parse(text)?;
    let mut problems = Vec::new();
    doc.section(key, "", &mut problems, read)
        .ok_or_else(|| problems.join("\n"))
}

/// Reads the whole of `text` as one table with `read` (unit tests of a
/// section written without its header).
#[cfg(test)]
pub(crate) fn read_root_for_test<T>(
    text: &str,
    read: for<'r, 'a> fn(&'r Value<'a>) -> Res<T>,
) -> Result<T, String> {
    let doc = Doc::parse(text)?;
    let root = toml::Spanned::new(0..text.len(), toml::de::DeValue::Table(doc.root));
    read(&root).map_err(|e| problem_at(text, "", &e.message, Some(e.span)))
}

/// Reads the whole of `text` as one table with `read`; `Err` is the
/// message alone, without a line (the cleanup fuzz target's entry).
pub fn read_root<T>(
    text: &str,
    read: for<'r, 'a> fn(&'r Value<'a>) -> Res<T>,
) -> Result<T, String> {
    match toml::de::DeTable::parse(text) {
        Ok(root) => {
            let span = root.span();
            let root = toml::Spanned::new(span, toml::de::DeValue::Table(root.into_inner()));
            read(&root).map_err(|e| e.message)
        }
        Err(e) => Err(e.message().to_owned()),
    }
}

/// `"[disk] line 12: unknown field ..."`.
fn toml_problem(text: &str, prefix: &str, e: &toml::de::Error) -> String {
    problem_at(text, prefix, e.message(), e.span())
}

/// A problem with the line of `span` in `text` (`"[disk] line 12: ..."`).
fn problem_at(text: &str, prefix: &str, msg: &str, span: Option<std::ops::Range<usize>>) -> String {
    let msg = msg.trim_end();
    match span {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map(|before| before.matches('\n').count() + 1)
                .unwrap_or(1);
            format!("{prefix}line {line}: {msg}")
        }
        None => format!("{prefix}{msg}"),
    }
}

fn validate_log(l: LogRaw, problems: &mut Vec<String>) -> Option<Option<String>> {
    match l.level {
        None => Some(None),
        Some(level) => {
            // A bare word is a target name to the parser ("loud" would enable
            // everything for target `loud`), so bare words must be levels.
            const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
            let bad_word = level.split(',').map(str::trim).find(|d| {
                !d.is_empty()
                    && !d.contains('=')
                    && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
            });
            let parsed = level.parse::<tracing_subscriber::filter::Targets>();
            match (bad_word, parsed) {
                (None, Ok(_)) => Some(Some(level)),
                (Some(w), _) => {
                    problems.push(format!(
                        "log.level `{level}`: `{w}` is not a level; use error, warn, info, \
                         debug or trace (or target=level)"
                    ));
                    None
                }
                (None, Err(e)) => {
                    problems.push(format!(
                        "log.level `{level}` is not a log filter ({e}); use error, warn, info, \
                         debug or trace"
                    ));
                    None
                }
            }
        }
    }
}

/// Walking a section of the parsed document by hand with the agent's own
/// words (`[reach]`, `[lte]`; [`fields`] has serde's words for the other
/// sections): typed reads that push a problem naming the key.
pub mod walk {
    use toml::de::DeValue;

    /// A TOML value for messages: strings quoted, integers as written, other
    /// kinds by their type.
    pub fn shown(v: &DeValue<'_>) -> String {
        match v {
            DeValue::String(s) => format!("{s:?}"),
            DeValue::Integer(n) => n.to_string(),
            other => format!("a {}", other.type_str()),
        }
    }

    /// A TOML integer that fits an `i64`.
    pub fn integer(v: &DeValue<'_>) -> Option<i64> {
        v.as_integer()
            .and_then(|n| i64::from_str_radix(n.as_str(), n.radix()).ok())
    }

    /// A number setting: within `u32` (ranges are checked by `validate`).
    pub fn number(key: &str, v: &DeValue<'_>, out: &mut u32, problems: &mut Vec<String>) {
        match integer(v).and_then(|n| u32::try_from(n).ok()) {
            Some(n) => *out = n,
            None => problems.push(format!("{key} = {}: must be a whole number", shown(v))),
        }
    }

    /// A text setting.
    pub fn text(key: &str, v: &DeValue<'_>, out: &mut String, problems: &mut Vec<String>) {
        match v.as_str() {
            Some(s) => *out = s.to_owned(),
            None => problems.push(format!("{key} = {}: must be a string", shown(v))),
        }
    }

    /// A yes/no setting.
    pub fn flag(key: &str, v: &DeValue<'_>, out: &mut bool, problems: &mut Vec<String>) {
        match v.as_bool() {
            Some(b) => *out = b,
            None => problems.push(format!("{key} = {}: must be true or false", shown(v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn default_path_falls_back_to_the_openwrt_generated_file() {
        let only = |present: &'static str| move |p: &Path| p == Path::new(present);
        assert_eq!(
            default_path_with(only(DEFAULT_CONFIG_PATH)),
            Path::new(DEFAULT_CONFIG_PATH)
        );
        assert_eq!(
            default_path_with(only(OPENWRT_CONFIG_PATH)),
            Path::new(OPENWRT_CONFIG_PATH)
        );
        // Both present: the hand-written file wins.
        assert_eq!(default_path_with(|_| true), Path::new(DEFAULT_CONFIG_PATH));
        assert_eq!(default_path_with(|_| false), Path::new(DEFAULT_CONFIG_PATH));
    }

    fn parse(text: &str) -> Result<Config, Problems> {
        Config::parse(text, "test.toml", no_env)
    }

    const MINIMAL: &str = r#"
site_id = "lokasi1"
[mqtt]
url = "mqtt://127.0.0.1:1883"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.site_id, "lokasi1");
        assert_eq!(c.client_id(), "sitewatch-agent-lokasi1");
        assert_eq!(c.sources.heartbeat.interval, Duration::from_secs(30));
        assert_eq!(c.sources.disk.interval, Duration::from_secs(60));
        assert_eq!(c.sources.disk.mounts, vec!["/".to_owned()]);
        assert_eq!(c.sources.disk.statvfs_timeout, Duration::from_millis(5000));
        assert_eq!(c.log_level, None);
        assert_eq!(c.mqtt.keep_alive_secs, 30);
    }

    #[test]
    fn two_mistakes_give_two_problems() {
        let text = r#"
site_id = "Lokasi 1"
[mqtt]
url = "mqtt://127.0.0.1"
[disk]
mounts = ["srv/recordings"]
"#;
        let p = parse(text).expect_err("invalid");
        assert_eq!(p.list.len(), 2, "{p}");
        assert!(p.list[0].contains("site_id"), "{p}");
        assert!(p.list[1].contains("absolute"), "{p}");
        let shown = p.to_string();
        assert!(shown.contains("test.toml: 2 problems"), "{shown}");
        assert!(
            shown.contains("  1. ") && shown.contains("  2. "),
            "{shown}"
        );
    }

    #[test]
    fn mistakes_in_different_sections_are_all_reported() {
        let text = r#"
site_id = "ok"
colour = "blue"
[mqtt]
url = "mqtt://127.0.0.1"
[heartbeat]
interval_secs = "30"
[disk]
intervl_secs = 10
[log]
level = "loud"
"#;
        let p = parse(text).expect_err("invalid");
        assert_eq!(p.list.len(), 4, "{p}");
        assert!(p.list[0].contains("unknown setting `colour`"), "{p}");
        assert!(p.list[1].starts_with("[heartbeat] line 7:"), "{p}");
        assert!(p.list[2].starts_with("[disk] line 9:"), "{p}");
        assert!(p.list[2].contains("intervl_secs"), "{p}");
        assert!(p.list[3].contains("log.level"), "{p}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let p = parse("site_id = \"a\"\n[mqtt\nurl = 1\n").expect_err("invalid");
        assert_eq!(p.list.len(), 1, "{p}");
        assert!(p.list[0].starts_with("line 2:"), "{p}");
    }

    #[test]
    fn missing_site_and_mqtt_are_explained() {
        let p = parse("").expect_err("invalid");
        assert_eq!(p.list.len(), 2, "{p}");
        assert!(p.list[0].contains("site_id is missing"), "{p}");
        assert!(p.list[1].contains("[mqtt] section is missing"), "{p}");
    }

    #[test]
    fn plaintext_to_remote_broker_is_refused_unless_allowed() {
        let text = "site_id = \"a\"\n[mqtt]\nurl = \"mqtt://broker.example.com\"\n";
        let p = parse(text).expect_err("plaintext refused");
        assert_eq!(p.list.len(), 1, "{p}");
        assert!(p.list[0].contains("allow_plaintext"), "{p}");
        let allowed = format!("{text}allow_plaintext = true\n");
        parse(&allowed).expect("allowed explicitly");
        // Loopback needs no opt-in.
        parse(MINIMAL).expect("loopback");
    }

    #[test]
    fn env_overrides_apply_before_validation() {
        let env: HashMap<&str, &str> = [
            (ENV_SITE_ID, "from-env"),
            ("SITEWATCH_MQTT_URL", "mqtt://localhost:18830"),
            ("SITEWATCH_MQTT_USERNAME", "installer"),
            ("SITEWATCH_MQTT_PASSWORD", "hunter2"),
        ]
        .into();
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        // Invalid site id and a remote plaintext URL in the file are both
        // replaced by valid values from the environment.
        let text = "site_id = \"BAD ID\"\n[mqtt]\nurl = \"mqtt://far.example.com\"\n";
        let c = Config::parse(text, "t", lookup).expect("env fixes it");
        assert_eq!(c.site_id, "from-env");
        assert_eq!(c.client_id(), "sitewatch-agent-from-env");
        assert_eq!(c.mqtt.url, "mqtt://localhost:18830");
        assert_eq!(
            c.mqtt.credentials().expect("creds"),
            Some(("installer".into(), "hunter2".into()))
        );
        // Without an [mqtt] table at all, the URL may come from the env.
        let c = Config::parse("site_id = \"x\"\n", "t", lookup).expect("url from env");
        assert_eq!(c.mqtt.url, "mqtt://localhost:18830");
        // Secrets never show in Debug or the summary.
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.summary().contains("hunter2"));
        assert!(c.summary().contains("password set"));
    }

    #[test]
    fn mounts_are_validated_and_normalized() {
        let ok = format!("{MINIMAL}[disk]\nmounts = [\"/\", \"/srv/recordings/\", \"/tmp\"]\n");
        let c = parse(&ok).expect("valid");
        assert_eq!(c.sources.disk.mounts, vec!["/", "/srv/recordings", "/tmp"]);

        let many: Vec<String> = (0..17).map(|i| format!("\"/m{i}\"")).collect();
        let text = format!("{MINIMAL}[disk]\nmounts = [{}]\n", many.join(","));
        let p = parse(&text).expect_err("too many");
        assert!(p.list[0].contains("at most 16"), "{p}");

        let long = format!("/{}", "a".repeat(300));
        let text = format!(
            "{MINIMAL}[disk]\nmounts = [\"/a\", \"/a/\", \"{long}\", \"/x/../y\"]\nstatvfs_timeout_ms = 0\ninterval_secs = 0\n"
        );
        let p = parse(&text).expect_err("invalid");
        assert_eq!(p.list.len(), 5, "{p}");
        let all = p.list.join("\n");
        for needle in [
            "interval_secs = 0",
            "statvfs_timeout_ms",
            "twice",
            "255",
            "`..`",
        ] {
            assert!(all.contains(needle), "missing {needle}: {p}");
        }

        let off = format!("{MINIMAL}[disk]\nmounts = []\n");
        assert!(parse(&off).expect("valid").sources.disk.mounts.is_empty());
    }

    #[test]
    fn mqtt_problems_are_included() {
        let text = "site_id = \"a\"\n[mqtt]\nurl = \"mqtts://b\"\nca_file = \"/nonexistent/ca.pem\"\nkeep_alive_secs = 1\n";
        let p = parse(text).expect_err("invalid");
        assert_eq!(p.list.len(), 2, "{p}");
        assert!(
            p.list.iter().any(|s| s.contains("/nonexistent/ca.pem")),
            "{p}"
        );
        assert!(p.list.iter().any(|s| s.contains("keep_alive")), "{p}");
    }

    #[test]
    fn log_level_accepts_directives() {
        let c = parse(&format!("{MINIMAL}[log]\nlevel = \"info,rumqttc=warn\"\n")).expect("ok");
        assert_eq!(c.log_level.as_deref(), Some("info,rumqttc=warn"));
        parse(&format!("{MINIMAL}[log]\nlevel = \"DEBUG\"\n")).expect("case-insensitive");
        let p = parse(&format!("{MINIMAL}[log]\nlevel = \"verbose\"\n")).expect_err("bad");
        assert!(p.list[0].contains("`verbose` is not a level"), "{p}");
    }

    #[test]
    fn syslog_is_off_without_its_table_and_validated_with_it() {
        assert!(parse(MINIMAL).expect("valid").sources.syslog.is_none());
        let c = parse(&format!(
            "{MINIMAL}[syslog]\nudp = [\"0.0.0.0:1514\"]\ntcp = []\n"
        ))
        .expect("valid");
        let sys = c.sources.syslog.as_ref().expect("on");
        assert_eq!(sys.udp.len(), 1);
        assert!(sys.tcp.is_empty());
        assert!(c.summary().contains("syslog UDP 0.0.0.0:1514 and TCP off"));
        // Syslog problems are listed with the others.
        let text = format!(
            "{MINIMAL}[disk]\nmounts = [\"rel\"]\n[syslog]\ntimezone = \"WIB\"\nmax_tcp_connections = 0\n"
        );
        let p = parse(&text).expect_err("invalid");
        assert_eq!(p.list.len(), 3, "{p}");
        let p = parse(&format!("{MINIMAL}[syslog]\nudp_port = 514\n")).expect_err("unknown key");
        assert!(p.list[0].starts_with("[syslog] line"), "{p}");
    }

    #[test]
    fn smart_is_off_without_its_table_and_validated_with_it() {
        assert!(parse(MINIMAL).expect("valid").sources.smart.is_none());
        let c = parse(&format!(
            "{MINIMAL}[smart]\ninterval_secs = 600\n[[smart.device]]\npath = \"/dev/sdb\"\ntype = \"sat12\"\n"
        ))
        .expect("valid");
        let sm = c.sources.smart.as_ref().expect("on");
        assert_eq!(sm.interval.as_secs(), 600);
        assert_eq!(
            sm.type_for(Path::new("/dev/sdb")),
            crate::sources::smart::DeviceType::Sat12
        );
        assert!(c.summary().contains("SMART every 600 s"));
        assert!(parse(&format!("{MINIMAL}[smart]\nenabled = false\n"))
            .expect("valid")
            .sources
            .smart
            .is_none());
        // SMART problems are listed with the others.
        let p = parse(&format!(
            "{MINIMAL}[disk]\nmounts = [\"rel\"]\n[smart]\ninterval_secs = 1\n"
        ))
        .expect_err("invalid");
        assert_eq!(p.list.len(), 2, "{p}");
        let p = parse(&format!("{MINIMAL}[smart]\ninterval = 5\n")).expect_err("unknown key");
        assert!(p.list[0].starts_with("[smart] line"), "{p}");
    }

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        // agent-local.toml is complete and valid as shipped.
        let local = Config::load_with_env(&dir.join("agent-local.toml"), no_env)
            .expect("examples/agent-local.toml is valid");
        assert!(local.mqtt.url.starts_with("mqtt://127.0.0.1"));
        // agent.toml names CA and client files that exist only on a real
        // site; every other setting must be valid.
        match Config::load_with_env(&dir.join("agent.toml"), no_env) {
            Ok(c) => panic!("expected missing-file problems, got {c:?}"),
            Err(p) => {
                assert!(!p.list.is_empty());
                for problem in &p.list {
                    assert!(
                        problem.contains("cannot read /etc/sitewatch/"),
                        "unexpected problem in examples/agent.toml: {problem}"
                    );
                }
            }
        }
    }
}
