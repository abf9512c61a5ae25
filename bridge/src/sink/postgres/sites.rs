//! `sites`, second part of a batch: create the rows of new sites, lock the
//! batch's sites, move `last_seen`, record the measured clock skew and
//! the latest heartbeat, disk and UPS figures, and read each site's
//! current state for the status rule.
//!
//! Runs after the message tables, in the same pipeline (see
//! `write_rows`): the `UPDATE` holds the sites' row locks until commit, so
//! concurrent batches (of this bridge or another) serialize per site, but
//! only for the batch's last statements and its COMMIT.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use sitewatch_wire::payload::{Disk, Heartbeat, Ups};
use sitewatch_wire::Message;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Statement};

use super::Clock;
use crate::sink::batch::{agent_time, clamp_i64, unix_ms, Decoded, SiteSkew};
use crate::sink::state::StateKey;

/// Creates rows for sites never seen before.
const SQL_ENSURE_SITES: &str = "\
INSERT INTO sites (site, first_seen, last_seen)
SELECT u.site, u.seen, u.seen FROM UNNEST($1::text[], $2::timestamptz[]) AS u(site, seen)
ON CONFLICT (site) DO NOTHING";

/// Locks the batch's sites, moves `last_seen`, stores the latest measured
/// clock skew (a measurement older than the stored one, from a batch
/// retried late, does not overwrite it; `skew_at` NULL: none for the
/// site), the latest heartbeat's figures and the latest disk message's
/// summary and identity (migration 0011: the `fleet` view reads them instead of
/// probing every partition of the history per site; each is replaced only
/// by a message with a later or equal timestamp, NULL: none in the batch),
/// the latest UPS reading's summary and identity likewise (migration 0012),
/// the latest heartbeat's uplink address with since when it holds
/// (migration 0015: in the heartbeat group, so never moved back by an
/// older message), returns the current state. One statement, so that each site row gets
/// one new version for all of these instead of one per statement (the
/// skew was a separate `UPDATE`: 220 ms of server time per 100k messages
/// in `scripts/bench/ingest.sh`).
fn sql_touch_sites() -> String {
    // Each latest-state group is replaced as a whole, only by a message at
    // or after the stored time (a SET expression sees the row as locked,
    // so the comparison holds under concurrent bridges).
    let newer = |ts: &str, cols: &[&str]| -> String {
        cols.iter()
            .map(|c| {
                format!(
                    ",\n    {c} = CASE WHEN u.{ts} >= coalesce(s.{ts}, '-infinity') \
                     THEN u.{c} ELSE s.{c} END"
                )
            })
            .collect()
    };
    format!(
        "\
UPDATE sites AS s SET
    last_seen = GREATEST(s.last_seen, u.live),
    clock_skew_ms = CASE WHEN u.skew_at IS NOT NULL
                          AND (s.clock_skew_at IS NULL OR s.clock_skew_at <= u.skew_at)
                         THEN u.skew_ms ELSE s.clock_skew_ms END,
    clock_skew_at = CASE WHEN u.skew_at IS NOT NULL
                          AND (s.clock_skew_at IS NULL OR s.clock_skew_at <= u.skew_at)
                         THEN u.skew_at ELSE s.clock_skew_at END,
    wan_addr_since = CASE WHEN u.hb_ts >= coalesce(s.hb_ts, '-infinity')
                          THEN CASE WHEN u.wan_addr IS NOT DISTINCT FROM s.wan_addr
                                         AND s.wan_addr_since IS NOT NULL
                                    THEN s.wan_addr_since ELSE u.hb_ts END
                          ELSE s.wan_addr_since END{}{}{}
FROM UNNEST($1::text[], $2::timestamptz[], $3::int8[], $4::timestamptz[],
            $5::timestamptz[], $6::int8[], $7::float4[], $8::int8[], $9::int8[],
            $10::timestamptz[], $11::float4[], $12::text[], $13::int4[], $14::int4[],
            $15::text[], $16::int8[], $17::timestamptz[],
            $18::text[], $19::int8[], $20::timestamptz[], $21::timestamptz[],
            $22::timestamptz[], $23::timestamptz[], $24::int4[], $25::text[], $26::int4[],
            $27::float4[], $28::int4[], $29::int4[], $30::text[], $31::int8[],
            $32::timestamptz[], $33::text[], $34::text[], $35::text[])
    AS u(site, live, skew_ms, skew_at,
         hb_ts, uptime_secs, load1, mem_available_bytes, mem_total_bytes,
         disk_ts, disk_max_used_pct, disk_fullest_path, disk_read_only_mounts,
         disk_failed_mounts, disk_boot, disk_seq, disk_agent_ts,
         hb_boot, hb_seq, hb_agent_ts, hb_received_at,
         ups_ts, ups_received_at, ups_interval_secs, ups_power, ups_on_battery,
         ups_min_charge_pct, ups_min_runtime_secs, ups_errors, ups_boot, ups_seq,
         ups_agent_ts, wan_addr, wan_addr_class, wan_addr6)
WHERE s.site = u.site
RETURNING s.site, s.boot, s.session, s.state_rank, s.state_ts",
        newer(
            "hb_ts",
            &[
                "hb_ts",
                "uptime_secs",
                "load1",
                "mem_available_bytes",
                "mem_total_bytes",
                "hb_boot",
                "hb_seq",
                "hb_agent_ts",
                "hb_received_at",
                "wan_addr",
                "wan_addr_class",
                "wan_addr6",
            ]
        ),
        newer(
            "disk_ts",
            &[
                "disk_ts",
                "disk_max_used_pct",
                "disk_fullest_path",
                "disk_read_only_mounts",
                "disk_failed_mounts",
                "disk_boot",
                "disk_seq",
                "disk_agent_ts",
            ]
        ),
        newer(
            "ups_ts",
            &[
                "ups_ts",
                "ups_received_at",
                "ups_interval_secs",
                "ups_power",
                "ups_on_battery",
                "ups_min_charge_pct",
                "ups_min_runtime_secs",
                "ups_errors",
                "ups_boot",
                "ups_seq",
                "ups_agent_ts",
            ]
        ),
    )
}

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
            touch: c.prepare(&sql_touch_sites()).await?,
        })
    }
}

/// Per-site liveness and latest figures seen in a batch.
#[derive(Default)]
struct Seen<'a> {
    /// Latest receive time of a live (not retained) message.
    live: Option<SystemTime>,
    /// Latest agent time of a retained message, capped at its receipt.
    retained: Option<SystemTime>,
    /// The heartbeat with the latest effective time, and its receipt.
    heartbeat: Option<(SystemTime, &'a Heartbeat, SystemTime)>,
    /// The disk message with the latest effective time.
    disk: Option<(SystemTime, &'a Disk)>,
    /// The ups message with the latest effective time, and its receipt.
    ups: Option<(SystemTime, &'a Ups, SystemTime)>,
}

/// The `fleet` summary of one disk message: over the mounts sampled
/// without error, the fullest one's use and path; mounts read-only;
/// mounts that failed (version 1's view computed the same from the rows).
fn disk_summary(d: &Disk) -> (Option<f32>, Option<&str>, i32, i32) {
    let mut fullest: Option<(f32, &str)> = None;
    let (mut read_only, mut failed) = (0i32, 0i32);
    for m in &d.mounts {
        if m.read_only {
            read_only = read_only.saturating_add(1);
        }
        if m.error.is_some() {
            if !m.path.is_empty() {
                failed = failed.saturating_add(1);
            }
        } else if fullest.is_none_or(|(pct, _)| m.used_pct > pct) {
            fullest = Some((m.used_pct, &m.path));
        }
    }
    (
        fullest.map(|f| f.0),
        fullest.map(|f| f.1),
        read_only,
        failed,
    )
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
        let at = || clock.effective(site, agent_time(d.msg.ts()), d.received_at);
        match &d.msg {
            Message::Heartbeat(h) => {
                let t = at();
                if e.heartbeat.is_none_or(|(old, _, _)| t >= old) {
                    e.heartbeat = Some((t, h, d.received_at));
                }
            }
            Message::Disk(m) => {
                let t = at();
                if e.disk.is_none_or(|(old, _)| t >= old) {
                    e.disk = Some((t, m));
                }
            }
            Message::Ups(m) => {
                let t = at();
                if e.ups.is_none_or(|(old, _, _)| t >= old) {
                    e.ups = Some((t, m, d.received_at));
                }
            }
            _ => {}
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
        let hb: Vec<Option<&(SystemTime, &Heartbeat, SystemTime)>> =
            seen.values().map(|s| s.heartbeat.as_ref()).collect();
        let hb_ts: Vec<Option<SystemTime>> = hb.iter().map(|h| h.map(|h| h.0)).collect();
        let uptime: Vec<Option<i64>> = hb
            .iter()
            .map(|h| h.map(|h| clamp_i64(h.1.uptime_secs)))
            .collect();
        let load1: Vec<Option<f32>> = hb.iter().map(|h| h.map(|h| h.1.load[0])).collect();
        let mem_available: Vec<Option<i64>> = hb
            .iter()
            .map(|h| h.map(|h| clamp_i64(h.1.mem_available_bytes)))
            .collect();
        let mem_total: Vec<Option<i64>> = hb
            .iter()
            .map(|h| h.map(|h| clamp_i64(h.1.mem_total_bytes)))
            .collect();
        let hb_boot: Vec<Option<&str>> = hb.iter().map(|h| h.map(|h| &*h.1.boot)).collect();
        let hb_seq: Vec<Option<i64>> = hb.iter().map(|h| h.map(|h| clamp_i64(h.1.seq))).collect();
        let hb_agent_ts: Vec<Option<SystemTime>> =
            hb.iter().map(|h| h.map(|h| agent_time(h.1.ts))).collect();
        let hb_received_at: Vec<Option<SystemTime>> = hb.iter().map(|h| h.map(|h| h.2)).collect();
        let wan = |f: fn(&sitewatch_wire::payload::Wan) -> &Option<String>| -> Vec<Option<&str>> {
            hb.iter()
                .map(|h| h.and_then(|h| h.1.wan.as_ref().and_then(|w| f(w).as_deref())))
                .collect()
        };
        let wan_addr = wan(|w| &w.addr);
        let wan_addr_class = wan(|w| &w.addr_class);
        let wan_addr6 = wan(|w| &w.addr6);
        let disk: Vec<Option<(SystemTime, _)>> = seen
            .values()
            .map(|s| s.disk.map(|(t, d)| (t, disk_summary(d))))
            .collect();
        let disk_ts: Vec<Option<SystemTime>> = disk.iter().map(|d| d.map(|d| d.0)).collect();
        let disk_max: Vec<Option<f32>> = disk.iter().map(|d| d.and_then(|d| d.1 .0)).collect();
        let disk_fullest: Vec<Option<&str>> = disk.iter().map(|d| d.and_then(|d| d.1 .1)).collect();
        let disk_ro: Vec<Option<i32>> = disk.iter().map(|d| d.map(|d| d.1 .2)).collect();
        let disk_failed: Vec<Option<i32>> = disk.iter().map(|d| d.map(|d| d.1 .3)).collect();
        let disk_msg: Vec<Option<&Disk>> = seen.values().map(|s| s.disk.map(|d| d.1)).collect();
        let disk_boot: Vec<Option<&str>> = disk_msg.iter().map(|d| d.map(|d| &*d.boot)).collect();
        let disk_seq: Vec<Option<i64>> = disk_msg
            .iter()
            .map(|d| d.map(|d| clamp_i64(d.seq)))
            .collect();
        let disk_agent_ts: Vec<Option<SystemTime>> = disk_msg
            .iter()
            .map(|d| d.map(|d| agent_time(d.ts)))
            .collect();
        let ups: Vec<Option<&(SystemTime, &Ups, SystemTime)>> =
            seen.values().map(|s| s.ups.as_ref()).collect();
        let ups_sum: Vec<Option<super::ups::Summary>> = ups
            .iter()
            .map(|u| u.map(|u| super::ups::summary(u.1)))
            .collect();
        let ups_ts: Vec<Option<SystemTime>> = ups.iter().map(|u| u.map(|u| u.0)).collect();
        let ups_received_at: Vec<Option<SystemTime>> = ups.iter().map(|u| u.map(|u| u.2)).collect();
        let ups_interval: Vec<Option<i32>> = ups
            .iter()
            .map(|u| u.map(|u| i32::try_from(u.1.interval_secs).unwrap_or(i32::MAX)))
            .collect();
        let ups_power: Vec<Option<&str>> = ups_sum.iter().map(|s| s.map(|s| s.power)).collect();
        let ups_on_battery: Vec<Option<i32>> =
            ups_sum.iter().map(|s| s.map(|s| s.on_battery)).collect();
        let ups_min_charge: Vec<Option<f32>> = ups_sum
            .iter()
            .map(|s| s.and_then(|s| s.min_charge_pct))
            .collect();
        let ups_min_runtime: Vec<Option<i32>> = ups_sum
            .iter()
            .map(|s| s.and_then(|s| s.min_runtime_secs))
            .collect();
        let ups_errors: Vec<Option<i32>> = ups_sum.iter().map(|s| s.map(|s| s.errors)).collect();
        let ups_boot: Vec<Option<&str>> = ups.iter().map(|u| u.map(|u| &*u.1.boot)).collect();
        let ups_seq: Vec<Option<i64>> = ups.iter().map(|u| u.map(|u| clamp_i64(u.1.seq))).collect();
        let ups_agent_ts: Vec<Option<SystemTime>> =
            ups.iter().map(|u| u.map(|u| agent_time(u.1.ts))).collect();
        let ensure_params: [&(dyn ToSql + Sync); 2] = [&sites, &first];
        let touch_params: [&(dyn ToSql + Sync); 35] = [
            &sites,
            &live,
            &skew_ms,
            &skew_at,
            &hb_ts,
            &uptime,
            &load1,
            &mem_available,
            &mem_total,
            &disk_ts,
            &disk_max,
            &disk_fullest,
            &disk_ro,
            &disk_failed,
            &disk_boot,
            &disk_seq,
            &disk_agent_ts,
            &hb_boot,
            &hb_seq,
            &hb_agent_ts,
            &hb_received_at,
            &ups_ts,
            &ups_received_at,
            &ups_interval,
            &ups_power,
            &ups_on_battery,
            &ups_min_charge,
            &ups_min_runtime,
            &ups_errors,
            &ups_boot,
            &ups_seq,
            &ups_agent_ts,
            &wan_addr,
            &wan_addr_class,
            &wan_addr6,
        ];
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
