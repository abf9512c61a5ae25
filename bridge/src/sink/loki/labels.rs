//! From syslog records to Loki stream labels and entries. Pure; no I/O.
//!
//! # Labels (indexed, low cardinality)
//! `{app, host, job="sitewatch", severity, site}`: `severity` by its
//! syslog keyword (`emerg` … `debug`); a label whose value is empty is
//! left out (Loki drops empty values anyway, `syntax.ParseLabels`). The
//! string is Prometheus' text form as Loki prints it (`labels.String()`):
//! names sorted, `, ` between pairs, values double-quoted with Go escapes
//! (`\"`, `\\`, `\n`, `\t`, ... and `\xNN` for other control bytes), so it
//! parses with `promql_parser.ParseMetric`, which Loki's distributor uses.
//!
//! Loki adds `service_name` itself (from `app`, or `job` when `app` is
//! empty, `validation.discover-service-name`); it does not count towards
//! the 15-label limit.
//!
//! # Structured metadata (per line, not indexed)
//! `ip`, `facility` (keyword), `format`, `procid`, `msgid`, `sd`, `boot`,
//! `seq`, `rx` (agent receive time, Unix ms), `device_ts` (the device's
//! own time, Unix ms, when it sent one), `ts_source` (`device`, `rx` or
//! `bridge`: which clock the entry's timestamp came from), `truncated`
//! (`true`: the agent cut the line), `line_truncated` (`true`: the bridge
//! cut it to Loki's line limit), `metadata_truncated` (`true`: a value
//! was cut to fit Loki's metadata limit). Absent values (and RFC 5424's
//! `-`) are left out.
//!
//! # Timestamp
//! The device's time when it sent one within `max_clock_skew` of the
//! agent's receive time, else the receive time. If that is older than
//! `max_age` or more than [`FUTURE_LIMIT`] ahead of the bridge's clock
//! (Loki refuses both: `reject_old_samples_max_age` 7 d, `creation_grace_period`
//! 10 min), the bridge's receive time is used instead. The original
//! times stay in the metadata.
//!
//! Within the millisecond, a deterministic offset of under 1 ms
//! ([`tiebreak_nanos`], from the batch's `seq` and the record's position)
//! is added: repeated identical lines with the same (second-resolution)
//! device time stay distinct entries, because Loki keeps only one of
//! several entries with the same timestamp and line in a stream; while a
//! re-push of the *same* record gets the same timestamp, so Loki drops it
//! as a duplicate.
//!
//! # Limits
//! Values are cut (at a character boundary) to Loki's defaults
//! (`pkg/validation/limits.go`): line 256 KiB, label value 2048 bytes,
//! structured metadata 64 KiB and 128 pairs, so that valid data is never
//! refused. With the wire contract's own limits (msg ≤ 16 KiB, fields ≤
//! 255 bytes, sd ≤ 4 KiB) none of these cuts happen unless the limits are
//! configured lower.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_wire::payload::LogRecord;

use super::proto::{EntryAdapter, LabelPairAdapter, Timestamp};

/// Value of the fixed `job` label.
pub const JOB: &str = "sitewatch";

/// Syslog severity keywords, by number (RFC 5424 table 2, as syslog-ng and
/// rsyslog name them).
pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Syslog facility keywords, by number (RFC 5424 table 1).
pub const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// How far ahead of the bridge's clock an entry may be before the
/// bridge's receive time is used instead: half of Loki's default
/// `creation_grace_period` (10 min), leaving room for the difference
/// between the bridge's and Loki's clocks.
pub const FUTURE_LIMIT: Duration = Duration::from_secs(5 * 60);

/// Loki's per-tenant ingestion limits that apply to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max_line_size` (default 256 KiB).
    pub max_line_bytes: usize,
    /// `max_label_value_length` (default 2048).
    pub max_label_value_bytes: usize,
    /// `max_structured_metadata_size` (default 64 KiB): names and values.
    pub max_metadata_bytes: usize,
    /// `max_structured_metadata_entries_count` (default 128).
    pub max_metadata_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 256 * 1024,
            max_label_value_bytes: 2048,
            max_metadata_bytes: 64 * 1024,
            max_metadata_entries: 128,
        }
    }
}

/// Which clock an entry's timestamp comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsSource {
    /// The device's own timestamp.
    Device,
    /// The agent's receive time.
    Rx,
    /// The bridge's receive time (the others were out of Loki's window).
    Bridge,
}

impl TsSource {
    /// Metadata value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TsSource::Device => "device",
            TsSource::Rx => "rx",
            TsSource::Bridge => "bridge",
        }
    }
}

/// Everything [`map_record`] needs besides the record.
#[derive(Debug, Clone, Copy)]
pub struct MapOptions {
    /// Limits to fit into.
    pub limits: Limits,
    /// Largest accepted difference between device time and receive time.
    pub max_clock_skew: Duration,
    /// Oldest entry Loki accepts, relative to now (keep below Loki's
    /// `reject_old_samples_max_age`).
    pub max_age: Duration,
}

/// One record, ready to push.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The stream's label set, formatted.
    pub labels: String,
    /// The entry.
    pub entry: EntryAdapter,
    /// Which clock the timestamp came from.
    pub ts_source: TsSource,
    /// Bytes Loki counts for the entry: line plus metadata names and values.
    pub bytes: usize,
}

/// Identity of the batch a record came in.
#[derive(Debug, Clone, Copy)]
pub struct BatchId<'a> {
    /// Site (from the topic, equal to the payload's).
    pub site: &'a str,
    /// Agent boot.
    pub boot: &'a str,
    /// Sequence number within the boot.
    pub seq: u64,
}

/// Maps one record (at position `index` in its batch). `received_at` is
/// the bridge's receive time, `now` the bridge's clock.
pub fn map_record(
    id: BatchId<'_>,
    index: usize,
    r: &LogRecord,
    received_at: SystemTime,
    now: SystemTime,
    opts: &MapOptions,
) -> Line {
    let limits = &opts.limits;
    let severity = SEVERITIES
        .get(usize::from(r.severity))
        .copied()
        .unwrap_or("unknown");
    let labels = format_labels(
        &mut [
            ("app", r.app.as_str()),
            ("host", r.host.as_str()),
            ("job", JOB),
            ("severity", severity),
            ("site", id.site),
        ],
        limits.max_label_value_bytes,
    );

    let (ms, ts_source) = choose_time(
        r.ts,
        r.rx,
        unix_ms(received_at),
        unix_ms(now),
        opts.max_clock_skew,
        opts.max_age,
    );
    let ns = ms
        .saturating_mul(1_000_000)
        .saturating_add(tiebreak_nanos(id.seq, index));

    let (line, line_cut) = cut(&r.msg, limits.max_line_bytes);

    let facility = FACILITIES
        .get(usize::from(r.facility))
        .copied()
        .unwrap_or("unknown");
    let mut md: Vec<(&'static str, String)> = Vec::with_capacity(14);
    md.push(("ip", r.ip.clone()));
    md.push(("facility", facility.to_owned()));
    md.push(("format", r.format.clone()));
    if let Some(p) = present(r.procid.as_deref()) {
        md.push(("procid", p.to_owned()));
    }
    if let Some(m) = present(r.msgid.as_deref()) {
        md.push(("msgid", m.to_owned()));
    }
    if let Some(sd) = present(r.sd.as_deref()) {
        md.push(("sd", sd.to_owned()));
    }
    md.push(("boot", id.boot.to_owned()));
    md.push(("seq", id.seq.to_string()));
    md.push(("rx", r.rx.to_string()));
    if let Some(ts) = r.ts {
        md.push(("device_ts", ts.to_string()));
    }
    md.push(("ts_source", ts_source.as_str().to_owned()));
    if r.truncated {
        md.push(("truncated", "true".to_owned()));
    }
    if line_cut {
        md.push(("line_truncated", "true".to_owned()));
    }
    md.retain(|(_, v)| !v.is_empty());
    fit_metadata(&mut md, limits);

    let md_bytes = metadata_bytes(&md);
    let entry = EntryAdapter {
        timestamp: Some(Timestamp::from_unix_nanos(ns)),
        line: line.to_owned(),
        structured_metadata: md
            .into_iter()
            .map(|(name, value)| LabelPairAdapter {
                name: name.to_owned(),
                value,
            })
            .collect(),
        parsed: Vec::new(),
    };
    Line {
        labels,
        bytes: entry.line.len() + md_bytes,
        entry,
        ts_source,
    }
}

/// Picks the entry time in Unix ms; see the module documentation.
pub fn choose_time(
    device: Option<u64>,
    rx: u64,
    received_at_ms: u64,
    now_ms: u64,
    max_clock_skew: Duration,
    max_age: Duration,
) -> (u64, TsSource) {
    let skew = u64::try_from(max_clock_skew.as_millis()).unwrap_or(u64::MAX);
    let (ms, source) = match device {
        Some(d) if d.abs_diff(rx) <= skew => (d, TsSource::Device),
        _ => (rx, TsSource::Rx),
    };
    let oldest = now_ms.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
    let newest = now_ms.saturating_add(u64::try_from(FUTURE_LIMIT.as_millis()).unwrap_or(0));
    if ms < oldest || ms > newest {
        (received_at_ms.clamp(oldest, now_ms), TsSource::Bridge)
    } else {
        (ms, source)
    }
}

/// Sub-millisecond offset, in ns (< 1 ms), that keeps records distinct:
/// `(seq mod 976) * 1024 + index` (a batch holds at most 1024 records).
pub fn tiebreak_nanos(seq: u64, index: usize) -> u64 {
    (seq % 976) * 1024 + u64::try_from(index % 1024).unwrap_or(0)
}

/// Formats a label set as Loki prints it: sorted by name, empty values
/// left out, values cut to `max_value_bytes`.
pub fn format_labels(pairs: &mut [(&str, &str)], max_value_bytes: usize) -> String {
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::with_capacity(64);
    out.push('{');
    let mut first = true;
    for (name, value) in pairs.iter() {
        if value.is_empty() {
            continue;
        }
        if !first {
            out.push_str(", ");
        }
        first = false;
        out.push_str(name);
        out.push('=');
        push_quoted(&mut out, cut(value, max_value_bytes).0);
    }
    out.push('}');
    out
}

/// Appends `v` as a Go double-quoted string literal (what `strconv.Quote`
/// produces for printable text; control characters escaped).
pub fn push_quoted(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || u32::from(c) == 0x7f => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` cut to at most `max` bytes at a character boundary, and whether
/// it was cut.
pub fn cut(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// RFC 5424's NILVALUE `-` and empty strings count as absent.
fn present(v: Option<&str>) -> Option<&str> {
    v.filter(|v| !v.is_empty() && *v != "-")
}

/// Bytes Loki counts for structured metadata (`util.StructuredMetadataSize`).
fn metadata_bytes(md: &[(&'static str, String)]) -> usize {
    md.iter().map(|(n, v)| n.len() + v.len()).sum()
}

const METADATA_TRUNCATED: (&str, &str) = ("metadata_truncated", "true");

/// Cuts the largest values until the metadata fits Loki's size limit, and
/// drops trailing pairs beyond the count limit; marks either.
fn fit_metadata(md: &mut Vec<(&'static str, String)>, limits: &Limits) {
    let flag_bytes = METADATA_TRUNCATED.0.len() + METADATA_TRUNCATED.1.len();
    let mut changed = false;
    let max_entries = limits.max_metadata_entries.max(1);
    if md.len() > max_entries {
        md.truncate(max_entries - 1);
        changed = true;
    }
    let budget = limits.max_metadata_bytes.saturating_sub(flag_bytes);
    if metadata_bytes(md) > limits.max_metadata_bytes {
        changed = true;
        // Each round shrinks the largest value; ends when it fits or
        // every value is empty.
        while metadata_bytes(md) > budget {
            let excess = metadata_bytes(md) - budget;
            let Some(largest) = md.iter_mut().max_by_key(|(_, v)| v.len()) else {
                break;
            };
            if largest.1.is_empty() {
                break;
            }
            let keep = largest.1.len().saturating_sub(excess);
            let new_len = cut(&largest.1, keep).0.len();
            largest.1.truncate(new_len);
        }
        md.retain(|(_, v)| !v.is_empty());
    }
    if changed {
        md.push((METADATA_TRUNCATED.0, METADATA_TRUNCATED.1.to_owned()));
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_wire::{decode, golden, Message};

    const MIN: Duration = Duration::from_secs(60);

    fn opts() -> MapOptions {
        MapOptions {
            limits: Limits::default(),
            max_clock_skew: Duration::from_secs(600),
            max_age: Duration::from_secs(7 * 24 * 3600 - 3600),
        }
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn golden_log() -> sitewatch_wire::payload::Log {
        let v = golden::VALID
            .iter()
            .find(|v| v.file == "log.json")
            .expect("log vector");
        match decode(v.topic, v.payload).expect("valid") {
            Message::Log(l) => l,
            other => panic!("not a log: {other:?}"),
        }
    }

    fn md(line: &Line) -> Vec<(String, String)> {
        line.entry
            .structured_metadata
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect()
    }

    #[test]
    fn golden_records_map_to_labels_metadata_and_time() {
        let log = golden_log();
        let id = BatchId {
            site: &log.site,
            boot: &log.boot,
            seq: log.seq,
        };
        let now = at(1_764_284_443_000);
        let a = map_record(id, 0, &log.records[0], now, now, &opts());
        assert_eq!(
            a.labels,
            r#"{app="system,info,account", host="gw-lokasi1", job="sitewatch", severity="info", site="lokasi1"}"#
        );
        assert_eq!(a.entry.line, log.records[0].msg);
        assert_eq!(a.ts_source, TsSource::Device);
        let ts = a.entry.timestamp.expect("ts");
        assert_eq!(ts.seconds, 1_764_284_441);
        // 250 ms + tiebreak (seq 5, index 0).
        assert_eq!(ts.nanos, 250_000_000 + 5 * 1024);
        assert_eq!(
            md(&a),
            [
                ("ip", "192.168.88.1"),
                ("facility", "daemon"),
                ("format", "rfc3164"),
                ("boot", "9f2c4e1a7b3d5608"),
                ("seq", "5"),
                ("rx", "1764284441300"),
                ("device_ts", "1764284441250"),
                ("ts_source", "device"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );

        let b = map_record(id, 1, &log.records[1], now, now, &opts());
        assert_eq!(
            b.labels,
            r#"{app="hikvision", host="nvr-1", job="sitewatch", severity="warning", site="lokasi1"}"#
        );
        let md = md(&b);
        let get = |k: &str| md.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("procid"), None, "RFC 5424 NILVALUE is left out");
        assert_eq!(get("msgid"), Some("ALARM"));
        assert_eq!(get("sd"), Some("[meta channel=\"3\"]"));
        assert_eq!(get("facility"), Some("local0"));
        assert_eq!(get("truncated"), Some("true"));
        assert_eq!(get("line_truncated"), None);
    }

    #[test]
    fn label_values_are_escaped_sorted_and_empty_ones_dropped() {
        let s = format_labels(
            &mut [
                ("site", "s"),
                ("app", ""),
                ("host", "a\"b\\c\nd\te\u{1}f\u{85}é"),
            ],
            2048,
        );
        assert_eq!(s, r#"{host="a\"b\\c\nd\te\x01f\u0085é", site="s"}"#);
        let long = "é".repeat(2000);
        let s = format_labels(&mut [("host", &long)], 2048);
        // 1024 two-byte characters fit in 2048 bytes.
        assert_eq!(s.chars().filter(|&c| c == 'é').count(), 1024);
    }

    #[test]
    fn time_rules() {
        let skew = Duration::from_secs(600);
        let age = Duration::from_secs(7 * 24 * 3600 - 3600);
        let now = 1_764_284_443_000u64;
        // Device time within the skew of rx wins.
        assert_eq!(
            choose_time(Some(now - 5 * 60_000), now - 1000, now, now, skew, age),
            (now - 5 * 60_000, TsSource::Device)
        );
        // Device time too far from rx: rx.
        assert_eq!(
            choose_time(Some(now - 11 * 60_000), now - 1000, now, now, skew, age),
            (now - 1000, TsSource::Rx)
        );
        // No device time: rx.
        assert_eq!(
            choose_time(None, now - 1000, now, now, skew, age),
            (now - 1000, TsSource::Rx)
        );
        // Agent clock in 1970 (no RTC, no NTP yet): the bridge's time.
        assert_eq!(
            choose_time(Some(5_000), 6_000, now - 2000, now, skew, age),
            (now - 2000, TsSource::Bridge)
        );
        // Agent clock far ahead: the bridge's time.
        let ahead = now + 6 * MIN.as_millis() as u64;
        assert_eq!(
            choose_time(Some(ahead), ahead, now, now, skew, age),
            (now, TsSource::Bridge)
        );
        // Slightly ahead is kept.
        let ahead = now + 4 * MIN.as_millis() as u64;
        assert_eq!(
            choose_time(None, ahead, now, now, skew, age).1,
            TsSource::Rx
        );
    }

    #[test]
    fn tiebreak_stays_within_the_millisecond_and_differs_per_record() {
        assert!(tiebreak_nanos(u64::MAX, 1023) < 1_000_000);
        assert_ne!(tiebreak_nanos(7, 0), tiebreak_nanos(7, 1));
        assert_ne!(tiebreak_nanos(7, 0), tiebreak_nanos(8, 0));
        assert_eq!(tiebreak_nanos(7, 3), tiebreak_nanos(7, 3));
    }

    #[test]
    fn long_line_and_metadata_are_cut_to_the_limits() {
        let mut log = golden_log();
        let mut r = log.records.remove(1);
        r.msg = "ü".repeat(200);
        r.sd = Some("x".repeat(500));
        let o = MapOptions {
            limits: Limits {
                max_line_bytes: 101,
                max_label_value_bytes: 2048,
                max_metadata_bytes: 300,
                max_metadata_entries: 128,
            },
            ..opts()
        };
        let now = at(1_764_284_443_000);
        let id = BatchId {
            site: "s",
            boot: "b",
            seq: 1,
        };
        let l = map_record(id, 0, &r, now, now, &o);
        assert_eq!(l.entry.line.len(), 100, "cut at a character boundary");
        let size: usize = l
            .entry
            .structured_metadata
            .iter()
            .map(|p| p.name.len() + p.value.len())
            .sum();
        assert!(size <= 300, "{size}");
        let names: Vec<&str> = l
            .entry
            .structured_metadata
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert!(names.contains(&"line_truncated"));
        assert!(names.contains(&"metadata_truncated"));
        assert!(names.contains(&"sd"), "only the largest value is cut");
        assert_eq!(l.bytes, 100 + size);
    }

    #[test]
    fn severity_and_facility_names() {
        assert_eq!(SEVERITIES[0], "emerg");
        assert_eq!(SEVERITIES[7], "debug");
        assert_eq!(FACILITIES[4], "auth");
        assert_eq!(FACILITIES[23], "local7");
    }
}
