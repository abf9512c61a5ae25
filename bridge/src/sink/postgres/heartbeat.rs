//! `heartbeat` messages: one `heartbeats` row each, and the latest one per
//! site refreshes `sites.agent_version` / `heartbeat_secs`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use sitewatch_wire::payload::Heartbeat;
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::{Clock, Counts};
use crate::sink::batch::{agent_time, clamp_i32, clamp_i64, Decoded};

const SQL_INSERT_HEARTBEATS: &str = "\
INSERT INTO heartbeats
    (site, boot, seq, ts, received_at, agent_version, interval_secs, uptime_secs,
     agent_uptime_secs, load1, load5, load15, mem_total_bytes, mem_available_bytes,
     agent_rss_bytes, counters, agent_ts, wan_if, wan_rx_bytes, wan_tx_bytes,
     wan_rx_errors, wan_tx_errors, wan_rx_dropped, wan_tx_dropped, wan_addr, wan_addr_class,
     wan_addr6)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $7::int4[], $8::int8[], $9::int8[], $10::float4[],
                     $11::float4[], $12::float4[], $13::int8[], $14::int8[], $15::int8[],
                     $16::jsonb[], $17::timestamptz[], $18::text[], $19::int8[], $20::int8[],
                     $21::int8[], $22::int8[], $23::int8[], $24::int8[], $25::text[],
                     $26::text[], $27::text[])
ON CONFLICT DO NOTHING
RETURNING site, boot, seq";

/// Heartbeats of the site's current boot (or of a site with no status
/// yet) refresh its agent version and heartbeat period; never its state.
/// Rows already holding those values are left alone: almost always the
/// case, and an update that changes nothing still writes a new row
/// version (290 ms of server time per 100k messages in
/// `scripts/bench/ingest.sh`). The batch has locked the rows already.
const SQL_HEARTBEAT_VERSIONS: &str = "\
UPDATE sites AS s SET agent_version = u.agent_version, heartbeat_secs = u.interval_secs
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[])
    AS u(site, boot, agent_version, interval_secs)
WHERE s.site = u.site AND (s.boot IS NULL OR s.boot = u.boot)
  AND (s.agent_version IS DISTINCT FROM u.agent_version
       OR s.heartbeat_secs IS DISTINCT FROM u.interval_secs)";

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
    versions: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_HEARTBEATS).await?,
            versions: c.prepare(SQL_HEARTBEAT_VERSIONS).await?,
        })
    }
}

/// Inserts the batch's heartbeats (`ts` corrected by `clock`).
pub(super) async fn write_heartbeats<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    clock: &Clock,
    decoded: &[&Decoded],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    let mut hc = HeartbeatCols::default();
    for d in decoded {
        if let Message::Heartbeat(h) = &d.msg {
            hc.push(h, d.received_at, clock);
        }
    }
    if !hc.site.is_empty() {
        let rows = tx
            .query(
                &st.insert,
                &[
                    &hc.site,
                    &hc.boot,
                    &hc.seq,
                    &hc.ts,
                    &hc.received_at,
                    &hc.agent_version,
                    &hc.interval_secs,
                    &hc.uptime_secs,
                    &hc.agent_uptime_secs,
                    &hc.load1,
                    &hc.load5,
                    &hc.load15,
                    &hc.mem_total_bytes,
                    &hc.mem_available_bytes,
                    &hc.agent_rss_bytes,
                    &hc.counters,
                    &hc.agent_ts,
                    &hc.wan_if,
                    &hc.wan[0],
                    &hc.wan[1],
                    &hc.wan[2],
                    &hc.wan[3],
                    &hc.wan[4],
                    &hc.wan[5],
                    &hc.wan_addr[0],
                    &hc.wan_addr[1],
                    &hc.wan_addr[2],
                ],
            )
            .await?;
        counts.rows.heartbeats = counts.stored_from(&rows)?;
    }
    Ok(counts)
}

/// The latest heartbeat per site refreshes its version and period.
pub(super) async fn write_versions<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    decoded: &[&Decoded],
) -> Result<(), tokio_postgres::Error> {
    let mut latest_hb: BTreeMap<&str, (&str, &str, i32)> = BTreeMap::new();
    for d in decoded {
        if let Message::Heartbeat(h) = &d.msg {
            latest_hb.insert(
                &h.site,
                (
                    &h.boot,
                    &h.agent_version,
                    clamp_i32(u64::from(h.interval_secs)),
                ),
            );
        }
    }
    if !latest_hb.is_empty() {
        let site: Vec<&str> = latest_hb.keys().copied().collect();
        let boot: Vec<&str> = latest_hb.values().map(|v| v.0).collect();
        let version: Vec<&str> = latest_hb.values().map(|v| v.1).collect();
        let interval: Vec<i32> = latest_hb.values().map(|v| v.2).collect();
        tx.execute(&st.versions, &[&site, &boot, &version, &interval])
            .await?;
    }
    Ok(())
}

#[derive(Default)]
struct HeartbeatCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    seq: Vec<i64>,
    ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    agent_version: Vec<&'a str>,
    interval_secs: Vec<i32>,
    uptime_secs: Vec<i64>,
    agent_uptime_secs: Vec<i64>,
    load1: Vec<f32>,
    load5: Vec<f32>,
    load15: Vec<f32>,
    mem_total_bytes: Vec<i64>,
    mem_available_bytes: Vec<i64>,
    agent_rss_bytes: Vec<i64>,
    counters: Vec<serde_json::Value>,
    agent_ts: Vec<SystemTime>,
    /// `wan.if`; NULL when the heartbeat has no `wan`.
    wan_if: Vec<Option<&'a str>>,
    /// `wan`'s rx/tx bytes, errors, drops, in the columns' order.
    wan: [Vec<Option<i64>>; 6],
    /// `wan.addr`, `wan.addr_class`, `wan.addr6` (migration 0015).
    wan_addr: [Vec<Option<&'a str>>; 3],
}

impl<'a> HeartbeatCols<'a> {
    fn push(&mut self, h: &'a Heartbeat, received_at: SystemTime, clock: &Clock) {
        self.site.push(&h.site);
        self.boot.push(&h.boot);
        self.seq.push(clamp_i64(h.seq));
        let agent = agent_time(h.ts);
        self.ts.push(clock.effective(&h.site, agent, received_at));
        self.agent_ts.push(agent);
        self.received_at.push(received_at);
        self.agent_version.push(&h.agent_version);
        self.interval_secs
            .push(clamp_i32(u64::from(h.interval_secs)));
        self.uptime_secs.push(clamp_i64(h.uptime_secs));
        self.agent_uptime_secs.push(clamp_i64(h.agent_uptime_secs));
        self.load1.push(h.load[0]);
        self.load5.push(h.load[1]);
        self.load15.push(h.load[2]);
        self.mem_total_bytes.push(clamp_i64(h.mem_total_bytes));
        self.mem_available_bytes
            .push(clamp_i64(h.mem_available_bytes));
        self.agent_rss_bytes.push(clamp_i64(h.agent_rss_bytes));
        self.wan_if.push(h.wan.as_ref().map(|w| w.iface.as_str()));
        let counters = h.wan.as_ref().map(|w| {
            [
                w.rx_bytes,
                w.tx_bytes,
                w.rx_errors,
                w.tx_errors,
                w.rx_dropped,
                w.tx_dropped,
            ]
        });
        for (i, col) in self.wan.iter_mut().enumerate() {
            col.push(counters.map(|c| clamp_i64(c[i])));
        }
        let w = h.wan.as_ref();
        self.wan_addr[0].push(w.and_then(|w| w.addr.as_deref()));
        self.wan_addr[1].push(w.and_then(|w| w.addr_class.as_deref()));
        self.wan_addr[2].push(w.and_then(|w| w.addr6.as_deref()));
        self.counters.push(serde_json::Value::Object(
            h.counters
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect(),
        ));
    }
}
