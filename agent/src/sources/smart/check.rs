//! SMART rows: a native read of every disk SMART watches.

use super::SmartConfig;
use crate::check::{row, Row, Verdict};

/// One row per disk SMART will read: a native read now (standby disks are
/// not woken) and the rules' verdict.
pub async fn rows(cfg: Option<&SmartConfig>) -> Vec<Row> {
    let Some(sm) = cfg.cloned() else {
        return vec![row(
            "SMART disk health",
            Verdict::Warning,
            "no [smart] table: disk health is not watched",
            "add a [smart] table (try `sitewatch-agent smart` first)",
        )];
    };
    let found = crate::spawn::spawn_blocking(move || {
        let discovered = crate::sources::smart::io::discover::paths();
        sm.device_list(&discovered)
            .into_iter()
            .map(|d| {
                let read = crate::sources::smart::io::read(&d.path, d.kind);
                let verdict = read
                    .as_ref()
                    .map(|r| crate::sources::smart::judge(r, None, &sm.limits))
                    .map_err(|_| ());
                (d.path, read, verdict)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    if found.is_empty() {
        return vec![row(
            "SMART disk health",
            Verdict::Warning,
            "no disk found in /sys/block",
            "list the disks in [smart] devices",
        )];
    }
    found
        .into_iter()
        .map(|(path, read, verdict)| {
            let name = format!("SMART {}", path.display());
            match (read, verdict) {
                (Err(e), _) => row(
                    name,
                    Verdict::Failed,
                    format!("cannot read: {e}"),
                    "run the agent as root (CAP_SYS_RAWIO, CAP_SYS_ADMIN for NVMe) or set the device type",
                ),
                (Ok(r), Ok(v)) => {
                    let who = format!(
                        "{} {}",
                        r.model().unwrap_or("disk"),
                        r.serial().unwrap_or("")
                    );
                    let why = v
                        .reasons
                        .first()
                        .map(|x| x.detail.clone())
                        .unwrap_or_default();
                    let (verdict, todo) = match v.level {
                        crate::sources::smart::Level::Ok => (Verdict::Ok, ""),
                        crate::sources::smart::Level::Unknown => (Verdict::Warning, "see the reason; a USB bridge may need `type = \"sat12\"`"),
                        crate::sources::smart::Level::Warning => (Verdict::Warning, "plan a replacement or check the cable"),
                        crate::sources::smart::Level::Critical => (Verdict::Failed, "copy the footage and replace this disk"),
                    };
                    row(name, verdict, format!("{}: {who} {why}", v.level.as_str()), todo)
                }
                (Ok(_), Err(_)) => row(name, Verdict::Warning, "read but not judged", ""),
            }
        })
        .collect()
}
