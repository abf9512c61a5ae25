//! Disk rows: every configured mount, probed like the daemon does.

use std::sync::Arc;

use super::config::DiskConfig;
use crate::check::{row, Row, Verdict};

/// Every configured disk, probed like the daemon does (blocking thread,
/// `statvfs_timeout_ms`).
pub async fn rows(cfg: &DiskConfig) -> Vec<Row> {
    use super::mountinfo;
    use super::probe::{self, ProbeError};
    if cfg.mounts.is_empty() {
        return vec![row(
            "disks",
            Verdict::Warning,
            "no [disk] mounts configured",
            "list the recording disk in [disk] mounts",
        )];
    }
    let table: Arc<[mountinfo::MountEntry]> = match std::fs::read_to_string("/proc/self/mountinfo")
    {
        Ok(t) => mountinfo::parse(&t).into(),
        Err(e) => {
            return vec![row(
                "disks",
                Verdict::Failed,
                format!("cannot read /proc/self/mountinfo: {e}"),
                "",
            )]
        }
    };
    let mut rows = Vec::new();
    for path in &cfg.mounts {
        let p = path.clone();
        let t = Arc::clone(&table);
        let res = tokio::time::timeout(
            cfg.statvfs_timeout,
            crate::spawn::spawn_blocking(move || probe::probe(&p, &t)),
        )
        .await;
        let name = format!("disk {path}");
        let r = match res {
            Err(_) => Err(ProbeError::Timeout),
            Ok(Err(e)) => Err(ProbeError::Failed(e.to_string())),
            Ok(Ok(r)) => r,
        };
        rows.push(match r {
            Ok(m) => {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                let words = format!(
                    "{}, {:.1} GiB of {:.1} GiB free ({:.0} % used){}",
                    m.fs_type,
                    gib(m.usage.avail_bytes),
                    gib(m.usage.total_bytes),
                    m.usage.used_pct,
                    if m.read_only { ", READ-ONLY" } else { "" }
                );
                if m.read_only {
                    row(name, Verdict::Failed, words, "the filesystem is read-only (the kernel does this after disk errors): check the disk (dmesg), repair it (fsck), remount")
                } else if m.usage.used_pct >= 95.0 {
                    row(name, Verdict::Warning, words, "nearly full: check the NVR's overwrite setting")
                } else {
                    row(name, Verdict::Ok, words, "")
                }
            }
            Err(ProbeError::Missing) => row(name, Verdict::Failed, "the folder does not exist", "create the mount point and mount the disk, or fix [disk] mounts"),
            Err(ProbeError::NotMounted) => row(name, Verdict::Failed, "nothing is mounted there (a plain folder on the parent disk)", "mount the recording disk there (check /etc/fstab, the cable, the NAS share), or fix [disk] mounts"),
            Err(ProbeError::Timeout) => row(name, Verdict::Failed, "no answer in time (hung network share?)", "check the NAS/NFS server and the network to it"),
            Err(ProbeError::Failed(e)) => {
                let todo = if e.contains("ermission") {
                    "let the agent's user read the folder (or its parents)"
                } else {
                    "see the result"
                };
                row(name, Verdict::Failed, e, todo)
            }
        });
    }
    rows
}
