//! The message keys' bookkeeping: `boots` (per agent boot: seen range,
//! highest seq, messages stored for the first time; the `boot_gaps` view
//! counts what is missing) and `sites.last_seq`.
//!
//! Runs after every message table, because it counts the identities
//! those inserts reported new.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use tokio_postgres::{Client, GenericClient, Statement};

use super::MessageId;
use crate::sink::batch::{clamp_i64, Decoded};

const SQL_UPSERT_BOOTS: &str = "\
INSERT INTO boots AS b (site, boot, first_seen, last_seen, max_seq, received)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                     $5::int8[], $6::int8[])
ON CONFLICT (site, boot) DO UPDATE SET
    first_seen = LEAST(b.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(b.last_seen, EXCLUDED.last_seen),
    max_seq = GREATEST(b.max_seq, EXCLUDED.max_seq),
    received = b.received + EXCLUDED.received";

/// Highest seq of the site's current boot; for a site without a status
/// yet, of the boot of its latest message in the batch.
const SQL_LAST_SEQ: &str = "\
UPDATE sites AS s SET last_seq = b.max_seq
FROM UNNEST($1::text[], $2::text[]) AS u(site, latest_boot), boots AS b
WHERE s.site = u.site AND b.site = s.site AND b.boot = COALESCE(s.boot, u.latest_boot)
  AND s.last_seq IS DISTINCT FROM b.max_seq";

/// This family's prepared statements.
pub(super) struct Stmts {
    upsert: Statement,
    last_seq: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            upsert: c.prepare(SQL_UPSERT_BOOTS).await?,
            last_seq: c.prepare(SQL_LAST_SEQ).await?,
        })
    }
}

/// Per-boot aggregate for `boots`.
struct BootAgg {
    first_seen: SystemTime,
    last_seen: SystemTime,
    max_seq: i64,
    received: i64,
}

/// Updates `boots` for every boot in the batch; `new_ids` are the
/// identities stored for the first time by this write.
pub(super) async fn write_boots<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    decoded: &[&Decoded],
    new_ids: &HashSet<MessageId>,
) -> Result<(), tokio_postgres::Error> {
    let mut boots: BTreeMap<(&str, &str), BootAgg> = BTreeMap::new();
    for d in decoded {
        let (site, boot, seq) = d.msg.identity();
        let seq = clamp_i64(seq);
        let agg = boots.entry((site, boot)).or_insert(BootAgg {
            first_seen: d.received_at,
            last_seen: d.received_at,
            max_seq: 0,
            received: 0,
        });
        agg.first_seen = agg.first_seen.min(d.received_at);
        agg.last_seen = agg.last_seen.max(d.received_at);
        agg.max_seq = agg.max_seq.max(seq);
    }
    for (site, boot, _) in new_ids {
        if let Some(agg) = boots.get_mut(&(site.as_str(), boot.as_str())) {
            agg.received += 1;
        }
    }
    if !boots.is_empty() {
        let site: Vec<&str> = boots.keys().map(|k| k.0).collect();
        let boot: Vec<&str> = boots.keys().map(|k| k.1).collect();
        let first: Vec<SystemTime> = boots.values().map(|a| a.first_seen).collect();
        let last: Vec<SystemTime> = boots.values().map(|a| a.last_seen).collect();
        let max_seq: Vec<i64> = boots.values().map(|a| a.max_seq).collect();
        let received: Vec<i64> = boots.values().map(|a| a.received).collect();
        tx.execute(
            &st.upsert,
            &[&site, &boot, &first, &last, &max_seq, &received],
        )
        .await?;
    }
    Ok(())
}

/// Moves `sites.last_seq` to the highest seq of each site's current boot.
pub(super) async fn write_last_seq<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    decoded: &[&Decoded],
) -> Result<(), tokio_postgres::Error> {
    let mut latest_boot: BTreeMap<&str, &str> = BTreeMap::new();
    for d in decoded {
        let (site, boot, _) = d.msg.identity();
        latest_boot.insert(site, boot);
    }
    if !latest_boot.is_empty() {
        let site: Vec<&str> = latest_boot.keys().copied().collect();
        let boot: Vec<&str> = latest_boot.values().copied().collect();
        tx.execute(&st.last_seq, &[&site, &boot]).await?;
    }
    Ok(())
}
