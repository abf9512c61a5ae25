//! Where messages go: PostgreSQL, and Loki for syslog batches.
//!
//! * [`batch`]: the decoded batch ([`batch::Prepared`]) and the pure
//!   planning of its `log` messages; imports no sink (the sinks import
//!   it);
//! * [`loki`]: pushing `log` messages to Grafana Loki (before the
//!   database transaction that records them);
//! * [`state`]: the pure site-state rule for status messages;
//! * [`classify`]: which database errors are retried;
//! * [`migrations`]: the embedded, versioned schema;
//! * [`postgres`]: the I/O — one transaction per batch, one file per
//!   table family.
//!
//! Nothing here knows about MQTT; the writer hands in [`batch::InMessage`]s.

pub mod batch;
pub mod classify;
pub mod loki;
pub mod migrations;
pub mod postgres;
pub mod state;
