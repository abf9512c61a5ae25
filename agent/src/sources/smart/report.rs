//! What one read of one disk produced: the typed [`Reading`] and the
//! [`DiskReport`] that carries it with its verdict.

use std::path::PathBuf;

use super::ata::{AtaHealth, AtaIdentity, Attribute};
use super::nvme::{NvmeHealth, NvmeIdentity};
use super::rules::Verdict;
use super::scsi::{ScsiIdentity, ScsiIe};

/// How to talk to a device: detected, or forced by config or CLI for odd
/// USB bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceType {
    /// Detect: NVMe by name, then SAT(16), SAT(12), SCSI.
    #[default]
    Auto,
    /// ATA PASS-THROUGH(16).
    Sat,
    /// ATA PASS-THROUGH(12), for bridges that only know the short CDB.
    Sat12,
    /// NVMe admin commands.
    Nvme,
    /// SCSI LOG SENSE only.
    Scsi,
}

impl DeviceType {
    /// The config/CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Auto => "auto",
            DeviceType::Sat => "sat",
            DeviceType::Sat12 => "sat12",
            DeviceType::Nvme => "nvme",
            DeviceType::Scsi => "scsi",
        }
    }
}

impl std::str::FromStr for DeviceType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DeviceType::Auto),
            "sat" => Ok(DeviceType::Sat),
            "sat12" => Ok(DeviceType::Sat12),
            "nvme" => Ok(DeviceType::Nvme),
            "scsi" => Ok(DeviceType::Scsi),
            _ => Err(format!(
                "unknown device type `{s}` (known: auto, sat, sat12, nvme, scsi)"
            )),
        }
    }
}

/// Which path produced a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Our own ioctls.
    Native,
    /// `smartctl --json -a`, when the native path could not read.
    Smartctl,
}

/// What was read from one disk.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// SATA disk, directly or through a SAT bridge.
    Ata {
        /// IDENTIFY DEVICE.
        identity: AtaIdentity,
        /// SMART attributes with thresholds merged.
        attributes: Vec<Attribute>,
        /// SMART RETURN STATUS.
        health: AtaHealth,
        /// CDB length that worked: 16 or 12.
        passthrough: u8,
    },
    /// NVMe disk.
    Nvme {
        /// Identify Controller.
        identity: NvmeIdentity,
        /// Log page 0x02.
        health: NvmeHealth,
    },
    /// SCSI/SAS disk or a bridge without SAT.
    Scsi {
        /// Standard INQUIRY.
        identity: ScsiIdentity,
        /// Page 0x2F, when supported.
        ie: Option<ScsiIe>,
        /// Page 0x0D (or the IE page's temperature).
        temperature_c: Option<u8>,
    },
    /// CHECK POWER MODE said standby: not woken, not read.
    Standby,
    /// The device cannot be read; `reason` says why in plain words.
    Unsupported {
        /// e.g. "no SAT passthrough (USB bridge answered ILLEGAL REQUEST 05/20/00)".
        reason: String,
    },
}

impl Reading {
    /// Model name, if the reading has an identity.
    pub fn model(&self) -> Option<&str> {
        match self {
            Reading::Ata { identity, .. } => Some(&identity.model),
            Reading::Nvme { identity, .. } => Some(&identity.model),
            Reading::Scsi { identity, .. } => Some(&identity.product),
            _ => None,
        }
    }

    /// Serial number, if the reading has one.
    pub fn serial(&self) -> Option<&str> {
        match self {
            Reading::Ata { identity, .. } => Some(&identity.serial),
            Reading::Nvme { identity, .. } => Some(&identity.serial),
            _ => None,
        }
    }

    /// Current temperature in °C (ATA 194, else 190; NVMe composite).
    pub fn temperature_c(&self) -> Option<i16> {
        match self {
            Reading::Ata { attributes, .. } => [194u8, 190]
                .iter()
                .find_map(|id| attributes.iter().find(|a| a.id == *id))
                .map(|a| a.raw_value() as i16),
            Reading::Nvme { health, .. } => super::nvme::kelvin_to_c(health.temperature_k),
            Reading::Scsi { temperature_c, .. } => temperature_c.map(i16::from),
            _ => None,
        }
    }

    /// Power-on hours (ATA 9 masked to 32 bits; NVMe log).
    pub fn power_on_hours(&self) -> Option<u64> {
        match self {
            Reading::Ata { attributes, .. } => {
                attributes.iter().find(|a| a.id == 9).map(|a| a.raw_value())
            }
            Reading::Nvme { health, .. } => Some(health.power_on_hours),
            _ => None,
        }
    }

    /// The key previous values are stored under: the disk's identity, not
    /// its device name (names move when disks are added). `None` when the
    /// reading has no usable serial.
    pub fn state_key(&self) -> Option<String> {
        let (kind, model, serial) = match self {
            Reading::Ata { identity, .. } => ("ata", &identity.model, &identity.serial),
            Reading::Nvme { identity, .. } => ("nvme", &identity.model, &identity.serial),
            _ => return None,
        };
        (!serial.is_empty()).then(|| format!("{kind}:{model}:{serial}"))
    }

    /// The device type this reading proves.
    pub fn resolved_type(&self) -> Option<DeviceType> {
        match self {
            Reading::Ata {
                passthrough: 12, ..
            } => Some(DeviceType::Sat12),
            Reading::Ata { .. } => Some(DeviceType::Sat),
            Reading::Nvme { .. } => Some(DeviceType::Nvme),
            Reading::Scsi { .. } => Some(DeviceType::Scsi),
            _ => None,
        }
    }
}

/// One disk's reading with its verdict, as published.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskReport {
    /// Kernel name: `sda`, `nvme0n1`.
    pub device: String,
    /// Device node read.
    pub path: PathBuf,
    /// The type used (resolved when the config said `auto` and the read
    /// succeeded).
    pub kind: DeviceType,
    /// Which path produced the reading.
    pub source: Source,
    /// What was read.
    pub reading: Reading,
    /// The rules' judgement.
    pub verdict: Verdict,
    /// Wall clock of the read, ms since the Unix epoch.
    pub read_at_ms: u64,
}
