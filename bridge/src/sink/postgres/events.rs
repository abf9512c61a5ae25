//! `event` messages: one `events` row each. Written through
//! `jsonb_to_recordset`; see [`super::jsonb`].

use std::time::SystemTime;

use serde_json::{json, Value};
use sitewatch_wire::payload::Event;
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::jsonb::{array, ms, ts};
use super::{timed, Clock, Counts};
use crate::sink::batch::{clamp_i64, Decoded, MAX_TS_MS};

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_EVENTS).await?,
        })
    }
}

/// Inserts the batch's events.
pub(super) async fn write_events<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    clock: &Clock,
    decoded: &[&Decoded],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    if let Some(rows) = &rows(timed(clock, decoded)) {
        let ids = tx.query(&st.insert, &[rows]).await?;
        counts.rows.events = counts.stored_from(&ids)?;
    }
    Ok(counts)
}

/// The jsonb argument for `events` from `(message, effective time,
/// received at)` in receive order; `None` when the batch has no event.
pub(super) fn rows<'a>(
    msgs: impl Iterator<Item = (&'a Message, SystemTime, SystemTime)>,
) -> Option<Value> {
    array(
        msgs.filter_map(|(msg, ts, received_at)| match msg {
            Message::Event(m) => Some(event_row(m, ts, received_at)),
            _ => None,
        })
        .collect(),
    )
}

fn event_row(m: &Event, ts: SystemTime, received_at: SystemTime) -> Value {
    json!({
        "site": m.site, "boot": m.boot, "seq": clamp_i64(m.seq),
        "ts_ms": ms(ts), "agent_ms": m.ts.min(MAX_TS_MS),
        "received_ms": ms(received_at),
        "event": m.event, "severity": m.severity, "subject": m.subject,
        "from_state": m.from, "to_state": m.to, "message": m.message,
        "numbers": m.numbers.iter().map(|(k, v)| (k.clone(), json!(clamp_i64(*v)))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Events; returns the identities stored for the first time.
const SQL_INSERT_EVENTS: &str = concat!(
    "INSERT INTO events (site, boot, seq, ts, agent_ts, received_at, event, severity, subject,
    from_state, to_state, message, numbers)
SELECT x.site, x.boot, x.seq, ",
    ts!("ts_ms"),
    ", ",
    ts!("agent_ms"),
    ", ",
    ts!("received_ms"),
    ", x.event, x.severity, x.subject,
    x.from_state, x.to_state, x.message, x.numbers
FROM jsonb_to_recordset($1::jsonb) AS x(site text, boot text, seq int8, ts_ms int8, agent_ms int8,
    received_ms int8, event text, severity text, subject text, from_state text, to_state text,
    message text, numbers jsonb)
ON CONFLICT DO NOTHING
RETURNING site, boot, seq"
);
