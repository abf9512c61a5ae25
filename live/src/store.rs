//! Probe results into PostgreSQL: one history row and the "now" row per
//! probe, in one transaction.
//!
//! The tables belong to the bridge's schema (migration 10,
//! `bridge/migrations/0010_camera_reachability.sql`); this module only
//! inserts and updates. It checks at connect time that the schema has
//! them, so a bridge that was not upgraded is named as the cause.
//!
//! From schema version 15 on it also reads the site's latest uplink
//! address (`sites.wan_addr`, from the agent's heartbeats) and stores
//! [`crate::ddns::compare`]'s verdict in the `ddns` column, with its
//! sentence appended to the detail.

use anyhow::Context as _;
use tokio_postgres::Client;

use crate::config::{Camera, Site};
use crate::probe::{Class, Outcome};

/// The schema version that created the reachability tables.
pub const SCHEMA_VERSION: i32 = 10;
/// The schema version whose CHECK on `camera_reachability.class` accepts
/// `no_frames` (bridge migration 11); older ones get `rtsp_error`.
pub const NO_FRAMES_SCHEMA_VERSION: i32 = 11;
/// The schema version with the site's uplink address on `sites` and the
/// `ddns` column on both reachability tables (bridge migration 15).
pub const WAN_ADDR_SCHEMA_VERSION: i32 = 15;

async fn schema_version(client: &Client) -> anyhow::Result<Option<i32>> {
    let row = client
        .query_opt("SELECT max(version) FROM schema_migrations", &[])
        .await
        .context("reading schema_migrations (has sitewatch-bridge created the schema?)")?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Fails with plain words when the bridge's schema is older than
/// [`SCHEMA_VERSION`].
pub async fn check_schema(client: &Client) -> anyhow::Result<()> {
    let version = schema_version(client).await?;
    match version {
        Some(v) if v >= SCHEMA_VERSION => Ok(()),
        v => anyhow::bail!(
            "the database schema is at version {}, sitewatch-live needs {SCHEMA_VERSION}: \
             upgrade sitewatch-bridge (or run `sitewatch-bridge migrate`) first",
            v.map_or_else(|| "none".to_owned(), |v| v.to_string())
        ),
    }
}

/// The site's latest uplink address (schema 15 on; none before, or for
/// a site the bridge has not seen).
async fn site_wan(client: &Client, site: &str) -> anyhow::Result<crate::ddns::SiteWan> {
    let row = client
        .query_opt(
            "SELECT wan_addr, wan_addr_class, wan_addr6 FROM sites WHERE site = $1",
            &[&site],
        )
        .await
        .context("reading the site's WAN address from sites")?;
    Ok(row
        .map(|r| crate::ddns::SiteWan {
            addr: r.get(0),
            class: r.get(1),
            addr6: r.get(2),
        })
        .unwrap_or_default())
}

/// Stores one probe; returns the DDNS comparison's sentence, if any
/// (also appended to the stored detail).
pub async fn store(
    client: &mut Client,
    site: &Site,
    camera: &Camera,
    outcome: &Outcome,
) -> anyhow::Result<Option<String>> {
    // One small query per probe (every few minutes per camera): follows
    // a bridge upgraded while this runs.
    let version = schema_version(client).await?.unwrap_or(0);
    let class = match outcome.class {
        Class::NoFrames if version >= NO_FRAMES_SCHEMA_VERSION => Class::NoFrames.as_str(),
        c => c.stored(),
    };
    let with_ddns = version >= WAN_ADDR_SCHEMA_VERSION;
    let verdict = if with_ddns {
        let wan = site_wan(client, &site.id).await?;
        crate::ddns::compare(&camera.host, &outcome.resolved, &wan)
    } else {
        crate::ddns::Verdict::default()
    };
    let detail = match &verdict.note {
        Some(n) => format!("{}; {n}", outcome.detail),
        None => outcome.detail.clone(),
    };
    // Before schema 15 there is no `ddns` column: written only when it
    // exists.
    let (ddns_col, ddns_val) = if with_ddns {
        (", ddns", ", $9")
    } else {
        ("", "")
    };
    let tx = client.transaction().await.context("BEGIN")?;
    let addr = outcome.addr.map(|a| a.to_string());
    let ms = i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX);
    let history = format!(
        "INSERT INTO camera_reachability
             (site, camera, ts, class, detail, host, addr, duration_ms{ddns_col})
         VALUES ($1, $2, now(), $3, $4, $5, $6::text::inet, $7{})
         ON CONFLICT DO NOTHING",
        if with_ddns { ", $8" } else { "" }
    );
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &site.id,
        &camera.name,
        &class,
        &detail,
        &camera.host,
        &addr,
        &ms,
    ];
    if with_ddns {
        params.push(&verdict.ddns);
    }
    tx.execute(&history, &params)
        .await
        .context("INSERT INTO camera_reachability")?;
    let now = format!(
        "INSERT INTO camera_reachability_now
             (site, camera, ts, class, class_since, detail, host, url, addr, duration_ms{ddns_col})
         VALUES ($1, $2, now(), $3, now(), $4, $5, $6, $7::text::inet, $8{ddns_val})
         ON CONFLICT (site, camera) DO UPDATE SET{}",
        if with_ddns {
            "\n             ddns = EXCLUDED.ddns,"
        } else {
            ""
        }
    );
    let url = camera.url.as_str();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &site.id,
        &camera.name,
        &class,
        &detail,
        &camera.host,
        &url,
        &addr,
        &ms,
    ];
    if with_ddns {
        params.push(&verdict.ddns);
    }
    tx.execute(
        &format!(
            "{now}
             ts = EXCLUDED.ts,
             class_since = CASE WHEN camera_reachability_now.class = EXCLUDED.class
                                THEN camera_reachability_now.class_since
                                ELSE EXCLUDED.ts END,
             class = EXCLUDED.class,
             detail = EXCLUDED.detail,
             host = EXCLUDED.host,
             url = EXCLUDED.url,
             addr = EXCLUDED.addr,
             duration_ms = EXCLUDED.duration_ms"
        ),
        &params,
    )
    .await
    .context("UPSERT camera_reachability_now")?;
    tx.commit().await.context("COMMIT")?;
    Ok(verdict.note)
}
