//! `sites`, first half of a batch: create the rows of new sites, lock the
//! batch's sites, move `last_seen`, record the measured clock skew, and
//! read each site's current state for the status rule.
//!
//! Runs first in every batch: the `UPDATE` holds the sites' row locks
//! until commit, so concurrent bridges serialize per site.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Statement};

use super::Clock;
use crate::sink::batch::{agent_time, unix_ms, Decoded, SiteSkew};
use crate::sink::state::StateKey;

/// Creates rows for sites never seen before.
const SQL_ENSURE_SITES: &str = "\
INSERT INTO sites (site, first_seen, last_seen)
SELECT u.site, u.seen, u.seen FROM UNNEST($1::text[], $2::timestamptz[]) AS u(site, seen)
ON CONFLICT (site) DO NOTHING";

/// Locks the batch's sites, moves `last_seen`, stores the latest measured
/// clock skew (a measurement older than the stored one, from a batch
/// retried late, does not overwrite it; `skew_at` NULL: none for the
/// site), returns the current state. One statement, so that each site row
/// gets one new version for both instead of one per statement (the skew
/// was a separate `UPDATE`: 220 ms of server time per 100k messages in
/// `scripts/bench/ingest.sh`).
const SQL_TOUCH_SITES: &str = "\
UPDATE sites AS s SET
    last_seen = GREATEST(s.last_seen, u.live),
    clock_skew_ms = CASE WHEN u.skew_at IS NOT NULL
                          AND (s.clock_skew_at IS NULL OR s.clock_skew_at <= u.skew_at)
                         THEN u.skew_ms ELSE s.clock_skew_ms END,
    clock_skew_at = CASE WHEN u.skew_at IS NOT NULL
                          AND (s.clock_skew_at IS NULL OR s.clock_skew_at <= u.skew_at)
                         THEN u.skew_at ELSE s.clock_skew_at END
FROM UNNEST($1::text[], $2::timestamptz[], $3::int8[], $4::timestamptz[])
    AS u(site, live, skew_ms, skew_at)
WHERE s.site = u.site
RETURNING s.site, s.boot, s.session, s.state_rank, s.state_ts";

/// This family's prepared statements.
pub(super) struct Stmts {
    ensure: Statement,
    touch: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            ensure: c.prepare(SQL_ENSURE_SITES).await?,
            touch: c.prepare(SQL_TOUCH_SITES).await?,
        })
    }
}

/// Per-site liveness seen in a batch.
#[derive(Default)]
struct Seen {
    /// Latest receive time of a live (not retained) message.
    live: Option<SystemTime>,
    /// Latest agent time of a retained message, capped at its receipt.
    retained: Option<SystemTime>,
}

/// Each site's current state (`None`: no status applied yet), keyed by
/// site, for [`super::status::apply_states`].
pub(super) type Current = HashMap<String, Option<StateKey>>;

/// Creates, locks and touches the batch's sites and stores their clock
/// skew; returns their current state.
pub(super) async fn touch_sites<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    clock: &Clock,
    decoded: &[&Decoded],
) -> Result<Current, tokio_postgres::Error> {
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    for d in decoded {
        let (site, _, _) = d.msg.identity();
        let e = seen.entry(site).or_default();
        if d.retained {
            let t = agent_time(d.msg.ts()).min(d.received_at);
            e.retained = e.retained.max(Some(t));
        } else {
            e.live = e.live.max(Some(d.received_at));
        }
    }
    let mut current: Current = HashMap::new();
    if !seen.is_empty() {
        let sites: Vec<&str> = seen.keys().copied().collect();
        let first: Vec<SystemTime> = seen
            .values()
            .map(|s| s.live.or(s.retained).unwrap_or_else(SystemTime::now))
            .collect();
        let live: Vec<Option<SystemTime>> = seen.values().map(|s| s.live).collect();
        let skew: Vec<Option<&SiteSkew>> = seen.keys().map(|site| clock.skews.get(*site)).collect();
        let skew_ms: Vec<Option<i64>> = skew.iter().map(|s| s.map(|s| s.skew_ms)).collect();
        let skew_at: Vec<Option<SystemTime>> = skew.iter().map(|s| s.map(|s| s.at)).collect();
        let ensure_params: [&(dyn ToSql + Sync); 2] = [&sites, &first];
        let touch_params: [&(dyn ToSql + Sync); 4] = [&sites, &live, &skew_ms, &skew_at];
        // One pipeline, run by the server in this order: create, then lock
        // and touch (see the module documentation of `postgres` on
        // pipelining).
        let (ensured, touched) = tokio::join!(
            biased;
            tx.execute(&st.ensure, &ensure_params),
            tx.query(&st.touch, &touch_params),
        );
        ensured?;
        let touched = touched?;
        for row in touched {
            let site: String = row.try_get(0)?;
            let boot: Option<String> = row.try_get(1)?;
            let session: Option<i32> = row.try_get(2)?;
            let rank: Option<i16> = row.try_get(3)?;
            let ts: Option<SystemTime> = row.try_get(4)?;
            let key = match (boot, session, rank, ts) {
                (Some(boot), Some(session), Some(rank), Some(ts)) => Some(StateKey {
                    boot,
                    session: u32::try_from(session).unwrap_or(0),
                    rank,
                    ts_ms: unix_ms(ts),
                }),
                _ => None,
            };
            current.insert(site, key);
        }
    }
    Ok(current)
}
