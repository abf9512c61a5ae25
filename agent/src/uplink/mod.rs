//! The uplink: everything between a source's message and the broker's
//! PUBACK. Sources see only [`publish::Publisher`]; nothing here knows
//! about a particular source.
//!
//! Data flows one way: [`publish`] (stamp site/boot/seq, encode, never
//! block) → [`outbox`] (store and forward, memory or disk; no MQTT, no
//! tasks) → [`link`] (what the publisher, the pump and the uplink share;
//! the pump hands records to rumqttc) → [`mqtt`] (the uplink task: birth,
//! Last Will, reconnects, graceful death). [`pkid`] maps rumqttc packet
//! ids back to outbox records, so a PUBACK removes exactly its record.

pub mod link;
pub mod mqtt;
pub mod outbox;
pub mod pkid;
pub mod publish;
