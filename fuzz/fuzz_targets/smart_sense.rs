//! Any bytes as SCSI sense data returned by SG_IO: `sense::decode` never
//! panics, keeps the sense key in its 4 bits, returns ATA registers only
//! for the formats that carry them, and the I/O layer's judgement of a
//! command (`Outcome::ok`, `describe`) never panics on it either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::smart::io::sense;
use sitewatch_agent::smart::io::sg::Outcome;

fuzz_target!(|data: &[u8]| {
    let Some((&status, buf)) = data.split_first() else {
        return;
    };
    match sense::decode(buf) {
        Ok(s) => {
            assert!(s.key <= 0x0f);
            assert!((0x70..=0x73).contains(&s.response_code));
            if let Some(a) = s.ata {
                match s.response_code {
                    // Fixed format: only with ATA PASS-THROUGH INFORMATION
                    // AVAILABLE, and the registers are input bytes.
                    0x70 | 0x71 => {
                        assert_eq!((s.asc, s.ascq), (0x00, 0x1d));
                        assert_eq!(a.status, buf[4]);
                        assert_eq!(a.lba_high, buf[11]);
                    }
                    // Descriptor format: a complete 0x09 descriptor exists.
                    _ => assert!(buf.len() >= 8 + 14),
                }
            }
            let _ = s.to_string();
            let _ = s.is_illegal_request() || s.ata_aborted();
            if let Some(a) = s.ata {
                let _ = sense::is_standby(a.count);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let o = Outcome {
        status,
        host_status: u16::from(status & 0x3),
        driver_status: u16::from(status & 0x0c),
        transferred: 0,
        sense: buf.to_vec(),
    };
    let _ = o.ok();
    let _ = o.describe();
});
