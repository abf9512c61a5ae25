//! Payload of the periodic UPS reading (`ups`): every UPS the agent reads
//! from NUT's upsd, each `[ups] interval_secs`.
//!
//! A value the UPS does not report (many report no input voltage, some no
//! runtime) is absent, never 0: 0 V on the input is a real reading (mains
//! lost). Power states are carried as text like classes and verdicts (see
//! [`super::validate_code`]), with the words of the UPS events' `from` /
//! `to` (`on_line`, `on_battery`, `low_battery`, `unknown`).

use serde::Serialize;

/// Most UPS entries in one `ups` message (the agent reads at most 8).
pub const MAX_UPS: usize = 8;
/// Longest UPS name, in bytes (as in upsd's `ups.conf`).
pub const MAX_UPS_NAME_LEN: usize = 64;
/// Longest raw `ups.status` text, in bytes (the agent cuts it there).
pub const MAX_UPS_STATUS_LEN: usize = 128;
/// Longest error of one UPS, in bytes (the agent cuts it there).
pub const MAX_UPS_ERROR_LEN: usize = 160;

/// Buffer size that always fits an encoded [`UpsOut`] whose strings
/// respect their bounds (escaped at worst, 6 bytes per byte).
pub const UPS_BUF_LEN: usize = MAX_UPS
    * ((MAX_UPS_NAME_LEN + MAX_UPS_STATUS_LEN + MAX_UPS_ERROR_LEN) * 6 + super::MAX_CODE_LEN + 256)
    + super::MAX_TEXT_LEN * 6
    + 512;

/// One UPS in a `ups` message.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UpsEntryOut<'a> {
    /// Its name in upsd (`LIST UPS`), 1 to [`MAX_UPS_NAME_LEN`] bytes.
    pub name: &'a str,
    /// `on_line`, `on_battery`, `low_battery` (`LB` or `FSD`: about to
    /// be cut), `unknown` (neither `OL` nor `OB`, or not read).
    pub power: &'a str,
    /// `ups.status` holds `OL`: on mains.
    pub on_line: bool,
    /// `ups.status` holds `OB`: on battery.
    pub on_battery: bool,
    /// `ups.status` holds `LB`: low battery.
    pub low_battery: bool,
    /// The raw `ups.status` flags, space-separated (`OB DISCHRG LB`); at
    /// most [`MAX_UPS_STATUS_LEN`] bytes.
    pub status: &'a str,
    /// `battery.charge`, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge_pct: Option<f32>,
    /// `battery.runtime`: seconds left on battery at the present load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_secs: Option<u32>,
    /// `ups.load`, percent of the UPS's capacity (may exceed 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_pct: Option<f32>,
    /// `input.voltage`, volts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_voltage_v: Option<f32>,
    /// Why this UPS could not be read (upsd's `ERR DATA-STALE`...); the
    /// power is then `unknown` and the figures absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// `ups` payload: one reading of every UPS of the site.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UpsOut<'a> {
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
    /// Reading period in seconds (`[ups] interval_secs`).
    pub interval_secs: u32,
    /// Why upsd could not be read at all (then `ups` is empty), at most
    /// [`super::MAX_TEXT_LEN`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// At most [`MAX_UPS`] entries.
    pub ups: &'a [UpsEntryOut<'a>],
}

impl<'a> UpsOut<'a> {
    /// Builds a `ups` payload.
    pub fn new(
        h: super::Header<'a>,
        interval_secs: u32,
        error: Option<&'a str>,
        ups: &'a [UpsEntryOut<'a>],
    ) -> Self {
        UpsOut {
            v: crate::SCHEMA_VERSION,
            site: h.site,
            boot: h.boot,
            seq: h.seq,
            ts: h.ts,
            interval_secs,
            error,
            ups,
        }
    }
}

#[cfg(feature = "decode")]
pub use owned::*;

#[cfg(feature = "decode")]
mod owned {
    use serde::Deserialize;

    /// One decoded UPS; see [`super::UpsEntryOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct UpsEntry {
        pub name: String,
        pub power: String,
        #[serde(default)]
        pub on_line: bool,
        #[serde(default)]
        pub on_battery: bool,
        #[serde(default)]
        pub low_battery: bool,
        #[serde(default)]
        pub status: String,
        #[serde(default)]
        pub charge_pct: Option<f32>,
        #[serde(default)]
        pub runtime_secs: Option<u32>,
        #[serde(default)]
        pub load_pct: Option<f32>,
        #[serde(default)]
        pub input_voltage_v: Option<f32>,
        #[serde(default)]
        pub error: Option<String>,
    }

    /// Decoded `ups` payload; see [`super::UpsOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct Ups {
        pub v: u32,
        pub site: String,
        pub boot: String,
        pub seq: u64,
        pub ts: u64,
        pub interval_secs: u32,
        #[serde(default)]
        pub error: Option<String>,
        pub ups: Vec<UpsEntry>,
    }
}
