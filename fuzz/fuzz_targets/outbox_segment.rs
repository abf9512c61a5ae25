//! Fuzzes the outbox's segment reader (`sitewatch_agent::uplink::outbox::frame`)
//! with arbitrary file contents: damaged, torn, zero-filled or hostile
//! segments must never panic, loop or over-allocate, and must read the
//! same whether a file is read whole or piecewise (as the run-time reader
//! does).
//!
//!   cargo +nightly fuzz run outbox_segment -- -max_total_time=120

#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::uplink::outbox::frame::{self, Frame, Step};

fuzz_target!(|data: &[u8]| {
    let whole = frame::scan(data);
    // Every byte is in exactly one frame or skipped region.
    assert!(whole.covers(data.len()), "{whole:?}");

    // Piecewise reading (chunk size from the input) finds the same.
    let chunk = 1 + usize::from(data.first().copied().unwrap_or(0)) * 61;
    assert_eq!(frame::scan_chunked(data, chunk), whole);

    // Every accepted record is canonical: it re-encodes to its own bytes.
    for &(off, id, len) in &whole.records {
        let bytes = &data[off..off + len];
        let Step::Frame {
            frame: Frame::Record(r),
            len: n,
        } = frame::step(bytes, true)
        else {
            panic!("record at {off} does not decode alone");
        };
        assert_eq!((n, r.id), (len, id));
        let rec = r.to_record().expect("decoded records respect the limits");
        let mut out = Vec::new();
        frame::encode_record(&mut out, id, &rec);
        assert_eq!(out, bytes);
    }
    // Resolved frames decode to well-formed ranges.
    for &(off, len) in &whole.resolved {
        let Step::Frame {
            frame: Frame::Resolved(r),
            ..
        } = frame::step(&data[off..off + len], true)
        else {
            panic!("resolved frame at {off} does not decode alone");
        };
        assert!(r.ranges().all(|(s, e)| s < e));
    }
});
