//! Owned decoding with serde_json (bridge side).
//!
//! [`decode`] checks, in order: size, topic, schema version, payload shape,
//! header invariants, and that the payload's site equals the topic's. Each
//! failure is a [`DecodeError`] whose [`DecodeError::reason`] is a stable
//! code the bridge stores in `rejected_messages.reason`.

use crate::payload::{
    validate_boot, Disk, Heartbeat, Log, Status, LOG_FIELD_MAX_BYTES, LOG_MSG_MAX_BYTES,
    LOG_SD_MAX_BYTES, MAX_LOG_RECORDS, MAX_MOUNTS, MAX_PATH_LEN,
};
use crate::topic::{Kind, Topic, TopicError};
use serde::Deserialize;
use std::fmt;

/// Largest payload the bridge accepts, in bytes. Larger ones are rejected
/// with reason `too_large` before any parsing.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// A decoded, validated message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `status` (birth/death).
    Status(Status),
    /// `heartbeat`.
    Heartbeat(Heartbeat),
    /// `disk`.
    Disk(Disk),
    /// `log`: a batch of syslog records.
    Log(Log),
}

impl Message {
    /// The message kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Status(_) => Kind::Status,
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::Disk(_) => Kind::Disk,
            Message::Log(_) => Kind::Log,
        }
    }

    /// `(site, boot, seq)`, the message identity used for de-duplication.
    pub fn identity(&self) -> (&str, &str, u64) {
        match self {
            Message::Status(m) => (&m.site, &m.boot, m.seq),
            Message::Heartbeat(m) => (&m.site, &m.boot, m.seq),
            Message::Disk(m) => (&m.site, &m.boot, m.seq),
            Message::Log(m) => (&m.site, &m.boot, m.seq),
        }
    }

    /// Agent timestamp, Unix ms.
    pub fn ts(&self) -> u64 {
        match self {
            Message::Status(m) => m.ts,
            Message::Heartbeat(m) => m.ts,
            Message::Disk(m) => m.ts,
            Message::Log(m) => m.ts,
        }
    }
}

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// Payload larger than [`MAX_PAYLOAD_BYTES`].
    TooLarge {
        /// Payload length in bytes.
        len: usize,
    },
    /// Topic is not a valid sitewatch v1 topic.
    BadTopic(TopicError),
    /// Topic is well-formed but its kind segment is unknown.
    UnknownKind,
    /// Kind is reserved in the contract but this decoder has no payload for it.
    ReservedKind(Kind),
    /// Payload is not JSON of the expected shape.
    Malformed(String),
    /// Payload `v` is newer than [`crate::SCHEMA_VERSION`] (or 0).
    UnsupportedVersion(u64),
    /// A header or body field breaks an invariant (boot id, seq, counts).
    Invalid(&'static str),
    /// Payload site differs from the topic site.
    SiteMismatch {
        /// Site in the topic.
        topic: String,
        /// Site in the payload.
        payload: String,
    },
}

impl DecodeError {
    /// Stable snake_case code for storage and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::BadTopic(_) => "bad_topic",
            DecodeError::UnknownKind => "unknown_kind",
            DecodeError::ReservedKind(_) => "reserved_kind",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::Invalid(_) => "invalid",
            DecodeError::SiteMismatch { .. } => "site_mismatch",
        }
    }

    /// Every reason code, for pre-registering metrics.
    pub const REASONS: [&'static str; 8] = [
        "too_large",
        "bad_topic",
        "unknown_kind",
        "reserved_kind",
        "malformed",
        "unsupported_version",
        "invalid",
        "site_mismatch",
    ];
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len } => {
                write!(f, "payload is {len} bytes, limit is {MAX_PAYLOAD_BYTES}")
            }
            DecodeError::BadTopic(e) => write!(f, "bad topic: {e}"),
            DecodeError::UnknownKind => f.write_str("unknown message kind"),
            DecodeError::ReservedKind(k) => {
                write!(f, "kind `{k}` is reserved but not defined in wire v1 yet")
            }
            DecodeError::Malformed(e) => write!(f, "malformed payload: {e}"),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "schema version {v} not supported (this bridge knows 1)")
            }
            DecodeError::Invalid(what) => write!(f, "invalid payload: {what}"),
            DecodeError::SiteMismatch { topic, payload } => {
                write!(
                    f,
                    "payload site `{payload}` differs from topic site `{topic}`"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Only the version, read first so a future schema gets a precise error
/// instead of a shape error.
#[derive(Deserialize)]
struct VersionProbe {
    v: u64,
}

/// Decodes and validates one MQTT message.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Message, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge { len: payload.len() });
    }
    let t = Topic::parse(topic).map_err(|e| {
        if e.is_unknown_kind() {
            DecodeError::UnknownKind
        } else {
            DecodeError::BadTopic(e)
        }
    })?;
    if !t.kind.defined() {
        return Err(DecodeError::ReservedKind(t.kind));
    }
    let probe: VersionProbe = serde_json::from_slice(payload).map_err(malformed)?;
    if probe.v == 0 || probe.v > u64::from(crate::SCHEMA_VERSION) {
        return Err(DecodeError::UnsupportedVersion(probe.v));
    }
    let msg = match t.kind {
        Kind::Status => {
            let m: Status = serde_json::from_slice(payload).map_err(malformed)?;
            check_status(&m)?;
            Message::Status(m)
        }
        Kind::Heartbeat => {
            let m: Heartbeat = serde_json::from_slice(payload).map_err(malformed)?;
            check_header(&m.boot, m.seq)?;
            if m.load.iter().any(|l| !l.is_finite() || *l < 0.0) {
                return Err(DecodeError::Invalid("load must be finite and >= 0"));
            }
            Message::Heartbeat(m)
        }
        Kind::Disk => {
            let m: Disk = serde_json::from_slice(payload).map_err(malformed)?;
            check_header(&m.boot, m.seq)?;
            check_disk(&m)?;
            Message::Disk(m)
        }
        Kind::Log => {
            let m: Log = serde_json::from_slice(payload).map_err(malformed)?;
            check_header(&m.boot, m.seq)?;
            check_log(&m)?;
            Message::Log(m)
        }
        // Filtered above by `defined()`.
        other => return Err(DecodeError::ReservedKind(other)),
    };
    let (site, _, _) = msg.identity();
    if site != t.site {
        return Err(DecodeError::SiteMismatch {
            topic: t.site.to_owned(),
            payload: site.to_owned(),
        });
    }
    Ok(msg)
}

fn malformed(e: serde_json::Error) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

fn check_header(boot: &str, seq: u64) -> Result<(), DecodeError> {
    if !validate_boot(boot) {
        return Err(DecodeError::Invalid("boot id must be 1-32 of [0-9a-z]"));
    }
    if seq == 0 {
        return Err(DecodeError::Invalid("seq 0 is reserved for the Last Will"));
    }
    Ok(())
}

fn check_status(m: &Status) -> Result<(), DecodeError> {
    use crate::payload::{OfflineReason, State};
    if !validate_boot(&m.boot) {
        return Err(DecodeError::Invalid("boot id must be 1-32 of [0-9a-z]"));
    }
    if m.session == 0 {
        return Err(DecodeError::Invalid("session starts at 1"));
    }
    match (m.state, m.reason, m.seq) {
        (State::Online, None, 1..) => Ok(()),
        (State::Online, Some(_), _) => Err(DecodeError::Invalid("online status has a reason")),
        (State::Online, None, 0) => Err(DecodeError::Invalid("birth must have seq >= 1")),
        (State::Offline, None, _) => Err(DecodeError::Invalid("offline status needs a reason")),
        (State::Offline, Some(OfflineReason::Lost), 0) => Ok(()),
        (State::Offline, Some(OfflineReason::Lost), _) => {
            Err(DecodeError::Invalid("Last Will (lost) must have seq 0"))
        }
        (State::Offline, Some(OfflineReason::Shutdown), 0) => {
            Err(DecodeError::Invalid("shutdown must have seq >= 1"))
        }
        (State::Offline, Some(OfflineReason::Shutdown), _) => Ok(()),
    }
}

fn check_disk(m: &Disk) -> Result<(), DecodeError> {
    if m.mounts.len() > MAX_MOUNTS {
        return Err(DecodeError::Invalid("more than 16 mounts"));
    }
    for mount in &m.mounts {
        if mount.path.is_empty() || mount.path.len() > MAX_PATH_LEN {
            return Err(DecodeError::Invalid("mount path must be 1-255 bytes"));
        }
        if !mount.used_pct.is_finite() || !(0.0..=100.0).contains(&mount.used_pct) {
            return Err(DecodeError::Invalid("used_pct must be within 0-100"));
        }
    }
    Ok(())
}

fn check_log(m: &Log) -> Result<(), DecodeError> {
    if m.records.is_empty() || m.records.len() > MAX_LOG_RECORDS {
        return Err(DecodeError::Invalid("a log batch has 1 to 1024 records"));
    }
    for r in &m.records {
        if r.severity > 7 || r.facility > 23 {
            return Err(DecodeError::Invalid("severity 0-7 and facility 0-23"));
        }
        if r.msg.len() > LOG_MSG_MAX_BYTES {
            return Err(DecodeError::Invalid("log msg longer than 16 KiB"));
        }
        let fields = [
            Some(&r.host),
            Some(&r.app),
            Some(&r.ip),
            r.procid.as_ref(),
            r.msgid.as_ref(),
            Some(&r.format),
        ];
        if fields
            .iter()
            .flatten()
            .any(|f| f.len() > LOG_FIELD_MAX_BYTES)
        {
            return Err(DecodeError::Invalid("log field longer than 255 bytes"));
        }
        if r.host.is_empty() || r.ip.is_empty() {
            return Err(DecodeError::Invalid("log record needs host and ip"));
        }
        if r.sd.as_ref().is_some_and(|sd| sd.len() > LOG_SD_MAX_BYTES) {
            return Err(DecodeError::Invalid("structured data longer than 4 KiB"));
        }
    }
    Ok(())
}
