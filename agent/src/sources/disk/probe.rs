//! One blocking disk probe: resolve the path, check it is a mount point,
//! `statvfs` it, and turn the numbers into what `df` shows.
//!
//! "Mount point" means a filesystem of its own: a path that is only bound
//! onto itself from the filesystem holding its parent folder (systemd
//! `ReadWritePaths=`, OpenWrt ujail) is [`ProbeError::NotMounted`], judged
//! both by the mount table ([`mountinfo::bind_of_parent`]) and by `stat`
//! (`st_dev` of the path equals that of its parent folder). Read-only is
//! the superblock's flag, never the sandbox's per-mount view.
//!
//! [`probe`] blocks (a hung NFS/CIFS server can make `stat` and `statvfs`
//! sleep forever in the kernel), so it only ever runs on a blocking thread
//! under a timeout; see the source in `disk/mod.rs`. [`Usage::from_raw`] is
//! pure.

use std::io;
use std::path::Path;

use super::mountinfo::{self, MountEntry};

/// Longest filesystem type we report; longer names are cut (the wire
/// buffer budget assumes short strings).
const MAX_FS_TYPE_LEN: usize = 32;

/// Usage numbers of one filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Size in bytes.
    pub total_bytes: u64,
    /// Total minus free, including root-reserved blocks.
    pub used_bytes: u64,
    /// Available to unprivileged users.
    pub avail_bytes: u64,
    /// `used / (used + avail) * 100`, like `df`, rounded to 2 decimals.
    pub used_pct: f32,
    /// Total inodes (0 if the filesystem does not say).
    pub inodes_total: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

impl Usage {
    /// Computes usage from raw `statvfs` fields.
    pub fn from_raw(
        frsize: u64,
        blocks: u64,
        bfree: u64,
        bavail: u64,
        files: u64,
        ffree: u64,
    ) -> Usage {
        let total = blocks.saturating_mul(frsize);
        let used = blocks.saturating_sub(bfree).saturating_mul(frsize);
        let avail = bavail.saturating_mul(frsize);
        let denom = used as f64 + avail as f64;
        let pct = if denom > 0.0 {
            ((used as f64 * 100.0 / denom) * 100.0).round() / 100.0
        } else {
            0.0
        };
        Usage {
            total_bytes: total,
            used_bytes: used,
            avail_bytes: avail,
            used_pct: pct.clamp(0.0, 100.0) as f32,
            inodes_total: files,
            inodes_free: ffree.min(files),
        }
    }
}

/// A successful probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Mounted {
    /// Filesystem type from the mount table.
    pub fs_type: String,
    /// The filesystem itself is read-only (superblock `ro`, e.g. the
    /// kernel's remount after errors); a sandbox's read-only view is not.
    pub read_only: bool,
    /// The numbers.
    pub usage: Usage,
}

/// Why a probe failed; [`ProbeError::code`] is the wire `error` value
/// (`docs/wire.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The configured path does not exist.
    Missing,
    /// The path exists but nothing is mounted there: recordings would go
    /// to the parent filesystem (typically the root disk).
    NotMounted,
    /// The probe did not finish within the timeout (hung network mount).
    Timeout,
    /// Any other error resolving or querying the path (permission
    /// denied, I/O error…); the message is kept for the log.
    Failed(String),
}

impl ProbeError {
    /// Stable snake_case code for the `error` field of a mount entry.
    pub fn code(&self) -> &'static str {
        match self {
            ProbeError::Missing => "missing",
            ProbeError::NotMounted => "not_mounted",
            ProbeError::Timeout => "timeout",
            ProbeError::Failed(_) => "statvfs_failed",
        }
    }

    fn from_io(e: &io::Error) -> ProbeError {
        match e.kind() {
            io::ErrorKind::NotFound => ProbeError::Missing,
            _ => ProbeError::Failed(e.to_string()),
        }
    }
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Missing => f.write_str("path does not exist"),
            ProbeError::NotMounted => f.write_str(
                "nothing is mounted there; anything written goes to the parent filesystem",
            ),
            ProbeError::Timeout => f.write_str("no answer in time (hung network mount?)"),
            ProbeError::Failed(e) => f.write_str(e),
        }
    }
}

/// Probes `path` against the mount `table`. Blocking; see module docs.
pub fn probe(path: &str, table: &[MountEntry]) -> Result<Mounted, ProbeError> {
    // Symlinks are resolved so `/srv/recordings -> /mnt/sda1` is judged by
    // what it points to.
    let canon = std::fs::canonicalize(path).map_err(|e| ProbeError::from_io(&e))?;
    let canon_str = canon.to_string_lossy();
    let entry = mountinfo::find(table, &canon_str).ok_or(ProbeError::NotMounted)?;
    if mountinfo::bind_of_parent(table, &canon_str) || same_device_as_parent(&canon)? {
        return Err(ProbeError::NotMounted);
    }
    let st = rustix::fs::statvfs(Path::new(&*canon_str))
        .map_err(|e| ProbeError::from_io(&io::Error::from(e)))?;
    let usage = Usage::from_raw(
        st.f_frsize,
        st.f_blocks,
        st.f_bfree,
        st.f_bavail,
        st.f_files,
        st.f_ffree,
    );
    let mut fs_type = entry.fs_type.clone();
    if fs_type.len() > MAX_FS_TYPE_LEN {
        let mut cut = MAX_FS_TYPE_LEN;
        while !fs_type.is_char_boundary(cut) {
            cut -= 1;
        }
        fs_type.truncate(cut);
    }
    Ok(Mounted {
        fs_type,
        // Not statvfs's ST_RDONLY: it reflects the per-mount flag too.
        read_only: entry.read_only,
        usage,
    })
}

/// Whether `path` (canonical) is on the same device as its parent folder,
/// i.e. not the root of a filesystem of its own. `/` never is. Blocking.
fn same_device_as_parent(path: &Path) -> Result<bool, ProbeError> {
    let Some(parent) = path.parent() else {
        return Ok(false);
    };
    let dev = |p: &Path| {
        rustix::fs::stat(p)
            .map(|st| st.st_dev)
            .map_err(|e| ProbeError::from_io(&io::Error::from(e)))
    };
    Ok(dev(path)? == dev(parent)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_like_df() {
        // df: 1K-blocks 1000, used 600, avail 300 (100 reserved) -> 67%.
        let u = Usage::from_raw(1024, 1000, 400, 300, 64, 10);
        assert_eq!(u.total_bytes, 1_024_000);
        assert_eq!(u.used_bytes, 614_400);
        assert_eq!(u.avail_bytes, 307_200);
        assert_eq!(u.used_pct, 66.67);
        assert_eq!((u.inodes_total, u.inodes_free), (64, 10));
    }

    #[test]
    fn percent_edge_cases() {
        // Empty (pseudo) filesystem.
        assert_eq!(Usage::from_raw(4096, 0, 0, 0, 0, 0).used_pct, 0.0);
        // Full for users, with reserved blocks left: 100 %.
        assert_eq!(Usage::from_raw(4096, 100, 5, 0, 0, 0).used_pct, 100.0);
        // Nearly full recording disk from the wire vector.
        let u = Usage::from_raw(1, 3_936_900_000_000, 236_900_000_000, 36_900_000_000, 0, 0);
        assert_eq!(u.used_pct, 99.01);
        // Inconsistent counters never go out of range.
        let u = Usage::from_raw(4096, 10, 20, 30, 5, 9);
        assert!(u.used_pct >= 0.0 && u.used_pct <= 100.0);
        assert_eq!(u.inodes_free, 5);
        // Huge values saturate instead of overflowing.
        let u = Usage::from_raw(u64::MAX, u64::MAX, 0, 0, 0, 0);
        assert_eq!(u.total_bytes, u64::MAX);
    }

    #[test]
    fn probe_root_and_errors() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let table = mountinfo::parse(&text);
        let root = probe("/", &table).expect("root is mounted");
        assert!(root.usage.total_bytes > 0);
        assert!(!root.fs_type.is_empty());

        assert_eq!(
            probe("/nonexistent/sitewatch", &table),
            Err(ProbeError::Missing)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf8");
        // A plain directory: the classic fallen-off USB disk.
        if mountinfo::find(&table, d).is_none() {
            assert_eq!(probe(d, &table), Err(ProbeError::NotMounted));
        }
        // A symlink to "/" counts as "/".
        let link = dir.path().join("root-link");
        std::os::unix::fs::symlink("/", &link).expect("symlink");
        assert!(probe(link.to_str().expect("utf8"), &table).is_ok());
    }
}
