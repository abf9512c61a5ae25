//! `rejected_messages`: messages that did not decode, that the database
//! refused (`db_error`), or whose log lines Loki refused or could not
//! take. Not keyed: a redelivered rejection is stored again.

use std::time::SystemTime;

use tokio_postgres::{Client, GenericClient, Statement};

use super::Counts;
use crate::sink::batch::Rejection;

const SQL_INSERT_REJECTED: &str = "\
INSERT INTO rejected_messages (received_at, topic, reason, detail, payload, payload_len)
SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                     $6::int4[])";

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_REJECTED).await?,
        })
    }
}

/// Inserts the rejections (they count as rows, not as stored messages).
pub(super) async fn write_rejected<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    rejected: &[&Rejection],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    if !rejected.is_empty() {
        let received_at: Vec<SystemTime> = rejected.iter().map(|r| r.received_at).collect();
        let topic: Vec<&str> = rejected.iter().map(|r| r.topic.as_str()).collect();
        let reason: Vec<&str> = rejected.iter().map(|r| r.reason).collect();
        let detail: Vec<&str> = rejected.iter().map(|r| r.detail.as_str()).collect();
        let payload: Vec<&[u8]> = rejected.iter().map(|r| r.payload.as_slice()).collect();
        let len: Vec<i32> = rejected.iter().map(|r| r.payload_len).collect();
        counts.rows.rejected_messages = tx
            .execute(
                &st.insert,
                &[&received_at, &topic, &reason, &detail, &payload, &len],
            )
            .await?;
    }
    Ok(counts)
}
