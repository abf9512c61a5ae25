//! What every reporting source's forwarder shares: the `event` payload
//! and byte counts in words.
//!
//! Reporting sources (rtsp, smart, cleanup) stay free of MQTT and wire
//! types: each one sends its own reports over a small channel
//! ([`Context::spawn_reporting`](super::Context::spawn_reporting)), and
//! its forwarder (`<source>/forward.rs`) maps them with the wire's bounds
//! (texts truncated, lists capped) and hands them to the
//! [`Publisher`](crate::uplink::publish::Publisher). A full outbox drops by
//! class there, never in a forwarder.

use sitewatch_wire::payload::{truncate, EventOut, Header, NumbersOut, MAX_TEXT_LEN};

/// Builds an `event` payload.
#[allow(clippy::too_many_arguments)]
pub fn event<'a>(
    h: Header<'a>,
    event: &'a str,
    severity: &'a str,
    subject: &'a str,
    from: Option<&'a str>,
    to: Option<&'a str>,
    message: &'a str,
    numbers: &'a [(&'a str, u64)],
) -> EventOut<'a> {
    EventOut {
        v: sitewatch_wire::SCHEMA_VERSION,
        site: h.site,
        boot: h.boot,
        seq: h.seq,
        ts: h.ts,
        event,
        severity,
        subject: truncate(subject, sitewatch_wire::payload::MAX_PATH_LEN),
        from,
        to,
        message: truncate(message, MAX_TEXT_LEN),
        numbers: NumbersOut(
            &numbers[..numbers
                .len()
                .min(sitewatch_wire::payload::MAX_EVENT_NUMBERS)],
        ),
    }
}

/// Binary prefixes for byte counts in event messages and `status`.
pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_in_words() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(21_474_836_480), "20.0 GiB");
    }
}
