//! `smart` messages (disk health): every reading in `smart_readings`, and
//! the newest per disk in `disks` (with `verdict_since`). Written through
//! `jsonb_to_recordset`; see [`super::jsonb`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Value};
use sitewatch_wire::payload::Smart;
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::jsonb::{array, fold_latest, ms, ts, Latest};
use super::{timed, Clock, Counts};
use crate::sink::batch::{clamp_i64, Decoded, MAX_TS_MS};

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
    upsert_disks: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_SMART).await?,
            upsert_disks: c.prepare(SQL_UPSERT_DISKS).await?,
        })
    }
}

/// Inserts the batch's readings and moves each disk's latest state.
pub(super) async fn write_smart<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    clock: &Clock,
    decoded: &[&Decoded],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    let rows = rows(timed(clock, decoded));
    if let Some(rows) = &rows.readings {
        let ids = tx.query(&st.insert, &[rows]).await?;
        counts.rows.smart_readings = counts.stored_from(&ids)?;
    }
    if let Some(rows) = &rows.disks {
        tx.execute(&st.upsert_disks, &[rows]).await?;
    }
    Ok(counts)
}

/// The jsonb arguments of one batch; `None` where the batch has no row.
#[derive(Debug, Default)]
pub(super) struct Rows {
    /// `smart_readings` rows.
    pub(super) readings: Option<Value>,
    /// `disks` rows (newest per disk).
    pub(super) disks: Option<Value>,
}

/// Builds the rows from `(message, effective time, received at)` in
/// receive order.
pub(super) fn rows<'a>(msgs: impl Iterator<Item = (&'a Message, SystemTime, SystemTime)>) -> Rows {
    let mut readings = Vec::new();
    let mut disks: BTreeMap<(&str, &str), Latest<Smart>> = BTreeMap::new();
    for (msg, ts, received_at) in msgs {
        if let Message::Smart(m) = msg {
            readings.push(smart_row(m, ts, received_at));
            fold_latest(&mut disks, (&m.site, &m.device), m, ts, |m| &m.verdict);
        }
    }
    Rows {
        readings: array(readings),
        disks: array(disks.values().map(disk_row).collect()),
    }
}

fn smart_row(m: &Smart, ts: SystemTime, received_at: SystemTime) -> Value {
    let big = |v: Option<u64>| v.map(clamp_i64);
    json!({
        "site": m.site, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(ts), "agent_ms": m.ts.min(MAX_TS_MS),
        "received_ms": ms(received_at),
        "device": m.device, "path": m.path, "protocol": m.protocol, "source": m.source,
        "state": m.state, "verdict": m.verdict,
        "reasons": m.reasons.iter().map(|r| json!({"code": r.code, "level": r.level, "detail": r.detail})).collect::<Vec<_>>(),
        "model": m.model, "serial": m.serial, "firmware": m.firmware,
        "capacity_bytes": big(m.capacity_bytes), "temperature_c": m.temperature_c,
        "power_on_hours": big(m.power_on_hours), "reallocated": big(m.reallocated),
        "pending": big(m.pending), "uncorrectable": big(m.uncorrectable),
        "crc_errors": big(m.crc_errors),
        "nvme": m.nvme.as_ref().map(|n| json!({
            "critical_warning": n.critical_warning, "available_spare": n.available_spare,
            "spare_threshold": n.spare_threshold, "percentage_used": n.percentage_used,
            "media_errors": n.media_errors, "unsafe_shutdowns": n.unsafe_shutdowns,
            "error_log_entries": n.error_log_entries, "power_cycles": n.power_cycles,
            "data_units_written": n.data_units_written,
        })),
        "attributes": m.attributes.iter().map(|a| json!({
            "id": a.id, "name": a.name, "value": a.value, "worst": a.worst,
            "thresh": a.thresh, "raw": a.raw, "prefail": a.prefail, "failed": a.failed,
        })).collect::<Vec<_>>(),
        "detail": m.detail,
    })
}

fn disk_row(l: &Latest<Smart>) -> Value {
    let m = l.msg;
    json!({
        "site": m.site, "device": m.device, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(l.ts), "since_ms": ms(l.since), "verdict": m.verdict, "state": m.state,
        "reasons": m.reasons.iter().map(|r| json!({"code": r.code, "level": r.level, "detail": r.detail})).collect::<Vec<_>>(),
        "model": m.model, "serial": m.serial, "temperature_c": m.temperature_c,
        "power_on_hours": m.power_on_hours.map(clamp_i64),
    })
}

/// History of SMART readings; returns the identities stored for the
/// first time.
const SQL_INSERT_SMART: &str = concat!(
    "INSERT INTO smart_readings (site, boot, seq, ts, agent_ts, received_at, device, path, protocol,
    source, state, verdict, reasons, model, serial, firmware, capacity_bytes, temperature_c,
    power_on_hours, reallocated, pending, uncorrectable, crc_errors, nvme, attributes, detail)
SELECT x.site, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", ",
    ts!("agent_ms"),
    ", ",
    ts!("received_ms"),
    ", x.device, x.path, x.protocol,
    x.source, x.state, x.verdict, x.reasons, x.model, x.serial, x.firmware, x.capacity_bytes,
    x.temperature_c, x.power_on_hours, x.reallocated, x.pending, x.uncorrectable, x.crc_errors,
    x.nvme, x.attributes, x.detail
FROM jsonb_to_recordset($1::jsonb) AS x(site text, boot text, seq int8, ts_ms int8, agent_ms int8,
    received_ms int8, device text, path text, protocol text, source text, state text,
    verdict text, reasons jsonb, model text, serial text, firmware text, capacity_bytes int8,
    temperature_c int2, power_on_hours int8, reallocated int8, pending int8, uncorrectable int8,
    crc_errors int8, nvme jsonb, attributes jsonb, detail text)
ON CONFLICT DO NOTHING
RETURNING site, boot, seq"
);

/// Latest reading per disk, like `cameras` ([`super::streams`]).
const SQL_UPSERT_DISKS: &str = concat!(
    "INSERT INTO disks AS d (site, device, boot, seq, ts, verdict, verdict_since, state, reasons,
    model, serial, temperature_c, power_on_hours)
SELECT x.site, x.device, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", x.verdict, ",
    ts!("since_ms"),
    ", x.state, x.reasons,
    x.model, x.serial, x.temperature_c, x.power_on_hours
FROM jsonb_to_recordset($1::jsonb) AS x(site text, device text, boot text, seq int8, ts_ms int8,
    since_ms int8, verdict text, state text, reasons jsonb, model text, serial text,
    temperature_c int2, power_on_hours int8)
ON CONFLICT (site, device) DO UPDATE SET
    boot = EXCLUDED.boot, seq = EXCLUDED.seq, ts = EXCLUDED.ts, verdict = EXCLUDED.verdict,
    verdict_since = CASE WHEN d.verdict = EXCLUDED.verdict THEN d.verdict_since ELSE EXCLUDED.verdict_since END,
    state = EXCLUDED.state, reasons = EXCLUDED.reasons, model = EXCLUDED.model,
    serial = EXCLUDED.serial, temperature_c = EXCLUDED.temperature_c,
    power_on_hours = EXCLUDED.power_on_hours
WHERE d.ts < EXCLUDED.ts OR (d.ts = EXCLUDED.ts AND (d.boot, d.seq) < (EXCLUDED.boot, EXCLUDED.seq))"
);

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_wire::golden::VALID;
    use std::time::{Duration, UNIX_EPOCH};

    fn msg(file: &str) -> Message {
        let v = VALID.iter().find(|v| v.file == file).expect("vector");
        sitewatch_wire::decode(v.topic, v.payload).expect("decodes")
    }

    #[test]
    fn an_older_redelivery_does_not_replace_the_newest() {
        let Message::Smart(a) = msg("smart-ata.json") else {
            panic!()
        };
        let mut old = a.clone();
        old.verdict = "ok".into();
        old.seq -= 1;
        let (m1, m2) = (Message::Smart(a), Message::Smart(old));
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let rows = rows([(&m1, t(50), t(50)), (&m2, t(40), t(60))].into_iter());
        let disks = rows.disks.expect("disks");
        assert_eq!(disks[0]["verdict"], "critical");
    }
}
