//! The `[outbox]` table: sizes, the optional disk directory, fsync and
//! drain settings, with defaults and plain-words validation.
//!
//! Pure: parses and checks values only; it never creates the directory or
//! opens a file (so `sitewatch-agent check` stays side-effect free).
//!
//! ```toml
//! [outbox]
//! memory_max_bytes = 2097152     # 2 MiB in memory; oldest of the lowest class dropped beyond
//! # dir = "/var/lib/sitewatch/outbox"   # set to keep the outbox on disk across restarts
//! disk_max_bytes = 16777216      # 16 MiB on disk (records; markers and not-yet-reclaimed segments come on top)
//! segment_bytes = 1048576        # 1 MiB segment files
//! fsync_interval_ms = 5000       # at most one flush per 5 s while writing; 0 = every push
//! max_in_flight = 16             # messages sent and not yet acknowledged
//! drain_bytes_per_sec = 131072   # backlog drain rate on top of live traffic (128 KiB/s ≈ 1 Mbit/s); 0 = unlimited
//! ```

use std::path::PathBuf;

use crate::config::fields::{self, Absent, Res, Value};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Smallest memory bound: room for a few of the largest messages (a log
/// batch is up to about 82 KiB).
pub const MIN_MEMORY_BYTES: u64 = 256 * KIB;
/// Largest memory bound accepted (a typo guard; gateways have far less).
pub const MAX_MEMORY_BYTES: u64 = GIB;
/// Smallest disk bound: four classes times a minimal segment, twice.
pub const MIN_DISK_BYTES: u64 = 2 * MIB;
/// Largest disk bound accepted.
pub const MAX_DISK_BYTES: u64 = 1024 * GIB;
/// Smallest segment: about one largest message (a bigger message gets a
/// segment of its own).
pub const MIN_SEGMENT_BYTES: u64 = 256 * KIB;
/// Largest segment: a segment is read back in pieces, but is reclaimed
/// whole, so big segments hold space longer.
pub const MAX_SEGMENT_BYTES: u64 = 64 * MIB;
/// Longest fsync interval accepted.
pub const MAX_FSYNC_INTERVAL_MS: u64 = 60_000;
/// Slowest non-zero drain rate accepted.
pub const MIN_DRAIN_BYTES_PER_SEC: u64 = 4 * KIB;

/// Default memory bound: 2 MiB. At default intervals a heartbeat
/// (~0.7 KB) every 30 s and a disk report (~0.5 KB) every 60 s cost about
/// 140 KiB per hour each counted with the outbox's per-record overhead, so
/// 2 MiB carries an overnight outage (~14 h) of time series, and log
/// batches get the room until they are the first to be dropped. The
/// measured resident cost of a full 2 MiB outbox is in
/// `scripts/bench/outbox.sh`'s report.
pub fn default_memory_max_bytes() -> u64 {
    2 * MIB
}
/// Default disk bound: 16 MiB, small enough for a gateway's flash, about
/// a week of heartbeat and disk reports with no logs.
pub fn default_disk_max_bytes() -> u64 {
    16 * MIB
}
/// Default segment size: 1 MiB.
pub fn default_segment_bytes() -> u64 {
    MIB
}
/// Default fsync interval: 5 s. See [`OutboxConfig::fsync_interval_ms`].
pub fn default_fsync_interval_ms() -> u64 {
    5_000
}
/// Most QoS 1 messages in flight (unacknowledged) at once: the upper
/// bound of `[outbox] max_in_flight` and its default. The MQTT client is
/// built with the same window (`uplink::mqtt::INFLIGHT`). Small on
/// purpose: it avoids rumqttc's packet-id collision stalls (rumqttc #1014).
pub const MAX_IN_FLIGHT: u16 = 16;

/// Default in-flight window: [`MAX_IN_FLIGHT`].
pub fn default_max_in_flight() -> u16 {
    MAX_IN_FLIGHT
}
/// Default drain rate: 128 KiB/s, about 1 Mbit/s, a fraction of a DSL or
/// LTE uplink that CCTV sites also use for video.
pub fn default_drain_bytes_per_sec() -> u64 {
    128 * KIB
}

/// `[outbox]` settings. Every field has a default, so the table may be
/// absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Bound on records held in memory, counted as topic + payload + a
    /// fixed per-record overhead. In memory mode this is the outbox's
    /// capacity (when full, the oldest record of the lowest class is
    /// dropped); in disk mode it is only a cache of the next records to
    /// send, and the rest waits on disk.
    pub memory_max_bytes: u64,
    /// Directory for the disk outbox (created if missing, mode 0700).
    /// Absent: memory only, and the outbox is lost when the agent stops.
    pub dir: Option<PathBuf>,
    /// Bound on the records kept on disk (frame bytes of records not yet
    /// acknowledged). When full, the oldest record of the lowest class is
    /// dropped. Acknowledgement markers and segments waiting to be
    /// reclaimed come on top (typically a few segments).
    pub disk_max_bytes: u64,
    /// Size at which a segment file is closed and a new one started. A
    /// segment is deleted once every record in it is acknowledged or
    /// dropped.
    pub segment_bytes: u64,
    /// Longest time written records stay unflushed (fdatasync) while the
    /// outbox is being written; nothing is flushed while idle.
    ///
    /// Every record is written to the kernel with one `write()` before
    /// `push` returns, so a crash or SIGKILL of the agent loses nothing;
    /// only a power cut or kernel crash can lose records younger than this
    /// interval. 5 s matches ext4's default journal commit interval, so the
    /// outbox adds at most one flush per commit: flash and SD cards wear
    /// with every small synchronous write (a cheap SD card can rewrite a
    /// whole erase block for each), and at 5 s a site writing all day costs
    /// at most 17,280 flushes per day instead of 86,400 at 1 s. Use a
    /// smaller value on a recording hard disk; 0 flushes after every push.
    pub fsync_interval_ms: u64,
    /// Most messages sent and not yet acknowledged. At most the MQTT
    /// client's in-flight limit (16).
    pub max_in_flight: u16,
    /// Average rate at which the backlog of logs, time series and events
    /// queued while disconnected is sent, on top of the live traffic
    /// (token bucket of one second, at least one largest message). Records
    /// made while connected and retained state are never held back. 0 = no
    /// limit.
    pub drain_bytes_per_sec: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            memory_max_bytes: default_memory_max_bytes(),
            dir: None,
            disk_max_bytes: default_disk_max_bytes(),
            segment_bytes: default_segment_bytes(),
            fsync_interval_ms: default_fsync_interval_ms(),
            max_in_flight: default_max_in_flight(),
            drain_bytes_per_sec: default_drain_bytes_per_sec(),
        }
    }
}

impl OutboxConfig {
    /// Reads `[outbox]` as written (defaults for absent keys), with the
    /// words its derived deserializer used (see `crate::config::fields`).
    pub fn read(v: &Value<'_>) -> Res<OutboxConfig> {
        const FIELDS: &[(&str, Absent)] = &[
            ("memory_max_bytes", Absent::Default),
            ("dir", Absent::Default),
            ("disk_max_bytes", Absent::Default),
            ("segment_bytes", Absent::Default),
            ("fsync_interval_ms", Absent::Default),
            ("max_in_flight", Absent::Default),
            ("drain_bytes_per_sec", Absent::Default),
        ];
        let mut o = OutboxConfig::default();
        fields::fields(v, "struct OutboxConfig", FIELDS, &mut |i, v| {
            match i {
                0 => o.memory_max_bytes = fields::u64(v)?,
                1 => o.dir = Some(fields::path(v)?),
                2 => o.disk_max_bytes = fields::u64(v)?,
                3 => o.segment_bytes = fields::u64(v)?,
                4 => o.fsync_interval_ms = fields::u64(v)?,
                5 => o.max_in_flight = fields::u16(v)?,
                _ => o.drain_bytes_per_sec = fields::u64(v)?,
            }
            Ok(())
        })?;
        Ok(o)
    }
}

/// `n` bytes in the largest unit that divides it (`2 MiB`, `1536 KiB`,
/// `1000 bytes`).
pub fn human_bytes(n: u64) -> String {
    if n >= GIB && n.is_multiple_of(GIB) {
        format!("{} GiB", n / GIB)
    } else if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

impl OutboxConfig {
    /// Every problem with these settings, one plain-words sentence each,
    /// each naming its key as `outbox.<key>`. Empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let range = |p: &mut Vec<String>, key: &str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                p.push(format!(
                    "outbox.{key} = {v} ({}) is out of range: use {} to {}",
                    human_bytes(v),
                    human_bytes(min),
                    human_bytes(max)
                ));
            }
        };
        range(
            &mut p,
            "memory_max_bytes",
            self.memory_max_bytes,
            MIN_MEMORY_BYTES,
            MAX_MEMORY_BYTES,
        );
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            p.push(format!(
                "outbox.max_in_flight = {} is out of range: use 1 to {} (the MQTT client's limit)",
                self.max_in_flight, MAX_IN_FLIGHT
            ));
        }
        if self.drain_bytes_per_sec != 0 && self.drain_bytes_per_sec < MIN_DRAIN_BYTES_PER_SEC {
            p.push(format!(
                "outbox.drain_bytes_per_sec = {} is too slow to drain a backlog: use 0 (no limit) or at least {}",
                self.drain_bytes_per_sec, MIN_DRAIN_BYTES_PER_SEC
            ));
        }
        if self.fsync_interval_ms > MAX_FSYNC_INTERVAL_MS {
            p.push(format!(
                "outbox.fsync_interval_ms = {} is too long: a power cut would lose up to that much; use at most {MAX_FSYNC_INTERVAL_MS}",
                self.fsync_interval_ms
            ));
        }
        if let Some(dir) = &self.dir {
            if dir.as_os_str().is_empty() {
                p.push("outbox.dir is empty: give an absolute directory, or remove the key to keep the outbox in memory".into());
            } else if !dir.is_absolute() {
                p.push(format!(
                    "outbox.dir `{}` is not an absolute path (it would depend on the working directory)",
                    dir.display()
                ));
            }
            range(
                &mut p,
                "disk_max_bytes",
                self.disk_max_bytes,
                MIN_DISK_BYTES,
                MAX_DISK_BYTES,
            );
            range(
                &mut p,
                "segment_bytes",
                self.segment_bytes,
                MIN_SEGMENT_BYTES,
                MAX_SEGMENT_BYTES,
            );
            if self.segment_bytes.saturating_mul(4) > self.disk_max_bytes {
                p.push(format!(
                    "outbox.segment_bytes ({}) must be at most a quarter of outbox.disk_max_bytes ({}): space is reclaimed a whole segment at a time",
                    human_bytes(self.segment_bytes),
                    human_bytes(self.disk_max_bytes)
                ));
            }
        }
        p
    }

    /// The fsync interval.
    pub fn fsync_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.fsync_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OutboxConfig, String> {
        crate::config::read_for_test(text, "outbox", OutboxConfig::read)
            .map(Option::unwrap_or_default)
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse("").expect("absent table");
        assert_eq!(c, OutboxConfig::default());
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let c = parse("[outbox]\ndir = \"/var/lib/sitewatch/outbox\"\n").expect("parses");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.memory_max_bytes, 2 * MIB);
    }

    #[test]
    fn module_doc_example_parses_and_is_valid() {
        let doc: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&doc).expect("example parses");
        assert!(c.dir.is_some());
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("[outbox]\nmemory_max = 5\n").expect_err("unknown key");
        assert!(err.contains("memory_max"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_in_plain_words() {
        let c = OutboxConfig {
            memory_max_bytes: 1000,
            dir: Some("relative/dir".into()),
            disk_max_bytes: 4 * MIB,
            segment_bytes: 2 * MIB,
            fsync_interval_ms: 120_000,
            max_in_flight: 0,
            drain_bytes_per_sec: 100,
        };
        let p = c.problems();
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(
            p[0].contains("outbox.memory_max_bytes = 1000 (1000 bytes)"),
            "{}",
            p[0]
        );
        assert!(p[0].contains("256 KiB to 1 GiB"), "{}", p[0]);
        assert!(p.iter().any(|s| s.contains("outbox.max_in_flight = 0")));
        assert!(p.iter().any(|s| s.contains("drain_bytes_per_sec = 100")));
        assert!(p.iter().any(|s| s.contains("fsync_interval_ms = 120000")));
        assert!(p.iter().any(|s| s.contains("not an absolute path")));
        assert!(p.iter().any(|s| s.contains("at most a quarter")));
    }

    #[test]
    fn disk_settings_are_checked_only_with_a_dir() {
        let c = OutboxConfig {
            disk_max_bytes: 1,
            ..OutboxConfig::default()
        };
        assert!(c.problems().is_empty());
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(2 * MIB), "2 MiB");
        assert_eq!(human_bytes(1536 * KIB), "1536 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert_eq!(human_bytes(GIB), "1 GiB");
    }
}
