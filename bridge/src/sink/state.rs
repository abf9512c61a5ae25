//! The site-state rule: which status message decides a site's state.
//!
//! Pure; no I/O. The PostgreSQL sink reads the current state of the sites
//! in a batch (rows locked), folds the batch's statuses through
//! [`should_apply`] in receive order, and writes the result.
//!
//! Why a rule at all: a late death can arrive after a new birth (the
//! broker publishes a Last Will only after the keep-alive times out, by
//! which time the agent may have reconnected), and several bridges in a
//! share group can process messages out of order. Sparkplug and Homie
//! learned this the hard way.
//!
//! The rule, for a status `m` and the current state `c` of its site:
//! * no current state: apply;
//! * same boot: apply iff `(m.session, m.rank) > (c.session, c.rank)`,
//!   where rank online = 1, offline = 2. So within a session
//!   online → offline, a second offline of the same session is ignored,
//!   and a Last Will of an older session that arrives after a newer
//!   session's birth is ignored;
//! * different boot: apply iff `m.ts > c.ts` (agent clock). A Last Will
//!   carries the timestamp of the connection it belongs to, so a late
//!   death of an old boot loses against the new boot's birth.
//!
//! Caveat: across boots the agent's clock decides. A gateway without a
//! real-time clock that boots with its clock in the past (before NTP sync)
//! sends statuses that lose against its previous boot's state until the
//! clock is right; heartbeats still update `last_seen`, so the fleet view
//! does not go stale because of it.

use sitewatch_wire::payload::{State, Status};

/// Rank of a state within one session: online (1) precedes offline (2).
pub fn rank(state: State) -> i16 {
    match state {
        State::Online => 1,
        State::Offline => 2,
    }
}

/// The part of a site's state the rule compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    /// Boot id of the status that set the state.
    pub boot: String,
    /// Session (connection counter within the boot).
    pub session: u32,
    /// [`rank`] of the state.
    pub rank: i16,
    /// Agent timestamp, Unix ms (clamped as stored, see
    /// [`crate::sink::batch::clamp_ts_ms`]).
    pub ts_ms: u64,
}

impl StateKey {
    /// The key of a status message.
    pub fn of(status: &Status) -> StateKey {
        StateKey {
            boot: status.boot.clone(),
            session: status.session,
            rank: rank(status.state),
            ts_ms: crate::sink::batch::clamp_ts_ms(status.ts),
        }
    }
}

/// Whether a status with key `next` replaces the current state `current`.
pub fn should_apply(current: Option<&StateKey>, next: &StateKey) -> bool {
    match current {
        None => true,
        Some(c) if c.boot == next.boot => (next.session, next.rank) > (c.session, c.rank),
        Some(c) => next.ts_ms > c.ts_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(boot: &str, session: u32, state: State, ts_ms: u64) -> StateKey {
        StateKey {
            boot: boot.to_owned(),
            session,
            rank: rank(state),
            ts_ms,
        }
    }

    /// Folds statuses in order; returns the applied flags and final state.
    fn fold(start: Option<StateKey>, seq: &[StateKey]) -> (Vec<bool>, Option<StateKey>) {
        let mut cur = start;
        let applied = seq
            .iter()
            .map(|k| {
                let ok = should_apply(cur.as_ref(), k);
                if ok {
                    cur = Some(k.clone());
                }
                ok
            })
            .collect();
        (applied, cur)
    }

    use State::{Offline, Online};

    #[test]
    fn first_status_applies() {
        assert!(should_apply(None, &key("b", 1, Offline, 0)));
    }

    #[test]
    fn online_then_offline_in_one_session() {
        let (applied, end) = fold(None, &[key("b", 1, Online, 10), key("b", 1, Offline, 20)]);
        assert_eq!(applied, [true, true]);
        assert_eq!(end.map(|k| k.rank), Some(2));
    }

    #[test]
    fn late_will_of_older_session_is_ignored() {
        // Session 2's birth overtakes session 1's Last Will.
        let (applied, end) = fold(
            Some(key("b", 1, Online, 10)),
            &[key("b", 2, Online, 30), key("b", 1, Offline, 10)],
        );
        assert_eq!(applied, [true, false]);
        assert_eq!(end, Some(key("b", 2, Online, 30)));
    }

    #[test]
    fn second_offline_of_a_session_is_ignored() {
        let (applied, _) = fold(
            Some(key("b", 1, Online, 10)),
            &[key("b", 1, Offline, 20), key("b", 1, Offline, 10)],
        );
        assert_eq!(applied, [true, false]);
    }

    #[test]
    fn redelivered_status_is_not_reapplied() {
        let k = key("b", 3, Online, 10);
        assert!(!should_apply(Some(&k), &k));
    }

    #[test]
    fn online_after_offline_needs_a_newer_session() {
        let cur = key("b", 1, Offline, 20);
        assert!(!should_apply(Some(&cur), &key("b", 1, Online, 30)));
        assert!(should_apply(Some(&cur), &key("b", 2, Online, 30)));
    }

    #[test]
    fn new_boot_wins_by_agent_time() {
        let old = key("old", 7, Online, 1_000);
        // New boot, session 1, later clock: applies despite lower session.
        assert!(should_apply(Some(&old), &key("new", 1, Online, 2_000)));
        // Late Last Will of the old boot after the new boot's birth.
        let (applied, end) = fold(
            Some(old.clone()),
            &[key("new", 1, Online, 2_000), key("old", 7, Offline, 1_000)],
        );
        assert_eq!(applied, [true, false]);
        assert_eq!(end.map(|k| k.boot), Some("new".to_owned()));
        // Equal timestamps across boots: keep the current state.
        assert!(!should_apply(Some(&old), &key("new", 1, Online, 1_000)));
    }
}
