//! The vendor corpus: every case in `tests/fixtures/syslog/*.txt` parses
//! as its expectation says (see the README there for the format).

use std::path::{Path, PathBuf};

use serde_json::Value;
use sitewatch_agent::sources::syslog::parse::{parse, ParseCtx};
use sitewatch_agent::sources::syslog::time::{self, Civil};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syslog")
}

/// Undoes the fixture escapes: `\xNN`, `\t`, `\r`, `\n`, `\0`, `\\`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'x' if i + 3 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                    i += 4;
                    continue;
                }
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// RFC 3339 text (`2025-11-27T23:00:41.300Z`, UTC only) to Unix ms.
fn rfc3339_ms(s: &str) -> u64 {
    let d = |r: std::ops::Range<usize>| -> u32 { s[r].parse().expect("number") };
    assert!(
        s.ends_with('Z') && s.len() == 24,
        "write times as 2025-01-02T03:04:05.678Z: {s}"
    );
    let c = Civil {
        year: None,
        month: d(5..7),
        day: d(8..10),
        hour: d(11..13),
        minute: d(14..16),
        second: d(17..19),
        millis: d(20..23),
    };
    time::to_unix_ms(i64::from(d(0..4)), &c, 0).expect("valid time")
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks one case; returns a description of each mismatch.
fn check(line: &[u8], ctx: &ParseCtx, want: &Value) -> Vec<String> {
    let r = parse(line, ctx);
    let mut bad = Vec::new();
    let obj = want.as_object().expect("expect is a JSON object");
    for (k, v) in obj {
        let got: Value = match k.as_str() {
            "format" => r.format.as_str().into(),
            "host" => lossy(r.host).into(),
            "app" => lossy(r.app).into(),
            "msg" => lossy(r.msg).into(),
            "procid" => r.procid.map(lossy).into(),
            "msgid" => r.msgid.map(lossy).into(),
            "sd" => r.sd.map(lossy).into(),
            "facility" => r.facility.into(),
            "severity" => r.severity.into(),
            "ts" => {
                let want_ms = v.as_str().map(rfc3339_ms);
                if r.ts != want_ms {
                    bad.push(format!("ts: got {:?}, want {want_ms:?} ({v})", r.ts));
                }
                continue;
            }
            other => panic!("unknown expectation key {other}"),
        };
        if &got != v {
            bad.push(format!("{k}: got {got}, want {v}"));
        }
    }
    bad
}

#[test]
fn vendor_corpus_parses_as_expected() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "expected one file per vendor: {files:?}");
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read fixture");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let mut ctx = ParseCtx {
            rx_ms: rfc3339_ms("2025-11-27T23:00:41.300Z"),
            tz_offset_secs: 0,
        };
        let mut line: Option<(usize, Vec<u8>)> = None;
        let mut in_file = 0;
        for (no, l) in text.lines().enumerate() {
            let no = no + 1;
            if let Some(v) = l.strip_prefix("tz: ") {
                ctx.tz_offset_secs = time::parse_offset(v).expect("tz");
            } else if let Some(v) = l.strip_prefix("rx: ") {
                ctx.rx_ms = rfc3339_ms(v);
            } else if let Some(v) = l.strip_prefix("line: ") {
                assert!(line.is_none(), "{name}:{no}: line without expect before");
                line = Some((no, unescape(v)));
            } else if let Some(v) = l.strip_prefix("expect: ") {
                let (lno, bytes) = line
                    .take()
                    .unwrap_or_else(|| panic!("{name}:{no}: expect without line"));
                let want: Value = serde_json::from_str(v)
                    .unwrap_or_else(|e| panic!("{name}:{no}: bad JSON: {e}"));
                for m in check(&bytes, &ctx, &want) {
                    failures.push(format!("{name}:{lno}: {m}"));
                }
                cases += 1;
                in_file += 1;
            } else {
                assert!(
                    l.is_empty() || l.starts_with('#'),
                    "{name}:{no}: unknown line {l:?}"
                );
            }
        }
        assert!(line.is_none(), "{name}: last line has no expect");
        assert!(in_file > 0, "{name}: no cases");
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{cases} corpus cases in {} files parsed as expected",
        files.len()
    );
}
