//! Payload of the periodic reachability reading (`reach`): each
//! `[reach] interval_secs`, the round's figures for every
//! `[[reach.target]]` (NVR, PoE switch, router...): probes sent, answers,
//! round trip, up or down.
//!
//! The state changes already travel as events (`device_down`,
//! `device_up`); this is the series behind them, so the centre can see a
//! link degrade (loss, slow answers) before a device drops.
//!
//! A round trip is absent when nothing came back (never 0: 0 ms is not
//! "no answer"). Loss is not sent: `sent - received - refused` probes got
//! no answer. A round of more than [`MAX_REACH_TARGETS`] targets is sent
//! as several messages (each with its own `seq`), so that one always fits
//! the agent's 32 KiB publish buffer.

use serde::Serialize;

/// Most targets in one `reach` message; the agent splits a larger round.
pub const MAX_REACH_TARGETS: usize = 16;
/// Longest target name, in bytes (as `[[reach.target]] name`).
pub const MAX_REACH_NAME_LEN: usize = 64;
/// Longest target address, in bytes (a DNS name at most).
pub const MAX_REACH_ADDRESS_LEN: usize = 253;
/// Longest error of one target, in bytes (the agent cuts it there).
pub const MAX_REACH_ERROR_LEN: usize = 128;

/// Buffer size that always fits an encoded [`ReachOut`] whose strings
/// respect their bounds (names and errors escaped at worst, 6 bytes per
/// byte; addresses are `[0-9A-Za-z.:-]`): 28,112 bytes.
pub const REACH_BUF_LEN: usize = MAX_REACH_TARGETS
    * ((MAX_REACH_NAME_LEN + MAX_REACH_ERROR_LEN) * 6
        + MAX_REACH_ADDRESS_LEN
        + 2 * super::MAX_CODE_LEN
        + 256)
    + 512;

// The agent encodes every kind but `log` into one 32 KiB stack buffer.
const _: () = assert!(REACH_BUF_LEN <= 32 * 1024);

/// Whether an address is as `[[reach.target]] address` allows: 1 to
/// [`MAX_REACH_ADDRESS_LEN`] bytes of letters, digits, `.`, `-` and `:`
/// (an IP address or a host name), so it never needs escaping.
pub fn validate_reach_address(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= MAX_REACH_ADDRESS_LEN
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One target's round in a `reach` message.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReachTargetOut<'a> {
    /// `[[reach.target]] name`: 1 to [`MAX_REACH_NAME_LEN`] bytes, no
    /// control characters, unique in the message.
    pub name: &'a str,
    /// `[[reach.target]] address` as written (IP address or host name).
    pub address: &'a str,
    /// `icmp` (echo) or `tcp` (connect to `port`).
    pub kind: &'a str,
    /// The TCP port; absent for ICMP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `up` (anything answered), `down` (nothing did) or `unknown` (the
    /// round could not be run: `error` says why; nothing about the
    /// device).
    pub state: &'a str,
    /// Probes sent this round.
    pub sent: u32,
    /// Echo replies or accepted connections.
    pub received: u32,
    /// TCP only: connections refused (the device answered, nothing
    /// listens on the port); absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub refused: u32,
    /// Fastest answer (replies, accepted or refused connections), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_min_ms: Option<f32>,
    /// Mean of the answers' round trips, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_avg_ms: Option<f32>,
    /// Slowest answer, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_max_ms: Option<f32>,
    /// Why the round could not be run (no ICMP socket, name not
    /// resolved), at most [`MAX_REACH_ERROR_LEN`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// `reach` payload: one round of (up to [`MAX_REACH_TARGETS`] of) the
/// site's targets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReachOut<'a> {
    /// Schema version.
    pub v: u32,
    /// See [`super::Header::site`].
    pub site: &'a str,
    /// See [`super::Header::boot`].
    pub boot: &'a str,
    /// See [`super::Header::seq`].
    pub seq: u64,
    /// See [`super::Header::ts`].
    pub ts: u64,
    /// Round period in seconds (`[reach] interval_secs`).
    pub interval_secs: u32,
    /// 1 to [`MAX_REACH_TARGETS`] entries.
    pub targets: &'a [ReachTargetOut<'a>],
}

impl<'a> ReachOut<'a> {
    /// Builds a `reach` payload.
    pub fn new(
        h: super::Header<'a>,
        interval_secs: u32,
        targets: &'a [ReachTargetOut<'a>],
    ) -> Self {
        ReachOut {
            v: crate::SCHEMA_VERSION,
            site: h.site,
            boot: h.boot,
            seq: h.seq,
            ts: h.ts,
            interval_secs,
            targets,
        }
    }
}

#[cfg(feature = "decode")]
pub use owned::*;

#[cfg(feature = "decode")]
mod owned {
    use serde::Deserialize;

    /// One decoded target; see [`super::ReachTargetOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct ReachTarget {
        pub name: String,
        pub address: String,
        pub kind: String,
        #[serde(default)]
        pub port: Option<u16>,
        pub state: String,
        pub sent: u32,
        pub received: u32,
        #[serde(default)]
        pub refused: u32,
        #[serde(default)]
        pub rtt_min_ms: Option<f32>,
        #[serde(default)]
        pub rtt_avg_ms: Option<f32>,
        #[serde(default)]
        pub rtt_max_ms: Option<f32>,
        #[serde(default)]
        pub error: Option<String>,
    }

    impl ReachTarget {
        /// Probes without any answer (the decoder checked that
        /// `received + refused <= sent`).
        pub fn lost(&self) -> u32 {
            self.sent
                .saturating_sub(self.received.saturating_add(self.refused))
        }
    }

    /// Decoded `reach` payload; see [`super::ReachOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct Reach {
        pub v: u32,
        pub site: String,
        pub boot: String,
        pub seq: u64,
        pub ts: u64,
        pub interval_secs: u32,
        pub targets: Vec<ReachTarget>,
    }
}
