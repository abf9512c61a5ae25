//! Any text as the agent's config file: `Config::parse` returns a config
//! or a list of problems, never panics. Inputs naming a `*_file` key (or
//! using `\u` escapes, which could spell one) are skipped: validation
//! reads those files, and the fuzzer must not read arbitrary paths such
//! as /dev/zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("file") || text.contains("\\u") || text.contains("\\U") {
        return;
    }
    match Config::parse(text, "fuzz.toml", |_| None) {
        Ok(c) => {
            let _ = c.summary();
        }
        Err(p) => assert!(!p.to_string().is_empty()),
    }
});
