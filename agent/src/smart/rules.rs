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
