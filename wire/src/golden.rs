//! Golden vectors: exact payload bytes produced by the agent-side encoder
//! (checked by `wire/tests/golden.rs`) and accepted or rejected by the
//! bridge-side decoder. Agent and bridge tests use the same files.
//!
//! To regenerate the valid vectors after a deliberate contract change, run
//! `SITEWATCH_BLESS=1 cargo test -p sitewatch-wire --test golden` and review
//! the diff together with `docs/wire.md`.

/// A payload the decoder must accept.
#[derive(Debug, Clone, Copy)]
pub struct Vector {
    /// File name under `wire/vectors/`.
    pub file: &'static str,
    /// Topic the payload is published on.
    pub topic: &'static str,
    /// Whether the agent publishes it retained.
    pub retain: bool,
    /// Exact payload bytes.
    pub payload: &'static [u8],
}

/// A payload the decoder must reject, with the reason code it must give.
#[derive(Debug, Clone, Copy)]
pub struct Rejected {
    /// File name under `wire/vectors/invalid/`.
    pub file: &'static str,
    /// Topic the payload arrives on.
    pub topic: &'static str,
    /// Expected `DecodeError::reason()`.
    pub reason: &'static str,
    /// Exact payload bytes.
    pub payload: &'static [u8],
}

macro_rules! valid {
    ($file:literal, $topic:literal, $retain:literal) => {
        Vector {
            file: $file,
            topic: $topic,
            retain: $retain,
            payload: include_bytes!(concat!("../vectors/", $file)),
        }
    };
}

macro_rules! invalid {
    ($file:literal, $topic:literal, $reason:literal) => {
        Rejected {
            file: $file,
            topic: $topic,
            reason: $reason,
            payload: include_bytes!(concat!("../vectors/invalid/", $file)),
        }
    };
}

/// Valid vectors, one per payload shape.
pub const VALID: &[Vector] = &[
    valid!("status-online.json", "sitewatch/v1/lokasi1/status", true),
    valid!(
        "status-offline-shutdown.json",
        "sitewatch/v1/lokasi1/status",
        true
    ),
    valid!(
        "status-offline-lost.json",
        "sitewatch/v1/lokasi1/status",
        true
    ),
    valid!("heartbeat.json", "sitewatch/v1/lokasi1/heartbeat", false),
    valid!(
        "heartbeat-wan.json",
        "sitewatch/v1/lokasi1/heartbeat",
        false
    ),
    valid!(
        "heartbeat-wan-addr.json",
        "sitewatch/v1/lokasi1/heartbeat",
        false
    ),
    valid!("disk.json", "sitewatch/v1/lokasi1/disk", false),
    valid!("log.json", "sitewatch/v1/lokasi1/log", false),
    valid!("stream-ok.json", "sitewatch/v1/lokasi1/stream/gate", true),
    valid!(
        "stream-auth.json",
        "sitewatch/v1/lokasi1/stream/dahua-ch1",
        true
    ),
    valid!("smart-ata.json", "sitewatch/v1/lokasi1/smart/sda", true),
    valid!(
        "smart-nvme-critical.json",
        "sitewatch/v1/lokasi1/smart/nvme0n1",
        true
    ),
    valid!(
        "event-camera-down.json",
        "sitewatch/v1/lokasi1/event",
        false
    ),
    valid!("event-cleanup.json", "sitewatch/v1/lokasi1/event", false),
    valid!("ups.json", "sitewatch/v1/lokasi1/ups", false),
    valid!("ups-upsd-down.json", "sitewatch/v1/lokasi1/ups", false),
    valid!("reach.json", "sitewatch/v1/lokasi1/reach", false),
    valid!("reach-unresolved.json", "sitewatch/v1/lokasi1/reach", false),
];

/// Invalid vectors, at least one per rejection reason except `too_large`
/// (see [`too_large`]).
pub const INVALID: &[Rejected] = &[
    invalid!(
        "truncated.json",
        "sitewatch/v1/lokasi1/heartbeat",
        "malformed"
    ),
    invalid!("not-json.bin", "sitewatch/v1/lokasi1/disk", "malformed"),
    invalid!(
        "missing-field.json",
        "sitewatch/v1/lokasi1/heartbeat",
        "malformed"
    ),
    invalid!(
        "site-mismatch.json",
        "sitewatch/v1/lokasi2/heartbeat",
        "site_mismatch"
    ),
    invalid!(
        "unknown-kind.json",
        "sitewatch/v1/lokasi1/weather",
        "unknown_kind"
    ),
    invalid!(
        "stream-camera-mismatch.json",
        "sitewatch/v1/lokasi1/stream/yard",
        "invalid"
    ),
    invalid!(
        "smart-verdict-code.json",
        "sitewatch/v1/lokasi1/smart/sda",
        "invalid"
    ),
    invalid!(
        "event-bad-number.json",
        "sitewatch/v1/lokasi1/event",
        "malformed"
    ),
    invalid!(
        "bad-topic.json",
        "sitewatch/v1/Lokasi1/heartbeat",
        "bad_topic"
    ),
    invalid!(
        "version-2.json",
        "sitewatch/v1/lokasi1/heartbeat",
        "unsupported_version"
    ),
    invalid!("seq-zero.json", "sitewatch/v1/lokasi1/heartbeat", "invalid"),
    invalid!(
        "heartbeat-wan-if.json",
        "sitewatch/v1/lokasi1/heartbeat",
        "invalid"
    ),
    invalid!(
        "heartbeat-wan-addr.json",
        "sitewatch/v1/lokasi1/heartbeat",
        "invalid"
    ),
    invalid!("disk-pct.json", "sitewatch/v1/lokasi1/disk", "invalid"),
    invalid!("log-severity.json", "sitewatch/v1/lokasi1/log", "invalid"),
    invalid!("log-empty.json", "sitewatch/v1/lokasi1/log", "invalid"),
    invalid!("ups-charge.json", "sitewatch/v1/lokasi1/ups", "invalid"),
    invalid!("ups-name.json", "sitewatch/v1/lokasi1/ups", "invalid"),
    invalid!("reach-rtt.json", "sitewatch/v1/lokasi1/reach", "invalid"),
    invalid!(
        "reach-received.json",
        "sitewatch/v1/lokasi1/reach",
        "invalid"
    ),
];

/// A payload one byte over the decoder's limit, on a valid topic; rejected
/// as `too_large`. Built at run time to keep the repository small.
#[cfg(feature = "decode")]
pub fn too_large() -> (&'static str, Vec<u8>) {
    let mut p = b"{\"v\":1,\"pad\":\"".to_vec();
    p.resize(crate::MAX_PAYLOAD_BYTES - 1, b'x');
    p.extend_from_slice(b"\"}");
    ("sitewatch/v1/lokasi1/heartbeat", p)
}
