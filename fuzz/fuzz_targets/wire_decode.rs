//! Any bytes on any sitewatch topic: decode must return Ok or a DecodeError
//! with a known reason, never panic. The first byte picks the topic so the
//! fuzzer reaches every kind's payload decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_wire::{decode, DecodeError};

const TOPICS: [&str; 12] = [
    "sitewatch/v1/lokasi1/status",
    "sitewatch/v1/lokasi1/heartbeat",
    "sitewatch/v1/lokasi1/disk",
    "sitewatch/v1/lokasi1/log",
    "sitewatch/v1/lokasi1/stream/cam-1",
    "sitewatch/v1/lokasi1/smart/sda",
    "sitewatch/v1/lokasi1/event",
    "sitewatch/v1/lokasi1/ups",
    "sitewatch/v1/lokasi1/reach",
    "sitewatch/v1/Lokasi1/disk",
    "sitewatch/v1/lokasi1/bogus",
    "sitewatch/v1/lokasi2/heartbeat",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let topic = TOPICS[usize::from(sel) % TOPICS.len()];
    match decode(topic, payload) {
        Ok(m) => {
            // An accepted message always matches its topic's site.
            assert_eq!(m.identity().0, "lokasi1");
        }
        Err(e) => assert!(DecodeError::REASONS.contains(&e.reason())),
    }
});
