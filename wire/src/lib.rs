//! The sitewatch wire contract: MQTT topics and JSON payloads, version 1.
//!
//! This crate is the single source of truth shared by the agent (which
//! encodes) and the bridge (which decodes). It does no I/O.
//!
//! # Layout
//! - [`topic`]: topic grammar `sitewatch/v1/{site}/{kind}[/{name}]`, and the
//!   validation of site ids and names.
//! - [`payload`]: the payload types. `*Out` types borrow their data and are
//!   encoded without heap allocation by [`encode`] (feature `encode`, backed by
//!   serde-json-core); owned types are decoded by [`decode()`] (feature
//!   `decode`, backed by serde_json).
//! - [`golden`]: golden vectors (feature `golden`) used by tests on both sides
//!   so encoder and decoder cannot drift.
//!
//! The human-readable contract is `docs/wire.md`; keep both in step.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

pub mod payload;
pub mod topic;

#[cfg(feature = "decode")]
mod decode;
#[cfg(feature = "decode")]
pub use decode::{decode, DecodeError, Message, MAX_PAYLOAD_BYTES};

#[cfg(feature = "encode")]
mod encode;
#[cfg(feature = "encode")]
pub use encode::{encode, encode_log, EncodeError};

#[cfg(feature = "golden")]
pub mod golden;

/// Schema version carried in every payload's `v` field.
///
/// Bumped only for incompatible changes; adding an optional field is not one.
/// Decoders reject payloads with a higher version than they know.
pub const SCHEMA_VERSION: u32 = 1;
