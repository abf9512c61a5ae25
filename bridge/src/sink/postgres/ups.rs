//! `ups` messages: one `ups_readings` row per UPS (a marker row for a
//! message without UPS, so that it is stored), like `disk` ([`super::disk`]).
//! The latest reading's summary goes on `sites` ([`super::sites`]).

use std::collections::HashSet;
use std::time::SystemTime;

use sitewatch_wire::payload::Ups;
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::{Clock, Counts};
use crate::sink::batch::{agent_time, clamp_i64, Decoded};

const SQL_INSERT_UPS: &str = "\
INSERT INTO ups_readings
    (site, boot, seq, ts, agent_ts, received_at, interval_secs, ups, power, on_line, on_battery,
     low_battery, status, charge_pct, runtime_secs, load_pct, input_voltage_v, error)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[],
                     $6::timestamptz[], $7::int4[], $8::text[], $9::text[], $10::bool[],
                     $11::bool[], $12::bool[], $13::text[], $14::float4[], $15::int4[],
                     $16::float4[], $17::float4[], $18::text[])
ON CONFLICT DO NOTHING
RETURNING site, boot, seq";

/// `error` of the marker row of a message with neither UPS nor error
/// (upsd answered but lists no UPS).
const NO_UPS: &str = "no_ups";

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_UPS).await?,
        })
    }
}

/// Inserts the batch's UPS readings (`ts` corrected by `clock`); a message
/// counts once however many UPSes it has.
pub(super) async fn write_ups<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    clock: &Clock,
    decoded: &[&Decoded],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    let mut cols = UpsCols::default();
    for d in decoded {
        if let Message::Ups(m) = &d.msg {
            cols.push(m, d.received_at, clock);
        }
    }
    if cols.site.is_empty() {
        return Ok(counts);
    }
    let rows = tx
        .query(
            &st.insert,
            &[
                &cols.site,
                &cols.boot,
                &cols.seq,
                &cols.ts,
                &cols.agent_ts,
                &cols.received_at,
                &cols.interval_secs,
                &cols.ups,
                &cols.power,
                &cols.on_line,
                &cols.on_battery,
                &cols.low_battery,
                &cols.status,
                &cols.charge_pct,
                &cols.runtime_secs,
                &cols.load_pct,
                &cols.input_voltage_v,
                &cols.error,
            ],
        )
        .await?;
    counts.rows.ups_readings = rows.len() as u64;
    let mut ids = HashSet::new();
    for row in rows {
        let id: (String, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        ids.insert(id);
    }
    counts.stored += ids.len();
    counts.new_ids.extend(ids);
    Ok(counts)
}

/// One array per column of `ups_readings`.
#[derive(Default)]
struct UpsCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    seq: Vec<i64>,
    ts: Vec<SystemTime>,
    agent_ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    interval_secs: Vec<i32>,
    ups: Vec<&'a str>,
    power: Vec<&'a str>,
    on_line: Vec<bool>,
    on_battery: Vec<bool>,
    low_battery: Vec<bool>,
    status: Vec<&'a str>,
    charge_pct: Vec<Option<f32>>,
    runtime_secs: Vec<Option<i32>>,
    load_pct: Vec<Option<f32>>,
    input_voltage_v: Vec<Option<f32>>,
    error: Vec<Option<&'a str>>,
}

impl<'a> UpsCols<'a> {
    /// The message's identity and times, once per row.
    fn head(&mut self, m: &'a Ups, at: SystemTime, clock: &Clock) {
        self.site.push(&m.site);
        self.boot.push(&m.boot);
        self.seq.push(clamp_i64(m.seq));
        let agent = agent_time(m.ts);
        self.ts.push(clock.effective(&m.site, agent, at));
        self.agent_ts.push(agent);
        self.received_at.push(at);
        self.interval_secs
            .push(i32::try_from(m.interval_secs).unwrap_or(i32::MAX));
    }

    fn push(&mut self, m: &'a Ups, received_at: SystemTime, clock: &Clock) {
        if m.ups.is_empty() {
            // Marker row, so that the message is stored (see migration 12).
            self.head(m, received_at, clock);
            self.ups.push("");
            self.power.push("unknown");
            self.on_line.push(false);
            self.on_battery.push(false);
            self.low_battery.push(false);
            self.status.push("");
            self.charge_pct.push(None);
            self.runtime_secs.push(None);
            self.load_pct.push(None);
            self.input_voltage_v.push(None);
            self.error.push(Some(m.error.as_deref().unwrap_or(NO_UPS)));
            return;
        }
        for u in &m.ups {
            self.head(m, received_at, clock);
            self.ups.push(&u.name);
            self.power.push(&u.power);
            self.on_line.push(u.on_line);
            self.on_battery.push(u.on_battery);
            self.low_battery.push(u.low_battery);
            self.status.push(&u.status);
            self.charge_pct.push(u.charge_pct);
            self.runtime_secs
                .push(u.runtime_secs.map(|r| i32::try_from(r).unwrap_or(i32::MAX)));
            self.load_pct.push(u.load_pct);
            self.input_voltage_v.push(u.input_voltage_v);
            self.error.push(u.error.as_deref());
        }
    }
}

/// The `sites` summary of one `ups` message (migration 12): the worst
/// power state over its UPSes (`unknown` when upsd could not be read),
/// how many are on battery, the lowest charge and runtime, and how many
/// could not be read (+1 for upsd itself).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Summary<'a> {
    pub(super) power: &'a str,
    pub(super) on_battery: i32,
    pub(super) min_charge_pct: Option<f32>,
    pub(super) min_runtime_secs: Option<i32>,
    pub(super) errors: i32,
}

/// How bad a power state is: low battery, on battery, unknown (or a word
/// this bridge does not know), on line.
fn rank(power: &str) -> u8 {
    match power {
        "low_battery" => 3,
        "on_battery" => 2,
        "on_line" => 0,
        _ => 1,
    }
}

/// See [`Summary`].
pub(super) fn summary(m: &Ups) -> Summary<'_> {
    let mut s = Summary {
        power: if m.ups.is_empty() {
            "unknown"
        } else {
            "on_line"
        },
        on_battery: 0,
        min_charge_pct: None,
        min_runtime_secs: None,
        errors: i32::from(m.error.is_some()),
    };
    for u in &m.ups {
        if rank(&u.power) > rank(s.power) {
            s.power = &u.power;
        }
        if matches!(u.power.as_str(), "on_battery" | "low_battery") {
            s.on_battery += 1;
        }
        if u.error.is_some() {
            s.errors += 1;
        }
        if let Some(c) = u.charge_pct {
            s.min_charge_pct = Some(s.min_charge_pct.map_or(c, |m| m.min(c)));
        }
        if let Some(r) = u.runtime_secs {
            let r = i32::try_from(r).unwrap_or(i32::MAX);
            s.min_runtime_secs = Some(s.min_runtime_secs.map_or(r, |m| m.min(r)));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_wire::golden::VALID;

    fn ups(file: &str) -> Ups {
        let v = VALID.iter().find(|v| v.file == file).expect("vector");
        match sitewatch_wire::decode(v.topic, v.payload).expect("decodes") {
            Message::Ups(u) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_worst_ups_sums_up_the_site() {
        let m = ups("ups.json");
        let s = summary(&m);
        assert_eq!(
            s,
            Summary {
                power: "on_battery",
                on_battery: 1,
                min_charge_pct: Some(87.5),
                min_runtime_secs: Some(1260),
                errors: 0,
            }
        );
        let mut m = ups("ups.json");
        m.ups[1].power = "low_battery".into();
        m.ups[1].error = Some("x".into());
        m.ups[0].power = "something_new".into();
        let s = summary(&m);
        assert_eq!((s.power, s.on_battery, s.errors), ("low_battery", 1, 1));
        let d = ups("ups-upsd-down.json");
        let down = summary(&d);
        assert_eq!(
            (down.power, down.on_battery, down.errors),
            ("unknown", 0, 1)
        );
        assert_eq!((down.min_charge_pct, down.min_runtime_secs), (None, None));
    }
}
