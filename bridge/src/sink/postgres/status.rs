//! `status` messages: the site-state rule applied to `sites`, and every
//! status in `status_events` (with whether it applied).

use std::collections::BTreeMap;
use std::time::SystemTime;

use sitewatch_wire::payload::{OfflineReason, State, Status};
use sitewatch_wire::Message;
use tokio_postgres::{Client, GenericClient, Statement};

use super::sites::Current;
use super::Counts;
use crate::sink::batch::{agent_time, clamp_i32, clamp_i64, Decoded};
use crate::sink::state::{rank, should_apply, StateKey};

const SQL_APPLY_STATE: &str = "\
UPDATE sites AS s SET
    state = u.state, reason = u.reason, boot = u.boot, session = u.session,
    state_rank = u.rank, state_ts = u.ts,
    state_changed_at = CASE WHEN s.state IS DISTINCT FROM u.state
                            THEN u.received_at ELSE s.state_changed_at END,
    agent_version = u.agent_version, heartbeat_secs = u.heartbeat_secs
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int2[],
            $7::timestamptz[], $8::timestamptz[], $9::text[], $10::int4[])
    AS u(site, state, reason, boot, session, rank, ts, received_at, agent_version, heartbeat_secs)
WHERE s.site = u.site";

const SQL_INSERT_STATUS: &str = "\
INSERT INTO status_events
    (site, boot, session, seq, state, reason, agent_ts, received_at, applied,
     agent_version, heartbeat_secs)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::int8[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::text[], $11::int4[])
ON CONFLICT DO NOTHING
RETURNING site, boot, session, seq";

/// This family's prepared statements.
pub(super) struct Stmts {
    apply_state: Statement,
    insert: Statement,
}

impl Stmts {
    /// Prepares them on a new connection.
    pub(super) async fn prepare(c: &Client) -> Result<Stmts, tokio_postgres::Error> {
        Ok(Stmts {
            apply_state: c.prepare(SQL_APPLY_STATE).await?,
            insert: c.prepare(SQL_INSERT_STATUS).await?,
        })
    }
}

/// Folds the batch's statuses through the rule in receive order, starting
/// from `current`, and applies each site's final state to `sites`.
/// Returns, per status in receive order, whether it applied.
pub(super) async fn apply_states<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    decoded: &[&Decoded],
    mut current: Current,
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let mut applied_flags = Vec::new();
    let mut final_state: BTreeMap<&str, &Decoded> = BTreeMap::new();
    for d in decoded {
        if let Message::Status(s) = &d.msg {
            let key = StateKey::of(s);
            let cur = current.entry(s.site.clone()).or_insert(None);
            let apply = should_apply(cur.as_ref(), &key);
            if apply {
                *cur = Some(key);
                final_state.insert(&s.site, d);
            }
            applied_flags.push(apply);
        }
    }
    if !final_state.is_empty() {
        let mut c = StatusCols::default();
        for d in final_state.values() {
            if let Message::Status(s) = &d.msg {
                c.push(s, d.received_at, true);
            }
        }
        tx.execute(
            &st.apply_state,
            &[
                &c.site,
                &c.state,
                &c.reason,
                &c.boot,
                &c.session,
                &c.rank,
                &c.ts,
                &c.received_at,
                &c.agent_version,
                &c.heartbeat_secs,
            ],
        )
        .await?;
    }
    Ok(applied_flags)
}

/// Inserts every status into `status_events`, with its `applied` flag
/// from [`apply_states`]. A Last Will (seq 0) counts as stored but not as
/// a message of its boot.
pub(super) async fn write_status<C: GenericClient + Sync>(
    tx: &C,
    st: &Stmts,
    decoded: &[&Decoded],
    applied: Vec<bool>,
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    let mut sc = StatusCols::default();
    let mut flags = applied.into_iter();
    for d in decoded {
        if let Message::Status(s) = &d.msg {
            sc.push(s, d.received_at, flags.next().unwrap_or(false));
        }
    }
    if !sc.site.is_empty() {
        let rows = tx
            .query(
                &st.insert,
                &[
                    &sc.site,
                    &sc.boot,
                    &sc.session,
                    &sc.seq,
                    &sc.state,
                    &sc.reason,
                    &sc.ts,
                    &sc.received_at,
                    &sc.applied,
                    &sc.agent_version,
                    &sc.heartbeat_secs,
                ],
            )
            .await?;
        counts.rows.status_events = rows.len() as u64;
        counts.stored += rows.len();
        for row in rows {
            let seq: i64 = row.try_get(3)?;
            if seq >= 1 {
                counts
                    .new_ids
                    .insert((row.try_get(0)?, row.try_get(1)?, seq));
            }
        }
    }
    Ok(counts)
}

#[derive(Default)]
struct StatusCols<'a> {
    site: Vec<&'a str>,
    boot: Vec<&'a str>,
    session: Vec<i32>,
    seq: Vec<i64>,
    state: Vec<&'static str>,
    reason: Vec<Option<&'static str>>,
    rank: Vec<i16>,
    ts: Vec<SystemTime>,
    received_at: Vec<SystemTime>,
    applied: Vec<bool>,
    agent_version: Vec<&'a str>,
    heartbeat_secs: Vec<i32>,
}

impl<'a> StatusCols<'a> {
    fn push(&mut self, s: &'a Status, received_at: SystemTime, applied: bool) {
        self.site.push(&s.site);
        self.boot.push(&s.boot);
        self.session.push(clamp_i32(u64::from(s.session)));
        self.seq.push(clamp_i64(s.seq));
        self.state.push(state_str(s.state));
        self.reason.push(reason_str(s.reason));
        self.rank.push(rank(s.state));
        self.ts.push(agent_time(s.ts));
        self.received_at.push(received_at);
        self.applied.push(applied);
        self.agent_version.push(&s.agent_version);
        self.heartbeat_secs
            .push(clamp_i32(u64::from(s.heartbeat_secs)));
    }
}

fn state_str(s: State) -> &'static str {
    match s {
        State::Online => "online",
        State::Offline => "offline",
    }
}

fn reason_str(r: Option<OfflineReason>) -> Option<&'static str> {
    r.map(|r| match r {
        OfflineReason::Shutdown => "shutdown",
        OfflineReason::Lost => "lost",
    })
}
