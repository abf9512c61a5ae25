//! Clean-up rows: a dry-run pass over every cleanup root.

use super::CleanupConfig;
use crate::check::{row, Row, Verdict};

/// One row per cleanup root: a dry-run pass (nothing is deleted) says
/// whether the root is usable and what the daemon would delete now.
pub async fn rows(cfg: Option<&CleanupConfig>) -> Vec<Row> {
    let Some(c) = cfg.cloned() else {
        return vec![row(
            "recording clean-up",
            Verdict::Ok,
            "no [cleanup] table: the agent deletes nothing",
            "",
        )];
    };
    let outcomes =
        crate::spawn::spawn_blocking(move || crate::sources::cleanup::pass(&c, true, &|| false))
            .await
            .unwrap_or_default();
    outcomes
        .iter()
        .map(|o| {
            let writable = rustix::fs::access(o.root.as_str(), rustix::fs::Access::WRITE_OK).is_ok();
            let (verdict, todo) = match &o.result {
                Err(_) => (
                    Verdict::Failed,
                    "create the folder (or mount the disk) and give the real path, without symlinks",
                ),
                Ok(_) if !writable => (
                    Verdict::Failed,
                    "the agent cannot delete here: give its user write access (systemd: ReadWritePaths=)",
                ),
                Ok(Some(r)) if !r.target_reached => (
                    Verdict::Warning,
                    "the rules keep too much to get below the low watermark: check min_age, keep_newest and the patterns",
                ),
                Ok(_) => (Verdict::Ok, ""),
            };
            row(format!("clean-up {}", o.root), verdict, o.describe(), todo)
        })
        .collect()
}
