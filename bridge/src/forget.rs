//! `sitewatch-bridge forget`: retires a site, camera, disk or reachability
//! target from the "now" tables, so that dashboards and alerts stop
//! showing it.
//!
//! The latest-state tables (`sites`, `cameras`, `disks`, `reach_targets`)
//! keep one row per thing the bridge has ever heard of: a camera taken out
//! of an agent's config or a failed disk pulled from an NVR keeps its last
//! class or verdict, and a `camera_down` or `disk SMART critical` alert
//! that never clears. (A `[[reach.target]]` removed from the config goes
//! `stale` and stops alerting by itself; forgetting it removes the row.) Forgetting deletes those rows only; history (heartbeats, probes,
//! readings, events) stays. A thing that reports again reappears.
//!
//! Needs DELETE, which the least-privilege writer role does not have: run
//! it with the schema owner's account (the one that runs `migrate`).

use anyhow::Context as _;
use tokio_postgres::Client;

/// What to forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    /// A site with its cameras and disks. Refused while the site is
    /// online unless `force`: its next message would bring it back half
    /// (no status until it reconnects).
    Site {
        /// Site id.
        site: String,
        /// Forget even an online site.
        force: bool,
    },
    /// One camera of a site.
    Camera {
        /// Site id.
        site: String,
        /// Camera name.
        camera: String,
    },
    /// One disk (SMART device) of a site.
    Disk {
        /// Site id.
        site: String,
        /// Device name as in the `disks` table (e.g. `sda`).
        device: String,
    },
    /// One `[[reach.target]]` of a site (a LAN device the agent checks).
    Target {
        /// Site id.
        site: String,
        /// The target's `name`, as in the `reach_targets` table.
        target: String,
    },
}

/// Rows deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    /// From `sites`.
    pub sites: u64,
    /// From `cameras`.
    pub cameras: u64,
    /// From `disks`.
    pub disks: u64,
    /// From `reach_targets`.
    pub targets: u64,
}

impl std::fmt::Display for Forgotten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "forgot {} site(s), {} camera(s), {} disk(s), {} reach target(s)",
            self.sites, self.cameras, self.disks, self.targets
        )
    }
}

/// Deletes the rows of `what` in one transaction. Nothing to delete is an
/// error (a typo in a name should not look like success).
pub async fn forget(client: &mut Client, what: &Forget) -> anyhow::Result<Forgotten> {
    let tx = client
        .transaction()
        .await
        .context("starting a transaction")?;
    let mut done = Forgotten::default();
    match what {
        Forget::Site { site, force } => {
            let state: Option<String> = tx
                .query_opt("SELECT state FROM sites WHERE site = $1", &[site])
                .await
                .map_err(privilege)?
                .map(|r| r.get(0));
            if state.as_deref() == Some("online") && !force {
                anyhow::bail!(
                    "site {site:?} is online: stop or decommission its agent first (it would \
                     reappear with its next message, without a status), or pass --force"
                );
            }
            done.cameras = exec(&tx, "DELETE FROM cameras WHERE site = $1", &[site]).await?;
            done.disks = exec(&tx, "DELETE FROM disks WHERE site = $1", &[site]).await?;
            done.targets = exec(&tx, "DELETE FROM reach_targets WHERE site = $1", &[site]).await?;
            done.sites = exec(&tx, "DELETE FROM sites WHERE site = $1", &[site]).await?;
        }
        Forget::Camera { site, camera } => {
            done.cameras = exec(
                &tx,
                "DELETE FROM cameras WHERE site = $1 AND camera = $2",
                &[site, camera],
            )
            .await?;
        }
        Forget::Disk { site, device } => {
            done.disks = exec(
                &tx,
                "DELETE FROM disks WHERE site = $1 AND device = $2",
                &[site, device],
            )
            .await?;
        }
        Forget::Target { site, target } => {
            done.targets = exec(
                &tx,
                "DELETE FROM reach_targets WHERE site = $1 AND target = $2",
                &[site, target],
            )
            .await?;
        }
    }
    if done == Forgotten::default() {
        anyhow::bail!("nothing to forget: no such {}", describe(what));
    }
    tx.commit().await.context("committing")?;
    Ok(done)
}

fn describe(what: &Forget) -> String {
    match what {
        Forget::Site { site, .. } => format!("site {site:?}"),
        Forget::Camera { site, camera } => format!("camera {camera:?} at site {site:?}"),
        Forget::Disk { site, device } => format!("disk {device:?} at site {site:?}"),
        Forget::Target { site, target } => {
            format!("reach target {target:?} at site {site:?}")
        }
    }
}

async fn exec(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<u64> {
    tx.execute(sql, params).await.map_err(privilege)
}

/// Names the fix for the writer role's missing DELETE.
fn privilege(e: tokio_postgres::Error) -> anyhow::Error {
    if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
        anyhow::Error::new(e).context(
            "this database account may not delete (the least-privilege writer role): run \
             forget with the schema owner's account, e.g. SITEWATCH_POSTGRES_URL=postgresql://\
             owner@host/db sitewatch-bridge forget ...",
        )
    } else {
        anyhow::Error::new(e).context("deleting")
    }
}
