//! SMART disk health: pure parsers for ATA, NVMe and SCSI data, smartctl
//! JSON, the verdict rules, persisted previous values, `[smart]` config and
//! the polling task.
//!
//! Parsing and judging are pure (no I/O, fuzzed); the ioctls that fetch the
//! sectors and logs live in `io` (added by the lead when merging), and the
//! task only calls a reader function, so it can be driven by tests.
//!
//! - [`ata`], [`nvme`], [`scsi`]: byte layouts → typed values.
//! - [`smartctl`]: `smartctl --json -a` output → the same [`report::Reading`].
//! - [`rules`]: reading + previous values → [`rules::Verdict`] with reasons.
//! - [`state`]: previous raw values per disk, persisted atomically.
//! - [`config`]: the `[smart]` table.
//! - [`task`]: the polling loop.

pub mod ata;
mod check;
pub mod cli;
pub mod config;
pub mod forward;
pub mod io;
pub mod nvme;
pub mod report;
pub mod rules;
pub mod scsi;
pub mod smartctl;
pub mod state;
pub mod task;

pub use config::SmartConfig;
pub use report::{DeviceType, DiskReport, Reading, Source};
pub use rules::{judge, Level, Reason, Verdict};

use crate::config::Doc;
use std::fmt;
use std::future::Future;

use super::{Context, Running};
use crate::check::Row;
use crate::uplink::publish::Publisher;

/// Why a sector, log page or document could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The buffer is shorter than the structure needs.
    TooShort {
        /// What was being parsed.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The structure's checksum byte does not make its bytes sum to zero.
    Checksum {
        /// What was being parsed.
        what: &'static str,
        /// The byte sum modulo 256 (0 when valid).
        sum: u8,
    },
    /// The content is not what the structure allows.
    Invalid {
        /// What was being parsed.
        what: &'static str,
        /// What is wrong, in plain words.
        detail: String,
    },
}

impl ParseError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> ParseError {
        ParseError::Invalid {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn need(what: &'static str, need: usize, buf: &[u8]) -> Result<(), ParseError> {
        if buf.len() < need {
            Err(ParseError::TooShort {
                what,
                need,
                got: buf.len(),
            })
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooShort { what, need, got } => {
                write!(f, "{what}: {got} bytes, need at least {need}")
            }
            ParseError::Checksum { what, sum } => write!(
                f,
                "{what}: bad checksum (bytes sum to {sum:#04x} mod 256, not 0)"
            ),
            ParseError::Invalid { what, detail } => write!(f, "{what}: {detail}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Sum of all bytes modulo 256; ATA sectors carry a checksum byte that
/// makes this zero.
pub(crate) fn byte_sum(buf: &[u8]) -> u8 {
    buf.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// Printable ASCII of a fixed-width identity field: trimmed of spaces and
/// NULs, other bytes replaced by `?` (a bridge can return garbage, and the
/// string ends up in MQTT payloads and logs).
pub(crate) fn ascii_field(bytes: impl IntoIterator<Item = u8>) -> String {
    let s: String = bytes
        .into_iter()
        .map(|b| match b {
            0 => ' ',
            0x20..=0x7e => b as char,
            _ => '?',
        })
        .collect();
    s.trim().to_owned()
}

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// SMART disk health in the registry (off without a `[smart]` table or
/// with `enabled = false`): native ioctls, disks from the config or
/// discovered in /sys/block; readings go to
/// [`forward_smart`](forward::forward_smart).
pub struct SmartSource;

impl super::Source for SmartSource {
    const NAME: &'static str = "smart";
    type Raw = Option<config::SmartRaw>;
    type Config = Option<SmartConfig>;

    fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        super::read_optional(doc, Self::NAME, problems, config::read)
    }

    fn validate(raw: Self::Raw, problems: &mut Vec<String>) -> Option<Self::Config> {
        match raw {
            None => Some(None),
            Some(raw) => config::validate(raw, problems),
        }
    }

    fn summary(cfg: &Self::Config) -> Option<String> {
        Some(match cfg {
            Some(sm) => sm.summary(),
            None => "SMART off (no [smart] table)".to_owned(),
        })
    }

    fn start(cx: &Context, cfg: &Self::Config) -> Option<Box<dyn Running>> {
        let cfg = cfg.clone()?;
        let state_dir = cx.state_dir.clone();
        let (reader, discover) = task::native(&cfg);
        Some(cx.spawn_reporting(
            move |tx, stop| task::run_with(cfg, state_dir, reader, Some(discover), tx, stop),
            forward::forward_smart,
        ))
    }

    fn check(cfg: &Self::Config) -> impl Future<Output = Vec<Row>> {
        check::rows(cfg.as_ref())
    }

    async fn once(p: &Publisher, cfg: &Self::Config, note: &mut dyn FnMut(String)) {
        let Some(s) = cfg else {
            note("smart: off (no [smart] table)".into());
            return;
        };
        let (reader, discover) = task::native(s);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let fwd = crate::spawn::spawn(forward::forward_smart(p.clone(), rx));
        task::once(s.clone(), reader, Some(discover), tx).await;
        let _ = fwd.await;
    }
}
