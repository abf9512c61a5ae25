//! Any bytes as `smartctl --json -a` output
//! (`sitewatch_agent::smart::smartctl`): the bounded JSON reader and the
//! mapping to a reading never panic, never nest deeper than allowed, and
//! the rules judge whatever was accepted. Also feeds the bytes to the
//! SMART state file parser (`sitewatch_agent::smart::state`), whose
//! accepted output must render and parse back to itself.
//!
//!   cargo +nightly fuzz run smart_smartctl -- -max_total_time=60

#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::smart::config::Limits;
use sitewatch_agent::smart::smartctl::{parse_json, parse_smartctl_json};
use sitewatch_agent::smart::state::State;
use sitewatch_agent::smart::{judge, Reading};

fuzz_target!(|data: &[u8]| {
    let _ = parse_json(data);
    if let Ok(r) = parse_smartctl_json(data) {
        if let Reading::Ata { attributes, .. } = &r {
            assert!(attributes.len() <= 30);
        }
        let _ = judge(&r, None, &Limits::default());
    }
    if let Ok(s) = State::parse(data) {
        let text = s.render();
        assert_eq!(State::parse(text.as_bytes()).ok(), Some(s));
    }
});
