//! `reach` messages (reachability rounds): one `reach_readings` row per
//! target per message, and the newest round per target in
//! `reach_targets` (with `state_since` and `last_up_at`), as `stream`
//! does for `camera_probes` and `cameras` ([`super::streams`]). Written
//! through `jsonb_to_recordset`; see [`super::jsonb`].

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use serde_json::{json, Value};
use sitewatch_wire::payload::{Reach, ReachTarget};
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::jsonb::{array, ms, ts};
use super::{timed, Clock, Counts};
use crate::sink::batch::{clamp_i64, Decoded, MAX_TS_MS};

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
    upsert_targets: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_READINGS).await?,
            upsert_targets: c.prepare(SQL_UPSERT_TARGETS).await?,
        })
    }
}

/// Inserts the batch's rounds and moves each target's latest state; a
/// message counts once however many targets it lists.
pub(super) async fn write_reach<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    clock: &Clock,
    decoded: &[&Decoded],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    let rows = rows(timed(clock, decoded));
    if let Some(r) = &rows.readings {
        let returned = tx.query(&st.insert, &[r]).await?;
        counts.rows.reach_readings = returned.len() as u64;
        let mut ids = HashSet::new();
        for row in returned {
            let id: (String, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            ids.insert(id);
        }
        counts.stored += ids.len();
        counts.new_ids.extend(ids);
    }
    if let Some(r) = &rows.targets {
        tx.execute(&st.upsert_targets, &[r]).await?;
    }
    Ok(counts)
}

/// The jsonb arguments of one batch; `None` where the batch has no row.
#[derive(Debug, Default)]
pub(super) struct Rows {
    /// `reach_readings` rows.
    pub(super) readings: Option<Value>,
    /// `reach_targets` rows (newest per target).
    pub(super) targets: Option<Value>,
}

/// A target's newest round in the batch.
struct Latest<'a> {
    msg: &'a Reach,
    t: &'a ReachTarget,
    ts: SystemTime,
    received_at: SystemTime,
    /// Since when its state has held across the batch.
    since: SystemTime,
    /// Its latest round with an answer in the batch (any order).
    last_up: Option<SystemTime>,
}

/// Lost probes in percent of those sent; `None` when none was sent.
fn loss_pct(t: &ReachTarget) -> Option<f32> {
    (t.sent > 0).then(|| (f64::from(t.lost()) * 100.0 / f64::from(t.sent)) as f32)
}

fn int(n: u32) -> u32 {
    n.min(i32::MAX as u32)
}

/// Builds the rows from `(message, effective time, received at)` in
/// receive order.
pub(super) fn rows<'a>(msgs: impl Iterator<Item = (&'a Message, SystemTime, SystemTime)>) -> Rows {
    let mut readings = Vec::new();
    let mut targets: BTreeMap<(&str, &str), Latest> = BTreeMap::new();
    for (msg, ts, received_at) in msgs {
        let Message::Reach(m) = msg else { continue };
        for t in &m.targets {
            readings.push(reading_row(m, t, ts, received_at));
            let up = (t.state == "up").then_some(ts);
            match targets.get_mut(&(&*m.site, &*t.name)) {
                Some(cur) => {
                    cur.last_up = cur.last_up.max(up);
                    if cur.ts <= ts {
                        let since = if cur.t.state == t.state {
                            cur.since
                        } else {
                            ts
                        };
                        let last_up = cur.last_up;
                        *cur = Latest {
                            msg: m,
                            t,
                            ts,
                            received_at,
                            since,
                            last_up,
                        };
                    }
                }
                None => {
                    targets.insert(
                        (&m.site, &t.name),
                        Latest {
                            msg: m,
                            t,
                            ts,
                            received_at,
                            since: ts,
                            last_up: up,
                        },
                    );
                }
            }
        }
    }
    Rows {
        readings: array(readings),
        targets: array(targets.values().map(target_row).collect()),
    }
}

fn reading_row(m: &Reach, t: &ReachTarget, ts: SystemTime, received_at: SystemTime) -> Value {
    json!({
        "site": m.site, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(ts), "agent_ms": m.ts.min(MAX_TS_MS), "received_ms": ms(received_at),
        "interval_secs": int(m.interval_secs),
        "target": t.name, "address": t.address, "kind": t.kind, "port": t.port,
        "state": t.state, "sent": int(t.sent), "received": int(t.received),
        "refused": int(t.refused), "loss_pct": loss_pct(t),
        "rtt_min_ms": t.rtt_min_ms, "rtt_avg_ms": t.rtt_avg_ms, "rtt_max_ms": t.rtt_max_ms,
        "error": t.error,
    })
}

fn target_row(l: &Latest) -> Value {
    let (m, t) = (l.msg, l.t);
    json!({
        "site": m.site, "target": t.name, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(l.ts), "received_ms": ms(l.received_at),
        "interval_secs": int(m.interval_secs),
        "address": t.address, "kind": t.kind, "port": t.port, "state": t.state,
        "since_ms": ms(l.since), "last_up_ms": l.last_up.map(ms),
        "sent": int(t.sent), "received": int(t.received), "refused": int(t.refused),
        "loss_pct": loss_pct(t),
        "rtt_min_ms": t.rtt_min_ms, "rtt_avg_ms": t.rtt_avg_ms, "rtt_max_ms": t.rtt_max_ms,
        "error": t.error,
    })
}

/// History of rounds; returns the identities stored for the first time
/// (once per target row).
const SQL_INSERT_READINGS: &str = concat!(
    "INSERT INTO reach_readings (site, boot, seq, ts, agent_ts, received_at, interval_secs,
    target, address, kind, port, state, sent, received, refused, loss_pct, rtt_min_ms,
    rtt_avg_ms, rtt_max_ms, error)
SELECT x.site, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", ",
    ts!("agent_ms"),
    ", ",
    ts!("received_ms"),
    ", x.interval_secs,
    x.target, x.address, x.kind, x.port, x.state, x.sent, x.received, x.refused, x.loss_pct,
    x.rtt_min_ms, x.rtt_avg_ms, x.rtt_max_ms, x.error
FROM jsonb_to_recordset($1::jsonb) AS x(site text, boot text, seq int8, ts_ms int8,
    agent_ms int8, received_ms int8, interval_secs int4, target text, address text, kind text,
    port int4, state text, sent int4, received int4, refused int4, loss_pct float4,
    rtt_min_ms float4, rtt_avg_ms float4, rtt_max_ms float4, error text)
ON CONFLICT DO NOTHING
RETURNING site, boot, seq"
);

/// Whether the incoming round is later than the stored one (by time,
/// then boot and seq for rounds of the same millisecond).
macro_rules! is_newer {
    () => {
        "(c.ts, c.boot, c.seq) < (EXCLUDED.ts, EXCLUDED.boot, EXCLUDED.seq)"
    };
}

/// `col = ` the incoming value when the round is later, else the stored
/// one (so an older round can still move `last_up_at`).
macro_rules! newer {
    ($col:ident) => {
        concat!(
            stringify!($col),
            " = CASE WHEN ",
            is_newer!(),
            " THEN EXCLUDED.",
            stringify!($col),
            " ELSE c.",
            stringify!($col),
            " END,\n    "
        )
    };
}

/// Latest round per target. A row is replaced only by a later one;
/// `state_since` carries over while the state stays the same, and
/// `last_up_at` only moves forward, also from an older round that arrives
/// in a later batch (an outbox draining its backlog after an outage sends
/// fresh rounds first): that round updates `last_up_at` alone.
const SQL_UPSERT_TARGETS: &str = concat!(
    "INSERT INTO reach_targets AS c (site, target, boot, seq, ts, received_at, interval_secs,
    address, kind, port, state, state_since, last_up_at, sent, received, refused, loss_pct,
    rtt_min_ms, rtt_avg_ms, rtt_max_ms, error)
SELECT x.site, x.target, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", ",
    ts!("received_ms"),
    ", x.interval_secs,
    x.address, x.kind, x.port, x.state, ",
    ts!("since_ms"),
    ", ",
    ts!("last_up_ms"),
    ",
    x.sent, x.received, x.refused, x.loss_pct, x.rtt_min_ms, x.rtt_avg_ms, x.rtt_max_ms, x.error
FROM jsonb_to_recordset($1::jsonb) AS x(site text, target text, boot text, seq int8,
    ts_ms int8, received_ms int8, interval_secs int4, address text, kind text, port int4,
    state text, since_ms int8, last_up_ms int8, sent int4, received int4, refused int4,
    loss_pct float4, rtt_min_ms float4, rtt_avg_ms float4, rtt_max_ms float4, error text)
ON CONFLICT (site, target) DO UPDATE SET ",
    newer!(boot),
    newer!(seq),
    newer!(ts),
    newer!(received_at),
    newer!(interval_secs),
    newer!(address),
    newer!(kind),
    newer!(port),
    newer!(state),
    "state_since = CASE WHEN NOT ",
    is_newer!(),
    " THEN c.state_since
                       WHEN c.state = EXCLUDED.state THEN c.state_since
                       ELSE EXCLUDED.state_since END,
    last_up_at = greatest(c.last_up_at, EXCLUDED.last_up_at), ",
    newer!(sent),
    newer!(received),
    newer!(refused),
    newer!(loss_pct),
    newer!(rtt_min_ms),
    newer!(rtt_avg_ms),
    newer!(rtt_max_ms),
    "error = CASE WHEN ",
    is_newer!(),
    " THEN EXCLUDED.error ELSE c.error END
WHERE ",
    is_newer!(),
    " OR EXCLUDED.last_up_at > coalesce(c.last_up_at, '-infinity')"
);

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_wire::golden::VALID;
    use std::time::{Duration, UNIX_EPOCH};

    fn reach(file: &str) -> Reach {
        let v = VALID.iter().find(|v| v.file == file).expect("vector");
        match sitewatch_wire::decode(v.topic, v.payload).expect("decodes") {
            Message::Reach(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_row_per_target_and_the_newest_round_per_target() {
        let first = reach("reach.json");
        // The door camera answers again, then goes down again; the NVR
        // stays up. Received out of order: the newest comes second.
        let mut second = first.clone();
        second.seq += 1;
        second.targets[3].state = "up".into();
        let mut third = first.clone();
        third.seq += 2;
        let (m1, m2, m3) = (
            Message::Reach(first),
            Message::Reach(third),
            Message::Reach(second),
        );
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let rows = rows(
            [
                (&m1, t(10), t(10)),
                (&m2, t(30), t(31)),
                (&m3, t(20), t(32)),
            ]
            .into_iter(),
        );
        let readings = rows.readings.expect("readings");
        assert_eq!(readings.as_array().map(Vec::len), Some(12));
        let r0 = &readings[0];
        assert_eq!(r0["target"], "NVR");
        assert!((r0["loss_pct"].as_f64().unwrap_or_default() - 33.333).abs() < 0.01);
        assert_eq!(readings[3]["rtt_avg_ms"], Value::Null);
        assert_eq!(readings[3]["loss_pct"], 100.0);
        let targets = rows.targets.expect("targets");
        let targets = targets.as_array().expect("array");
        assert_eq!(targets.len(), 4);
        let door = targets
            .iter()
            .find(|t| t["target"] == "door camera")
            .expect("door camera");
        // Newest (t=30) is down, seen up at t=20 (received after it).
        assert_eq!(
            (door["state"].as_str(), door["ts_ms"].as_u64()),
            (Some("down"), Some(30_000))
        );
        assert_eq!(door["last_up_ms"].as_u64(), Some(20_000));
        let nvr = targets.iter().find(|t| t["target"] == "NVR").expect("NVR");
        assert_eq!(
            (nvr["since_ms"].as_u64(), nvr["last_up_ms"].as_u64()),
            (Some(10_000), Some(30_000))
        );
        let u = reach("reach-unresolved.json");
        assert_eq!(loss_pct(&u.targets[0]), None);
    }
}
