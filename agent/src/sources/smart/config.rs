//! The `[smart]` table: raw TOML form and validation into [`SmartConfig`].
//!
//! Pure: checks text only, never opens a device (so `sitewatch-agent
//! check` stays safe). Problems are appended to the config's shared list
//! in plain words, all of them at once.
//!
//! ```toml
//! [smart]
//! enabled = true                 # default true when the table exists
//! interval_secs = 1800           # between reads of all disks
//! devices = []                   # empty = discover from /sys/block
//! smartctl_fallback = true       # use smartctl --json when the native path cannot read
//! temperature_warning_c = 50
//! temperature_critical_c = 60
//! standby_skip = true            # do not wake spun-down disks (false: read them, spinning them up)
//! read_timeout_secs = 10         # per disk
//!
//! [[smart.device]]               # per-device type for odd USB bridges
//! path = "/dev/sdb"
//! type = "sat12"                 # auto, sat, sat12, nvme, scsi
//! ```
//!
//! Device list: with `devices` empty every discovered disk is read and the
//! `[[smart.device]]` entries only override types (and add their path if
//! discovery does not list it); with `devices` set exactly those paths and
//! the `[[smart.device]]` paths are read.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::fields::{self, Absent, Res, Value};

use super::report::DeviceType;

/// Most devices (listed plus overrides) one config may name.
pub const MAX_DEVICES: usize = 64;
const MIN_INTERVAL_SECS: u64 = 60;
const MAX_INTERVAL_SECS: u64 = 7 * 24 * 3600;
const MAX_READ_TIMEOUT_SECS: u64 = 120;

fn default_true() -> bool {
    true
}
fn default_interval() -> u64 {
    1800
}
fn default_warn() -> u8 {
    50
}
fn default_crit() -> u8 {
    60
}
fn default_timeout() -> u64 {
    10
}

/// `[smart]` as written in the file.
#[derive(Debug, Clone)]
pub struct SmartRaw {
    enabled: bool,
    interval_secs: u64,
    devices: Vec<String>,
    device: Vec<DeviceRaw>,
    smartctl_fallback: bool,
    temperature_warning_c: u8,
    temperature_critical_c: u8,
    standby_skip: bool,
    read_timeout_secs: u64,
}

/// One `[[smart.device]]` as written.
#[derive(Debug, Clone, Default)]
struct DeviceRaw {
    path: String,
    /// `type` in the file.
    kind: DeviceType,
}

/// Reads `[smart]` (serde's words: `crate::config::fields`).
pub fn read(v: &Value<'_>) -> Res<SmartRaw> {
    use fields::{boolean, u64, u8};
    const FIELDS: &[(&str, Absent)] = &[
        ("enabled", Absent::Default),
        ("interval_secs", Absent::Default),
        ("devices", Absent::Default),
        ("device", Absent::Default),
        ("smartctl_fallback", Absent::Default),
        ("temperature_warning_c", Absent::Default),
        ("temperature_critical_c", Absent::Default),
        ("standby_skip", Absent::Default),
        ("read_timeout_secs", Absent::Default),
    ];
    let mut r = SmartRaw {
        enabled: default_true(),
        interval_secs: default_interval(),
        devices: Vec::new(),
        device: Vec::new(),
        smartctl_fallback: default_true(),
        temperature_warning_c: default_warn(),
        temperature_critical_c: default_crit(),
        standby_skip: default_true(),
        read_timeout_secs: default_timeout(),
    };
    fields::fields(v, "struct SmartRaw", FIELDS, &mut |i, v| {
        match i {
            0 => r.enabled = boolean(v)?,
            1 => r.interval_secs = u64(v)?,
            2 => r.devices = fields::strings(v)?,
            3 => r.device = fields::list(v, read_device)?,
            4 => r.smartctl_fallback = boolean(v)?,
            5 => r.temperature_warning_c = u8(v)?,
            6 => r.temperature_critical_c = u8(v)?,
            7 => r.standby_skip = boolean(v)?,
            _ => r.read_timeout_secs = u64(v)?,
        }
        Ok(())
    })?;
    Ok(r)
}

fn read_device(v: &Value<'_>) -> Res<DeviceRaw> {
    const FIELDS: &[(&str, Absent)] = &[("path", Absent::Required), ("type", Absent::Default)];
    const TYPES: [DeviceType; 5] = [
        DeviceType::Auto,
        DeviceType::Sat,
        DeviceType::Sat12,
        DeviceType::Nvme,
        DeviceType::Scsi,
    ];
    let mut d = DeviceRaw::default();
    fields::fields(v, "struct DeviceRaw", FIELDS, &mut |i, v| {
        match i {
            0 => d.path = fields::string(v)?,
            _ => {
                let names = TYPES.map(DeviceType::as_str);
                d.kind = TYPES[fields::variant(v, &names)?];
            }
        }
        Ok(())
    })?;
    Ok(d)
}

/// Temperature limits the rules apply (NVMe uses its own WCTEMP/CCTEMP
/// when the disk reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At or above: warning.
    pub temperature_warning_c: u8,
    /// At or above: critical.
    pub temperature_critical_c: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            temperature_warning_c: default_warn(),
            temperature_critical_c: default_crit(),
        }
    }
}

/// A device to read, with its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Device node, `/dev/…`.
    pub path: PathBuf,
    /// How to read it.
    pub kind: DeviceType,
}

/// Validated `[smart]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartConfig {
    /// Period between reads of all disks.
    pub interval: Duration,
    /// Explicit devices; empty = discover.
    pub devices: Vec<DeviceSpec>,
    /// Type overrides by path, applied to discovered disks too.
    pub overrides: Vec<DeviceSpec>,
    /// Use `smartctl --json` when the native path cannot read a device.
    pub smartctl_fallback: bool,
    /// Temperature limits.
    pub limits: Limits,
    /// Do not wake disks in standby.
    pub standby_skip: bool,
    /// Longest wait for one disk's read.
    pub read_timeout: Duration,
}

impl Default for SmartConfig {
    fn default() -> Self {
        SmartConfig {
            interval: Duration::from_secs(default_interval()),
            devices: Vec::new(),
            overrides: Vec::new(),
            smartctl_fallback: true,
            limits: Limits::default(),
            standby_skip: true,
            read_timeout: Duration::from_secs(default_timeout()),
        }
    }
}

impl SmartConfig {
    /// The configured type for `path` (override, else `auto`).
    pub fn type_for(&self, path: &std::path::Path) -> DeviceType {
        self.overrides
            .iter()
            .chain(&self.devices)
            .find(|d| d.path == path)
            .map_or(DeviceType::Auto, |d| d.kind)
    }

    /// The devices to read this round: `discovered` (used only when no
    /// explicit list is configured) plus every override path, without
    /// duplicates, each with its type.
    pub fn device_list(&self, discovered: &[PathBuf]) -> Vec<DeviceSpec> {
        let base: Vec<PathBuf> = if self.devices.is_empty() {
            discovered.iter().take(MAX_DEVICES).cloned().collect()
        } else {
            self.devices.iter().map(|d| d.path.clone()).collect()
        };
        let mut out: Vec<DeviceSpec> = Vec::new();
        for p in base
            .into_iter()
            .chain(self.overrides.iter().map(|d| d.path.clone()))
        {
            if !out.iter().any(|d| d.path == p) {
                out.push(DeviceSpec {
                    kind: self.type_for(&p),
                    path: p,
                });
            }
        }
        out
    }

    /// One line for the config summary.
    pub fn summary(&self) -> String {
        let which = if self.devices.is_empty() {
            "discovered disks".to_owned()
        } else {
            format!("{} listed disks", self.devices.len())
        };
        format!("SMART every {} s on {which}", self.interval.as_secs())
    }
}

fn check_path(p: &str, key: &str, problems: &mut Vec<String>) -> Option<PathBuf> {
    if !p.starts_with("/dev/") || p.len() <= 5 || p.contains("/../") || p.ends_with("/..") {
        problems.push(format!(
            "[smart] {key} `{p}`: must be a device node under /dev/, like \"/dev/sda\" or \"/dev/nvme0n1\""
        ));
        return None;
    }
    Some(PathBuf::from(p))
}

/// Checks `[smart]`; `None` when a problem was pushed or the table says
/// `enabled = false` (the outer `Option` is the validation result).
pub(crate) fn validate(raw: SmartRaw, problems: &mut Vec<String>) -> Option<Option<SmartConfig>> {
    let before = problems.len();
    if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&raw.interval_secs) {
        problems.push(format!(
            "[smart] interval_secs = {}: must be between {MIN_INTERVAL_SECS} and {MAX_INTERVAL_SECS} \
             (reading SMART too often keeps disks busy)",
            raw.interval_secs
        ));
    }
    if raw.read_timeout_secs == 0 || raw.read_timeout_secs > MAX_READ_TIMEOUT_SECS {
        problems.push(format!(
            "[smart] read_timeout_secs = {}: must be between 1 and {MAX_READ_TIMEOUT_SECS}",
            raw.read_timeout_secs
        ));
    }
    if raw.temperature_warning_c == 0 || raw.temperature_critical_c > 100 {
        problems.push(format!(
            "[smart] temperatures must be between 1 and 100 °C (warning {}, critical {})",
            raw.temperature_warning_c, raw.temperature_critical_c
        ));
    } else if raw.temperature_warning_c >= raw.temperature_critical_c {
        problems.push(format!(
            "[smart] temperature_warning_c ({}) must be below temperature_critical_c ({})",
            raw.temperature_warning_c, raw.temperature_critical_c
        ));
    }
    if raw.devices.len() + raw.device.len() > MAX_DEVICES {
        problems.push(format!(
            "[smart] at most {MAX_DEVICES} devices may be named ({} given)",
            raw.devices.len() + raw.device.len()
        ));
        return None;
    }
    let mut devices = Vec::new();
    for p in &raw.devices {
        if let Some(path) = check_path(p, "devices entry", problems) {
            if devices.iter().any(|d: &DeviceSpec| d.path == path) {
                problems.push(format!("[smart] devices lists `{p}` twice"));
            } else {
                devices.push(DeviceSpec {
                    path,
                    kind: DeviceType::Auto,
                });
            }
        }
    }
    let mut overrides = Vec::new();
    for d in &raw.device {
        if let Some(path) = check_path(&d.path, "[[smart.device]] path", problems) {
            if overrides.iter().any(|o: &DeviceSpec| o.path == path) {
                problems.push(format!("[smart] [[smart.device]] names `{}` twice", d.path));
            } else {
                overrides.push(DeviceSpec { path, kind: d.kind });
            }
        }
    }
    if problems.len() != before {
        return None;
    }
    if !raw.enabled {
        return Some(None);
    }
    Some(Some(SmartConfig {
        interval: Duration::from_secs(raw.interval_secs),
        devices,
        overrides,
        smartctl_fallback: raw.smartctl_fallback,
        limits: Limits {
            temperature_warning_c: raw.temperature_warning_c,
            temperature_critical_c: raw.temperature_critical_c,
        },
        standby_skip: raw.standby_skip,
        read_timeout: Duration::from_secs(raw.read_timeout_secs),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_doc(text: &str) -> Result<SmartRaw, String> {
        crate::config::read_for_test(text, "smart", read)?.ok_or_else(|| "no [smart]".into())
    }

    fn check(text: &str) -> (Option<Option<SmartConfig>>, Vec<String>) {
        let raw = read_doc(text).expect("toml");
        let mut p = Vec::new();
        (validate(raw, &mut p), p)
    }

    #[test]
    fn defaults_when_the_table_is_empty() {
        let (c, p) = check("[smart]\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c, Some(Some(SmartConfig::default())));
    }

    #[test]
    fn disabled_table_is_off_but_still_checked() {
        assert_eq!(check("[smart]\nenabled = false\n").0, Some(None));
        let (c, p) = check("[smart]\nenabled = false\ninterval_secs = 1\n");
        assert_eq!(c, None);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn every_problem_is_reported() {
        let (c, p) = check(
            "[smart]\ninterval_secs = 5\nread_timeout_secs = 0\ntemperature_warning_c = 70\n\
             devices = [\"sda\", \"/dev/sdb\", \"/dev/sdb\"]\n\
             [[smart.device]]\npath = \"/etc/passwd\"\ntype = \"sat12\"\n",
        );
        assert_eq!(c, None);
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p[0].contains("interval_secs"));
        assert!(p[2].contains("below temperature_critical_c"));
    }

    #[test]
    fn unknown_type_and_key_are_toml_errors() {
        assert!(read_doc("[smart]\n[[smart.device]]\npath=\"/dev/sdb\"\ntype=\"usb\"\n").is_err());
        assert!(read_doc("[smart]\ninterval=5\n").is_err());
    }

    #[test]
    fn device_list_discovers_or_uses_the_list_with_overrides() {
        let (c, _) = check(
            "[smart]\n[[smart.device]]\npath = \"/dev/sdb\"\ntype = \"sat12\"\n\
             [[smart.device]]\npath = \"/dev/sdz\"\ntype = \"scsi\"\n",
        );
        let c = c.flatten().expect("on");
        let found = [PathBuf::from("/dev/sda"), PathBuf::from("/dev/sdb")];
        let list = c.device_list(&found);
        assert_eq!(
            list.iter()
                .map(|d| (d.path.to_str().unwrap_or(""), d.kind))
                .collect::<Vec<_>>(),
            [
                ("/dev/sda", DeviceType::Auto),
                ("/dev/sdb", DeviceType::Sat12),
                ("/dev/sdz", DeviceType::Scsi)
            ]
        );
        let (c, _) = check("[smart]\ndevices = [\"/dev/nvme0n1\"]\n");
        let c = c.flatten().expect("on");
        let list = c.device_list(&found);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].path, PathBuf::from("/dev/nvme0n1"));
    }
}
