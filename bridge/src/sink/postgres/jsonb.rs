//! Shared by the families written through `jsonb_to_recordset`
//! ([`super::streams`], [`super::smart`], [`super::events`]).
//!
//! These kinds have many optional columns, so each batch is handed to
//! PostgreSQL as one `jsonb` array per table and unpacked server-side with
//! `jsonb_to_recordset` (one round trip per table, like the `UNNEST`
//! inserts of the other kinds, without a dozen parallel arrays). Building
//! the rows is pure.
//!
//! Latest-state tables (`cameras`, `disks`) get one row per camera/disk per
//! batch: the newest message by effective time, with the time since its
//! class/verdict has held (`class_since`), computed across the batch here
//! ([`fold_latest`]) and against the stored row in SQL.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;

use crate::sink::batch::unix_ms;

/// Newest message per (site, name) and since when its class has held.
pub(super) struct Latest<'a, T> {
    /// The newest message.
    pub(super) msg: &'a T,
    /// Its effective time.
    pub(super) ts: SystemTime,
    /// Since when its class (or verdict) has held across the batch.
    pub(super) since: SystemTime,
}

/// Folds `msg` into `map`: an older message does not replace a newer one.
pub(super) fn fold_latest<'a, T>(
    map: &mut BTreeMap<(&'a str, &'a str), Latest<'a, T>>,
    key: (&'a str, &'a str),
    msg: &'a T,
    ts: SystemTime,
    class: impl Fn(&T) -> &str,
) {
    match map.get_mut(&key) {
        Some(cur) if cur.ts > ts => {}
        Some(cur) => {
            let since = if class(cur.msg) == class(msg) {
                cur.since
            } else {
                ts
            };
            *cur = Latest { msg, ts, since };
        }
        None => {
            map.insert(key, Latest { msg, ts, since: ts });
        }
    }
}

/// A timestamp as the Unix ms the SQL below turns back into `timestamptz`.
pub(super) fn ms(t: SystemTime) -> u64 {
    unix_ms(t)
}

/// The statement's argument: `None` when the batch has no row.
pub(super) fn array(rows: Vec<Value>) -> Option<Value> {
    (!rows.is_empty()).then_some(Value::Array(rows))
}

/// Unix ms (a JSON number) → timestamptz.
macro_rules! ts {
    ($col:literal) => {
        concat!("to_timestamp(x.", $col, " / 1000.0)")
    };
}
pub(super) use ts;
