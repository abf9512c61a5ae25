//! Any sequence of access units into sitewatch-live's segmenter (the
//! fMP4/HLS writer): it never panics, every segment is a `moof`+`mdat`
//! no larger than what was fed plus per-sample overhead, sequence numbers
//! count up by one, durations are positive and finite, and the frames
//! held stay within `MAX_SAMPLES`. Also the H.265 IRAP scanner on each
//! access unit, and the init segment on arbitrary sample-entry bytes.
//!
//! Input, repeated: a flags byte (bit 0 keyframe, bit 1 "keyframe is
//! whatever the H.265 scanner says", bit 2 change the clock), a signed
//! 32-bit presentation-time step (B-frames go backwards), a length byte,
//! then that many bytes of access unit (length-prefixed NALs or not).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sitewatch_live::fmp4::{init_segment, MAX_SAMPLES};
use sitewatch_live::hls::{is_h265_irap, Segmenter};

fuzz_target!(|data: &[u8]| {
    let mut s = Segmenter::new(90_000);
    let mut pts: i64 = 0;
    let mut fed: usize = 0;
    let mut next_seq = 0u64;
    let mut rest = data;
    while rest.len() >= 6 {
        let flags = rest[0];
        let step = i32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = usize::from(rest[5]).min(rest.len() - 6);
        let au = &rest[6..6 + len];
        rest = &rest[6 + len..];
        if flags & 4 != 0 {
            s.set_clock(u32::from(flags) * 1000);
        }
        pts = pts.saturating_add(i64::from(step));
        let irap = is_h265_irap(au);
        let key = if flags & 2 != 0 { irap } else { flags & 1 != 0 };
        fed += au.len();
        if let Some(seg) = s.push(pts, key, Bytes::copy_from_slice(au)) {
            assert_eq!(seg.seq, next_seq);
            next_seq += 1;
            assert!(seg.duration.is_finite() && seg.duration > 0.0);
            assert_eq!(&seg.data[4..8], b"moof");
            // Boxes and 16 bytes of trun entry per sample on top of the
            // frames themselves.
            assert!(seg.data.len() <= 512 + 16 * MAX_SAMPLES + fed);
            fed = au.len(); // the keyframe that opened the next one
        }
        assert!(s.pending() <= MAX_SAMPLES);
    }
    // The rest as a sample entry: the init segment holds it and a bounded
    // amount around it.
    let init = init_segment(rest, 640, 360, 90_000);
    assert!(init.len() <= 2048 + rest.len());
    assert_eq!(&init[4..8], b"ftyp");
});
