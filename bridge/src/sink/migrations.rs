//! Versioned schema migrations, embedded in the binary and run at start.
//!
//! Each migration is a SQL file in `bridge/migrations/` named
//! `NNNN_name.sql`, listed in [`MIGRATIONS`]. [`migrate`] applies the
//! missing ones in one transaction, holding a transaction-scoped advisory
//! lock so that several bridges starting together do not race, and
//! records each in `schema_migrations`. Released migrations are never
//! edited; a schema change is a new file.

use anyhow::Context as _;
use tokio_postgres::Client;

/// One migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, strictly increasing.
    pub version: i32,
    /// Short name (the file name without number and extension).
    pub name: &'static str,
    /// The SQL, run as one simple-query batch.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "log_batches",
        sql: include_str!("../../migrations/0002_log_batches.sql"),
    },
    Migration {
        version: 3,
        name: "grafana_role",
        sql: include_str!("../../migrations/0003_grafana_role.sql"),
    },
    Migration {
        version: 4,
        name: "clock_skew",
        sql: include_str!("../../migrations/0004_clock_skew.sql"),
    },
    Migration {
        version: 5,
        name: "streams_smart_events",
        sql: include_str!("../../migrations/0005_streams_smart_events.sql"),
    },
    Migration {
        version: 6,
        name: "writer_role",
        sql: include_str!("../../migrations/0006_writer_role.sql"),
    },
    Migration {
        version: 7,
        name: "bridge_sessions",
        sql: include_str!("../../migrations/0007_bridge_sessions.sql"),
    },
    Migration {
        version: 8,
        name: "partitioned_history",
        sql: include_str!("../../migrations/0008_partitioned_history.sql"),
    },
    Migration {
        version: 9,
        name: "ingest_minutes",
        sql: include_str!("../../migrations/0009_ingest_minutes.sql"),
    },
    Migration {
        version: 10,
        name: "camera_reachability",
        sql: include_str!("../../migrations/0010_camera_reachability.sql"),
    },
    Migration {
        version: 11,
        name: "latest_state_and_rollups",
        sql: include_str!("../../migrations/0011_latest_state_and_rollups.sql"),
    },
    Migration {
        version: 12,
        name: "ups_readings",
        sql: include_str!("../../migrations/0012_ups_readings.sql"),
    },
    Migration {
        version: 13,
        name: "uplink_counters",
        sql: include_str!("../../migrations/0013_uplink_counters.sql"),
    },
    Migration {
        version: 14,
        name: "reach_readings",
        sql: include_str!("../../migrations/0014_reach_readings.sql"),
    },
    Migration {
        version: 15,
        name: "wan_address",
        sql: include_str!("../../migrations/0015_wan_address.sql"),
    },
    Migration {
        version: 16,
        name: "ingest_minutes_every_kind",
        sql: include_str!("../../migrations/0016_ingest_minutes_every_kind.sql"),
    },
];

/// Advisory lock key: "sitewatch" + 1, an arbitrary constant that only
/// this program uses.
const LOCK_KEY: i64 = 0x5177_a7c4_0000_0001;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call.
    pub applied: Vec<i32>,
    /// Highest version in the database afterwards.
    pub current: i32,
}

/// Applies every missing migration. Safe to run concurrently from several
/// bridges and to run again (it then applies nothing).
pub async fn migrate(client: &mut Client) -> anyhow::Result<MigrationReport> {
    let tx = client
        .transaction()
        .await
        .context("starting the migration transaction")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .context("creating schema_migrations")?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .context("reading schema_migrations")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        tx.batch_execute(m.sql)
            .await
            .with_context(|| format!("applying migration {:04}_{}", m.version, m.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .with_context(|| format!("recording migration {:04}_{}", m.version, m.name))?;
        applied.push(m.version);
    }
    tx.commit().await.context("committing migrations")?;
    let current = done
        .iter()
        .chain(applied.iter())
        .copied()
        .max()
        .unwrap_or(0);
    let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    if current > known {
        tracing::warn!(
            current,
            known,
            "Database schema is newer than this bridge; upgrade the bridge."
        );
    }
    Ok(MigrationReport { applied, current })
}

/// For a bridge that does not migrate (`[postgres] migrate = false`, a
/// least-privilege account): checks that an admin has brought the schema
/// to this bridge's version. Older is an error naming the fix; newer only
/// warns, like [`migrate`].
pub async fn verify(client: &Client) -> anyhow::Result<MigrationReport> {
    let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    let current: Option<i32> = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .context(
            "reading schema_migrations (no schema yet? run `sitewatch-bridge migrate` with the \
             schema owner's account)",
        )?
        .get(0);
    let current = current.unwrap_or(0);
    if current < known {
        anyhow::bail!(
            "the database schema is at version {current} and this bridge needs {known}: run \
             `sitewatch-bridge migrate --config ...` with the schema owner's account (this \
             bridge has [postgres] migrate = false)"
        );
    }
    if current > known {
        tracing::warn!(
            current,
            known,
            "Database schema is newer than this bridge; upgrade the bridge."
        );
    }
    Ok(MigrationReport {
        applied: Vec::new(),
        current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(MIGRATIONS.iter().all(|m| !m.sql.trim().is_empty()));
    }
}
