//! `log` messages: one `log_batches` row per message delivered to Loki
//! (the lines themselves are in Loki), and which messages were delivered
//! already ([`super::PgSink::delivered_logs`]).

use std::time::SystemTime;

use sitewatch_wire::payload::Log;
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::Counts;
use crate::sink::batch::{agent_time, clamp_i32, clamp_i64, Decoded, LogDelivery};

/// One row per `log` message delivered to Loki.
const SQL_INSERT_LOG_BATCHES: &str = "\
INSERT INTO log_batches (site, boot, seq, ts, received_at, records, rejected)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[],
                     $6::int4[], $7::int4[])
ON CONFLICT DO NOTHING
RETURNING site, boot, seq";

/// Which of the given log message identities were delivered already.
const SQL_DELIVERED_LOGS: &str = "\
SELECT l.site, l.boot, l.seq
FROM log_batches AS l
JOIN UNNEST($1::text[], $2::text[], $3::int8[]) AS u(site, boot, seq)
  ON l.site = u.site AND l.boot = u.boot AND l.seq = u.seq";

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
    /// Used by [`super::PgSink::delivered_logs`], outside a batch.
    pub(super) delivered: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_LOG_BATCHES).await?,
            delivered: c.prepare(SQL_DELIVERED_LOGS).await?,
        })
    }
}

/// Inserts one `log_batches` row per `log` message of the batch (the
/// writer has removed those Loki refused entirely).
pub(super) async fn write_logs<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    decoded: &[&Decoded],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    let mut lc = LogCols::default();
    for d in decoded {
        if let Message::Log(l) = &d.msg {
            lc.push(l, d.received_at, d.log);
        }
    }
    if !lc.site.is_empty() {
        let rows = tx
            .query(
                &st.insert,
                &[
                    &lc.site,
                    &lc.boot,
                    &lc.seq,
                    &lc.ts,
                    &lc.received_at,
                    &lc.records,
                    &lc.rejected,
                ],
            )
            .await?;
        counts.rows.log_batches = counts.stored_from(&rows)?;
    }
    Ok(counts)
}

#[derive(Default)]
struct LogCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    seq: Vec<i64>,
    ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    records: Vec<i32>,
    rejected: Vec<i32>,
}

impl<'a> LogCols<'a> {
    fn push(&mut self, l: &'a Log, received_at: SystemTime, delivery: Option<LogDelivery>) {
        // A log message reaches here only after the writer pushed it (or
        // found it delivered); without a delivery record it counts all
        // its lines.
        let d = delivery.unwrap_or(LogDelivery {
            pushed: clamp_i32(u64::try_from(l.records.len()).unwrap_or(u64::MAX)),
            refused: 0,
        });
        self.site.push(&l.site);
        self.boot.push(&l.boot);
        self.seq.push(clamp_i64(l.seq));
        self.ts.push(agent_time(l.ts));
        self.received_at.push(received_at);
        self.records.push(d.pushed);
        self.rejected.push(d.refused);
    }
}
