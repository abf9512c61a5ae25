//! Any bytes as ATA IDENTIFY, SMART READ DATA and READ THRESHOLDS sectors
//! (`sitewatch_agent::smart::ata`): the parsers never panic, a sector
//! with a wrong checksum is always rejected, accepted tables hold at most
//! 30 unique non-zero ids, and the rules judge whatever was accepted
//! (with the input's own previous values) without panicking.
//!
//!   cargo +nightly fuzz run smart_ata -- -max_total_time=60

#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::smart::ata::{self, AtaHealth};
use sitewatch_agent::smart::config::Limits;
use sitewatch_agent::smart::state::Previous;
use sitewatch_agent::smart::{judge, Level, Reading};

/// Sector `i` of the input (zero-padded), with the checksum fixed when
/// `seal` so the fuzzer reaches the attribute parsing.
fn sector(data: &[u8], i: usize, seal: bool) -> [u8; 512] {
    let mut s = [0u8; 512];
    if let Some(src) = data.get(i * 512..) {
        let n = src.len().min(512);
        s[..n].copy_from_slice(&src[..n]);
    }
    if seal {
        s[511] = 0;
        let sum = s.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        s[511] = 0u8.wrapping_sub(sum);
    }
    s
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let id = sector(data, 0, sel & 1 != 0);
    let raw_data = sector(data, 1, false);
    let data_s = sector(data, 1, sel & 2 != 0);
    let th_s = sector(data, 2, sel & 4 != 0);

    let identity = ata::parse_identify(&id);
    if let Ok(i) = &identity {
        for f in [&i.model, &i.serial, &i.firmware] {
            assert!(f.len() <= 40 && f.bytes().all(|b| (0x20..0x7f).contains(&b)));
        }
    }
    let sum = raw_data.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    if sum != 0 {
        assert!(
            ata::parse_smart_data(&raw_data).is_err(),
            "bad checksum accepted"
        );
    }
    let Ok(mut attrs) = ata::parse_smart_data(&data_s) else {
        return;
    };
    assert!(attrs.len() <= ata::ATTRIBUTE_SLOTS);
    for (i, a) in attrs.iter().enumerate() {
        assert!(a.id != 0 && attrs[..i].iter().all(|b| b.id != a.id));
        assert!(a.raw_u48() < 1 << 48);
        let _ = (a.raw_value(), a.state(), a.name(), a.prefail());
    }
    if let Ok(th) = ata::parse_thresholds(&th_s) {
        assert!(th.len() <= ata::ATTRIBUTE_SLOTS);
        ata::merge_thresholds(&mut attrs, &th);
    }
    let health =
        [AtaHealth::Passed, AtaHealth::Failing, AtaHealth::Unknown][usize::from(sel >> 3) % 3];
    let reading = Reading::Ata {
        identity: identity.unwrap_or_else(|_| ata::AtaIdentity {
            model: "ST4000VX016-3CV104".into(),
            serial: "x".into(),
            firmware: String::new(),
            capacity_bytes: None,
            smart_supported: true,
            smart_enabled: true,
        }),
        attributes: attrs,
        health,
        passthrough: 16,
    };
    // Previous values from the thresholds sector's bytes.
    let mut prev = Previous::default();
    for (k, c) in th_s.chunks_exact(8).take(6).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        prev.raw.insert(
            sitewatch_agent::smart::state::TRACKED_ATTRIBUTES[k],
            u64::from_le_bytes(b),
        );
    }
    let limits = Limits {
        temperature_warning_c: data.first().copied().unwrap_or(50).max(1),
        temperature_critical_c: data.get(1).copied().unwrap_or(60),
    };
    for p in [None, Some(&prev)] {
        let v = judge(&reading, p, &limits);
        let worst = v.reasons.iter().map(|r| r.level).max().unwrap_or(Level::Ok);
        assert_eq!(v.level, worst);
        assert!(v
            .reasons
            .iter()
            .all(|r| !r.code.is_empty() && !r.detail.is_empty()));
    }
});
