//! SCSI sense data, decoded (pure; fuzzed by `fuzz_targets/smart_sense.rs`).
//!
//! Two formats (SPC-4 4.5): descriptor (response code 0x72/0x73) and fixed
//! (0x70/0x71). For ATA PASS-THROUGH the ATA output registers come back in
//! the ATA Status Return descriptor (type 0x09) or, in fixed format, in the
//! information and command-specific fields (SAT-4 12.2.2.6), flagged by
//! ASC/ASCQ 00/1D. SMART RETURN STATUS is judged from LBA mid/high there
//! (`ata::AtaHealth::from_lba`).
//!
//! Every offset is checked against both the buffer and the format's own
//! length fields; nothing here can panic on any input.

use std::fmt;

/// Sense key NO SENSE.
pub const KEY_NO_SENSE: u8 = 0x0;
/// Sense key RECOVERED ERROR.
pub const KEY_RECOVERED: u8 = 0x1;
/// Sense key NOT READY.
pub const KEY_NOT_READY: u8 = 0x2;
/// Sense key ILLEGAL REQUEST.
pub const KEY_ILLEGAL_REQUEST: u8 = 0x5;
/// Sense key ABORTED COMMAND.
pub const KEY_ABORTED_COMMAND: u8 = 0xB;

/// ATA Status Return descriptor type.
const DESC_ATA_RETURN: u8 = 0x09;

/// The ATA output registers returned by SAT (28-bit part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtaRegisters {
    /// Error register.
    pub error: u8,
    /// Sector count (CHECK POWER MODE puts the mode here).
    pub count: u8,
    /// LBA low.
    pub lba_low: u8,
    /// LBA mid (0x4F passed / 0xF4 failing for RETURN STATUS).
    pub lba_mid: u8,
    /// LBA high (0xC2 passed / 0x2C failing).
    pub lba_high: u8,
    /// Device.
    pub device: u8,
    /// Status register (bit 0 ERR, bit 6 DRDY).
    pub status: u8,
}

/// Decoded sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Response code (0x70..=0x73).
    pub response_code: u8,
    /// Sense key (low nibble).
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// ATA registers, when the device returned them.
    pub ata: Option<AtaRegisters>,
}

/// Why sense bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseError {
    /// Fewer bytes than the format's header.
    TooShort(usize),
    /// Response code is not 0x70..=0x73 (vendor or garbage).
    UnknownFormat(u8),
}

impl fmt::Display for SenseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenseError::TooShort(n) => write!(f, "sense data too short ({n} bytes)"),
            SenseError::UnknownFormat(c) => write!(f, "unknown sense response code 0x{c:02x}"),
        }
    }
}

impl std::error::Error for SenseError {}

/// Plain name of a sense key.
pub fn key_name(key: u8) -> &'static str {
    match key {
        0x0 => "NO SENSE",
        0x1 => "RECOVERED ERROR",
        0x2 => "NOT READY",
        0x3 => "MEDIUM ERROR",
        0x4 => "HARDWARE ERROR",
        0x5 => "ILLEGAL REQUEST",
        0x6 => "UNIT ATTENTION",
        0x7 => "DATA PROTECT",
        0xB => "ABORTED COMMAND",
        _ => "other",
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02x}/{:02x}/{:02x}",
            key_name(self.key),
            self.key,
            self.asc,
            self.ascq
        )
    }
}

impl Sense {
    /// The device rejected the command itself (the usual answer of a USB
    /// bridge or HBA without ATA pass-through: 05/20/00 INVALID COMMAND
    /// OPERATION CODE, or 05/24/00 INVALID FIELD IN CDB).
    pub fn is_illegal_request(&self) -> bool {
        self.key == KEY_ILLEGAL_REQUEST
    }

    /// The ATA device aborted the command (status ERR bit set): the command
    /// reached the disk, which said no (e.g. SMART disabled).
    pub fn ata_aborted(&self) -> bool {
        self.ata.is_some_and(|a| a.status & 0x01 != 0)
    }
}

/// Decodes fixed or descriptor sense bytes.
pub fn decode(buf: &[u8]) -> Result<Sense, SenseError> {
    let first = *buf.first().ok_or(SenseError::TooShort(0))?;
    let code = first & 0x7f;
    match code {
        0x72 | 0x73 => decode_descriptor(buf, code),
        0x70 | 0x71 => decode_fixed(buf, code),
        other => Err(SenseError::UnknownFormat(other)),
    }
}

fn decode_descriptor(buf: &[u8], code: u8) -> Result<Sense, SenseError> {
    if buf.len() < 8 {
        return Err(SenseError::TooShort(buf.len()));
    }
    let mut s = Sense {
        response_code: code,
        key: buf[1] & 0x0f,
        asc: buf[2],
        ascq: buf[3],
        ata: None,
    };
    // Additional length counts the descriptors; trust it only up to what
    // was actually returned.
    let end = (8 + usize::from(buf[7])).min(buf.len());
    let mut at = 8;
    while at + 2 <= end {
        let kind = buf[at];
        let len = 2 + usize::from(buf[at + 1]);
        let Some(d) = buf.get(at..(at + len).min(end)) else {
            break;
        };
        if kind == DESC_ATA_RETURN && d.len() >= 14 {
            s.ata = Some(AtaRegisters {
                error: d[3],
                count: d[5],
                lba_low: d[7],
                lba_mid: d[9],
                lba_high: d[11],
                device: d[12],
                status: d[13],
            });
        }
        at += len;
    }
    Ok(s)
}

fn decode_fixed(buf: &[u8], code: u8) -> Result<Sense, SenseError> {
    // Key at 2; ASC/ASCQ at 12/13 need 14 bytes, and the additional length
    // (byte 7) must cover them.
    if buf.len() < 3 {
        return Err(SenseError::TooShort(buf.len()));
    }
    let avail = buf
        .get(7)
        .map_or(buf.len(), |&n| (8 + usize::from(n)).min(buf.len()));
    let byte = |i: usize| if i < avail { buf[i] } else { 0 };
    let mut s = Sense {
        response_code: code,
        key: buf[2] & 0x0f,
        asc: byte(12),
        ascq: byte(13),
        ata: None,
    };
    // ATA PASS-THROUGH INFORMATION AVAILABLE: registers in the information
    // (3..=6) and command-specific (8..=11) fields.
    if s.asc == 0x00 && s.ascq == 0x1d && avail >= 14 {
        s.ata = Some(AtaRegisters {
            error: buf[3],
            status: buf[4],
            device: buf[5],
            count: buf[6],
            lba_low: buf[9],
            lba_mid: buf[10],
            lba_high: buf[11],
        });
    }
    Ok(s)
}

/// CHECK POWER MODE count: 0x00 (standby_z) and 0x01 (standby_y) mean the
/// platters are stopped; 0x80..0x83 idle and 0xFF active mean spinning.
pub fn is_standby(count: u8) -> bool {
    count <= 0x01
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::smart::ata::AtaHealth;

    /// Real libata sense for RETURN STATUS on QEMU's ide-hd.
    const QEMU_PASSED: [u8; 22] = [
        0x72, 0x01, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x0e, 0x09, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x4f, 0x00, 0xc2, 0x00, 0x50,
    ];

    #[test]
    fn descriptor_sense_from_qemu_passes() {
        let s = decode(&QEMU_PASSED).unwrap();
        assert_eq!((s.key, s.asc, s.ascq), (KEY_RECOVERED, 0x00, 0x1d));
        let a = s.ata.unwrap();
        assert_eq!((a.lba_mid, a.lba_high, a.status), (0x4f, 0xc2, 0x50));
        assert_eq!(
            AtaHealth::from_lba(a.lba_mid, a.lba_high),
            AtaHealth::Passed
        );
        assert!(!s.ata_aborted());
    }

    #[test]
    fn descriptor_sense_failing() {
        let mut b = QEMU_PASSED;
        b[17] = 0xf4;
        b[19] = 0x2c;
        let a = decode(&b).unwrap().ata.unwrap();
        assert_eq!(
            AtaHealth::from_lba(a.lba_mid, a.lba_high),
            AtaHealth::Failing
        );
    }

    #[test]
    fn descriptor_after_another_descriptor() {
        // An information descriptor (type 0, 12 bytes) first, then ATA return.
        let mut b = vec![0x72, 0x01, 0x00, 0x1d, 0, 0, 0, 12 + 14];
        b.extend_from_slice(&[0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&[
            0x09, 0x0c, 0, 0x04, 0, 0xff, 0, 0, 0, 0x4f, 0, 0xc2, 0, 0x51,
        ]);
        let s = decode(&b).unwrap();
        let a = s.ata.unwrap();
        assert_eq!((a.error, a.count, a.status), (0x04, 0xff, 0x51));
        assert!(s.ata_aborted());
    }

    #[test]
    fn fixed_sense_with_ata_registers() {
        // Fixed format: error 0, status 0x50, device 0, count 0xff,
        // low/mid/high at 9/10/11, ASC/ASCQ 00/1D.
        let b = [
            0x70, 0, 0x01, 0x00, 0x50, 0x00, 0xff, 10, 0, 0x00, 0xf4, 0x2c, 0x00, 0x1d, 0, 0, 0, 0,
        ];
        let s = decode(&b).unwrap();
        let a = s.ata.unwrap();
        assert_eq!(a.count, 0xff);
        assert_eq!(
            AtaHealth::from_lba(a.lba_mid, a.lba_high),
            AtaHealth::Failing
        );
    }

    #[test]
    fn fixed_illegal_request_from_usb_storage() {
        // QEMU usb-storage answers ATA_16 with 05/20/00.
        let b = [
            0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0,
        ];
        let s = decode(&b).unwrap();
        assert!(s.is_illegal_request());
        assert_eq!((s.asc, s.ascq), (0x20, 0x00));
        assert!(s.ata.is_none());
        assert_eq!(s.to_string(), "ILLEGAL REQUEST 05/20/00");
    }

    #[test]
    fn truncated_and_garbage_sense() {
        assert_eq!(decode(&[]), Err(SenseError::TooShort(0)));
        assert_eq!(decode(&[0x72, 1]), Err(SenseError::TooShort(2)));
        assert_eq!(decode(&[0x00; 18]), Err(SenseError::UnknownFormat(0)));
        // Additional length larger than the buffer: the ATA descriptor is
        // cut, so no registers, and no panic.
        let s = decode(&QEMU_PASSED[..15]).unwrap();
        assert!(s.ata.is_none());
        // Descriptor length 0xff running past the end.
        let b = [0x72, 0, 0, 0, 0, 0, 0, 0xff, 0x09, 0xff, 1, 2];
        assert!(decode(&b).unwrap().ata.is_none());
        // Fixed with additional length 0: ASC/ASCQ unknown (0).
        let s = decode(&[0xf0, 0, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0]).unwrap();
        assert_eq!((s.key, s.asc), (5, 0));
    }

    #[test]
    fn power_modes() {
        assert!(is_standby(0x00));
        assert!(is_standby(0x01));
        assert!(!is_standby(0x80));
        assert!(!is_standby(0xff));
    }
}
