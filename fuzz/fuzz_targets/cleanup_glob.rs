//! Cleanup patterns and settings: the first line is a glob pattern, the
//! rest a root-relative path. Compiling never panics, matching never
//! panics and stays polynomial (libFuzzer's timeout catches blow-ups), a
//! name-only pattern judges only the last component, and the same text
//! as a `[cleanup]` table or a `min_age` parses or is refused in words.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::cleanup::config::{parse_age, parse_table};
use sitewatch_agent::cleanup::glob::Glob;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(g) = Glob::new(pattern) {
        assert_eq!(g.to_string(), pattern);
        let hit = g.matches(path);
        if !pattern.contains('/') {
            let name = path.rsplit('/').next().unwrap_or("");
            assert_eq!(hit, g.matches(name), "name-only pattern saw folders");
        }
        if pattern == "**" {
            assert!(hit);
        }
    }
    if let Ok(d) = parse_age(pattern) {
        assert!(d.as_secs() <= 10 * 366 * 86_400);
    }
    match parse_table(text) {
        Ok(c) => {
            let _ = c.summary();
            for r in &c.roots {
                // No `.` or `..` component (a name such as "a..b" is fine:
                // the fuzzer's finding at 8.5 M executions was this oracle
                // using contains("..")).
                assert!(r.path.starts_with('/') && r.path != "/");
                assert!(
                    !r.path.split('/').any(|c| c == "." || c == ".."),
                    "{}",
                    r.path
                );
                assert!(r.low_watermark_pct < r.high_watermark_pct);
            }
        }
        Err(p) => assert!(!p.is_empty()),
    }
});
