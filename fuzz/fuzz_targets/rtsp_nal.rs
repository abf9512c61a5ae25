//! Any bytes as a length-prefixed H.26x frame: the NAL scanner never
//! panics, returns at most its bound of headers, and `h265_has_irap`
//! agrees with the headers it found.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::rtsp::measure::{
    h265_has_irap, h265_nal_type, nal_headers, MAX_NALS_PER_FRAME,
};

fuzz_target!(|data: &[u8]| {
    match nal_headers(data) {
        Ok(h) => {
            assert!(h.len() <= MAX_NALS_PER_FRAME);
            // Each NAL costs at least 5 bytes (prefix + header).
            assert!(h.len() * 5 <= data.len());
            let irap = h.iter().any(|b| (16..=23).contains(&h265_nal_type(*b)));
            assert_eq!(h265_has_irap(data), Ok(irap));
        }
        Err(e) => assert_eq!(h265_has_irap(data), Err(e)),
    }
});
