//! Previous raw values per disk, so growth is seen across polls and
//! restarts.
//!
//! Keyed by the disk's identity ([`Reading::state_key`]: kind, model,
//! serial), never by device name: `sdb` becomes `sdc` when a USB disk is
//! plugged in. Persisted as a small text file `smart-state` in the agent's
//! state directory, written atomically (tmp file, fsync, rename, fsync of
//! the directory). A corrupt or unreadable file is logged and the agent
//! starts fresh: the next reading is then a new baseline, which loses one
//! growth step at worst.
//!
//! Format (one disk per line, keys percent-escaped):
//!
//! ```text
//! sitewatch-smart-state 1
//! disk ata:ST4000VX016-3CV104:WW12345 at_ms=1764300000000 level=warning a5=8 a197=0 a198=0
//! disk nvme:Samsung%20SSD%20980:S64ANS0T media=0 errlog=12 at_ms=1764300000000 level=ok
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::report::Reading;
use super::rules::Level;
use super::ParseError;

/// File name inside the state directory.
pub const FILE_NAME: &str = "smart-state";
const HEADER: &str = "sitewatch-smart-state 1";
/// Largest state file read; a bigger one is treated as corrupt.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// Disks remembered; the least recently read are forgotten beyond this.
pub const MAX_DISKS: usize = 256;
const MAX_KEY_BYTES: usize = 512;

/// ATA attributes whose growth the rules watch.
pub const TRACKED_ATTRIBUTES: [u8; 6] = [5, 187, 188, 197, 198, 199];

/// What the rules compare a new reading with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Previous {
    /// Decoded raw values ([`super::ata::Attribute::raw_value`]) of the
    /// tracked ATA attributes.
    pub raw: BTreeMap<u8, u64>,
    /// NVMe media errors.
    pub media_errors: Option<u64>,
    /// NVMe error log entries.
    pub error_log_entries: Option<u64>,
    /// The verdict level of that reading, so a restart neither repeats
    /// nor misses a change event.
    pub level: Option<Level>,
    /// When it was read, ms since the Unix epoch.
    pub at_ms: u64,
}

impl Previous {
    /// The values of `reading` worth remembering; `None` for readings
    /// without counters (SCSI, standby, unsupported).
    pub fn from_reading(reading: &Reading, level: Level, at_ms: u64) -> Option<Previous> {
        let mut p = Previous {
            level: Some(level),
            at_ms,
            ..Previous::default()
        };
        match reading {
            Reading::Ata { attributes, .. } => {
                for a in attributes {
                    if TRACKED_ATTRIBUTES.contains(&a.id) {
                        p.raw.insert(a.id, a.raw_value());
                    }
                }
            }
            Reading::Nvme { health, .. } => {
                p.media_errors = Some(health.media_errors);
                p.error_log_entries = Some(health.error_log_entries);
            }
            _ => return None,
        }
        Some(p)
    }
}

/// Previous values of every known disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// By [`Reading::state_key`].
    pub disks: BTreeMap<String, Previous>,
}

fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn level_str(l: Level) -> &'static str {
    l.as_str()
}

impl State {
    /// Remembers `p` under `key`, forgetting the least recently read disk
    /// when over [`MAX_DISKS`]. An empty key or one longer than 512 bytes
    /// is ignored (it could not be read back; real keys are far shorter).
    pub fn insert(&mut self, key: String, p: Previous) {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return;
        }
        self.disks.insert(key, p);
        while self.disks.len() > MAX_DISKS {
            let oldest = self
                .disks
                .iter()
                .min_by_key(|(_, v)| v.at_ms)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.disks.remove(&k),
                None => break,
            };
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::from(HEADER);
        s.push('\n');
        for (k, p) in &self.disks {
            s.push_str("disk ");
            s.push_str(&escape(k));
            s.push_str(&format!(" at_ms={}", p.at_ms));
            if let Some(l) = p.level {
                s.push_str(&format!(" level={}", level_str(l)));
            }
            for (id, v) in &p.raw {
                s.push_str(&format!(" a{id}={v}"));
            }
            if let Some(m) = p.media_errors {
                s.push_str(&format!(" media={m}"));
            }
            if let Some(e) = p.error_log_entries {
                s.push_str(&format!(" errlog={e}"));
            }
            s.push('\n');
        }
        s
    }

    /// Parses the file's text. Strict: any unexpected line makes the whole
    /// file corrupt (the caller starts fresh), bounded by
    /// [`MAX_FILE_BYTES`] and [`MAX_DISKS`].
    pub fn parse(text: &[u8]) -> Result<State, ParseError> {
        const WHAT: &str = "SMART state file";
        let bad = |d: String| ParseError::invalid(WHAT, d);
        if text.len() > MAX_FILE_BYTES {
            return Err(bad(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8".into()))?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad(format!("does not start with `{HEADER}`")));
        }
        let mut st = State::default();
        for (n, line) in lines.enumerate() {
            let n = n + 2;
            if line.is_empty() {
                continue;
            }
            let mut words = line.split(' ');
            if words.next() != Some("disk") {
                return Err(bad(format!("line {n}: expected `disk`")));
            }
            // The bound is on the key itself: escaping can triple it.
            let key = words
                .next()
                .filter(|k| !k.is_empty() && k.len() <= 3 * MAX_KEY_BYTES)
                .and_then(unescape)
                .filter(|k| k.len() <= MAX_KEY_BYTES)
                .ok_or_else(|| bad(format!("line {n}: bad disk key")))?;
            let mut p = Previous::default();
            for w in words {
                let (name, value) = w
                    .split_once('=')
                    .ok_or_else(|| bad(format!("line {n}: `{w}` is not name=value")))?;
                let num = || {
                    value
                        .parse::<u64>()
                        .map_err(|_| bad(format!("line {n}: `{w}` is not a number")))
                };
                match name {
                    "at_ms" => p.at_ms = num()?,
                    "media" => p.media_errors = Some(num()?),
                    "errlog" => p.error_log_entries = Some(num()?),
                    "level" => {
                        p.level = Some(
                            Level::parse(value)
                                .ok_or_else(|| bad(format!("line {n}: unknown level")))?,
                        )
                    }
                    _ => {
                        let id = name
                            .strip_prefix('a')
                            .and_then(|i| i.parse::<u8>().ok())
                            .ok_or_else(|| bad(format!("line {n}: unknown field `{name}`")))?;
                        p.raw.insert(id, num()?);
                    }
                }
            }
            if st.disks.len() >= MAX_DISKS {
                return Err(bad(format!("more than {MAX_DISKS} disks")));
            }
            if st.disks.insert(key, p).is_some() {
                return Err(bad(format!("line {n}: disk listed twice")));
            }
        }
        Ok(st)
    }

    /// Loads the state from `dir`; a missing file is an empty state, a
    /// corrupt or unreadable one is logged and an empty state returned.
    pub fn load(dir: &Path) -> State {
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => match State::parse(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(
                        path = %path.display(),
                        "Corrupt SMART state ({e}); starting fresh, the next readings are new baselines"
                    );
                    State::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    "Cannot read the SMART state ({e}); starting fresh"
                );
                State::default()
            }
        }
    }

    /// Writes the state to `dir` atomically: a reader (or a power cut)
    /// sees the old file or the new one, never a mix.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(FILE_NAME);
        let tmp: PathBuf = dir.join(format!("{FILE_NAME}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("writing the SMART state {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut s = State::default();
        let mut raw = BTreeMap::new();
        raw.insert(5, 8);
        raw.insert(197, 0);
        s.insert(
            "ata:ST4000VX016-3CV104:WW 12%=".into(),
            Previous {
                raw,
                level: Some(Level::Warning),
                at_ms: 1_764_300_000_000,
                ..Previous::default()
            },
        );
        s.insert(
            "nvme:QEMU NVMe Ctrl:deadbeef".into(),
            Previous {
                media_errors: Some(0),
                error_log_entries: Some(12),
                level: Some(Level::Ok),
                at_ms: 1,
                ..Previous::default()
            },
        );
        s
    }

    #[test]
    fn render_parse_round_trip() {
        let s = sample();
        let text = s.render();
        assert!(text.starts_with(HEADER));
        assert_eq!(State::parse(text.as_bytes()).expect("valid"), s);
    }

    #[test]
    fn corrupt_text_is_rejected() {
        for bad in [
            "",
            "other 1\n",
            "sitewatch-smart-state 1\nfoo bar\n",
            "sitewatch-smart-state 1\ndisk k a5=x\n",
            "sitewatch-smart-state 1\ndisk k a999=1\n",
            "sitewatch-smart-state 1\ndisk k%G1 a5=1\n",
            "sitewatch-smart-state 1\ndisk k level=purple\n",
            "sitewatch-smart-state 1\ndisk k a5=1\ndisk k a5=2\n",
        ] {
            assert!(State::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn save_and_load_atomically_and_survive_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(State::load(dir.path()), State::default());
        let s = sample();
        s.save(dir.path()).expect("save");
        assert!(!dir.path().join("smart-state.tmp").exists());
        assert_eq!(State::load(dir.path()), s);
        std::fs::write(dir.path().join(FILE_NAME), b"\xff\xfe garbage").expect("write");
        assert_eq!(State::load(dir.path()), State::default());
    }

    #[test]
    fn keys_that_escape_long_still_round_trip() {
        // Found by fuzzing: a key of NULs triples in length when escaped.
        let mut s = State::default();
        s.insert("\0".repeat(MAX_KEY_BYTES), Previous::default());
        s.insert("x".repeat(MAX_KEY_BYTES + 1), Previous::default());
        s.insert(String::new(), Previous::default());
        assert_eq!(s.disks.len(), 1);
        assert_eq!(State::parse(s.render().as_bytes()).expect("valid"), s);
        let long = format!("{HEADER}\ndisk {} a5=1\n", "y".repeat(MAX_KEY_BYTES + 1));
        assert!(State::parse(long.as_bytes()).is_err());
    }

    #[test]
    fn oldest_disk_is_forgotten_beyond_the_limit() {
        let mut s = State::default();
        for i in 0..=MAX_DISKS as u64 {
            s.insert(
                format!("ata:m:{i}"),
                Previous {
                    at_ms: i + 10,
                    ..Previous::default()
                },
            );
        }
        assert_eq!(s.disks.len(), MAX_DISKS);
        assert!(!s.disks.contains_key("ata:m:0"));
    }
}
