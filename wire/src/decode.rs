//! Owned decoding with serde_json (bridge side).
//!
//! [`decode`] checks, in order: size, topic, schema version, payload shape,
//! header invariants, and that the payload's site equals the topic's. Each
//! failure is a [`DecodeError`] whose [`DecodeError::reason`] is a stable
//! code the bridge stores in `rejected_messages.reason`.

use crate::payload::{
    validate_boot, validate_code, validate_reach_address, Disk, Event, Heartbeat, Log, Reach,
    Smart, Status, Stream, Ups, LOG_FIELD_MAX_BYTES, LOG_MSG_MAX_BYTES, LOG_SD_MAX_BYTES,
    MAX_ATTRIBUTES, MAX_CODE_LEN, MAX_EVENT_NUMBERS, MAX_IDENT_LEN, MAX_LOG_RECORDS, MAX_MOUNTS,
    MAX_PATH_LEN, MAX_REACH_ERROR_LEN, MAX_REACH_NAME_LEN, MAX_REACH_TARGETS, MAX_REASONS,
    MAX_REASON_LEN, MAX_TEXT_LEN, MAX_UPS, MAX_UPS_ERROR_LEN, MAX_UPS_NAME_LEN, MAX_UPS_STATUS_LEN,
    MAX_URL_LEN, MAX_WARNINGS,
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
    /// A camera's latest probe.
    Stream(Stream),
    /// A disk's health.
    Smart(Smart),
    /// A state change.
    Event(Event),
    /// A reading of the site's UPSes.
    Ups(Ups),
    /// A reachability round of the site's LAN devices.
    Reach(Reach),
}

impl Message {
    /// The message kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Status(_) => Kind::Status,
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::Disk(_) => Kind::Disk,
            Message::Log(_) => Kind::Log,
            Message::Stream(_) => Kind::Stream,
            Message::Smart(_) => Kind::Smart,
            Message::Event(_) => Kind::Event,
            Message::Ups(_) => Kind::Ups,
            Message::Reach(_) => Kind::Reach,
        }
    }

    /// `(site, boot, seq)`, the message identity used for de-duplication.
    pub fn identity(&self) -> (&str, &str, u64) {
        match self {
            Message::Status(m) => (&m.site, &m.boot, m.seq),
            Message::Heartbeat(m) => (&m.site, &m.boot, m.seq),
            Message::Disk(m) => (&m.site, &m.boot, m.seq),
            Message::Log(m) => (&m.site, &m.boot, m.seq),
            Message::Stream(m) => (&m.site, &m.boot, m.seq),
            Message::Smart(m) => (&m.site, &m.boot, m.seq),
            Message::Event(m) => (&m.site, &m.boot, m.seq),
            Message::Ups(m) => (&m.site, &m.boot, m.seq),
            Message::Reach(m) => (&m.site, &m.boot, m.seq),
        }
    }

    /// Agent timestamp, Unix ms.
    pub fn ts(&self) -> u64 {
        match self {
            Message::Status(m) => m.ts,
            Message::Heartbeat(m) => m.ts,
            Message::Disk(m) => m.ts,
            Message::Log(m) => m.ts,
            Message::Stream(m) => m.ts,
            Message::Smart(m) => m.ts,
            Message::Event(m) => m.ts,
            Message::Ups(m) => m.ts,
            Message::Reach(m) => m.ts,
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
            if let Some(w) = &m.wan {
                check_ifname(&w.iface)?;
                check_wan_addrs(w)?;
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
        Kind::Stream => {
            let m: Stream = serde_json::from_slice(payload).map_err(malformed)?;
            check_header(&m.boot, m.seq)?;
            check_stream(&m, t.name)?;
            Message::Stream(m)
        }
        Kind::Smart => {
            let m: Smart = serde_json::from_slice(payload).map_err(malformed)?;
            check_header(&m.boot, m.seq)?;
            check_smart(&m, t.name)?;
            Message::Smart(m)
        }
        Kind::Event => {
            let m: Event = serde_json::from_slice(payload).map_err(malformed)?;
            check_header(&m.boot, m.seq)?;
            check_event(&m)?;
            Message::Event(m)
        }
        Kind::Ups => {
            let m: Ups = serde_json::from_slice(payload).map_err(malformed)?;
            check_header(&m.boot, m.seq)?;
            check_ups(&m)?;
            Message::Ups(m)
        }
        Kind::Reach => {
            let m: Reach = serde_json::from_slice(payload).map_err(malformed)?;
            check_header(&m.boot, m.seq)?;
            check_reach(&m)?;
            Message::Reach(m)
        }
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

fn check_codes<'a>(codes: impl IntoIterator<Item = &'a str>) -> Result<(), DecodeError> {
    if codes.into_iter().all(validate_code) {
        Ok(())
    } else {
        Err(DecodeError::Invalid(
            "class, verdict, code and event names are 1-32 of [a-z0-9_]",
        ))
    }
}

/// An interface name as Linux allows it: 1 to 15 bytes, no `/`, no
/// whitespace, no control character.
fn check_ifname(name: &str) -> Result<(), DecodeError> {
    let ok = (1..=crate::payload::MAX_IFNAME_LEN).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid(
            "wan.if must be an interface name: 1-15 bytes, no '/' or whitespace",
        ))
    }
}

/// `wan.addr` an IPv4 and `wan.addr6` an IPv6 address in their usual
/// text form, within their bounds; `wan.addr_class` a code word.
fn check_wan_addrs(w: &crate::payload::Wan) -> Result<(), DecodeError> {
    use crate::payload::{MAX_ADDR4_LEN, MAX_ADDR6_LEN};
    if let Some(a) = &w.addr {
        if a.len() > MAX_ADDR4_LEN || a.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(DecodeError::Invalid("wan.addr must be an IPv4 address"));
        }
    }
    if let Some(a) = &w.addr6 {
        if a.len() > MAX_ADDR6_LEN || a.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(DecodeError::Invalid("wan.addr6 must be an IPv6 address"));
        }
    }
    if let Some(c) = &w.addr_class {
        check_codes([c.as_str()])?;
    }
    Ok(())
}

fn check_len(s: &str, max: usize, what: &'static str) -> Result<(), DecodeError> {
    if s.len() > max {
        Err(DecodeError::Invalid(what))
    } else {
        Ok(())
    }
}

fn finite(x: Option<f32>) -> bool {
    x.is_none_or(|x| x.is_finite() && x >= 0.0)
}

fn check_stream(m: &Stream, name: Option<&str>) -> Result<(), DecodeError> {
    if Some(m.camera.as_str()) != name {
        return Err(DecodeError::Invalid("camera differs from the topic's name"));
    }
    if m.warnings.len() > MAX_WARNINGS {
        return Err(DecodeError::Invalid("more than 8 warnings"));
    }
    check_codes(
        [m.class.as_str(), m.transport.as_str()]
            .into_iter()
            .chain(m.warnings.iter().map(String::as_str)),
    )?;
    check_len(&m.url, MAX_URL_LEN, "url longer than 512 bytes")?;
    check_len(&m.detail, MAX_TEXT_LEN, "detail longer than 512 bytes")?;
    if let Some(c) = &m.codec {
        check_len(c, MAX_IDENT_LEN, "codec longer than 64 bytes")?;
    }
    if ![m.fps, m.fps_wall, m.keyframe_interval_s, m.rtp_wall_ratio]
        .into_iter()
        .all(finite)
    {
        return Err(DecodeError::Invalid("measurements must be finite and >= 0"));
    }
    Ok(())
}

fn check_smart(m: &Smart, name: Option<&str>) -> Result<(), DecodeError> {
    if Some(m.device.as_str()) != name {
        return Err(DecodeError::Invalid("device differs from the topic's name"));
    }
    if m.reasons.len() > MAX_REASONS || m.attributes.len() > MAX_ATTRIBUTES {
        return Err(DecodeError::Invalid("at most 16 reasons and 30 attributes"));
    }
    check_codes(
        [
            m.protocol.as_str(),
            m.source.as_str(),
            m.state.as_str(),
            m.verdict.as_str(),
        ]
        .into_iter()
        .chain(
            m.reasons
                .iter()
                .flat_map(|r| [r.code.as_str(), r.level.as_str()]),
        ),
    )?;
    check_len(&m.path, MAX_PATH_LEN, "path longer than 255 bytes")?;
    for s in [&m.model, &m.serial, &m.firmware].into_iter().flatten() {
        check_len(s, MAX_IDENT_LEN, "identity longer than 64 bytes")?;
    }
    for r in &m.reasons {
        check_len(&r.detail, MAX_REASON_LEN, "reason longer than 160 bytes")?;
    }
    if let Some(d) = &m.detail {
        check_len(d, MAX_TEXT_LEN, "detail longer than 512 bytes")?;
    }
    for a in &m.attributes {
        check_len(&a.name, MAX_CODE_LEN, "attribute name longer than 32 bytes")?;
        if a.failed
            .as_deref()
            .is_some_and(|f| f != "now" && f != "past")
        {
            return Err(DecodeError::Invalid("attribute failed is now or past"));
        }
    }
    Ok(())
}

fn check_event(m: &Event) -> Result<(), DecodeError> {
    check_codes(
        [m.event.as_str(), m.severity.as_str()]
            .into_iter()
            .chain(m.from.as_deref())
            .chain(m.to.as_deref()),
    )?;
    check_len(&m.subject, MAX_PATH_LEN, "subject longer than 255 bytes")?;
    check_len(&m.message, MAX_TEXT_LEN, "message longer than 512 bytes")?;
    if m.numbers.len() > MAX_EVENT_NUMBERS {
        return Err(DecodeError::Invalid("more than 16 numbers"));
    }
    if m.numbers.keys().any(|k| !validate_code(k)) {
        return Err(DecodeError::Invalid("number names are 1-32 of [a-z0-9_]"));
    }
    Ok(())
}

fn check_ups(m: &Ups) -> Result<(), DecodeError> {
    if m.ups.len() > MAX_UPS {
        return Err(DecodeError::Invalid("more than 8 UPS"));
    }
    if let Some(e) = &m.error {
        check_len(e, MAX_TEXT_LEN, "error longer than 512 bytes")?;
    }
    check_codes(m.ups.iter().map(|u| u.power.as_str()))?;
    for u in &m.ups {
        if u.name.is_empty() || u.name.len() > MAX_UPS_NAME_LEN {
            return Err(DecodeError::Invalid("UPS name must be 1-64 bytes"));
        }
        check_len(
            &u.status,
            MAX_UPS_STATUS_LEN,
            "ups.status longer than 128 bytes",
        )?;
        if let Some(e) = &u.error {
            check_len(e, MAX_UPS_ERROR_LEN, "UPS error longer than 160 bytes")?;
        }
        if ![u.charge_pct, u.load_pct, u.input_voltage_v]
            .into_iter()
            .all(finite)
        {
            return Err(DecodeError::Invalid("UPS figures must be finite and >= 0"));
        }
    }
    Ok(())
}

fn check_reach(m: &Reach) -> Result<(), DecodeError> {
    if m.targets.is_empty() || m.targets.len() > MAX_REACH_TARGETS {
        return Err(DecodeError::Invalid("a reach message lists 1-16 targets"));
    }
    check_codes(
        m.targets
            .iter()
            .flat_map(|t| [t.kind.as_str(), t.state.as_str()]),
    )?;
    for (i, t) in m.targets.iter().enumerate() {
        if t.name.is_empty()
            || t.name.len() > MAX_REACH_NAME_LEN
            || t.name.chars().any(char::is_control)
        {
            return Err(DecodeError::Invalid(
                "target name must be 1-64 bytes without control characters",
            ));
        }
        if m.targets[..i].iter().any(|o| o.name == t.name) {
            return Err(DecodeError::Invalid("two targets with one name"));
        }
        if !validate_reach_address(&t.address) {
            return Err(DecodeError::Invalid(
                "target address must be 1-253 of [0-9A-Za-z.:-]",
            ));
        }
        if t.port == Some(0) {
            return Err(DecodeError::Invalid("port 0"));
        }
        if let Some(e) = &t.error {
            check_len(e, MAX_REACH_ERROR_LEN, "target error longer than 128 bytes")?;
        }
        let reached = t.received.checked_add(t.refused);
        if reached.is_none_or(|r| r > t.sent) {
            return Err(DecodeError::Invalid("received + refused above sent"));
        }
        let rtt = [t.rtt_min_ms, t.rtt_avg_ms, t.rtt_max_ms];
        if !rtt.into_iter().all(finite) {
            return Err(DecodeError::Invalid("round trips must be finite and >= 0"));
        }
        match rtt {
            [None, None, None] => {}
            [Some(min), Some(avg), Some(max)] if reached != Some(0) && min <= avg && avg <= max => {
            }
            _ => {
                return Err(DecodeError::Invalid(
                    "rtt min <= avg <= max, all three present only when something answered",
                ))
            }
        }
    }
    Ok(())
}
