//! What the outbox stores: an encoded MQTT message plus its class.
//!
//! Pure types. A [`Record`] is opaque to the outbox: topic and payload are
//! whatever the publisher encoded; QoS is always 1. This module must not
//! parse payloads or know the wire format beyond [`Class::of`].

use std::fmt;
use std::ops::{Index, IndexMut};

use sitewatch_wire::topic::Kind;

/// Longest topic a record may carry (ours are under 100 bytes).
pub const MAX_TOPIC_LEN: usize = 1024;

/// Largest payload a record may carry: the bridge's limit (docs/wire.md).
pub const MAX_PAYLOAD_LEN: usize = 256 * 1024;

/// Number of classes.
pub const CLASSES: usize = 4;

/// Delivery class of a record: decides what is dropped first when the
/// outbox is full and in which order records leave it.
///
/// The discriminants are the drop priority: lower is dropped first
/// (`Log < Series < State < Event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Syslog batches: the most voluminous, dropped first.
    Log = 0,
    /// Time series (heartbeat, disk): history, dropped next.
    Series = 1,
    /// Retained latest-value-per-topic (status, stream/{cam}, smart/{dev}):
    /// a newer record for a topic replaces an older unsent one.
    State = 2,
    /// State changes: irreplaceable, dropped last.
    Event = 3,
}

impl Class {
    /// Every class, lowest drop priority first (the order drops walk).
    pub const BY_PRIORITY: [Class; CLASSES] =
        [Class::Log, Class::Series, Class::State, Class::Event];

    /// The class a message kind belongs to.
    pub const fn of(kind: Kind) -> Class {
        match kind {
            Kind::Status | Kind::Stream | Kind::Smart => Class::State,
            Kind::Heartbeat | Kind::Disk | Kind::Ups | Kind::Reach => Class::Series,
            Kind::Log => Class::Log,
            Kind::Event => Class::Event,
        }
    }

    /// Lower-case name, also the class's directory name in disk mode.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Log => "log",
            Class::Series => "series",
            Class::State => "state",
            Class::Event => "event",
        }
    }

    /// Index into per-class arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The class with on-disk code `b`.
    pub const fn from_u8(b: u8) -> Option<Class> {
        match b {
            0 => Some(Class::Log),
            1 => Some(Class::Series),
            2 => Some(Class::State),
            3 => Some(Class::Event),
            _ => None,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per class, indexed by [`Class`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerClass<T>(pub [T; CLASSES]);

impl<T> Index<Class> for PerClass<T> {
    type Output = T;
    fn index(&self, c: Class) -> &T {
        &self.0[c.index()]
    }
}

impl<T> IndexMut<Class> for PerClass<T> {
    fn index_mut(&mut self, c: Class) -> &mut T {
        &mut self.0[c.index()]
    }
}

impl PerClass<u64> {
    /// Sum over all classes.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Identifies a record while it is in the outbox (and, in disk mode, across
/// restarts): its class and a number that rises by one per record of that
/// class. Not the message's `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    class: Class,
    n: u64,
}

impl Id {
    /// Builds an id (for the outbox and tests).
    pub const fn new(class: Class, n: u64) -> Id {
        Id { class, n }
    }

    /// The record's class.
    pub const fn class(self) -> Class {
        self.class
    }

    /// The number within the class.
    pub const fn n(self) -> u64 {
        self.n
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.class, self.n)
    }
}

/// Why a [`Record`] could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Empty topic or longer than [`MAX_TOPIC_LEN`].
    Topic,
    /// Payload longer than [`MAX_PAYLOAD_LEN`].
    TooLarge,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Topic => write!(f, "topic empty or over {MAX_TOPIC_LEN} bytes"),
            RecordError::TooLarge => write!(f, "payload over {MAX_PAYLOAD_LEN} bytes"),
        }
    }
}

impl std::error::Error for RecordError {}

/// An encoded MQTT message (QoS 1) waiting for its PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    class: Class,
    retain: bool,
    seq: u64,
    topic: String,
    payload: Vec<u8>,
}

impl Record {
    /// A record, if the topic and payload fit the limits. Spare capacity
    /// is released, so the outbox's memory accounting (by length) is true.
    pub fn new(
        class: Class,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
        retain: bool,
        seq: u64,
    ) -> Result<Record, RecordError> {
        let mut topic = topic.into();
        let mut payload = payload.into();
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
            return Err(RecordError::Topic);
        }
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(RecordError::TooLarge);
        }
        topic.shrink_to_fit();
        payload.shrink_to_fit();
        Ok(Record {
            class,
            retain,
            seq,
            topic,
            payload,
        })
    }

    /// Delivery class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// MQTT retain flag.
    pub fn retain(&self) -> bool {
        self.retain
    }

    /// The message's `seq` (informational: logs, tests, diagnostics).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// MQTT topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Encoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Approximate size on the wire (PUBLISH packet), used by the drain
    /// rate limit.
    pub fn wire_len(&self) -> u64 {
        (self.payload.len() + self.topic.len() + 8) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_kind_and_priority() {
        assert_eq!(Class::of(Kind::Status), Class::State);
        assert_eq!(Class::of(Kind::Stream), Class::State);
        assert_eq!(Class::of(Kind::Smart), Class::State);
        assert_eq!(Class::of(Kind::Heartbeat), Class::Series);
        assert_eq!(Class::of(Kind::Disk), Class::Series);
        assert_eq!(Class::of(Kind::Ups), Class::Series);
        assert_eq!(Class::of(Kind::Reach), Class::Series);
        assert_eq!(Class::of(Kind::Log), Class::Log);
        assert_eq!(Class::of(Kind::Event), Class::Event);
        assert!(Class::Log < Class::Series && Class::Series < Class::State);
        assert!(Class::State < Class::Event);
        for c in Class::BY_PRIORITY {
            assert_eq!(Class::from_u8(c as u8), Some(c));
        }
        assert_eq!(Class::from_u8(4), None);
    }

    #[test]
    fn record_limits() {
        assert_eq!(
            Record::new(Class::Log, "", vec![], false, 1),
            Err(RecordError::Topic)
        );
        assert_eq!(
            Record::new(Class::Log, "t", vec![0; MAX_PAYLOAD_LEN + 1], false, 1),
            Err(RecordError::TooLarge)
        );
        let r = Record::new(Class::State, "a/b", b"x".to_vec(), true, 9).expect("valid");
        assert_eq!(
            (r.topic(), r.payload(), r.retain(), r.seq()),
            ("a/b", &b"x"[..], true, 9)
        );
    }
}
