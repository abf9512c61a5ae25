//! The `[cleanup]` table: raw TOML form and validation into
//! [`CleanupConfig`]. Pure: it never touches the filesystem (roots are
//! checked to exist and be canonical when a pass starts), so
//! `sitewatch-agent check` stays safe.
//!
//! ```toml
//! [cleanup]
//! interval_secs = 300
//! dry_run = false                 # daemon only reports what it would delete
//!
//! [[cleanup.root]]
//! path = "/srv/recordings"        # absolute, canonical (no symlink), not "/"
//! high_watermark_pct = 90         # start deleting above this used %
//! low_watermark_pct = 85          # ...until below this one
//! include = ["*.mp4", "*.dav", "**/*.bak"]   # default: every file
//! exclude = ["keep/**"]
//! min_age = "2d"                  # "45s", "30m", "12h", "2d" or seconds; default 1 day
//! keep_newest = 10                # never the newest N matching files
//! max_deletions_per_run = 10000   # also bounds the memory of a pass
//! ```

use std::time::Duration;

use crate::config::fields::{self, Absent, Res, Value};

use super::glob::Glob;

/// Most roots in one config.
pub const MAX_ROOTS: usize = 16;
/// Most include or exclude patterns per root.
pub const MAX_PATTERNS: usize = 64;
/// Upper bound of `max_deletions_per_run`; each planned deletion keeps
/// one path in memory during a pass (see `cleanup::walk`).
pub const MAX_DELETIONS_LIMIT: usize = 1_000_000;
/// Longest root path, in bytes.
pub const MAX_ROOT_LEN: usize = 1024;
/// Longest `min_age` (10 years).
const MAX_MIN_AGE_SECS: u64 = 10 * 366 * 86_400;
/// Default `min_age`: one day.
const DEFAULT_MIN_AGE_SECS: u64 = 86_400;
const MAX_INTERVAL_SECS: u64 = 86_400;

fn default_interval() -> u64 {
    300
}
fn default_keep_newest() -> u64 {
    10
}
fn default_max_deletions() -> usize {
    10_000
}

/// `[cleanup]` as written in the file.
#[derive(Debug, Clone)]
pub struct CleanupRaw {
    interval_secs: u64,
    dry_run: bool,
    root: Vec<RootRaw>,
}

/// One `[[cleanup.root]]` as written.
#[derive(Debug, Clone, Default)]
struct RootRaw {
    path: String,
    high_watermark_pct: u8,
    low_watermark_pct: u8,
    include: Vec<String>,
    exclude: Vec<String>,
    /// Seconds or a string with a unit (validation sorts the kinds out).
    min_age: Option<MinAge>,
    keep_newest: u64,
    max_deletions_per_run: usize,
}

/// `min_age` as written: seconds, text, or another kind (named for the
/// message).
#[derive(Debug, Clone)]
enum MinAge {
    Secs(i64),
    Text(String),
    Other(&'static str),
}

/// Reads `[cleanup]` (serde's words: `crate::config::fields`).
pub fn read(v: &Value<'_>) -> Res<CleanupRaw> {
    const FIELDS: &[(&str, Absent)] = &[
        ("interval_secs", Absent::Default),
        ("dry_run", Absent::Default),
        ("root", Absent::Default),
    ];
    let mut r = CleanupRaw {
        interval_secs: default_interval(),
        dry_run: false,
        root: Vec::new(),
    };
    fields::fields(v, "struct CleanupRaw", FIELDS, &mut |i, v| {
        match i {
            0 => r.interval_secs = fields::u64(v)?,
            1 => r.dry_run = fields::boolean(v)?,
            _ => r.root = fields::list(v, read_root)?,
        }
        Ok(())
    })?;
    Ok(r)
}

fn read_root(v: &Value<'_>) -> Res<RootRaw> {
    use fields::{strings, u8};
    const FIELDS: &[(&str, Absent)] = &[
        ("path", Absent::Required),
        ("high_watermark_pct", Absent::Required),
        ("low_watermark_pct", Absent::Required),
        ("include", Absent::Default),
        ("exclude", Absent::Default),
        ("min_age", Absent::Default),
        ("keep_newest", Absent::Default),
        ("max_deletions_per_run", Absent::Default),
    ];
    let mut r = RootRaw {
        keep_newest: default_keep_newest(),
        max_deletions_per_run: default_max_deletions(),
        ..RootRaw::default()
    };
    fields::fields(v, "struct RootRaw", FIELDS, &mut |i, v| {
        match i {
            0 => r.path = fields::string(v)?,
            1 => r.high_watermark_pct = u8(v)?,
            2 => r.low_watermark_pct = u8(v)?,
            3 => r.include = strings(v)?,
            4 => r.exclude = strings(v)?,
            5 => {
                fields::any(v)?;
                let v = v.get_ref();
                r.min_age = Some(match (fields::int_i64(v), v.as_str()) {
                    (Some(n), _) => MinAge::Secs(n),
                    (None, Some(s)) => MinAge::Text(s.to_owned()),
                    (None, None) => MinAge::Other(v.type_str()),
                });
            }
            6 => r.keep_newest = fields::u64(v)?,
            _ => r.max_deletions_per_run = fields::usize(v)?,
        }
        Ok(())
    })?;
    Ok(r)
}

/// Validated `[cleanup]` settings. In [`crate::config::Config`] only when the file
/// has a `[cleanup]` table: cleanup is off otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupConfig {
    /// Period between passes.
    pub interval: Duration,
    /// The daemon only reports what it would delete.
    pub dry_run: bool,
    /// The directories to keep below their watermarks.
    pub roots: Vec<RootConfig>,
}

/// One validated root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootConfig {
    /// Absolute path without `.`, `..`, `//` or a trailing `/`; never `/`.
    /// A pass refuses it unless it is canonical (no symlink on the way).
    pub path: String,
    /// Used % of the filesystem above which a pass deletes.
    pub high_watermark_pct: u8,
    /// Used % a pass deletes down to (strictly below).
    pub low_watermark_pct: u8,
    /// A file is a candidate if it matches one of these (empty: any file).
    pub include: Vec<Glob>,
    /// ...and none of these.
    pub exclude: Vec<Glob>,
    /// Files modified more recently than this are never deleted.
    pub min_age: Duration,
    /// The newest this many matching files are never deleted.
    pub keep_newest: u64,
    /// Most files deleted by one pass.
    pub max_deletions_per_run: usize,
}

impl RootConfig {
    /// Whether the root-relative path `rel` is a candidate by its name.
    pub fn selects(&self, rel: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|g| g.matches(rel)))
            && !self.exclude.iter().any(|g| g.matches(rel))
    }

    /// A root with the given path and watermarks and defaults otherwise
    /// (for tests and tools; the path is not validated).
    pub fn new(path: &str, high_watermark_pct: u8, low_watermark_pct: u8) -> RootConfig {
        RootConfig {
            path: path.to_owned(),
            high_watermark_pct,
            low_watermark_pct,
            include: Vec::new(),
            exclude: Vec::new(),
            min_age: Duration::from_secs(DEFAULT_MIN_AGE_SECS),
            keep_newest: default_keep_newest(),
            max_deletions_per_run: default_max_deletions(),
        }
    }
}

impl CleanupConfig {
    /// One line for `check`.
    pub fn summary(&self) -> String {
        let roots: Vec<String> = self
            .roots
            .iter()
            .map(|r| {
                format!(
                    "{} (above {}% down to {}%)",
                    r.path, r.high_watermark_pct, r.low_watermark_pct
                )
            })
            .collect();
        format!(
            "cleanup{} every {} s: {}",
            if self.dry_run { " (dry run)" } else { "" },
            self.interval.as_secs(),
            if roots.is_empty() {
                "no roots".to_owned()
            } else {
                roots.join(", ")
            }
        )
    }
}

/// Parses `"45s"`, `"30m"`, `"12h"`, `"2d"` or `"3600"` (seconds).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3_600),
        Some((i, 'd')) => (&t[..i], 86_400),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        format!("`{text}` is not a duration; use e.g. \"45s\", \"30m\", \"12h\" or \"2d\"")
    })?;
    let secs = n
        .checked_mul(mult)
        .filter(|s| *s <= MAX_MIN_AGE_SECS)
        .ok_or_else(|| format!("`{text}` is longer than 10 years"))?;
    Ok(Duration::from_secs(secs))
}

/// Checks a root path in words; `Ok` is the path without a trailing `/`.
fn check_root_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("is not an absolute path (it must start with /)".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path.len() > MAX_ROOT_LEN {
        return Err(format!("is longer than {MAX_ROOT_LEN} bytes"));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("is the whole system (`/`); name the recordings folder instead".into());
    }
    if trimmed.split('/').any(|c| c == "." || c == "..") {
        return Err("must not contain `.` or `..` components".into());
    }
    if trimmed.contains("//") {
        return Err("must not contain `//`".into());
    }
    Ok(trimmed.to_owned())
}

/// Whether `inner` is `outer` or inside it (component-wise).
fn nests(outer: &str, inner: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn patterns(key: &str, root: &str, list: &[String], problems: &mut Vec<String>) -> Vec<Glob> {
    if list.len() > MAX_PATTERNS {
        problems.push(format!(
            "cleanup root {root}: {key} lists {} patterns; at most {MAX_PATTERNS} are allowed",
            list.len()
        ));
        return Vec::new();
    }
    list.iter()
        .filter_map(|p| match Glob::new(p) {
            Ok(g) => Some(g),
            Err(e) => {
                problems.push(format!("cleanup root {root}: {key} pattern `{p}` {e}"));
                None
            }
        })
        .collect()
}

/// Validates the raw table, appending plain-words problems.
pub(crate) fn validate(raw: CleanupRaw, problems: &mut Vec<String>) -> Option<CleanupConfig> {
    let before = problems.len();
    if !(1..=MAX_INTERVAL_SECS).contains(&raw.interval_secs) {
        problems.push(format!(
            "cleanup.interval_secs = {}: must be between 1 and {MAX_INTERVAL_SECS} seconds",
            raw.interval_secs
        ));
    }
    if raw.root.len() > MAX_ROOTS {
        problems.push(format!(
            "cleanup lists {} roots; at most {MAX_ROOTS} are allowed",
            raw.root.len()
        ));
    }
    let mut roots: Vec<RootConfig> = Vec::new();
    for r in raw.root.iter().take(MAX_ROOTS) {
        let path = match check_root_path(&r.path) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("cleanup root `{}` {e}", r.path));
                continue;
            }
        };
        if let Some(other) = roots
            .iter()
            .find(|o| nests(&o.path, &path) || nests(&path, &o.path))
        {
            problems.push(if other.path == path {
                format!("cleanup root {path} is listed twice")
            } else {
                format!(
                    "cleanup roots {} and {path} overlap (one is inside the other); \
                     list only one of them",
                    other.path
                )
            });
            continue;
        }
        let (hi, lo) = (r.high_watermark_pct, r.low_watermark_pct);
        if !(1..=99).contains(&hi) || lo == 0 || lo >= hi {
            problems.push(format!(
                "cleanup root {path}: watermarks high {hi}% and low {lo}% must satisfy \
                 0 < low < high < 100 (e.g. high 90, low 85)"
            ));
        }
        let min_age = match &r.min_age {
            None => Some(Duration::from_secs(DEFAULT_MIN_AGE_SECS)),
            Some(MinAge::Secs(s)) => match u64::try_from(*s) {
                Ok(s) if s <= MAX_MIN_AGE_SECS => Some(Duration::from_secs(s)),
                Ok(_) => {
                    problems.push(format!(
                        "cleanup root {path}: min_age = {s} s is longer than 10 years"
                    ));
                    None
                }
                Err(_) => {
                    problems.push(format!("cleanup root {path}: min_age must not be negative"));
                    None
                }
            },
            Some(MinAge::Text(t)) => parse_age(t)
                .map_err(|e| problems.push(format!("cleanup root {path}: min_age {e}")))
                .ok(),
            Some(MinAge::Other(kind)) => {
                problems.push(format!(
                    "cleanup root {path}: min_age is a {kind}, neither seconds nor a duration \
                     such as \"2d\""
                ));
                None
            }
        };
        if !(1..=MAX_DELETIONS_LIMIT).contains(&r.max_deletions_per_run) {
            problems.push(format!(
                "cleanup root {path}: max_deletions_per_run = {} must be between 1 and \
                 {MAX_DELETIONS_LIMIT}",
                r.max_deletions_per_run
            ));
        }
        let include = patterns("include", &path, &r.include, problems);
        let exclude = patterns("exclude", &path, &r.exclude, problems);
        roots.push(RootConfig {
            path,
            high_watermark_pct: hi,
            low_watermark_pct: lo,
            include,
            exclude,
            min_age: min_age.unwrap_or_default(),
            keep_newest: r.keep_newest,
            max_deletions_per_run: r.max_deletions_per_run,
        });
    }
    (problems.len() == before).then(|| CleanupConfig {
        interval: Duration::from_secs(raw.interval_secs),
        dry_run: raw.dry_run,
        roots,
    })
}

/// Parses and validates a `[cleanup]` table on its own (for the fuzz
/// target and tests): `Err` is the list of problems.
pub fn parse_table(text: &str) -> Result<CleanupConfig, Vec<String>> {
    let raw = crate::config::read_root(text, read).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    validate(raw, &mut problems).ok_or(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CleanupConfig, Vec<String>> {
        parse_table(text)
    }

    #[test]
    fn defaults_and_a_full_root() {
        let c = parse(
            r#"
[[root]]
path = "/srv/recordings/"
high_watermark_pct = 90
low_watermark_pct = 85
include = ["*.mp4", "*.dav", "**/*.bak"]
exclude = ["keep/**"]
min_age = "2d"
"#,
        )
        .expect("valid");
        assert_eq!(c.interval, Duration::from_secs(300));
        assert!(!c.dry_run);
        let r = &c.roots[0];
        assert_eq!(r.path, "/srv/recordings");
        assert_eq!(r.min_age, Duration::from_secs(2 * 86_400));
        assert_eq!((r.keep_newest, r.max_deletions_per_run), (10, 10_000));
        assert!(r.selects("2024/a.mp4") && r.selects("x/y.bak"));
        assert!(!r.selects("keep/a.mp4") && !r.selects("a.txt"));
        assert!(c
            .summary()
            .contains("/srv/recordings (above 90% down to 85%)"));
        let d = parse("[[root]]\npath = \"/r\"\nhigh_watermark_pct = 9\nlow_watermark_pct = 5\nmin_age = 60\n")
            .expect("valid");
        assert_eq!(d.roots[0].min_age, Duration::from_secs(60));
        assert!(d.roots[0].selects("anything"));
    }

    #[test]
    fn min_age_as_number_or_text() {
        let root = |age: &str| {
            parse(&format!(
                "[[root]]\npath=\"/a\"\nhigh_watermark_pct=9\nlow_watermark_pct=5\nmin_age={age}\n"
            ))
        };
        assert_eq!(
            root("90").expect("ok").roots[0].min_age,
            Duration::from_secs(90)
        );
        assert_eq!(
            root("\"90m\"").expect("ok").roots[0].min_age,
            Duration::from_secs(5400)
        );
        let neg = root("-1").expect_err("negative");
        assert!(neg[0].contains("negative"), "{neg:?}");
        assert!(root("1.5").is_err());
        assert!(root("[1]").is_err());
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_age("3600"), Ok(Duration::from_secs(3600)));
        for bad in ["", "d", "2w", "-1d", "99999999999999999999d", "1.5h", "é"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_in_plain_words() {
        let p = parse(
            r#"
interval_secs = 0
[[root]]
path = "/"
high_watermark_pct = 90
low_watermark_pct = 85
[[root]]
path = "/srv/../etc"
high_watermark_pct = 90
low_watermark_pct = 85
[[root]]
path = "srv"
high_watermark_pct = 90
low_watermark_pct = 85
[[root]]
path = "/srv/rec"
high_watermark_pct = 80
low_watermark_pct = 90
include = ["a**"]
min_age = "soon"
max_deletions_per_run = 0
[[root]]
path = "/srv/rec/cam1"
high_watermark_pct = 90
low_watermark_pct = 85
[[root]]
path = "/srv/rec"
high_watermark_pct = 90
low_watermark_pct = 85
"#,
        )
        .expect_err("invalid");
        let all = p.join("\n");
        for needle in [
            "interval_secs = 0",
            "whole system",
            "`..`",
            "not an absolute path",
            "0 < low < high",
            "whole path component",
            "`soon` is not a duration",
            "max_deletions_per_run = 0",
            "overlap",
            "listed twice",
        ] {
            assert!(all.contains(needle), "missing {needle}:\n{all}");
        }
        assert_eq!(p.len(), 10, "{all}");
        // A sibling with a common prefix is not nested.
        parse("[[root]]\npath=\"/srv/rec\"\nhigh_watermark_pct=9\nlow_watermark_pct=5\n[[root]]\npath=\"/srv/rec2\"\nhigh_watermark_pct=9\nlow_watermark_pct=5\n")
            .expect("siblings are fine");
        assert!(parse(
            "[[root]]\npath=\"/a\"\nhigh_watermark_pct=9\nlow_watermark_pct=5\nkeep=1\n"
        )
        .is_err());
    }
}
