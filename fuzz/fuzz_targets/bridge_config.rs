//! Any text as the bridge's config file: `Config::from_toml` returns a
//! config or its problems, never panics. Inputs naming a `*_file` key (or
//! using `\u` escapes, which could spell one) are skipped: validation
//! reads those files (password files, CA file), and the fuzzer must not
//! read arbitrary paths such as /dev/zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_bridge::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("file") || text.contains("\\u") || text.contains("\\U") {
        return;
    }
    match Config::from_toml(text, |_| None) {
        Ok(c) => {
            let _ = format!("{c:?}");
        }
        Err(p) => assert!(!p.0.is_empty()),
    }
});
