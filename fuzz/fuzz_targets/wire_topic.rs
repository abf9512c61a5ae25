//! Topic parsing on arbitrary strings: never panics, and every accepted topic
//! renders back to the same string within the fixed buffer size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_wire::topic::Topic;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Topic::parse(s) {
        assert_eq!(t.to_heapless().as_str(), s);
    }
});
