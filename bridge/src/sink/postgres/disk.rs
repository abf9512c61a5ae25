//! `disk` messages: one `disk_usage` row per mount (a marker row for a
//! message without mounts, so that it is stored).

use std::collections::HashSet;
use std::time::SystemTime;

use sitewatch_wire::payload::Disk;
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::{Clock, Counts};
use crate::sink::batch::{agent_time, clamp_i64, Decoded};

const SQL_INSERT_DISK: &str = "\
INSERT INTO disk_usage
    (site, boot, seq, ts, received_at, path, fs_type, total_bytes, used_bytes, avail_bytes,
     used_pct, inodes_total, inodes_free, read_only, error, agent_ts)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[],
                     $11::float4[], $12::int8[], $13::int8[], $14::bool[], $15::text[],
                     $16::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING site, boot, seq";

/// This family's prepared statements.
pub(super) struct Stmts {
    insert: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            insert: c.prepare(SQL_INSERT_DISK).await?,
        })
    }
}

/// Inserts the batch's disk messages (`ts` corrected by `clock`); a
/// message counts once however many mounts it has.
pub(super) async fn write_disk<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    clock: &Clock,
    decoded: &[&Decoded],
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    let mut dc = DiskCols::default();
    for d in decoded {
        if let Message::Disk(m) = &d.msg {
            dc.push(m, d.received_at, clock);
        }
    }
    if !dc.site.is_empty() {
        let rows = tx
            .query(
                &st.insert,
                &[
                    &dc.site,
                    &dc.boot,
                    &dc.seq,
                    &dc.ts,
                    &dc.received_at,
                    &dc.path,
                    &dc.fs_type,
                    &dc.total_bytes,
                    &dc.used_bytes,
                    &dc.avail_bytes,
                    &dc.used_pct,
                    &dc.inodes_total,
                    &dc.inodes_free,
                    &dc.read_only,
                    &dc.error,
                    &dc.agent_ts,
                ],
            )
            .await?;
        counts.rows.disk_usage = rows.len() as u64;
        let mut disk_ids = HashSet::new();
        for row in rows {
            let id: (String, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            disk_ids.insert(id);
        }
        counts.stored += disk_ids.len();
        counts.new_ids.extend(disk_ids);
    }
    Ok(counts)
}

#[derive(Default)]
struct DiskCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    seq: Vec<i64>,
    ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    path: Vec<&'a str>,
    fs_type: Vec<&'a str>,
    total_bytes: Vec<i64>,
    used_bytes: Vec<i64>,
    avail_bytes: Vec<i64>,
    used_pct: Vec<f32>,
    inodes_total: Vec<i64>,
    inodes_free: Vec<i64>,
    read_only: Vec<bool>,
    error: Vec<Option<&'a str>>,
    agent_ts: Vec<SystemTime>,
}

impl<'a> DiskCols<'a> {
    fn head(
        &mut self,
        m: &'a Disk,
        at: SystemTime,
        clock: &Clock,
        path: &'a str,
        fs_type: &'a str,
    ) {
        self.site.push(&m.site);
        self.boot.push(&m.boot);
        self.seq.push(clamp_i64(m.seq));
        let agent = agent_time(m.ts);
        self.ts.push(clock.effective(&m.site, agent, at));
        self.agent_ts.push(agent);
        self.received_at.push(at);
        self.path.push(path);
        self.fs_type.push(fs_type);
    }

    fn push(&mut self, m: &'a Disk, received_at: SystemTime, clock: &Clock) {
        if m.mounts.is_empty() {
            // Marker row, so that the message is stored (see migration).
            self.head(m, received_at, clock, "", "");
            self.total_bytes.push(0);
            self.used_bytes.push(0);
            self.avail_bytes.push(0);
            self.used_pct.push(0.0);
            self.inodes_total.push(0);
            self.inodes_free.push(0);
            self.read_only.push(false);
            self.error.push(Some("no_mounts"));
            return;
        }
        for mount in &m.mounts {
            self.head(m, received_at, clock, &mount.path, &mount.fs_type);
            self.total_bytes.push(clamp_i64(mount.total_bytes));
            self.used_bytes.push(clamp_i64(mount.used_bytes));
            self.avail_bytes.push(clamp_i64(mount.avail_bytes));
            self.used_pct.push(mount.used_pct);
            self.inodes_total.push(clamp_i64(mount.inodes_total));
            self.inodes_free.push(clamp_i64(mount.inodes_free));
            self.read_only.push(mount.read_only);
            self.error.push(mount.error.as_deref());
        }
    }
}
