//! Payloads for camera streams (`stream`), disk health (`smart`) and state
//! changes (`event`).
//!
//! Classes, verdicts and event names are carried as text, not as closed
//! enums: the agent encodes from its own enums (stable snake_case names,
//! listed in `docs/wire.md`), and a bridge keeps a name it does not know
//! instead of rejecting a newer agent's message. The decoder checks their
//! shape (see [`validate_code`]).

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// Longest class, verdict, reason code, event name or warning, in bytes.
pub const MAX_CODE_LEN: usize = 32;
/// Longest camera URL (credentials removed), in bytes.
pub const MAX_URL_LEN: usize = 512;
/// Longest free-text field (`detail`, reason details, event `message`).
pub const MAX_TEXT_LEN: usize = 512;
/// Longest identity string (model, serial, firmware, codec), in bytes.
pub const MAX_IDENT_LEN: usize = 64;
/// Longest detail of one `smart` reason, in bytes.
pub const MAX_REASON_LEN: usize = 160;
/// Most warnings on one `stream` message.
pub const MAX_WARNINGS: usize = 8;
/// Most reasons on one `smart` verdict.
pub const MAX_REASONS: usize = 16;
/// Most attributes in one `smart` message (an ATA table has 30 slots).
pub const MAX_ATTRIBUTES: usize = 30;
/// Most numbers on one `event`.
pub const MAX_EVENT_NUMBERS: usize = 16;

/// Buffer size that always fits an encoded [`StreamOut`] whose strings
/// respect their bounds (escaped at worst, 6 bytes per byte).
pub const STREAM_BUF_LEN: usize =
    (MAX_URL_LEN + MAX_TEXT_LEN + MAX_IDENT_LEN + 255 + (MAX_WARNINGS + 2) * MAX_CODE_LEN) * 6
        + 1024;
/// Buffer size that always fits an encoded [`SmartOut`] within its bounds.
pub const SMART_BUF_LEN: usize = 32 * 1024;
/// Buffer size that always fits an encoded [`EventOut`] within its bounds.
pub const EVENT_BUF_LEN: usize =
    (MAX_TEXT_LEN + 255 + (MAX_EVENT_NUMBERS + 3) * MAX_CODE_LEN) * 6 + 1024;

/// Checks a class, verdict, reason code, warning or event name: 1 to
/// [`MAX_CODE_LEN`] bytes of `[a-z0-9_]`.
pub fn validate_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Cuts `s` to at most `max` bytes on a char boundary, so an encoder can
/// respect the bounds above without failing.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `stream` payload (retained, one topic per camera): the latest RTSP
/// probe of one camera. Measurements are absent when the probe did not
/// get far enough to take them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StreamOut<'a> {
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
    /// Camera name; equals the topic's `{camera}`.
    pub camera: &'a str,
    /// Stream URL with any credentials removed.
    pub url: &'a str,
    /// `tcp` (interleaved) or `udp`.
    pub transport: &'a str,
    /// Verdict class (`ok`, `auth`, `stalled`... see docs/wire.md).
    pub class: &'a str,
    /// Warnings that do not change the class (`loss`, `codec_changed`...).
    pub warnings: &'a [&'a str],
    /// One line in plain words for an operator; never credentials.
    pub detail: &'a str,
    /// When the probe started, Unix ms.
    pub started: u64,
    /// How long the probe took, ms.
    pub probe_ms: u32,
    /// Failed probes in a row, this one included (0 when `ok`).
    pub failures: u32,
    /// RTSP status code when the class is `auth`, `not_found` or `rtsp_status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Time to the first video frame, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttff_ms: Option<u32>,
    /// Time to the first keyframe, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfk_ms: Option<u32>,
    /// Codec as an RFC 6381 string (`avc1.42C01E`, `hvc1.1.6.L63.90`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<&'a str>,
    /// Picture width in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Picture height in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Frames per second from RTP timestamps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps: Option<f32>,
    /// Frames per second by wall clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps_wall: Option<f32>,
    /// Video bitrate, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    /// Seconds between keyframes (H.265 CRA pictures count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyframe_interval_s: Option<f32>,
    /// Video frames received in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
    /// RTP packets lost in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_packets: Option<u64>,
    /// RTP time advanced ÷ wall time (about 1.0 when healthy; well below
    /// for a frozen or stalling stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtp_wall_ratio: Option<f32>,
}

/// One reason behind a `smart` verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReasonOut<'a> {
    /// Stable snake_case code (`pending_growing`, `nvme_spare_low`...).
    pub code: &'a str,
    /// `critical`, `warning` or `info`.
    pub level: &'a str,
    /// Plain words for an operator, at most [`MAX_REASON_LEN`] bytes.
    pub detail: &'a str,
}

/// One ATA SMART attribute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AttributeOut<'a> {
    /// Attribute id (1-255).
    pub id: u8,
    /// Conventional name (`Reallocated_Sector_Ct`), empty when unknown.
    pub name: &'a str,
    /// Normalised current value.
    pub value: u8,
    /// Normalised worst value.
    pub worst: u8,
    /// Failure threshold (0: never fails), when the disk reported one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresh: Option<u8>,
    /// Raw value after vendor decoding (masked/packed fields removed).
    pub raw: u64,
    /// Pre-failure attribute (its failing means imminent failure).
    pub prefail: bool,
    /// `now` (value ≤ threshold) or `past` (worst ≤ threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<&'a str>,
}

/// NVMe SMART / Health log figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NvmeOut {
    /// Critical warning bits (0 spare, 1 temperature, 2 reliability,
    /// 3 read-only, 4 volatile backup, 5 persistent memory).
    pub critical_warning: u8,
    /// Available spare, percent.
    pub available_spare: u8,
    /// Spare threshold, percent.
    pub spare_threshold: u8,
    /// Percentage of rated endurance used (may exceed 100).
    pub percentage_used: u8,
    /// Media and data integrity errors.
    pub media_errors: u64,
    /// Unsafe shutdowns.
    pub unsafe_shutdowns: u64,
    /// Error log entries.
    pub error_log_entries: u64,
    /// Power cycles.
    pub power_cycles: u64,
    /// Data units written (1 unit = 512 000 bytes).
    pub data_units_written: u64,
}

/// `smart` payload (retained, one topic per disk): identity, verdict and
/// key figures of one disk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SmartOut<'a> {
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
    /// Device name; equals the topic's `{device}` (`sda`, `nvme0n1`).
    pub device: &'a str,
    /// Device path read (`/dev/sda`).
    pub path: &'a str,
    /// `ata`, `nvme`, `scsi` or `unknown`.
    pub protocol: &'a str,
    /// `native` (ioctls) or `smartctl` (fallback).
    pub source: &'a str,
    /// `read`, `standby` (not woken, not read) or `unsupported`.
    pub state: &'a str,
    /// `ok`, `warning`, `critical` or `unknown` (not read).
    pub verdict: &'a str,
    /// Why, worst first; empty when `ok`.
    pub reasons: &'a [ReasonOut<'a>],
    /// Model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    /// Serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<&'a str>,
    /// Firmware revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<&'a str>,
    /// Capacity in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Temperature, °C.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<i16>,
    /// Power-on hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_on_hours: Option<u64>,
    /// Reallocated sectors (ATA 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reallocated: Option<u64>,
    /// Pending sectors (ATA 197).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Offline uncorrectable sectors (ATA 198).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncorrectable: Option<u64>,
    /// Interface CRC errors (ATA 199).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc_errors: Option<u64>,
    /// NVMe health figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvme: Option<NvmeOut>,
    /// The ATA attribute table, at most [`MAX_ATTRIBUTES`].
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub attributes: &'a [AttributeOut<'a>],
    /// Why the disk could not be read, in plain words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

/// Named numbers serialized as one JSON object (`{"deleted_files":3}`),
/// without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumbersOut<'a>(pub &'a [(&'a str, u64)]);

impl Serialize for NumbersOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// `event` payload (not retained, kept in order): something changed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EventOut<'a> {
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
    /// What happened (`camera_down`, `disk_verdict`, `cleanup`...).
    pub event: &'a str,
    /// `info`, `warning` or `critical`.
    pub severity: &'a str,
    /// What it happened to: camera name, disk device, cleanup root; may
    /// be empty.
    pub subject: &'a str,
    /// Previous class or verdict, for changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    /// New class or verdict, for changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a str>,
    /// Plain words for an operator.
    pub message: &'a str,
    /// Named figures (`deleted_bytes`...), at most [`MAX_EVENT_NUMBERS`].
    pub numbers: NumbersOut<'a>,
}

#[cfg(feature = "decode")]
pub use owned::*;

#[cfg(feature = "decode")]
mod owned {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    /// Decoded `stream` payload; see [`super::StreamOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct Stream {
        pub v: u32,
        pub site: String,
        pub boot: String,
        pub seq: u64,
        pub ts: u64,
        pub camera: String,
        pub url: String,
        pub transport: String,
        pub class: String,
        #[serde(default)]
        pub warnings: Vec<String>,
        #[serde(default)]
        pub detail: String,
        pub started: u64,
        pub probe_ms: u32,
        #[serde(default)]
        pub failures: u32,
        #[serde(default)]
        pub status_code: Option<u16>,
        #[serde(default)]
        pub ttff_ms: Option<u32>,
        #[serde(default)]
        pub ttfk_ms: Option<u32>,
        #[serde(default)]
        pub codec: Option<String>,
        #[serde(default)]
        pub width: Option<u32>,
        #[serde(default)]
        pub height: Option<u32>,
        #[serde(default)]
        pub fps: Option<f32>,
        #[serde(default)]
        pub fps_wall: Option<f32>,
        #[serde(default)]
        pub bitrate_kbps: Option<u32>,
        #[serde(default)]
        pub keyframe_interval_s: Option<f32>,
        #[serde(default)]
        pub frames: Option<u32>,
        #[serde(default)]
        pub lost_packets: Option<u64>,
        #[serde(default)]
        pub rtp_wall_ratio: Option<f32>,
    }

    /// Decoded verdict reason; see [`super::ReasonOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct Reason {
        pub code: String,
        pub level: String,
        pub detail: String,
    }

    /// Decoded ATA attribute; see [`super::AttributeOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct Attribute {
        pub id: u8,
        #[serde(default)]
        pub name: String,
        pub value: u8,
        pub worst: u8,
        #[serde(default)]
        pub thresh: Option<u8>,
        pub raw: u64,
        #[serde(default)]
        pub prefail: bool,
        #[serde(default)]
        pub failed: Option<String>,
    }

    /// Decoded NVMe figures; see [`super::NvmeOut`].
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[allow(missing_docs)]
    pub struct Nvme {
        pub critical_warning: u8,
        pub available_spare: u8,
        pub spare_threshold: u8,
        pub percentage_used: u8,
        pub media_errors: u64,
        pub unsafe_shutdowns: u64,
        pub error_log_entries: u64,
        #[serde(default)]
        pub power_cycles: u64,
        #[serde(default)]
        pub data_units_written: u64,
    }

    /// Decoded `smart` payload; see [`super::SmartOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct Smart {
        pub v: u32,
        pub site: String,
        pub boot: String,
        pub seq: u64,
        pub ts: u64,
        pub device: String,
        pub path: String,
        pub protocol: String,
        pub source: String,
        pub state: String,
        pub verdict: String,
        #[serde(default)]
        pub reasons: Vec<Reason>,
        #[serde(default)]
        pub model: Option<String>,
        #[serde(default)]
        pub serial: Option<String>,
        #[serde(default)]
        pub firmware: Option<String>,
        #[serde(default)]
        pub capacity_bytes: Option<u64>,
        #[serde(default)]
        pub temperature_c: Option<i16>,
        #[serde(default)]
        pub power_on_hours: Option<u64>,
        #[serde(default)]
        pub reallocated: Option<u64>,
        #[serde(default)]
        pub pending: Option<u64>,
        #[serde(default)]
        pub uncorrectable: Option<u64>,
        #[serde(default)]
        pub crc_errors: Option<u64>,
        #[serde(default)]
        pub nvme: Option<Nvme>,
        #[serde(default)]
        pub attributes: Vec<Attribute>,
        #[serde(default)]
        pub detail: Option<String>,
    }

    /// Decoded `event` payload; see [`super::EventOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[allow(missing_docs)]
    pub struct Event {
        pub v: u32,
        pub site: String,
        pub boot: String,
        pub seq: u64,
        pub ts: u64,
        pub event: String,
        pub severity: String,
        #[serde(default)]
        pub subject: String,
        #[serde(default)]
        pub from: Option<String>,
        #[serde(default)]
        pub to: Option<String>,
        pub message: String,
        #[serde(default)]
        pub numbers: BTreeMap<String, u64>,
    }
}
