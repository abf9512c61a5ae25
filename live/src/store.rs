//! Probe results into PostgreSQL: one history row and the "now" row per
//! probe, in one transaction.
//!
//! The tables belong to the bridge's schema (migration 10,
//! `bridge/migrations/0010_camera_reachability.sql`); this module only
//! inserts and updates. It checks at connect time that the schema has
//! them, so a bridge that was not upgraded is named as the cause.

use anyhow::Context as _;
use tokio_postgres::Client;

use crate::config::{Camera, Site};
use crate::probe::{Class, Outcome};

/// The schema version that created the reachability tables.
pub const SCHEMA_VERSION: i32 = 10;
/// The schema version whose CHECK on `camera_reachability.class` accepts
/// `no_frames` (bridge migration 11); older ones get `rtsp_error`.
pub const NO_FRAMES_SCHEMA_VERSION: i32 = 11;

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

/// Stores one probe.
pub async fn store(
    client: &mut Client,
    site: &Site,
    camera: &Camera,
    outcome: &Outcome,
) -> anyhow::Result<()> {
    // `no_frames` is rare: asking the schema version then costs nothing
    // worth caching, and follows a bridge upgraded while this runs.
    let class = match outcome.class {
        Class::NoFrames
            if schema_version(client).await?.unwrap_or(0) >= NO_FRAMES_SCHEMA_VERSION =>
        {
            Class::NoFrames.as_str()
        }
        c => c.stored(),
    };
    let tx = client.transaction().await.context("BEGIN")?;
    let addr = outcome.addr.map(|a| a.to_string());
    let ms = i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO camera_reachability (site, camera, ts, class, detail, host, addr, duration_ms)
         VALUES ($1, $2, now(), $3, $4, $5, $6::text::inet, $7)
         ON CONFLICT DO NOTHING",
        &[
            &site.id,
            &camera.name,
            &class,
            &outcome.detail,
            &camera.host,
            &addr,
            &ms,
        ],
    )
    .await
    .context("INSERT INTO camera_reachability")?;
    tx.execute(
        "INSERT INTO camera_reachability_now
             (site, camera, ts, class, class_since, detail, host, url, addr, duration_ms)
         VALUES ($1, $2, now(), $3, now(), $4, $5, $6, $7::text::inet, $8)
         ON CONFLICT (site, camera) DO UPDATE SET
             ts = EXCLUDED.ts,
             class_since = CASE WHEN camera_reachability_now.class = EXCLUDED.class
                                THEN camera_reachability_now.class_since
                                ELSE EXCLUDED.ts END,
             class = EXCLUDED.class,
             detail = EXCLUDED.detail,
             host = EXCLUDED.host,
             url = EXCLUDED.url,
             addr = EXCLUDED.addr,
             duration_ms = EXCLUDED.duration_ms",
        &[
            &site.id,
            &camera.name,
            &class,
            &outcome.detail,
            &camera.host,
            &camera.url.as_str(),
            &addr,
            &ms,
        ],
    )
    .await
    .context("UPSERT camera_reachability_now")?;
    tx.commit().await.context("COMMIT")?;
    Ok(())
}
