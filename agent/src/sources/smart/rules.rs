//! The verdict rules: one reading (plus the previous values of the same
//! disk) → [`Verdict`] with a level and reasons in plain words.
//!
//! Reason codes are stable snake_case ids: the bridge stores them and
//! Grafana filters on them. Never rename one; add new ones.
//!
//! | code | level | when |
//! |---|---|---|
//! | `ata_status_failing` | critical | SMART RETURN STATUS says a threshold was exceeded |
//! | `prefail_failing_now` | critical | a pre-failure attribute's normalized value ≤ its threshold (threshold ≠ 0) |
//! | `reallocated_growing` | critical | raw 5 (reallocated sectors) grew since the previous reading |
//! | `pending_growing` | critical | raw 197 (pending sectors) > 0 and grew |
//! | `uncorrectable_growing` | critical | raw 198 (offline uncorrectable) > 0 and grew |
//! | `nvme_critical_warning` | critical | NVMe critical warning ≠ 0 (each set bit named) |
//! | `nvme_spare_low` | critical | NVMe available spare < spare threshold |
//! | `nvme_media_errors_growing` | critical | NVMe media errors grew |
//! | `scsi_failure_predicted` | critical | SCSI informational exception ASC 0x5D |
//! | `temperature_critical` | critical | temperature ≥ `temperature_critical_c` (NVMe: ≥ CCTEMP when reported) |
//! | `oldage_failing_now` | warning | an old-age attribute's normalized value ≤ its threshold |
//! | `failed_in_past` | warning | an attribute's worst value ≤ its threshold, current above |
//! | `reallocated_nonzero` | warning | raw 5 > 0, not grown (or first reading) |
//! | `reported_uncorrect_nonzero` | warning | raw 187 > 0 |
//! | `command_timeout_nonzero` | warning | raw 188, low 16 bits, > 0 |
//! | `pending_nonzero` | warning | raw 197 > 0, not grown (or first reading) |
//! | `uncorrectable_nonzero` | warning | raw 198 > 0, not grown (or first reading) |
//! | `crc_errors_growing` | warning | raw 199 (UDMA CRC) grew: check the cable |
//! | `nvme_media_errors_nonzero` | warning | NVMe media errors > 0, not grown (or first reading) |
//! | `nvme_wear_high` | warning | NVMe percentage used ≥ 90 |
//! | `scsi_exception` | warning | SCSI informational exception with another ASC ≠ 0 |
//! | `temperature_high` | warning | temperature ≥ `temperature_warning_c` (NVMe: ≥ WCTEMP when reported) |
//! | `ata_status_unknown` | info | RETURN STATUS gave no usable answer |
//! | `nvme_error_log_growing` | info | NVMe error log entries grew |
//! | `power_on_hours_high` | info | more than 43 800 power-on hours (5 years) |
//! | `standby` | unknown | the disk was in standby and not woken |
//! | `unsupported` | unknown | the disk could not be read (reason given) |
//!
//! "Info" reasons carry [`Level::Ok`]: listed, but they do not raise the
//! verdict. [`Level::Unknown`] is used only for readings with no data
//! (standby, unsupported); it is not "better" or "worse" than a measured
//! level, so the task does not report a change for standby.
//!
//! Growth compares with [`Previous`], the last reading of the same disk
//! (persisted, so across restarts). The first reading of a disk is its
//! baseline: a counter above zero is then a warning, and the reason says
//! so. After a growth the next reading compares with the grown value, so
//! a counter that stops growing falls back from critical to warning.
//!
//! Vendor caveats: Seagate packs raw 1, 7 and 195 (error counts over
//! operation counts); no rule reads their raw values. 188 is masked to 16
//! bits, 9 to 32 bits, 190/194 to the low byte ([`Attribute::raw_value`]).

use super::ata::{AtaHealth, AttrState, Attribute};
use super::config::Limits;
use super::nvme;
use super::report::Reading;
use super::state::Previous;

/// Five years of continuous operation.
pub const POWER_ON_HOURS_INFO: u64 = 43_800;
/// NVMe percentage used at which the disk is worn.
pub const NVME_WEAR_WARNING: u8 = 90;

/// How bad a disk looks. Ordered: `Ok < Unknown < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Nothing wrong found.
    Ok,
    /// Not measured this time (standby, unsupported).
    Unknown,
    /// Worth looking at; plan a replacement or check the cable.
    Warning,
    /// Failing or about to: replace the disk.
    Critical,
}

impl Level {
    /// Stable lowercase name (`ok`, `unknown`, `warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Unknown => "unknown",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// Inverse of [`Level::as_str`].
    pub fn parse(s: &str) -> Option<Level> {
        [Level::Ok, Level::Unknown, Level::Warning, Level::Critical]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// Stable snake_case id (see the module table).
    pub code: &'static str,
    /// Plain words for the operator.
    pub detail: String,
    /// What this finding alone makes of the disk (`Ok` for info).
    pub level: Level,
}

/// The judgement of one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The worst level of the reasons (`Ok` when none, `Unknown` for
    /// readings without data).
    pub level: Level,
    /// Every finding, worst first.
    pub reasons: Vec<Reason>,
}

struct Out(Vec<Reason>);

impl Out {
    fn push(&mut self, level: Level, code: &'static str, detail: String) {
        self.0.push(Reason {
            code,
            detail,
            level,
        });
    }
}

const BASELINE: &str =
    "first reading of this disk: baseline set, growth is checked from the next reading";

/// Judges `reading` against the previous values of the same disk.
pub fn judge(reading: &Reading, previous: Option<&Previous>, limits: &Limits) -> Verdict {
    let mut out = Out(Vec::new());
    match reading {
        Reading::Standby => {
            out.push(
                Level::Unknown,
                "standby",
                "the disk is in standby (spun down); not woken to read SMART".into(),
            );
        }
        Reading::Unsupported { reason } => {
            out.push(Level::Unknown, "unsupported", reason.clone());
        }
        Reading::Ata {
            attributes, health, ..
        } => judge_ata(attributes, *health, previous, limits, &mut out),
        Reading::Nvme { identity, health } => {
            judge_nvme(identity, health, previous, limits, &mut out)
        }
        Reading::Scsi { ie, .. } => {
            if let Some(ie) = ie {
                if ie.failure_predicted() {
                    out.push(
                        Level::Critical,
                        "scsi_failure_predicted",
                        format!(
                            "the disk predicts its own failure (informational exception ASC/ASCQ {:02X}/{:02X})",
                            ie.asc, ie.ascq
                        ),
                    );
                } else if ie.asc != 0 {
                    out.push(
                        Level::Warning,
                        "scsi_exception",
                        format!(
                            "the disk reports informational exception ASC/ASCQ {:02X}/{:02X}",
                            ie.asc, ie.ascq
                        ),
                    );
                }
            }
        }
    }
    if let Some(t) = reading.temperature_c() {
        let (warn, crit, whose) = match reading {
            Reading::Nvme { identity, .. } => (
                nvme::kelvin_to_c(identity.wctemp_k).unwrap_or(limits.temperature_warning_c.into()),
                nvme::kelvin_to_c(identity.cctemp_k)
                    .unwrap_or(limits.temperature_critical_c.into()),
                "the disk's own",
            ),
            _ => (
                limits.temperature_warning_c.into(),
                limits.temperature_critical_c.into(),
                "the configured",
            ),
        };
        if t >= crit {
            out.push(
                Level::Critical,
                "temperature_critical",
                format!("temperature {t} °C is at or above {whose} critical limit {crit} °C"),
            );
        } else if t >= warn {
            out.push(
                Level::Warning,
                "temperature_high",
                format!("temperature {t} °C is at or above {whose} warning limit {warn} °C"),
            );
        }
    }
    if let Some(h) = reading
        .power_on_hours()
        .filter(|&h| h > POWER_ON_HOURS_INFO)
    {
        out.push(
            Level::Ok,
            "power_on_hours_high",
            format!(
                "{h} power-on hours (over {} years of continuous use)",
                h / 8760
            ),
        );
    }
    let mut reasons = out.0;
    reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
    let level = match reading {
        Reading::Standby | Reading::Unsupported { .. } => Level::Unknown,
        _ => reasons.iter().map(|r| r.level).max().unwrap_or(Level::Ok),
    };
    Verdict { level, reasons }
}

/// How a counter moved since the previous reading.
enum Trend {
    /// No previous value: this reading is the baseline.
    Baseline,
    Stable,
    Grew(u64),
}

fn trend(now: u64, before: Option<u64>) -> Trend {
    match before {
        None => Trend::Baseline,
        Some(b) if now > b => Trend::Grew(b),
        Some(_) => Trend::Stable,
    }
}

/// Growth rule for a counter: critical when it grew, warning when above
/// zero and not grown.
fn counter(
    out: &mut Out,
    now: u64,
    before: Option<u64>,
    what: &str,
    grow_code: &'static str,
    nonzero_code: &'static str,
) {
    match trend(now, before) {
        Trend::Grew(b) => out.push(
            Level::Critical,
            grow_code,
            format!("{what}: {now}, grew from {b} since the previous reading"),
        ),
        Trend::Baseline if now > 0 => out.push(
            Level::Warning,
            nonzero_code,
            format!("{what}: {now} ({BASELINE})"),
        ),
        Trend::Stable if now > 0 => out.push(
            Level::Warning,
            nonzero_code,
            format!("{what}: {now}, unchanged since the previous reading"),
        ),
        _ => {}
    }
}

fn judge_ata(
    attributes: &[Attribute],
    health: AtaHealth,
    previous: Option<&Previous>,
    _limits: &Limits,
    out: &mut Out,
) {
    match health {
        AtaHealth::Passed => {}
        AtaHealth::Failing => out.push(
            Level::Critical,
            "ata_status_failing",
            "SMART overall health: FAILING (the disk says a threshold was exceeded); replace it"
                .into(),
        ),
        AtaHealth::Unknown => out.push(
            Level::Ok,
            "ata_status_unknown",
            "SMART overall health could not be read (no usable answer to RETURN STATUS)".into(),
        ),
    }
    for a in attributes {
        let th = a.threshold.unwrap_or(0);
        match a.state() {
            AttrState::FailingNow if a.prefail() => out.push(
                Level::Critical,
                "prefail_failing_now",
                format!(
                    "{} {}: normalized value {} is at or below its threshold {th} (pre-failure attribute)",
                    a.id,
                    a.name(),
                    a.current
                ),
            ),
            AttrState::FailingNow => out.push(
                Level::Warning,
                "oldage_failing_now",
                format!(
                    "{} {}: normalized value {} is at or below its threshold {th} (old-age attribute)",
                    a.id,
                    a.name(),
                    a.current
                ),
            ),
            AttrState::FailedPast => out.push(
                Level::Warning,
                "failed_in_past",
                format!(
                    "{} {}: worst value {} was at or below its threshold {th} in the past",
                    a.id,
                    a.name(),
                    a.worst
                ),
            ),
            AttrState::Ok => {}
        }
    }
    let raw = |id: u8| {
        attributes
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.raw_value())
    };
    let before = |id: u8| previous.and_then(|p| p.raw.get(&id).copied());
    if let Some(v) = raw(5) {
        counter(
            out,
            v,
            before(5),
            "reallocated sectors (5)",
            "reallocated_growing",
            "reallocated_nonzero",
        );
    }
    if let Some(v) = raw(197) {
        counter(
            out,
            v,
            before(197),
            "pending sectors (197)",
            "pending_growing",
            "pending_nonzero",
        );
    }
    if let Some(v) = raw(198) {
        counter(
            out,
            v,
            before(198),
            "offline uncorrectable sectors (198)",
            "uncorrectable_growing",
            "uncorrectable_nonzero",
        );
    }
    if let Some(v) = raw(187).filter(|&v| v > 0) {
        out.push(
            Level::Warning,
            "reported_uncorrect_nonzero",
            format!("reported uncorrectable errors (187): {v}"),
        );
    }
    if let Some(v) = raw(188).filter(|&v| v > 0) {
        out.push(
            Level::Warning,
            "command_timeout_nonzero",
            format!("command timeouts (188, low 16 bits): {v}"),
        );
    }
    if let (Some(v), Some(b)) = (raw(199), before(199)) {
        if v > b {
            out.push(
                Level::Warning,
                "crc_errors_growing",
                format!(
                    "interface CRC errors (199): {v}, grew from {b}; check the SATA/USB cable and connectors"
                ),
            );
        }
    }
}

fn judge_nvme(
    _identity: &nvme::NvmeIdentity,
    h: &nvme::NvmeHealth,
    previous: Option<&Previous>,
    _limits: &Limits,
    out: &mut Out,
) {
    if h.critical_warning != 0 {
        out.push(
            Level::Critical,
            "nvme_critical_warning",
            format!(
                "critical warning {:#04x}: {}",
                h.critical_warning,
                nvme::critical_warning_names(h.critical_warning).join("; ")
            ),
        );
    }
    if h.available_spare < h.spare_threshold {
        out.push(
            Level::Critical,
            "nvme_spare_low",
            format!(
                "available spare {} % is below the threshold {} %",
                h.available_spare, h.spare_threshold
            ),
        );
    }
    counter(
        out,
        h.media_errors,
        previous.and_then(|p| p.media_errors),
        "media and data integrity errors",
        "nvme_media_errors_growing",
        "nvme_media_errors_nonzero",
    );
    if h.percentage_used >= NVME_WEAR_WARNING {
        out.push(
            Level::Warning,
            "nvme_wear_high",
            format!("{} % of the rated life is used", h.percentage_used),
        );
    }
    if let Some(b) = previous.and_then(|p| p.error_log_entries) {
        if h.error_log_entries > b {
            out.push(
                Level::Ok,
                "nvme_error_log_growing",
                format!(
                    "error log entries: {}, grew from {b} (often harmless driver probes)",
                    h.error_log_entries
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::smart::ata::tests::{
        data_sector, identify, threshold_sector, QEMU_ATTRS, QEMU_THRESH,
    };
    use crate::sources::smart::ata::{self, AtaHealth};
    use crate::sources::smart::nvme::tests as nt;
    use crate::sources::smart::scsi::{self, tests as st};
    use crate::sources::smart::state::State;

    type Row = (u8, u16, u8, u8, u64);

    /// An ATA reading built through the real parsers from synthesized
    /// sectors: QEMU's table with `extra` rows replacing or adding ids.
    fn ata_reading(model: &str, extra: &[Row], th: &[(u8, u8)], health: AtaHealth) -> Reading {
        let mut rows: Vec<Row> = QEMU_ATTRS
            .iter()
            .filter(|r| !extra.iter().any(|e| e.0 == r.0))
            .copied()
            .collect();
        rows.extend_from_slice(extra);
        let mut ths: Vec<(u8, u8)> = QEMU_THRESH
            .iter()
            .filter(|r| !th.iter().any(|e| e.0 == r.0))
            .copied()
            .collect();
        ths.extend_from_slice(th);
        let mut attributes = ata::parse_smart_data(&data_sector(&rows)).expect("data");
        let t = ata::parse_thresholds(&threshold_sector(&ths)).expect("thresholds");
        ata::merge_thresholds(&mut attributes, &t);
        Reading::Ata {
            identity: ata::parse_identify(&identify(model, "SER1", 1 << 21)).expect("identify"),
            attributes,
            health,
            passthrough: 16,
        }
    }

    fn qemu(extra: &[Row]) -> Reading {
        ata_reading("QEMU HARDDISK", extra, &[], AtaHealth::Passed)
    }

    fn codes(v: &Verdict) -> Vec<&'static str> {
        v.reasons.iter().map(|r| r.code).collect()
    }

    fn judge0(r: &Reading) -> Verdict {
        judge(r, None, &Limits::default())
    }

    fn prev_of(r: &Reading) -> Previous {
        let v = judge0(r);
        Previous::from_reading(r, v.level, 1).expect("has counters")
    }

    #[test]
    fn healthy_qemu_disk_is_ok_without_reasons() {
        let v = judge0(&qemu(&[]));
        assert_eq!(v.level, Level::Ok);
        assert!(v.reasons.is_empty(), "{v:?}");
    }

    #[test]
    fn return_status_failing_is_critical_alone() {
        let v = judge0(&ata_reading("QEMU HARDDISK", &[], &[], AtaHealth::Failing));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Critical, vec!["ata_status_failing"])
        );
        let v = judge0(&ata_reading("QEMU HARDDISK", &[], &[], AtaHealth::Unknown));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Ok, vec!["ata_status_unknown"])
        );
    }

    #[test]
    fn prefail_failing_now_vs_oldage_vs_past_vs_zero_threshold() {
        // 1 is pre-fail (flags 3), threshold 6: at 6 it fails now.
        let v = judge0(&qemu(&[(1, 3, 6, 6, 0)]));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Critical, vec!["prefail_failing_now"])
        );
        // One above the threshold: nothing.
        assert!(judge0(&qemu(&[(1, 3, 7, 7, 0)])).reasons.is_empty());
        // Old-age (flags 2) at threshold: warning.
        let v = judge0(&qemu(&[(4, 2, 20, 20, 100)]));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["oldage_failing_now"])
        );
        // Worst at threshold, current above: failed in the past.
        let v = judge0(&qemu(&[(1, 3, 100, 6, 0)]));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["failed_in_past"])
        );
        // Threshold 0 never fails (3 Spin_Up_Time has threshold 0).
        assert!(judge0(&qemu(&[(3, 3, 0, 0, 16)])).reasons.is_empty());
    }

    #[test]
    fn sector_counters_warn_on_first_reading_and_say_it_is_the_baseline() {
        for (id, code) in [
            (5u8, "reallocated_nonzero"),
            (197, "pending_nonzero"),
            (198, "uncorrectable_nonzero"),
        ] {
            let v = judge0(&qemu(&[(id, 0x33, 100, 100, 8)]));
            assert_eq!((v.level, codes(&v)), (Level::Warning, vec![code]), "{id}");
            assert!(v.reasons[0].detail.contains("baseline"), "{v:?}");
            assert!(judge0(&qemu(&[(id, 0x33, 100, 100, 0)])).reasons.is_empty());
        }
    }

    #[test]
    fn sector_counters_growing_are_critical_stable_are_warning() {
        for (id, grow, stable) in [
            (5u8, "reallocated_growing", "reallocated_nonzero"),
            (197, "pending_growing", "pending_nonzero"),
            (198, "uncorrectable_growing", "uncorrectable_nonzero"),
        ] {
            let before = prev_of(&qemu(&[(id, 0x33, 100, 100, 8)]));
            let v = judge(
                &qemu(&[(id, 0x33, 100, 100, 9)]),
                Some(&before),
                &Limits::default(),
            );
            assert_eq!((v.level, codes(&v)), (Level::Critical, vec![grow]), "{id}");
            assert!(v.reasons[0].detail.contains("grew from 8"));
            let v = judge(
                &qemu(&[(id, 0x33, 100, 100, 8)]),
                Some(&before),
                &Limits::default(),
            );
            assert_eq!((v.level, codes(&v)), (Level::Warning, vec![stable]), "{id}");
            assert!(v.reasons[0].detail.contains("unchanged"));
            // Fewer than before (a reset counter) is not growth.
            let v = judge(
                &qemu(&[(id, 0x33, 100, 100, 3)]),
                Some(&before),
                &Limits::default(),
            );
            assert_eq!(v.level, Level::Warning, "{id}");
        }
        // Pending back to zero after growth elsewhere: nothing for 197.
        let before = prev_of(&qemu(&[(197, 0x12, 100, 100, 2)]));
        let v = judge(
            &qemu(&[(197, 0x12, 100, 100, 0)]),
            Some(&before),
            &Limits::default(),
        );
        assert!(v.reasons.is_empty(), "{v:?}");
    }

    #[test]
    fn reported_uncorrect_and_command_timeout_warn() {
        let v = judge0(&qemu(&[(187, 0x32, 100, 100, 3)]));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["reported_uncorrect_nonzero"])
        );
        let v = judge0(&qemu(&[(188, 0x32, 100, 100, 0x0001_0001_0002)]));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["command_timeout_nonzero"])
        );
        assert!(v.reasons[0].detail.contains(": 2"), "{v:?}");
        assert!(judge0(&qemu(&[(187, 0x32, 100, 100, 0)]))
            .reasons
            .is_empty());
    }

    #[test]
    fn crc_errors_warn_only_when_growing() {
        let first = qemu(&[(199, 0x3E, 200, 200, 5)]);
        assert!(
            judge0(&first).reasons.is_empty(),
            "a stable count is history"
        );
        let before = prev_of(&first);
        let v = judge(
            &qemu(&[(199, 0x3E, 200, 200, 6)]),
            Some(&before),
            &Limits::default(),
        );
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["crc_errors_growing"])
        );
        assert!(v.reasons[0].detail.contains("cable"));
        let v = judge(&first, Some(&before), &Limits::default());
        assert!(v.reasons.is_empty());
    }

    #[test]
    fn seagate_packed_raw_values_do_not_alert() {
        // Seagate's packed 1/7/195 (error counts over operations), 188 with
        // only the upper counters set, and 9 with milliseconds above hour 32.
        let r = ata_reading(
            "ST4000VX007-2DT166",
            &[
                (1, 0x0F, 77, 64, 0x0000_0556_2A10),
                (7, 0x0F, 88, 60, 0x0000_1F3A_77C0),
                (195, 0x1A, 77, 64, 0x0000_0556_2A10),
                (188, 0x32, 100, 99, 0x0002_0002_0000),
                (9, 0x32, 49, 49, 0x0C8A_0000_A1B4),
                (194, 0x22, 41, 55, 0x1A_0000_0029),
            ],
            &[(1, 44), (7, 45), (195, 0), (188, 0), (194, 0)],
            AtaHealth::Passed,
        );
        let v = judge0(&r);
        assert_eq!(v.level, Level::Ok, "{v:?}");
        assert!(v.reasons.is_empty(), "{v:?}");
        assert_eq!(r.temperature_c(), Some(41));
        assert_eq!(r.power_on_hours(), Some(41_396));
        assert!(ata::is_seagate(r.model().unwrap_or("")));
    }

    #[test]
    fn temperature_limits() {
        let t = |c: u64| qemu(&[(194, 0x22, 100, 100, 0x1E_0000_0000 | c)]);
        assert!(judge0(&t(49)).reasons.is_empty());
        let v = judge0(&t(50));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["temperature_high"])
        );
        let v = judge0(&t(60));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Critical, vec!["temperature_critical"])
        );
        // 194 wins over 190 (QEMU's 190 says 31).
        let limits = Limits {
            temperature_warning_c: 30,
            temperature_critical_c: 40,
        };
        assert_eq!(judge(&qemu(&[]), None, &limits).level, Level::Warning);
    }

    #[test]
    fn power_on_hours_is_info_only() {
        let v = judge0(&qemu(&[(9, 0x32, 40, 40, 50_000)]));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Ok, vec!["power_on_hours_high"])
        );
    }

    fn nvme(cw: u8, temp_k: u16, media: u64, edit: impl FnOnce(&mut Vec<u8>)) -> Reading {
        let mut log = nt::health_log(cw, temp_k, media);
        edit(&mut log);
        Reading::Nvme {
            identity: crate::sources::smart::nvme::parse_identify_controller(&nt::identify(
                "QEMU NVMe Ctrl",
                "deadbeef",
            ))
            .expect("identify"),
            health: crate::sources::smart::nvme::parse_health_log(&log).expect("log"),
        }
    }

    #[test]
    fn nvme_healthy_is_ok() {
        let v = judge0(&nvme(0, 323, 0, |_| {}));
        assert_eq!(v.level, Level::Ok);
        assert!(v.reasons.is_empty(), "{v:?}");
    }

    #[test]
    fn nvme_each_critical_warning_bit_is_critical_and_named() {
        for (bit, name) in crate::sources::smart::nvme::CRITICAL_WARNING_BITS
            .iter()
            .enumerate()
        {
            let v = judge0(&nvme(1 << bit, 323, 0, |_| {}));
            assert_eq!(v.level, Level::Critical, "bit {bit}");
            assert_eq!(codes(&v), ["nvme_critical_warning"], "bit {bit}");
            assert!(v.reasons[0].detail.contains(name), "{v:?}");
        }
        // QEMU's smart_critical_warning=4.
        let v = judge0(&nvme(4, 323, 0, |_| {}));
        assert!(v.reasons[0].detail.contains("reliability degraded"));
    }

    #[test]
    fn nvme_spare_wear_media_and_error_log() {
        let v = judge0(&nvme(0, 323, 0, |l| l[3] = 9));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Critical, vec!["nvme_spare_low"])
        );
        assert!(judge0(&nvme(0, 323, 0, |l| l[3] = 10)).reasons.is_empty());
        let v = judge0(&nvme(0, 323, 0, |l| l[5] = 90));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["nvme_wear_high"])
        );
        assert!(judge0(&nvme(0, 323, 0, |l| l[5] = 89)).reasons.is_empty());
        let v = judge0(&nvme(0, 323, 2, |_| {}));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["nvme_media_errors_nonzero"])
        );
        let before = prev_of(&nvme(0, 323, 2, |_| {}));
        let v = judge(&nvme(0, 323, 3, |_| {}), Some(&before), &Limits::default());
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Critical, vec!["nvme_media_errors_growing"])
        );
        let v = judge(
            &nvme(0, 323, 0, |l| l[176] = 5),
            Some(&before),
            &Limits::default(),
        );
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Ok, vec!["nvme_error_log_growing"])
        );
    }

    #[test]
    fn nvme_temperature_uses_the_disks_own_thresholds() {
        // The identity says WCTEMP 343 K (70 °C), CCTEMP 373 K (100 °C):
        // 65 °C is fine for an NVMe disk although above the HDD warning.
        assert!(judge0(&nvme(0, 338, 0, |_| {})).reasons.is_empty());
        let v = judge0(&nvme(0, 343, 0, |_| {}));
        assert_eq!(codes(&v), ["temperature_high"]);
        let v = judge0(&nvme(0, 373, 0, |_| {}));
        assert_eq!(codes(&v), ["temperature_critical"]);
    }

    #[test]
    fn scsi_rules() {
        let r = |ie: &[u8]| Reading::Scsi {
            identity: scsi::parse_inquiry(&st::inquiry("SEAGATE", "ST4000NM0023")).expect("inq"),
            ie: Some(scsi::parse_ie_page(ie).expect("ie")),
            temperature_c: scsi::parse_temperature_page(&st::temp_page(38)).expect("temp"),
        };
        assert!(judge0(&r(&st::ie_page(0, 0, 38))).reasons.is_empty());
        let v = judge0(&r(&st::ie_page(0x5D, 0x10, 38)));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Critical, vec!["scsi_failure_predicted"])
        );
        let v = judge0(&r(&st::ie_page(0x0B, 0x01, 38)));
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Warning, vec!["scsi_exception"])
        );
    }

    #[test]
    fn standby_and_unsupported_are_unknown() {
        let v = judge0(&Reading::Standby);
        assert_eq!((v.level, codes(&v)), (Level::Unknown, vec!["standby"]));
        let v = judge0(&Reading::Unsupported {
            reason: "no SAT passthrough".into(),
        });
        assert_eq!((v.level, codes(&v)), (Level::Unknown, vec!["unsupported"]));
    }

    #[test]
    fn growth_is_detected_across_a_persisted_state_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = qemu(&[(5, 0x33, 100, 100, 8)]);
        let v = judge0(&first);
        let mut state = State::default();
        let key = first.state_key().expect("key");
        state.insert(
            key.clone(),
            Previous::from_reading(&first, v.level, 1).expect("p"),
        );
        state.save(dir.path()).expect("save");
        // "Restart": a fresh load from disk.
        let loaded = State::load(dir.path());
        let prev = loaded.disks.get(&key).expect("remembered");
        let v = judge(
            &qemu(&[(5, 0x33, 100, 100, 12)]),
            Some(prev),
            &Limits::default(),
        );
        assert_eq!(
            (v.level, codes(&v)),
            (Level::Critical, vec!["reallocated_growing"])
        );
        assert_eq!(prev.level, Some(Level::Warning));
    }

    #[test]
    fn reasons_are_sorted_worst_first() {
        let r = ata_reading(
            "QEMU HARDDISK",
            &[(9, 0x32, 40, 40, 50_000), (187, 0x32, 100, 100, 1)],
            &[],
            AtaHealth::Failing,
        );
        let v = judge0(&r);
        assert_eq!(
            codes(&v),
            [
                "ata_status_failing",
                "reported_uncorrect_nonzero",
                "power_on_hours_high"
            ]
        );
    }
}
