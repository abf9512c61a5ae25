//! Any bytes as NVMe Identify Controller data and SMART / Health log
//! (`sitewatch_agent::smart::nvme`), and as SCSI INQUIRY and LOG SENSE
//! pages (`sitewatch_agent::smart::scsi`): never panic, identity strings
//! stay printable and bounded, and the rules judge whatever was accepted.
//!
//!   cargo +nightly fuzz run smart_nvme -- -max_total_time=60

#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::smart::config::Limits;
use sitewatch_agent::smart::state::Previous;
use sitewatch_agent::smart::{judge, nvme, scsi, Level, Reading};

fn printable(s: &str, max: usize) {
    assert!(s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b)));
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let limits = Limits::default();

    // NVMe: the same bytes as identify and (from offset sel) as the log.
    let log_at = usize::from(sel) % (data.len() + 1);
    let id = nvme::parse_identify_controller(data);
    let health = nvme::parse_health_log(&data[log_at..]);
    if let Ok(i) = &id {
        printable(&i.model, 40);
        printable(&i.serial, 20);
        printable(&i.firmware, 8);
    }
    if let (Ok(identity), Ok(health)) = (id, health) {
        let names = nvme::critical_warning_names(health.critical_warning);
        assert_eq!(names.len(), health.critical_warning.count_ones() as usize);
        let prev = Previous {
            media_errors: Some(health.media_errors / 2),
            error_log_entries: Some(health.error_log_entries / 2),
            ..Previous::default()
        };
        let r = Reading::Nvme { identity, health };
        for p in [None, Some(&prev)] {
            let v = judge(&r, p, &limits);
            let worst = v.reasons.iter().map(|r| r.level).max().unwrap_or(Level::Ok);
            assert_eq!(v.level, worst);
        }
    }

    // SCSI.
    let inq = scsi::parse_inquiry(data);
    if let Ok(i) = &inq {
        printable(&i.vendor, 8);
        printable(&i.product, 16);
        printable(&i.revision, 4);
        assert!(i.peripheral_type < 32);
    }
    let ie = scsi::parse_ie_page(data).ok();
    let temp = scsi::parse_temperature_page(data).unwrap_or(None);
    if let Ok(identity) = inq {
        let r = Reading::Scsi {
            identity,
            ie,
            temperature_c: temp,
        };
        let _ = judge(&r, None, &limits);
    }
});
