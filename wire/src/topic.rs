//! Topic grammar: `sitewatch/v1/{site}/{kind}[/{name}]`.
//!
//! Pure string handling; no allocation. Both sides validate topics with the
//! same code so a topic the agent can build is exactly one the bridge accepts.

use core::fmt;

/// Fixed prefix of every sitewatch topic (includes the contract version).
pub const PREFIX: &str = "sitewatch/v1";

/// Longest accepted site id, in bytes (fits a DNS label).
pub const MAX_SITE_LEN: usize = 63;

/// Longest accepted `{name}` segment (camera or device), in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Longest topic this contract can produce, used to size fixed buffers.
pub const MAX_TOPIC_LEN: usize = PREFIX.len() + 1 + MAX_SITE_LEN + 1 + 9 + 1 + MAX_NAME_LEN;

/// Subscription filter that matches every sitewatch v1 topic.
pub const FILTER_ALL: &str = "sitewatch/v1/+/#";

/// What a message is about; the fourth topic segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Site birth/death, retained.
    Status,
    /// Periodic liveness and agent self-metrics.
    Heartbeat,
    /// Disk usage of configured mount points.
    Disk,
    /// Batched syslog records.
    Log,
    /// RTSP probe result per camera (retained, has a name).
    Stream,
    /// SMART health per device (retained, has a name).
    Smart,
    /// State-change events.
    Event,
    /// Periodic UPS readings (NUT's upsd) of the site.
    Ups,
    /// Periodic reachability readings of the site's LAN devices
    /// (`[[reach.target]]`).
    Reach,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 9] = [
        Kind::Status,
        Kind::Heartbeat,
        Kind::Disk,
        Kind::Log,
        Kind::Stream,
        Kind::Smart,
        Kind::Event,
        Kind::Ups,
        Kind::Reach,
    ];

    /// The topic segment for this kind.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Heartbeat => "heartbeat",
            Kind::Disk => "disk",
            Kind::Log => "log",
            Kind::Stream => "stream",
            Kind::Smart => "smart",
            Kind::Event => "event",
            Kind::Ups => "ups",
            Kind::Reach => "reach",
        }
    }

    /// Parses a topic segment.
    pub fn from_segment(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether messages of this kind are published with the MQTT retain flag,
    /// so a new subscriber sees the latest state at once.
    pub const fn retained(self) -> bool {
        matches!(self, Kind::Status | Kind::Stream | Kind::Smart)
    }

    /// Whether the topic carries a `{name}` segment after the kind.
    pub const fn has_name(self) -> bool {
        matches!(self, Kind::Stream | Kind::Smart)
    }

    /// Whether this version of the contract defines a payload for the kind.
    /// Every kind is defined today; a kind added ahead of its payload is
    /// listed here as not defined (reserved, documented as planned), and
    /// the decoder refuses it as `reserved_kind`.
    pub const fn defined(self) -> bool {
        matches!(
            self,
            Kind::Status
                | Kind::Heartbeat
                | Kind::Disk
                | Kind::Log
                | Kind::Stream
                | Kind::Smart
                | Kind::Event
                | Kind::Ups
                | Kind::Reach
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a site id, name or topic was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// The topic does not start with [`PREFIX`].
    WrongPrefix,
    /// Site id empty or longer than [`MAX_SITE_LEN`].
    SiteLength,
    /// Site id contains a byte outside `[a-z0-9_-]`.
    SiteChars,
    /// Name empty or longer than [`MAX_NAME_LEN`].
    NameLength,
    /// Name contains a byte outside `[a-z0-9_.-]`.
    NameChars,
    /// The kind segment is not one of [`Kind::ALL`].
    UnknownKind,
    /// A kind with a name lacks it, or a kind without one has extra segments.
    Shape,
}

impl TopicError {
    /// Whether the topic is well-formed except for an unknown kind.
    pub fn is_unknown_kind(&self) -> bool {
        matches!(self, TopicError::UnknownKind)
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::WrongPrefix => "topic does not start with sitewatch/v1/",
            TopicError::SiteLength => "site id must be 1 to 63 characters",
            TopicError::SiteChars => {
                "site id may contain only lowercase letters, digits, '-' and '_'"
            }
            TopicError::NameLength => "name must be 1 to 63 characters",
            TopicError::NameChars => {
                "name may contain only lowercase letters, digits, '-', '_' and '.'"
            }
            TopicError::UnknownKind => "unknown message kind",
            TopicError::Shape => "wrong number of topic segments for this kind",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TopicError {}

/// Checks a site id: 1 to 63 bytes of lowercase ASCII letters, digits, `-`, `_`.
///
/// The id is used as an MQTT topic segment, a PostgreSQL key and a Loki label,
/// so it must be safe in all three without escaping.
pub fn validate_site(site: &str) -> Result<(), TopicError> {
    if site.is_empty() || site.len() > MAX_SITE_LEN {
        return Err(TopicError::SiteLength);
    }
    if !site
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(TopicError::SiteChars);
    }
    Ok(())
}

/// Checks a `{name}` segment (camera or device): like a site id, plus `.`,
/// but never `.` or `..` alone.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(TopicError::NameLength);
    }
    if name == "." || name == ".." {
        return Err(TopicError::NameChars);
    }
    if !name.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
    }) {
        return Err(TopicError::NameChars);
    }
    Ok(())
}

/// A parsed, validated topic. Borrows from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    /// The site id (validated).
    pub site: &'a str,
    /// The message kind.
    pub kind: Kind,
    /// The name segment, present exactly when [`Kind::has_name`].
    pub name: Option<&'a str>,
}

impl<'a> Topic<'a> {
    /// Builds a topic after validating its parts.
    pub fn new(site: &'a str, kind: Kind, name: Option<&'a str>) -> Result<Self, TopicError> {
        validate_site(site)?;
        match (kind.has_name(), name) {
            (true, Some(n)) => validate_name(n)?,
            (false, None) => {}
            _ => return Err(TopicError::Shape),
        }
        Ok(Topic { site, kind, name })
    }

    /// Parses and validates a topic string.
    pub fn parse(topic: &'a str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(TopicError::WrongPrefix)?;
        let mut parts = rest.splitn(3, '/');
        let site = parts.next().unwrap_or_default();
        validate_site(site)?;
        let kind_seg = parts.next().ok_or(TopicError::Shape)?;
        let kind = Kind::from_segment(kind_seg).ok_or(TopicError::UnknownKind)?;
        let name = parts.next();
        if let Some(n) = name {
            if n.contains('/') {
                return Err(TopicError::Shape);
            }
        }
        Topic::new(site, kind, name)
    }

    /// Renders the topic into a fixed-capacity string (no heap).
    pub fn to_heapless(&self) -> heapless::String<MAX_TOPIC_LEN> {
        let mut s = heapless::String::new();
        // Cannot overflow: every part is validated against the bounds that
        // MAX_TOPIC_LEN is computed from.
        let _ = fmt::write(&mut s, format_args!("{self}"));
        s
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}/{}/{}", self.site, self.kind)?;
        if let Some(n) = self.name {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids() {
        assert!(validate_site("lokasi1").is_ok());
        assert!(validate_site("a").is_ok());
        assert!(validate_site("site_01-b").is_ok());
        assert!(validate_site(&"a".repeat(63)).is_ok());
        assert_eq!(validate_site(""), Err(TopicError::SiteLength));
        assert_eq!(validate_site(&"a".repeat(64)), Err(TopicError::SiteLength));
        assert_eq!(validate_site("Lokasi"), Err(TopicError::SiteChars));
        assert_eq!(validate_site("a/b"), Err(TopicError::SiteChars));
        assert_eq!(validate_site("a+"), Err(TopicError::SiteChars));
        assert_eq!(validate_site("a#"), Err(TopicError::SiteChars));
        assert_eq!(validate_site("sité"), Err(TopicError::SiteChars));
    }

    #[test]
    fn parse_round_trip() {
        for t in [
            "sitewatch/v1/lokasi1/status",
            "sitewatch/v1/lokasi1/heartbeat",
            "sitewatch/v1/lokasi1/disk",
            "sitewatch/v1/lokasi1/ups",
            "sitewatch/v1/lokasi1/reach",
            "sitewatch/v1/lokasi1/stream/cam-01",
            "sitewatch/v1/x/smart/sda",
        ] {
            let p = Topic::parse(t).expect(t);
            assert_eq!(p.to_heapless().as_str(), t);
        }
    }

    #[test]
    fn parse_rejects() {
        use TopicError::*;
        let cases = [
            ("other/v1/a/status", WrongPrefix),
            ("sitewatch/v2/a/status", WrongPrefix),
            ("sitewatch/v1", WrongPrefix),
            ("sitewatch/v1/A/status", SiteChars),
            ("sitewatch/v1//status", SiteLength),
            ("sitewatch/v1/a", Shape),
            ("sitewatch/v1/a/bogus", UnknownKind),
            ("sitewatch/v1/a/status/x", Shape),
            ("sitewatch/v1/a/stream", Shape),
            ("sitewatch/v1/a/stream/x/y", Shape),
            ("sitewatch/v1/a/stream/..", NameChars),
            ("sitewatch/v1/a/ups/myups", Shape),
            ("sitewatch/v1/a/reach/nvr", Shape),
        ];
        for (t, e) in cases {
            assert_eq!(Topic::parse(t), Err(e), "{t}");
        }
    }

    #[test]
    fn longest_topic_fits() {
        let site = "s".repeat(MAX_SITE_LEN);
        let name = "n".repeat(MAX_NAME_LEN);
        for kind in [Kind::Heartbeat, Kind::Stream] {
            let name = kind.has_name().then_some(name.as_str());
            let t = Topic::new(&site, kind, name).expect("valid");
            assert_eq!(t.to_heapless().len(), t.to_string().len());
        }
    }
}
