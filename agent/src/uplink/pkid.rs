//! Maps rumqttc packet ids back to the messages the agent handed over, so a
//! PUBACK acknowledges exactly the record it belongs to.
//!
//! rumqttc 0.25 returns no packet id from `publish`/`try_publish` (roadmap
//! #942). It assigns one when its event loop takes the request, and then
//! emits `Event::Outgoing(Outgoing::Publish(pkid))`. Requests are taken in
//! a fixed order: first `EventLoop::pending` front to back (where the
//! uplink puts its birth with `push_front`, and where rumqttc itself moves
//! unacknowledged publishes and the drained request channel when a
//! connection fails), then the request channel in send order. So the n-th
//! `Outgoing::Publish` carrying a *new* packet id belongs to the n-th
//! message handed over, counting messages pushed to the front of `pending`
//! first. [`PkidTracker`] keeps that queue and the pkid → message map.
//!
//! Exceptions, all handled here and tested against rumqttc's own
//! `MqttState`:
//!
//! * Retransmission: a publish rumqttc still holds (session resumed with
//!   `session_present = 1`) goes out again with its old pkid: that pkid is
//!   still mapped, so it is recognised and consumes nothing.
//! * Packet-id collision (broker acked out of order and the next pkid is
//!   still in flight): rumqttc parks the publish and emits
//!   `Outgoing::AwaitAck(pkid)` instead; when that pkid's PUBACK arrives it
//!   sends the parked publish and emits `Outgoing::Publish(pkid)`. The
//!   tracker parks the message too. rumqttc keeps only one parked publish:
//!   a second collision overwrites the first, which is then lost, and
//!   [`PkidTracker::on_await_ack`] returns it so the caller can requeue it.
//! * Connection lost: rumqttc moves what it holds into `pending`
//!   (unacknowledged publishes, then everything queued in its request
//!   channel). Right after `poll()` returns the error, the uplink calls
//!   [`PkidTracker::connection_lost`] with the number of publishes with
//!   pkid 0 now in `pending`: those are the first messages still
//!   awaiting; anything handed over later is still in the channel and
//!   survives. On the next CONNACK, [`PkidTracker::connected`] returns,
//!   if the session is clean (`session_present = 0`, rumqttc then clears
//!   `pending`), exactly the messages rumqttc discarded, to requeue one by
//!   one. The uplink should not hand anything over while disconnected,
//!   and must set `EventLoop::state.collision = None` on a clean CONNACK:
//!   rumqttc's `clean()` keeps a parked publish (rumqttc #1056), which
//!   would otherwise block its request channel on the new session for
//!   ever.
//!
//! Pure and synchronous; must not touch rumqttc's event loop itself.

use std::collections::{HashMap, VecDeque};

/// What an `Outgoing::Publish(pkid)` event meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing<T> {
    /// First transmission of this handed-over message.
    First(T),
    /// A retransmission of a message already mapped to this pkid.
    Retransmit(T),
    /// Nothing was waiting: a publish not handed over through the tracker.
    Unexpected,
}

/// Follows rumqttc's packet ids for messages of type `T` (the outbox's
/// [`Id`](super::outbox::Id), or anything `Copy`).
///
/// Bounded: it holds at most the messages handed over and not yet
/// acknowledged, which the outbox's in-flight window limits.
#[derive(Debug, Clone)]
pub struct PkidTracker<T> {
    /// Handed over, waiting for their `Outgoing::Publish`, in the order
    /// rumqttc will take them.
    awaiting: VecDeque<T>,
    /// Sent and not acknowledged, by packet id.
    by_pkid: HashMap<u16, T>,
    /// The publish rumqttc parked after a packet-id collision.
    parked: Option<(u16, T)>,
    /// After a connection error: how many of the first `awaiting` messages
    /// rumqttc moved to `pending` (lost if the next session is clean).
    in_pending: Option<usize>,
}

impl<T> Default for PkidTracker<T> {
    fn default() -> Self {
        PkidTracker {
            awaiting: VecDeque::new(),
            by_pkid: HashMap::new(),
            parked: None,
            in_pending: None,
        }
    }
}

impl<T: Copy> PkidTracker<T> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after `AsyncClient::try_publish` (or `publish`) succeeded.
    pub fn handed_over(&mut self, msg: T) {
        self.awaiting.push_back(msg);
    }

    /// Call after `EventLoop::pending.push_front(Request::Publish(..))`
    /// with a publish whose pkid is 0 (the uplink's birth or shutdown
    /// status).
    pub fn handed_over_front(&mut self, msg: T) {
        self.awaiting.push_front(msg);
    }

    /// Call on `Event::Outgoing(Outgoing::Publish(pkid))`.
    pub fn on_outgoing_publish(&mut self, pkid: u16) -> Outgoing<T> {
        if let Some(&msg) = self.by_pkid.get(&pkid) {
            return Outgoing::Retransmit(msg);
        }
        let msg = match self.parked {
            Some((p, msg)) if p == pkid => {
                self.parked = None;
                msg
            }
            _ => match self.awaiting.pop_front() {
                Some(msg) => msg,
                None => return Outgoing::Unexpected,
            },
        };
        self.by_pkid.insert(pkid, msg);
        Outgoing::First(msg)
    }

    /// Call on `Event::Outgoing(Outgoing::AwaitAck(pkid))`. Returns a
    /// message rumqttc lost by overwriting an earlier parked publish
    /// (requeue it), if any.
    pub fn on_await_ack(&mut self, pkid: u16) -> Option<T> {
        let msg = self.awaiting.pop_front()?;
        self.parked.replace((pkid, msg)).map(|(_, lost)| lost)
    }

    /// Call on `Event::Incoming(Packet::PubAck(ack))`: the message that
    /// packet id carried, now delivered.
    pub fn on_puback(&mut self, pkid: u16) -> Option<T> {
        self.by_pkid.remove(&pkid)
    }

    /// Call right after `EventLoop::poll` returned a connection error, with
    /// the number of `Request::Publish` with pkid 0 in `EventLoop::pending`
    /// at that moment. Calling it again before the next CONNACK (failed
    /// reconnects) just updates the number.
    pub fn connection_lost(&mut self, pkid0_publishes_in_pending: usize) {
        self.in_pending = Some(pkid0_publishes_in_pending.min(self.awaiting.len()));
    }

    /// Call on every CONNACK. After a lost connection with a clean new
    /// session, returns the messages rumqttc discarded (requeue each);
    /// otherwise (first connection, or session resumed: rumqttc resends
    /// them itself) returns nothing.
    pub fn connected(&mut self, session_present: bool) -> Vec<T> {
        let Some(k) = self.in_pending.take() else {
            return Vec::new();
        };
        if session_present {
            return Vec::new();
        }
        let mut lost: Vec<T> = self.awaiting.drain(..k).collect();
        lost.extend(self.by_pkid.drain().map(|(_, m)| m));
        lost.extend(self.parked.take().map(|(_, m)| m));
        lost
    }

    /// Forgets everything and returns every message outstanding, for when
    /// the event loop itself is replaced (a new `AsyncClient` channel):
    /// then nothing handed over will ever be sent.
    pub fn reset(&mut self) -> Vec<T> {
        self.in_pending = None;
        let mut all: Vec<T> = self.awaiting.drain(..).collect();
        all.extend(self.by_pkid.drain().map(|(_, m)| m));
        all.extend(self.parked.take().map(|(_, m)| m));
        all
    }

    /// Messages handed over and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.awaiting.len() + self.by_pkid.len() + usize::from(self.parked.is_some())
    }

    /// Whether nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    //! Drives rumqttc's real `MqttState` the way its `EventLoop::select`
    //! does (pending first, then the channel; the channel only while not
    //! `inflight_full` and not in collision), feeds the events it emits to
    //! the tracker, and checks every PUBACK against what was on the wire.

    use super::*;
    use rumqttc::{Event, Incoming, MqttState, Packet, PubAck, Publish, QoS, Request};
    use std::collections::BTreeSet;

    const INFLIGHT: u16 = 16;

    struct Sim {
        state: MqttState,
        pending: VecDeque<Request>,
        channel: VecDeque<Request>,
        /// pkid → message id of the PUBLISH last written with that pkid.
        wire: HashMap<u16, u64>,
        tracker: PkidTracker<u64>,
        /// Handed over and not acknowledged (ground truth).
        outstanding: BTreeSet<u64>,
        delivered: Vec<u64>,
        lost_by_rumqttc: Vec<u64>,
        /// PUBACKs sent by the broker, with what they acknowledge.
        acking: VecDeque<(u16, u64)>,
    }

    fn publish(id: u64) -> Publish {
        Publish::new("t", QoS::AtLeastOnce, id.to_le_bytes().to_vec())
    }

    fn id_of(p: &Publish) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&p.payload[..8]);
        u64::from_le_bytes(a)
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                state: MqttState::new(INFLIGHT, false),
                pending: VecDeque::new(),
                channel: VecDeque::new(),
                wire: HashMap::new(),
                tracker: PkidTracker::new(),
                outstanding: BTreeSet::new(),
                delivered: Vec::new(),
                lost_by_rumqttc: Vec::new(),
                acking: VecDeque::new(),
            }
        }

        fn send(&mut self, id: u64) {
            self.channel.push_back(Request::Publish(publish(id)));
            self.tracker.handed_over(id);
            self.outstanding.insert(id);
        }

        fn send_front(&mut self, id: u64) {
            self.pending.push_front(Request::Publish(publish(id)));
            self.tracker.handed_over_front(id);
            self.outstanding.insert(id);
        }

        fn on_packet(&mut self, packet: Option<Packet>) {
            if let Some(Packet::Publish(p)) = packet {
                self.wire.insert(p.pkid, id_of(&p));
            }
        }

        /// One request, as `EventLoop::select` would take it.
        fn step_out(&mut self) -> bool {
            let can_channel = self.state.inflight() < INFLIGHT && self.state.collision.is_none();
            let req = if let Some(r) = self.pending.pop_front() {
                r
            } else if can_channel {
                match self.channel.pop_front() {
                    Some(r) => r,
                    None => return false,
                }
            } else {
                return false;
            };
            let packet = self.state.handle_outgoing_packet(req).expect("outgoing");
            self.on_packet(packet);
            self.drain_events();
            true
        }

        fn ack(&mut self, pkid: u16) {
            let truth = self.wire.remove(&pkid).expect("acked pkid on wire");
            self.acking.push_back((pkid, truth));
            let packet = self
                .state
                .handle_incoming_packet(Incoming::PubAck(PubAck::new(pkid)))
                .expect("incoming puback");
            self.on_packet(packet);
            self.drain_events();
        }

        fn drain_events(&mut self) {
            while let Some(ev) = self.state.events.pop_front() {
                match ev {
                    Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                        match self.tracker.on_outgoing_publish(pkid) {
                            Outgoing::First(id) | Outgoing::Retransmit(id) => {
                                assert_eq!(self.wire.get(&pkid), Some(&id), "pkid {pkid}");
                            }
                            Outgoing::Unexpected => panic!("unexpected publish {pkid}"),
                        }
                    }
                    Event::Outgoing(rumqttc::Outgoing::AwaitAck(pkid)) => {
                        if let Some(lost) = self.tracker.on_await_ack(pkid) {
                            self.lost_by_rumqttc.push(lost);
                            self.outstanding.remove(&lost);
                        }
                    }
                    Event::Incoming(Packet::PubAck(ack)) => {
                        let (pkid, truth) = self.acking.pop_front().expect("an ack was sent");
                        assert_eq!(pkid, ack.pkid);
                        let got = self.tracker.on_puback(ack.pkid);
                        assert_eq!(
                            got,
                            Some(truth),
                            "PUBACK {} maps to the wrong message",
                            ack.pkid
                        );
                        assert!(self.outstanding.remove(&truth));
                        self.delivered.push(truth);
                    }
                    _ => {}
                }
            }
        }

        /// Connection lost; `stale` messages are handed over right after
        /// rumqttc drained its channel (a race the uplink may lose on a
        /// multi-thread runtime); `session_present` on the next CONNACK.
        /// Returns what the tracker says was lost, sorted.
        fn reconnect(&mut self, session_present: bool, stale: &[u64]) -> Vec<u64> {
            let mut moved = self.state.clean();
            moved.extend(self.channel.drain(..));
            self.pending.extend(moved);
            let k = self
                .pending
                .iter()
                .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
                .count();
            self.tracker.connection_lost(k);
            for &id in stale {
                self.send(id);
            }
            self.wire.retain(|_, _| session_present);
            if !session_present {
                self.pending.clear();
                // What the uplink must do too: rumqttc's clean() keeps a
                // parked publish (rumqttc #1056), which would block the
                // request channel for ever on a clean session.
                self.state.collision = None;
            }
            let mut lost = self.tracker.connected(session_present);
            lost.sort_unstable();
            for id in &lost {
                self.outstanding.remove(id);
            }
            lost
        }
    }

    #[test]
    fn in_order_acks_map_exactly() {
        let mut s = Sim::new();
        for id in 1..=100 {
            s.send(id);
        }
        while s.step_out() || !s.wire.is_empty() {
            let mut pkids: Vec<u16> = s.wire.keys().copied().collect();
            pkids.sort_unstable();
            if let Some(&p) = pkids.first() {
                s.ack(p);
            }
        }
        assert_eq!(s.delivered, (1..=100).collect::<Vec<_>>());
        assert!(s.tracker.is_empty());
    }

    #[test]
    fn first_connack_loses_nothing() {
        let mut t: PkidTracker<u64> = PkidTracker::new();
        t.handed_over(1);
        assert!(t.connected(false).is_empty());
        assert_eq!(t.len(), 1);
        assert_eq!(t.reset(), vec![1]);
        assert!(t.is_empty());
    }

    #[test]
    fn front_insertions_are_taken_first() {
        let mut s = Sim::new();
        s.send(1);
        s.send(2);
        s.send_front(1000); // the uplink's birth
        while s.step_out() {}
        let mut pkids: Vec<u16> = s.wire.keys().copied().collect();
        pkids.sort_unstable();
        for p in pkids {
            s.ack(p);
        }
        assert_eq!(s.delivered, vec![1000, 1, 2]);
    }

    #[test]
    fn out_of_order_acks_and_collisions_map_exactly() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut s = Sim::new();
            let mut next = 1u64;
            for _ in 0..400 {
                match rng.u8(0..10) {
                    0..=3 => {
                        s.send(next);
                        next += 1;
                    }
                    4 => {
                        s.send_front(next);
                        next += 1;
                    }
                    5..=7 => {
                        s.step_out();
                    }
                    _ => {
                        // The broker acks any packet on the wire.
                        let pkids: Vec<u16> = s.wire.keys().copied().collect();
                        if !pkids.is_empty() {
                            let p = pkids[rng.usize(..pkids.len())];
                            s.ack(p);
                        }
                    }
                }
            }
            // Drain everything in order.
            loop {
                let moved = s.step_out();
                let mut pkids: Vec<u16> = s.wire.keys().copied().collect();
                pkids.sort_unstable();
                if let Some(&p) = pkids.first() {
                    s.ack(p);
                } else if !moved {
                    break;
                }
            }
            let mut all: Vec<u64> = s.delivered.clone();
            all.extend(&s.lost_by_rumqttc);
            all.sort_unstable();
            all.dedup();
            assert_eq!(
                all.len() as u64,
                next - 1,
                "seed {seed}: every message accounted for"
            );
            assert!(s.outstanding.is_empty(), "seed {seed}: {:?}", s.outstanding);
        }
    }

    #[test]
    fn clean_reconnect_returns_everything_unacked() {
        for seed in 0..100 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut s = Sim::new();
            for id in 1..=40 {
                s.send(id);
                if rng.bool() {
                    s.step_out();
                }
                if rng.u8(0..4) == 0 {
                    let pkids: Vec<u16> = s.wire.keys().copied().collect();
                    if let Some(&p) = pkids.first() {
                        s.ack(p);
                    }
                }
            }
            let expected: Vec<u64> = s.outstanding.iter().copied().collect();
            // Two messages slip into the channel after rumqttc drained it:
            // they are not lost, and are delivered on the new connection.
            let lost = s.reconnect(false, &[700, 701]);
            assert_eq!(lost, expected, "seed {seed}");
            assert_eq!(s.tracker.len(), 2, "seed {seed}");
            // The next connection starts from scratch and maps correctly.
            s.send_front(500);
            for id in 1000..1010 {
                s.send(id);
            }
            while s.step_out() {}
            let mut pkids: Vec<u16> = s.wire.keys().copied().collect();
            pkids.sort_unstable();
            for p in pkids {
                s.ack(p);
            }
            assert!(s.outstanding.is_empty(), "seed {seed}");
        }
    }

    #[test]
    fn resumed_session_retransmits_are_recognised() {
        let mut s = Sim::new();
        for id in 1..=10 {
            s.send(id);
        }
        for _ in 0..6 {
            s.step_out();
        }
        // Four still in the channel, six on the wire; ack two.
        s.ack(1);
        s.ack(2);
        assert!(s.reconnect(true, &[50]).is_empty());
        s.send_front(99); // birth of the resumed connection
        while s.step_out() {}
        let mut pkids: Vec<u16> = s.wire.keys().copied().collect();
        pkids.sort_unstable();
        for p in pkids {
            s.ack(p);
        }
        let mut d = s.delivered.clone();
        d.sort_unstable();
        assert_eq!(d, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 99]);
        assert!(s.tracker.is_empty());
    }
}
