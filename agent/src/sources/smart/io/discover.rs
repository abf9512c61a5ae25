//! Finds the disks worth asking for SMART data, from `/sys/block`.
//!
//! `/sys/block` lists whole block devices only (partitions are
//! subdirectories of their disk), so the work is skipping what has no SMART
//! of its own: loop, ram, zram, device-mapper (`dm-`) and md software RAID
//! (their member disks are listed themselves), optical (`sr`), floppy,
//! network block devices, MTD flash, SD/eMMC (`mmcblk`: no SMART command
//! set), virtio and Xen disks (the hypervisor hides the drive). Anything
//! without a `device` link is virtual and skipped too.

use std::path::{Path, PathBuf};

use crate::sources::smart::report::DeviceType;

/// A disk found in `/sys/block`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Kernel name (`sda`, `nvme0n1`).
    pub name: String,
    /// Device node (`/dev/sda`).
    pub path: PathBuf,
    /// Guessed type: `Nvme` for `nvme*`, else `Auto` (SAT or SCSI is
    /// decided by probing).
    pub kind: DeviceType,
}

/// Name prefixes of block devices without SMART of their own.
const SKIP_PREFIXES: &[&str] = &[
    "loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "mtdblock", "mmcblk", "vd", "xvd", "zd",
    "rbd", "ubiblock",
];

/// Decides from the name and two sysfs facts whether a `/sys/block` entry
/// is a SMART candidate (pure).
pub fn classify(name: &str, has_device_link: bool, is_partition: bool) -> Option<DeviceType> {
    if name.is_empty() || name.contains('/') || is_partition || !has_device_link {
        return None;
    }
    if SKIP_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return None;
    }
    if name.starts_with("nvme") {
        // nvme0n1; the multipath hidden nodes nvme0c0n1 have no device link
        // of their own, but say it anyway.
        if name.contains('c') {
            return None;
        }
        return Some(DeviceType::Nvme);
    }
    Some(DeviceType::Auto)
}

/// Lists SMART candidates under `sys_block` (normally `/sys/block`),
/// sorted by name. Unreadable entries are skipped.
pub fn disks_in(sys_block: &Path) -> std::io::Result<Vec<Found>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sys_block)? {
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let dir = entry.path();
        let has_device = dir.join("device").exists();
        let is_partition = dir.join("partition").exists();
        if let Some(kind) = classify(&name, has_device, is_partition) {
            out.push(Found {
                path: Path::new("/dev").join(&name),
                name,
                kind,
            });
        }
    }
    // Names in one directory are unique, so an unstable sort gives the
    // same order (and less code than a stable one).
    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// [`disks_in`] on `/sys/block`.
pub fn disks() -> std::io::Result<Vec<Found>> {
    disks_in(Path::new("/sys/block"))
}

/// The device nodes of [`disks`], for `task::Discover`; empty (logged)
/// when `/sys/block` cannot be read. The type guess is not needed there:
/// [`super::read`] with `auto` recognises NVMe by name too.
pub fn paths() -> Vec<PathBuf> {
    match disks() {
        Ok(found) => found.into_iter().map(|f| f.path).collect(),
        Err(e) => {
            tracing::warn!(err = %e, "Cannot list disks in /sys/block");
            Vec::new()
        }
    }
}

/// True if the block device `name` hangs off a USB bus (its sysfs device
/// path goes through a `usb` node): used to word "no SAT passthrough".
pub fn is_usb(name: &str) -> bool {
    std::fs::canonicalize(Path::new("/sys/block").join(name).join("device"))
        .map(|p| {
            p.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with("usb"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("sda", true, false), Some(DeviceType::Auto));
        assert_eq!(classify("nvme0n1", true, false), Some(DeviceType::Nvme));
        assert_eq!(classify("nvme0c0n1", true, false), None);
        for skip in [
            "loop0", "ram0", "zram0", "dm-0", "md0", "md127", "sr0", "mmcblk0", "vda", "nbd0",
        ] {
            assert_eq!(classify(skip, true, false), None, "{skip}");
        }
        assert_eq!(classify("sda1", true, true), None);
        assert_eq!(classify("sdb", false, false), None);
    }

    #[test]
    fn scans_a_fake_sys_block() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str, device: bool, partition: bool| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            if device {
                std::fs::create_dir(d.join("device")).unwrap();
            }
            if partition {
                std::fs::write(d.join("partition"), "1\n").unwrap();
            }
        };
        mk("sdb", true, false);
        mk("sda", true, false);
        mk("loop0", false, false);
        mk("nvme0n1", true, false);
        mk("weird1", true, true);
        let found = disks_in(dir.path()).unwrap();
        let names: Vec<_> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "sda", "sdb"]);
        assert_eq!(found[0].path, Path::new("/dev/nvme0n1"));
        assert_eq!(found[0].kind, DeviceType::Nvme);
    }
}
