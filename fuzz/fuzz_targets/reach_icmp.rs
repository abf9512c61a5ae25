//! Any bytes as a packet read from an ICMP socket (raw: IPv4 header
//! first; datagram: the ICMP message alone): `parse_reply` never panics,
//! matches only this round's replies, and what it accepts round-trips
//! through the request builder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::sources::reach::proto::{self, ECHO_LEN};

fuzz_target!(|data: &[u8]| {
    for raw in [false, true] {
        let Some(e) = proto::parse_reply(data, raw) else {
            continue;
        };
        assert!(data.len() >= ECHO_LEN);
        if let Some(seq) = proto::answers(&e, Some(e.id), e.token, 10) {
            assert_eq!(seq, usize::from(e.seq));
            assert!(seq < 10);
        }
        assert_eq!(proto::answers(&e, None, e.token.wrapping_add(1), 10), None);
        // The request for the same fields, turned into a reply, parses back.
        let mut reply = proto::echo_request(e.id, e.seq, e.token);
        reply[0] = 0;
        reply[2..4].copy_from_slice(&[0, 0]);
        let sum = proto::checksum(&reply);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(proto::parse_reply(&reply, false), Some(e));
    }
});
