//! Any byte stream on a syslog TCP connection, cut into reads of any
//! sizes: the framer never panics, never returns more than `max_line`
//! bytes per frame or more bytes than it was given, and finds the same
//! frames however the stream is cut into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::syslog::framing::Framer;

/// Feeds `stream` in reads of the sizes `cuts` gives (cycled), returns
/// the frames.
fn frames(max_line: usize, stream: &[u8], cuts: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let mut f = Framer::new(max_line);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let want = cuts
            .get(i % cuts.len().max(1))
            .map_or(rest.len(), |&c| usize::from(c) + 1);
        i += 1;
        let n = f.push(&rest[..want.min(rest.len())]);
        assert!(n > 0, "the framer must always make room");
        rest = &rest[n..];
        while let Some(fr) = f.next_frame() {
            assert!(fr.data.len() <= max_line);
            out.push((fr.data.to_vec(), fr.truncated));
        }
    }
    if let Some(fr) = f.finish() {
        assert!(fr.data.len() <= max_line + 11);
        out.push((fr.data.to_vec(), fr.truncated));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_line = usize::from(data[0] % 64) + 1;
    let ncuts = usize::from(data[1] % 8);
    let (cuts, stream) = data[2..].split_at(ncuts.min(data.len() - 2));
    let whole = frames(max_line, stream, &[]);
    let chunked = frames(max_line, stream, cuts);
    let total: usize = whole.iter().map(|(d, _)| d.len()).sum();
    assert!(total <= stream.len());
    assert_eq!(whole, chunked, "framing must not depend on read sizes");
});
