//! Pure parts of the reachability probes: ICMP echo packets (built and
//! parsed over byte slices, bounded), one round's statistics, and the
//! up/down state machine. No sockets here, so the unit tests and the fuzz
//! target drive it directly.
//!
//! Replies are matched on the round's random 64-bit token in the payload
//! (and on the identifier for raw sockets, which see every ICMP packet
//! the host receives): another program's pings, or an earlier round's
//! late replies, are ignored.

use std::time::Duration;

/// ICMP echo request type.
const ECHO_REQUEST: u8 = 8;
/// ICMP echo reply type.
const ECHO_REPLY: u8 = 0;
/// ICMP header (type, code, checksum, identifier, sequence) plus the
/// 8-byte token: every request is this long, and a reply at least.
pub const ECHO_LEN: usize = 16;

/// An echo reply's fields the prober matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// Identifier (a datagram socket's kernel-chosen one, or ours).
    pub id: u16,
    /// Sequence number: the probe's index in the round.
    pub seq: u16,
    /// First 8 payload bytes: the round's token.
    pub token: u64,
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `id`, `seq` and `token`, checksummed (a datagram
/// socket's kernel rewrites the identifier and checksum; a raw socket
/// sends it as is).
pub fn echo_request(id: u16, seq: u16, token: u64) -> [u8; ECHO_LEN] {
    let mut p = [0u8; ECHO_LEN];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&token.to_be_bytes());
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Parses one received packet as an echo reply. `ip_header`: the packet
/// starts with the IPv4 header (raw sockets); datagram ICMP sockets
/// deliver the ICMP message alone. `None` for anything else: other ICMP
/// types, short or malformed packets, a bad checksum (raw sockets only;
/// the kernel checked a datagram socket's).
pub fn parse_reply(pkt: &[u8], ip_header: bool) -> Option<Echo> {
    let icmp = if ip_header {
        let first = *pkt.first()?;
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < 20 || pkt.len() < ihl || pkt.get(9) != Some(&1) {
            return None;
        }
        let icmp = &pkt[ihl..];
        if checksum(icmp) != 0 {
            return None;
        }
        icmp
    } else {
        pkt
    };
    if icmp.len() < ECHO_LEN || icmp[0] != ECHO_REPLY || icmp[1] != 0 {
        return None;
    }
    Some(Echo {
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        token: u64::from_be_bytes([
            icmp[8], icmp[9], icmp[10], icmp[11], icmp[12], icmp[13], icmp[14], icmp[15],
        ]),
    })
}

/// The probe index a reply answers, if it is one of this round's: same
/// token, same identifier when `id` is given (raw sockets), a sequence
/// below `count`.
pub fn answers(e: &Echo, id: Option<u16>, token: u64, count: usize) -> Option<usize> {
    let ours = e.token == token && id.is_none_or(|i| i == e.id);
    let seq = usize::from(e.seq);
    (ours && seq < count).then_some(seq)
}

/// What one probe got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An echo reply, or an accepted TCP connection, after this long.
    Answer(Duration),
    /// TCP only: the connection was refused (a reset) after this long:
    /// the device is there, the port is closed.
    Refused(Duration),
    /// No answer within the timeout (or the network said unreachable).
    Lost,
}

/// One round's figures for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Probes sent.
    pub sent: u32,
    /// Echo replies or accepted connections.
    pub answered: u32,
    /// Refused connections (TCP).
    pub refused: u32,
    /// Fastest answer (answers and refusals), microseconds.
    pub min_us: u32,
    /// Slowest answer, microseconds.
    pub max_us: u32,
    /// Sum of the answers' round trips, microseconds.
    pub sum_us: u64,
    /// Why nothing could be sent (no ICMP socket, name not resolved):
    /// says nothing about the device, so it never changes its state.
    pub error: Option<String>,
}

impl Round {
    /// A round that could not be run.
    pub fn failed(error: String) -> Round {
        Round {
            error: Some(error),
            ..Round::default()
        }
    }

    /// Counts one probe's outcome.
    pub fn add(&mut self, o: Outcome) {
        self.sent += 1;
        let rtt = match o {
            Outcome::Answer(d) => {
                self.answered += 1;
                d
            }
            Outcome::Refused(d) => {
                self.refused += 1;
                d
            }
            Outcome::Lost => return,
        };
        let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        if self.reached() == 1 || us < self.min_us {
            self.min_us = us;
        }
        self.max_us = self.max_us.max(us);
        self.sum_us += u64::from(us);
    }

    /// Probes the device answered in any way.
    pub fn reached(&self) -> u32 {
        self.answered + self.refused
    }

    /// Probes without any answer.
    pub fn lost(&self) -> u32 {
        self.sent - self.reached()
    }

    /// Lost probes in percent, rounded.
    pub fn loss_pct(&self) -> u32 {
        if self.sent == 0 {
            return 0;
        }
        (self.lost() * 100 + self.sent / 2) / self.sent
    }

    /// Mean round trip of the answers, microseconds (0 without one).
    pub fn avg_us(&self) -> u32 {
        match self.reached() {
            0 => 0,
            n => (self.sum_us / u64::from(n)) as u32,
        }
    }

    /// Whether the device is up after this round: anything answered.
    /// `None` when the round could not be run.
    pub fn up(&self) -> Option<bool> {
        match self.error {
            Some(_) => None,
            None => Some(self.reached() > 0),
        }
    }

    /// The round in plain words; `port` for a TCP target.
    pub fn describe(&self, port: Option<u16>) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let lost = format!("{} of {} lost", self.lost(), self.sent);
        if self.reached() == 0 {
            return format!("does not answer ({lost})");
        }
        let rtt = format!(
            "{} (min {}, max {}; {lost})",
            ms(self.avg_us()),
            ms(self.min_us),
            ms(self.max_us)
        );
        match port {
            None => format!("answers ping, {rtt}"),
            Some(p) if self.answered == 0 => {
                format!("port {p} refused: the device answers, nothing listens on the port; {rtt}")
            }
            Some(p) => format!("port {p} accepts connections, {rtt}"),
        }
    }

    /// The event's numbers.
    pub fn numbers(&self) -> Vec<(&'static str, u64)> {
        let mut n = vec![
            ("sent", u64::from(self.sent)),
            ("received", u64::from(self.answered)),
            ("loss_pct", u64::from(self.loss_pct())),
        ];
        if self.refused > 0 {
            n.push(("refused", u64::from(self.refused)));
        }
        if self.reached() > 0 {
            n.push(("rtt_min_us", u64::from(self.min_us)));
            n.push(("rtt_avg_us", u64::from(self.avg_us())));
            n.push(("rtt_max_us", u64::from(self.max_us)));
        }
        n
    }
}

/// Microseconds as milliseconds in words (`0.42 ms`, `51.3 ms`).
pub fn ms(us: u32) -> String {
    let v = f64::from(us) / 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// A change of a target's state worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// `device_down` or `device_up`.
    pub event: &'static str,
    /// `critical` (down) or `info` (up).
    pub severity: &'static str,
    /// Previous state (`None` for the first round after start).
    pub from: Option<&'static str>,
    /// New state, `up` or `down`.
    pub to: &'static str,
}

/// Remembers each target's state (by its index in the config: a reload
/// restarts the source, and with it this); says which rounds are a
/// change. A target is `down` after one whole round without any answer
/// (every one of its `count` probes lost: the round is the confirmation)
/// and `up` again after the first round with one.
#[derive(Debug, Default)]
pub struct Tracker {
    last: Vec<Option<bool>>,
}

fn word(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

impl Tracker {
    /// The event for target `i`'s round, if any. The first round after
    /// start is an event only when down (a restart says nothing about a
    /// device that answers); a round that could not be run is never one.
    pub fn observe(&mut self, i: usize, r: &Round) -> Option<Change> {
        let up = r.up()?;
        if self.last.len() <= i {
            self.last.resize(i + 1, None);
        }
        let from = self.last[i].replace(up);
        match (from, up) {
            (Some(f), _) if f == up => None,
            (None, true) => None,
            (_, true) => Some(Change {
                event: "device_up",
                severity: "info",
                from: from.map(word),
                to: "up",
            }),
            (_, false) => Some(Change {
                event: "device_down",
                severity: "critical",
                from: from.map(word),
                to: "down",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as a datagram socket delivers it: the request with type 0.
    fn reply(id: u16, seq: u16, token: u64) -> Vec<u8> {
        let mut p = echo_request(id, seq, token).to_vec();
        p[0] = ECHO_REPLY;
        p[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
        p
    }

    fn with_ip(icmp: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        p.extend_from_slice(icmp);
        p
    }

    #[test]
    fn request_checksum_verifies() {
        let p = echo_request(0x1234, 2, 0xdead_beef_0bad_f00d);
        assert_eq!(checksum(&p), 0, "a checksummed packet sums to zero");
        assert_eq!((p[0], p[1]), (8, 0));
        // RFC 1071's example.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(checksum(&[0xff]), !0xff00, "odd length pads with zero");
    }

    #[test]
    fn replies_are_matched_others_ignored() {
        let tok = 0x0102_0304_0506_0708;
        let e = parse_reply(&reply(7, 2, tok), false).expect("reply");
        assert_eq!(
            e,
            Echo {
                id: 7,
                seq: 2,
                token: tok
            }
        );
        assert_eq!(answers(&e, None, tok, 3), Some(2));
        assert_eq!(answers(&e, Some(7), tok, 3), Some(2));
        assert_eq!(answers(&e, Some(8), tok, 3), None, "another pinger's id");
        assert_eq!(answers(&e, None, tok + 1, 3), None, "another round");
        assert_eq!(answers(&e, None, tok, 2), None, "sequence out of range");

        let raw = with_ip(&reply(7, 1, tok));
        assert_eq!(parse_reply(&raw, true).map(|e| e.seq), Some(1));
        assert_eq!(parse_reply(&raw, false), None, "an IP header is no ICMP");
        let mut bad = raw.clone();
        bad[30] ^= 1;
        assert_eq!(parse_reply(&bad, true), None, "bad checksum");
        let mut req = with_ip(&echo_request(7, 1, tok));
        assert_eq!(parse_reply(&req, true), None, "a request is no reply");
        req[9] = 6;
        assert_eq!(parse_reply(&req, true), None, "not ICMP");
        for n in 0..raw.len() {
            assert_eq!(parse_reply(&raw[..n], true), None, "short: {n}");
        }
        assert_eq!(
            parse_reply(&[0x4f], true),
            None,
            "header longer than packet"
        );
    }

    #[test]
    fn round_figures_and_words() {
        let mut r = Round::default();
        r.add(Outcome::Answer(Duration::from_micros(400)));
        r.add(Outcome::Lost);
        r.add(Outcome::Answer(Duration::from_micros(600)));
        assert_eq!(
            (
                r.sent,
                r.answered,
                r.loss_pct(),
                r.min_us,
                r.avg_us(),
                r.max_us
            ),
            (3, 2, 33, 400, 500, 600)
        );
        assert_eq!(
            r.describe(None),
            "answers ping, 0.50 ms (min 0.40 ms, max 0.60 ms; 1 of 3 lost)"
        );
        assert_eq!(r.up(), Some(true));
        assert_eq!(
            r.numbers(),
            [
                ("sent", 3),
                ("received", 2),
                ("loss_pct", 33),
                ("rtt_min_us", 400),
                ("rtt_avg_us", 500),
                ("rtt_max_us", 600)
            ]
        );

        let mut lost = Round::default();
        (0..3).for_each(|_| lost.add(Outcome::Lost));
        assert_eq!(lost.describe(None), "does not answer (3 of 3 lost)");
        assert_eq!((lost.loss_pct(), lost.up()), (100, Some(false)));

        let mut refused = Round::default();
        refused.add(Outcome::Refused(Duration::from_micros(51_300)));
        assert!(refused.describe(Some(554)).starts_with("port 554 refused"));
        assert_eq!(refused.up(), Some(true), "the device answered");
        assert!(refused.numbers().contains(&("refused", 1)));

        assert_eq!(Round::failed("no socket".into()).up(), None);
    }

    #[test]
    fn down_after_a_silent_round_up_after_an_answer() {
        let mut ok = Round::default();
        ok.add(Outcome::Answer(Duration::from_millis(1)));
        let mut silent = Round::default();
        silent.add(Outcome::Lost);
        let mut t = Tracker::default();
        assert_eq!(t.observe(0, &ok), None, "start up: quiet");
        assert_eq!(t.observe(0, &ok), None);
        let c = t.observe(0, &silent).expect("down");
        assert_eq!(
            (c.event, c.severity, c.from, c.to),
            ("device_down", "critical", Some("up"), "down")
        );
        assert_eq!(t.observe(0, &silent), None);
        assert_eq!(
            t.observe(0, &Round::failed("x".into())),
            None,
            "no round, no change"
        );
        let c = t.observe(0, &ok).expect("up");
        assert_eq!((c.event, c.from, c.to), ("device_up", Some("down"), "up"));
        assert_eq!(
            t.observe(3, &silent).map(|c| (c.event, c.from)),
            Some(("device_down", None)),
            "start down: told"
        );
    }
}
