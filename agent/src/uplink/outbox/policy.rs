//! The outbox's rules, as pure functions: what to drop when full, what to
//! send next, and the drain rate limit.
//!
//! No I/O and no clock of its own (callers pass `Instant`s), so every rule
//! is unit-tested on its own. This module must not know where records are
//! stored.

use std::time::{Duration, Instant};

use super::record::{Class, PerClass};

/// Order in which classes are drained: fresh retained state first (few
/// records, latest value per topic), then events, time series, logs.
/// Within a class records leave in the order they were pushed.
pub const DRAIN_ORDER: [Class; 4] = [Class::State, Class::Event, Class::Series, Class::Log];

/// What to drop to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    /// The oldest droppable (queued, not in flight) record of this class.
    Existing(Class),
    /// The record being pushed.
    Incoming,
}

/// Chooses what to drop when a record of class `incoming` does not fit.
///
/// Rule: the oldest record of the lowest-priority class
/// (`Log < Series < State < Event`) goes first, where the record being
/// pushed counts as the newest of its class. So a new log batch never
/// displaces a heartbeat, an event displaces anything, and within a class
/// the oldest record is dropped before the new one. `droppable[c]` says
/// whether class `c` has a queued record that is not in flight (records in
/// flight may already have reached the broker, so they are never dropped).
pub fn victim(incoming: Class, droppable: PerClass<bool>) -> Victim {
    for c in Class::BY_PRIORITY {
        if droppable[c] {
            return Victim::Existing(c);
        }
        if c == incoming {
            return Victim::Incoming;
        }
    }
    Victim::Incoming
}

/// The first class in [`DRAIN_ORDER`] with a ready record.
pub fn next_class(ready: PerClass<bool>) -> Option<Class> {
    DRAIN_ORDER.into_iter().find(|&c| ready[c])
}

/// Whether a class's records wait for the drain rate limit. State records
/// do not: there are at most a few per topic, and they are what a
/// dashboard needs first after an outage.
pub fn rate_limited(class: Class) -> bool {
    class != Class::State
}

/// A token bucket over bytes: refills at `rate` bytes per second up to
/// `burst`. A rate of 0 means unlimited.
///
/// Live traffic brings its own allowance: [`TokenBucket::credit`] adds the
/// size of each record pushed while the uplink is connected, and sends
/// spend that credit before the refilled tokens. So live records never
/// wait for the limit, and a backlog (pushed while disconnected) drains at
/// `rate` bytes per second *on top of* the live traffic: a site whose
/// devices log faster than the limit loses nothing, and one recovering
/// from an outage still cannot saturate its uplink with old records.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    last: Option<Instant>,
    /// Bytes of live records not yet spent, at most `credit_max`.
    credit: u64,
    credit_max: u64,
}

impl TokenBucket {
    /// A full bucket. `burst` is raised to at least `rate` (one second's
    /// worth) and `min_burst` (the largest single cost), so any record can
    /// eventually pass. Live credit is capped at `credit_max` (the queue's
    /// own bound: more live bytes than that cannot be waiting).
    pub fn new(rate: u64, min_burst: u64, credit_max: u64) -> TokenBucket {
        let burst = rate.max(min_burst);
        TokenBucket {
            rate,
            burst,
            tokens: burst as f64,
            last: None,
            credit: 0,
            credit_max,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst as f64);
        }
        self.last = Some(now);
    }

    /// A live record of `cost` bytes was queued: it may be sent without
    /// waiting for the refill.
    pub fn credit(&mut self, cost: u64) {
        if self.rate != 0 {
            self.credit = self.credit.saturating_add(cost).min(self.credit_max);
        }
    }

    /// Live credit not yet spent (for tests and stats).
    pub fn live_credit(&self) -> u64 {
        self.credit
    }

    /// `None` if `cost` may be spent now, else when it may.
    pub fn ready_at(&mut self, now: Instant, cost: u64) -> Option<Instant> {
        if self.rate == 0 || self.credit >= cost {
            return None;
        }
        self.refill(now);
        let cost = (cost - self.credit).min(self.burst) as f64;
        if self.tokens >= cost {
            return None;
        }
        let wait = (cost - self.tokens) / self.rate as f64;
        // At least 1 ms, so a caller sleeping until then makes progress.
        Some(now + Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
    }

    /// Spends `cost`, live credit first (the tokens may go negative if the
    /// caller did not check).
    pub fn spend(&mut self, now: Instant, cost: u64) {
        if self.rate == 0 {
            return;
        }
        let from_credit = cost.min(self.credit);
        self.credit -= from_credit;
        let rest = cost - from_credit;
        if rest > 0 {
            self.refill(now);
            self.tokens -= rest.min(self.burst) as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(classes: &[Class]) -> PerClass<bool> {
        let mut p = PerClass::default();
        for &c in classes {
            p[c] = true;
        }
        p
    }

    #[test]
    fn lowest_priority_oldest_first_incoming_counts_as_newest() {
        use Class::*;
        use Victim::*;
        // Logs go first, whatever comes in.
        assert_eq!(victim(Event, set(&[Log, Series, Event])), Existing(Log));
        assert_eq!(victim(Log, set(&[Log, Event])), Existing(Log));
        // A new log never displaces anything of higher priority.
        assert_eq!(victim(Log, set(&[Series, State, Event])), Incoming);
        // Same class: the older queued record goes before the new one.
        assert_eq!(victim(Series, set(&[Series, Event])), Existing(Series));
        // A heartbeat displaces nothing but logs.
        assert_eq!(victim(Series, set(&[State, Event])), Incoming);
        assert_eq!(victim(State, set(&[Series, Event])), Existing(Series));
        assert_eq!(victim(Event, set(&[Event])), Existing(Event));
        assert_eq!(victim(Event, set(&[])), Incoming);
    }

    #[test]
    fn drain_order() {
        use Class::*;
        assert_eq!(next_class(set(&[Log, Series, State, Event])), Some(State));
        assert_eq!(next_class(set(&[Log, Series, Event])), Some(Event));
        assert_eq!(next_class(set(&[Log, Series])), Some(Series));
        assert_eq!(next_class(set(&[Log])), Some(Log));
        assert_eq!(next_class(set(&[])), None);
        assert!(!rate_limited(State));
        assert!(rate_limited(Log));
    }

    #[test]
    fn token_bucket_limits_rate_and_allows_big_items() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 5000, 1 << 20);
        // Full bucket: 5000 bytes at once.
        assert_eq!(b.ready_at(t0, 5000), None);
        b.spend(t0, 5000);
        // Then 1000 bytes/s.
        let at = b.ready_at(t0, 500).expect("must wait");
        let wait = at - t0;
        assert!(
            wait >= Duration::from_millis(499) && wait <= Duration::from_millis(501),
            "{wait:?}"
        );
        assert_eq!(b.ready_at(t0 + Duration::from_millis(500), 500), None);
        // A cost above the burst is capped, so it passes once full.
        let mut b = TokenBucket::new(1000, 10, 1 << 20);
        b.spend(t0, 1000);
        assert!(b.ready_at(t0, 1_000_000).is_some());
        assert_eq!(b.ready_at(t0 + Duration::from_secs(1), 1_000_000), None);
        // Unlimited.
        let mut b = TokenBucket::new(0, 10, 1 << 20);
        b.spend(t0, u64::MAX);
        assert_eq!(b.ready_at(t0, u64::MAX), None);
    }

    #[test]
    fn token_bucket_long_run_average() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10_000, 10_000, 1 << 20);
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_secs(10) {
            match b.ready_at(now, 700) {
                None => {
                    b.spend(now, 700);
                    sent += 700;
                }
                Some(at) => now = at,
            }
        }
        // 10 s at 10 kB/s plus the initial burst.
        assert!((100_000..=110_700).contains(&sent), "{sent}");
    }

    /// Live records bring their own allowance: 10x the rate of live
    /// traffic never waits, and a backlog still drains at the rate on top.
    #[test]
    fn live_credit_passes_live_traffic_and_paces_only_the_backlog() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000, 1_000, 1 << 20);
        b.spend(t0, 1_000); // bucket empty: only credit can pass
        let mut now = t0;
        for _ in 0..100 {
            // 10 kB/s of live records, sent as they come.
            b.credit(1_000);
            assert_eq!(b.ready_at(now, 1_000), None, "live record waited");
            b.spend(now, 1_000);
            now += Duration::from_millis(100);
        }
        assert_eq!(b.live_credit(), 0);
        // Credit that arrived while records queued is spent in any order:
        // 3 live records queued behind a backlog all pass, then the
        // backlog waits for the refill.
        let mut b = TokenBucket::new(1_000, 1_000, 1 << 20);
        b.spend(t0, 1_000);
        (0..3).for_each(|_| b.credit(700));
        for _ in 0..3 {
            assert_eq!(b.ready_at(t0, 700), None);
            b.spend(t0, 700);
        }
        let at = b.ready_at(t0, 700).expect("backlog waits");
        assert!(at - t0 >= Duration::from_millis(699), "{:?}", at - t0);
        // A partly credited record waits only for the part not covered.
        b.credit(200);
        let at = b.ready_at(t0, 700).expect("waits for 500 bytes");
        let wait = at - t0;
        assert!(
            wait >= Duration::from_millis(499) && wait <= Duration::from_millis(501),
            "{wait:?}"
        );
        // Credit is bounded by the queue's size.
        let mut b = TokenBucket::new(1_000, 1_000, 5_000);
        (0..100).for_each(|_| b.credit(1_000));
        assert_eq!(b.live_credit(), 5_000);
        // No limit, no credit kept.
        let mut b = TokenBucket::new(0, 10, 5_000);
        b.credit(1_000);
        assert_eq!(b.live_credit(), 0);
    }
}
