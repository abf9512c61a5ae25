//! `[disk]`: raw struct (read with `crate::config::fields`) → validated
//! [`DiskConfig`].

use std::time::Duration;

use crate::config::fields::{self, Absent, Res, Value};
use sitewatch_wire::payload::{MAX_MOUNTS, MAX_PATH_LEN};

fn default_interval_secs() -> u32 {
    60
}
fn default_mounts() -> Vec<String> {
    vec!["/".to_owned()]
}
fn default_statvfs_timeout_ms() -> u64 {
    5_000
}

/// `[disk]` as written in the file.
#[derive(Debug, Clone)]
pub struct DiskRaw {
    interval_secs: u32,
    mounts: Vec<String>,
    statvfs_timeout_ms: u64,
}

/// Reads `[disk]` (serde's words: `crate::config::fields`).
pub fn read(v: &Value<'_>) -> Res<DiskRaw> {
    const FIELDS: &[(&str, Absent)] = &[
        ("interval_secs", Absent::Default),
        ("mounts", Absent::Default),
        ("statvfs_timeout_ms", Absent::Default),
    ];
    let mut raw = DiskRaw::default();
    fields::fields(v, "struct DiskRaw", FIELDS, &mut |i, v| {
        match i {
            0 => raw.interval_secs = fields::u32(v)?,
            1 => raw.mounts = fields::strings(v)?,
            _ => raw.statvfs_timeout_ms = fields::u64(v)?,
        }
        Ok(())
    })?;
    Ok(raw)
}

impl Default for DiskRaw {
    fn default() -> Self {
        DiskRaw {
            interval_secs: default_interval_secs(),
            mounts: default_mounts(),
            statvfs_timeout_ms: default_statvfs_timeout_ms(),
        }
    }
}

/// Validated disk settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Period between disk samples.
    pub interval: Duration,
    /// Absolute mount paths to report, at most [`MAX_MOUNTS`], without
    /// trailing `/` (except `/` itself), no duplicates. May be empty, which
    /// turns the disk source off.
    pub mounts: Vec<String>,
    /// Longest wait for one `statvfs`; a hung NFS/CIFS mount is then
    /// reported as `timeout` instead of stalling the agent.
    pub statvfs_timeout: Duration,
}

/// Validates `[disk]`, collecting every problem.
pub fn validate(d: DiskRaw, problems: &mut Vec<String>) -> Option<DiskConfig> {
    let before = problems.len();
    let interval = crate::sources::check_interval("disk.interval_secs", d.interval_secs, problems);
    if !(1..=60_000).contains(&d.statvfs_timeout_ms) {
        problems.push(format!(
            "disk.statvfs_timeout_ms = {}: must be between 1 and 60000 milliseconds",
            d.statvfs_timeout_ms
        ));
    }
    if d.mounts.len() > MAX_MOUNTS {
        problems.push(format!(
            "disk.mounts lists {} paths; at most {MAX_MOUNTS} are allowed",
            d.mounts.len()
        ));
    }
    let mut mounts: Vec<String> = Vec::with_capacity(d.mounts.len());
    for m in &d.mounts {
        match normalize_mount(m) {
            Err(e) => problems.push(format!("disk.mounts: `{m}` {e}")),
            Ok(n) if mounts.contains(&n) => {
                problems.push(format!("disk.mounts: `{m}` is listed twice"))
            }
            Ok(n) => mounts.push(n),
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(DiskConfig {
        interval: Duration::from_secs(interval?.into()),
        mounts,
        statvfs_timeout: Duration::from_millis(d.statvfs_timeout_ms),
    })
}

/// Checks a configured mount path and drops trailing slashes (`/mnt/usb/`
/// → `/mnt/usb`), because mount points are compared as strings.
fn normalize_mount(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("is not an absolute path (it must start with /)");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    let trimmed = path.trim_end_matches('/');
    let norm = if trimmed.is_empty() { "/" } else { trimmed };
    if norm.len() > MAX_PATH_LEN {
        return Err("is longer than 255 bytes");
    }
    if norm.split('/').any(|c| c == "." || c == "..") {
        return Err("must not contain `.` or `..` components");
    }
    if norm.contains("//") {
        return Err("must not contain `//`");
    }
    Ok(norm.to_owned())
}
