//! SCSI generic (`SG_IO`) plumbing: the `sg_io_hdr` v3 structure, the one
//! ioctl that sends a CDB, and the CDB builders for ATA PASS-THROUGH (SAT),
//! INQUIRY and LOG SENSE.
//!
//! The CDB builders are pure and unit tested byte for byte against what
//! smartctl 7.3 sends (captured with `smartctl -r ioctl` in a QEMU guest).
//! The header holds raw pointers, so its size differs per target: 64 bytes
//! on 32-bit ARM, 88 on 64-bit (tests check both on the real targets under
//! qemu-user).

use std::os::fd::{AsRawFd, BorrowedFd};

use super::sense::{self, Sense};

/// `SG_IO` (`scsi/sg.h`): a plain number, the same on every architecture.
pub const SG_IO: u32 = 0x2285;
/// `interface_id` of the v3 header.
const SG_INTERFACE_ID: i32 = b'S' as i32;
/// `SG_DXFER_NONE`.
const SG_DXFER_NONE: i32 = -1;
/// `SG_DXFER_FROM_DEV`.
const SG_DXFER_FROM_DEV: i32 = -3;
/// Fixed (18) or descriptor (8 + 14 for the ATA Return descriptor) sense
/// fits easily; SPC allows up to 252.
pub const SENSE_LEN: usize = 64;

/// `struct sg_io_hdr` (`scsi/sg.h`, interface v3), field for field.
#[repr(C)]
#[derive(Debug)]
pub struct SgIoHdr {
    /// Always `'S'`.
    pub interface_id: i32,
    /// `SG_DXFER_*`.
    pub dxfer_direction: i32,
    /// Length of the CDB at `cmdp`.
    pub cmd_len: u8,
    /// Room at `sbp`.
    pub mx_sb_len: u8,
    /// 0: `dxferp` is one buffer, not an iovec.
    pub iovec_count: u16,
    /// Bytes to transfer.
    pub dxfer_len: u32,
    /// Data buffer.
    pub dxferp: *mut libc::c_void,
    /// The CDB.
    pub cmdp: *const u8,
    /// Sense buffer.
    pub sbp: *mut u8,
    /// Milliseconds.
    pub timeout: u32,
    /// `SG_FLAG_*`; 0 is the default (indirect I/O).
    pub flags: u32,
    /// Unused by SG_IO.
    pub pack_id: i32,
    /// Unused by SG_IO.
    pub usr_ptr: *mut libc::c_void,
    /// SCSI status byte (2 = CHECK CONDITION).
    pub status: u8,
    /// Status shifted right by one (obsolete).
    pub masked_status: u8,
    /// Messaging level data.
    pub msg_status: u8,
    /// Sense bytes actually written.
    pub sb_len_wr: u8,
    /// Host adapter error (`DID_*`).
    pub host_status: u16,
    /// Driver error (`DRIVER_*`).
    pub driver_status: u16,
    /// `dxfer_len` minus what was transferred.
    pub resid: i32,
    /// Milliseconds the command took.
    pub duration: u32,
    /// `SG_INFO_*`.
    pub info: u32,
}

// The kernel's layout, checked when the agent is compiled for each target
// (the release builds cover aarch64, armv7 and x86_64), not only in tests.
const _: () = assert!(
    std::mem::size_of::<SgIoHdr>()
        == if cfg!(target_pointer_width = "64") {
            88
        } else {
            64
        }
);

/// Direction of the data phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// No data (non-data ATA commands, TEST UNIT READY).
    None,
    /// Device to host.
    FromDev,
}

/// What one CDB returned, before interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// SCSI status byte (0 GOOD, 2 CHECK CONDITION).
    pub status: u8,
    /// Host adapter status; non-zero means the transport failed.
    pub host_status: u16,
    /// Driver status; the sense flag (0x08) alone is not an error.
    pub driver_status: u16,
    /// Data bytes transferred (`dxfer_len - resid`).
    pub transferred: usize,
    /// The sense bytes written (may be empty).
    pub sense: Vec<u8>,
}

/// `DRIVER_SENSE`: only says sense data is present.
const DRIVER_SENSE: u16 = 0x08;

impl Outcome {
    /// Sense decoded, if any was returned.
    pub fn decoded_sense(&self) -> Option<Sense> {
        sense::decode(&self.sense).ok()
    }

    /// The transport failed (host or driver error other than "sense
    /// present").
    pub fn transport_failed(&self) -> bool {
        self.host_status != 0 || (self.driver_status & !DRIVER_SENSE) != 0
    }

    /// GOOD, or CHECK CONDITION with a sense key that does not mean the
    /// command failed (NO SENSE, RECOVERED ERROR: SAT uses these to return
    /// the ATA registers, ASC/ASCQ 00/1D).
    pub fn ok(&self) -> bool {
        if self.transport_failed() {
            return false;
        }
        match self.status {
            0 => true,
            2 => self
                .decoded_sense()
                .is_some_and(|s| s.key == sense::KEY_NO_SENSE || s.key == sense::KEY_RECOVERED),
            _ => false,
        }
    }

    /// One line for error messages: status, host/driver and the sense.
    pub fn describe(&self) -> String {
        let mut s = format!("SCSI status 0x{:02x}", self.status);
        if self.transport_failed() {
            s.push_str(&format!(
                ", host 0x{:x}, driver 0x{:x}",
                self.host_status, self.driver_status
            ));
        }
        match self.decoded_sense() {
            Some(d) => s.push_str(&format!(", sense {d}")),
            None if !self.sense.is_empty() => s.push_str(", undecodable sense"),
            None => {}
        }
        s
    }
}

/// Sends one CDB with `SG_IO`. `data` is the device-to-host buffer for
/// [`Dir::FromDev`] (ignored for [`Dir::None`]). Errors are the ioctl's
/// own (`EPERM` without CAP_SYS_RAWIO, `EINVAL`/`ENOTTY` on devices that
/// are not SCSI at all).
pub fn send(
    fd: BorrowedFd<'_>,
    cdb: &[u8],
    dir: Dir,
    data: &mut [u8],
    timeout_ms: u32,
) -> std::io::Result<Outcome> {
    let mut sense = [0u8; SENSE_LEN];
    let (direction, len, ptr) = match dir {
        Dir::None => (SG_DXFER_NONE, 0u32, std::ptr::null_mut()),
        Dir::FromDev => (
            SG_DXFER_FROM_DEV,
            u32::try_from(data.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?,
            data.as_mut_ptr().cast::<libc::c_void>(),
        ),
    };
    let mut hdr = SgIoHdr {
        interface_id: SG_INTERFACE_ID,
        dxfer_direction: direction,
        cmd_len: u8::try_from(cdb.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?,
        mx_sb_len: SENSE_LEN as u8,
        iovec_count: 0,
        dxfer_len: len,
        dxferp: ptr,
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: every pointer in `hdr` points into a live buffer of the stated
    // length (`cdb`, `data`, `sense`) for the duration of the call; SG_IO is
    // synchronous and keeps no pointer after it returns.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SG_IO as _, std::ptr::addr_of_mut!(hdr)) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let written = usize::from(hdr.sb_len_wr).min(SENSE_LEN);
    let resid = usize::try_from(hdr.resid.max(0)).unwrap_or(0);
    Ok(Outcome {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        transferred: (len as usize).saturating_sub(resid),
        sense: sense[..written].to_vec(),
    })
}

/// SAT protocol field (`[1]` bits 4..1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// 3: non-data.
    NonData = 3,
    /// 4: PIO data-in.
    PioIn = 4,
}

/// The ATA registers of one command (28-bit form; SMART, IDENTIFY and
/// CHECK POWER MODE need no 48-bit fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtaTask {
    /// Features.
    pub features: u8,
    /// Sector count.
    pub count: u8,
    /// LBA low.
    pub lba_low: u8,
    /// LBA mid.
    pub lba_mid: u8,
    /// LBA high.
    pub lba_high: u8,
    /// Device.
    pub device: u8,
    /// Command.
    pub command: u8,
}

/// ATA IDENTIFY DEVICE.
pub const ATA_IDENTIFY: u8 = 0xEC;
/// ATA CHECK POWER MODE.
pub const ATA_CHECK_POWER_MODE: u8 = 0xE5;
/// ATA SMART (sub-command in features).
pub const ATA_SMART: u8 = 0xB0;
/// SMART READ DATA.
pub const SMART_READ_DATA: u8 = 0xD0;
/// SMART READ THRESHOLDS (obsolete in ACS but still answered).
pub const SMART_READ_THRESHOLDS: u8 = 0xD1;
/// SMART RETURN STATUS.
pub const SMART_RETURN_STATUS: u8 = 0xDA;
/// SMART signature in LBA mid / high.
pub const SMART_LBA_MID: u8 = 0x4F;
/// See [`SMART_LBA_MID`].
pub const SMART_LBA_HIGH: u8 = 0xC2;

impl AtaTask {
    /// IDENTIFY DEVICE (one 512-byte block in).
    pub fn identify() -> AtaTask {
        AtaTask {
            count: 1,
            command: ATA_IDENTIFY,
            ..AtaTask::default()
        }
    }

    /// CHECK POWER MODE (non-data; the mode comes back in count).
    pub fn check_power_mode() -> AtaTask {
        AtaTask {
            command: ATA_CHECK_POWER_MODE,
            ..AtaTask::default()
        }
    }

    /// A SMART sub-command with the 4F/C2 signature.
    pub fn smart(feature: u8) -> AtaTask {
        AtaTask {
            features: feature,
            count: if feature == SMART_RETURN_STATUS { 0 } else { 1 },
            lba_low: if feature == SMART_READ_THRESHOLDS {
                1
            } else {
                0
            },
            lba_mid: SMART_LBA_MID,
            lba_high: SMART_LBA_HIGH,
            command: ATA_SMART,
            ..AtaTask::default()
        }
    }
}

/// Byte 2 of the pass-through CDBs: `ck_cond<<5 | t_dir<<3 | byte_block<<2
/// | t_length`. Data-in: t_dir 1, length in blocks given by count
/// (t_length 2). Non-data: ck_cond so the registers come back in the sense,
/// and the same t_dir/byte_block smartctl sends (ignored without data).
fn flags_byte(proto: Protocol) -> u8 {
    match proto {
        Protocol::PioIn => 0x0e,
        Protocol::NonData => 0x2c,
    }
}

/// ATA PASS-THROUGH(16) (SAT, opcode 0x85), 28-bit command (extend 0).
pub fn ata16(proto: Protocol, t: &AtaTask) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x85;
    c[1] = (proto as u8) << 1;
    c[2] = flags_byte(proto);
    c[4] = t.features;
    c[6] = t.count;
    c[8] = t.lba_low;
    c[10] = t.lba_mid;
    c[12] = t.lba_high;
    c[13] = t.device;
    c[14] = t.command;
    c
}

/// ATA PASS-THROUGH(12) (SAT, opcode 0xA1), for bridges that only know the
/// short form.
pub fn ata12(proto: Protocol, t: &AtaTask) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = 0xA1;
    c[1] = (proto as u8) << 1;
    c[2] = flags_byte(proto);
    c[3] = t.features;
    c[4] = t.count;
    c[5] = t.lba_low;
    c[6] = t.lba_mid;
    c[7] = t.lba_high;
    c[8] = t.device;
    c[9] = t.command;
    c
}

/// INQUIRY, standard data, `alloc` bytes.
pub fn inquiry(alloc: u8) -> [u8; 6] {
    [0x12, 0, 0, 0, alloc, 0]
}

/// LOG SENSE of `page` (current cumulative values, PC=01), `alloc` bytes.
pub fn log_sense(page: u8, alloc: u16) -> [u8; 10] {
    let [hi, lo] = alloc.to_be_bytes();
    [0x4d, 0, 0x40 | (page & 0x3f), 0, 0, 0, 0, hi, lo, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn sg_io_hdr_layout_matches_the_kernel() {
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(size_of::<SgIoHdr>(), 88);
            assert_eq!(align_of::<SgIoHdr>(), 8);
            assert_eq!(offset_of!(SgIoHdr, dxfer_len), 12);
            assert_eq!(offset_of!(SgIoHdr, dxferp), 16);
            assert_eq!(offset_of!(SgIoHdr, cmdp), 24);
            assert_eq!(offset_of!(SgIoHdr, sbp), 32);
            assert_eq!(offset_of!(SgIoHdr, timeout), 40);
            assert_eq!(offset_of!(SgIoHdr, pack_id), 48);
            assert_eq!(offset_of!(SgIoHdr, usr_ptr), 56);
            assert_eq!(offset_of!(SgIoHdr, status), 64);
            assert_eq!(offset_of!(SgIoHdr, sb_len_wr), 67);
            assert_eq!(offset_of!(SgIoHdr, host_status), 68);
            assert_eq!(offset_of!(SgIoHdr, driver_status), 70);
            assert_eq!(offset_of!(SgIoHdr, resid), 72);
            assert_eq!(offset_of!(SgIoHdr, info), 80);
        }
        #[cfg(target_pointer_width = "32")]
        {
            assert_eq!(size_of::<SgIoHdr>(), 64);
            assert_eq!(align_of::<SgIoHdr>(), 4);
            assert_eq!(offset_of!(SgIoHdr, dxfer_len), 12);
            assert_eq!(offset_of!(SgIoHdr, dxferp), 16);
            assert_eq!(offset_of!(SgIoHdr, cmdp), 20);
            assert_eq!(offset_of!(SgIoHdr, sbp), 24);
            assert_eq!(offset_of!(SgIoHdr, timeout), 28);
            assert_eq!(offset_of!(SgIoHdr, pack_id), 36);
            assert_eq!(offset_of!(SgIoHdr, usr_ptr), 40);
            assert_eq!(offset_of!(SgIoHdr, status), 44);
            assert_eq!(offset_of!(SgIoHdr, sb_len_wr), 47);
            assert_eq!(offset_of!(SgIoHdr, host_status), 48);
            assert_eq!(offset_of!(SgIoHdr, driver_status), 50);
            assert_eq!(offset_of!(SgIoHdr, resid), 52);
            assert_eq!(offset_of!(SgIoHdr, info), 60);
        }
        // Fields before the first pointer are the same everywhere.
        assert_eq!(offset_of!(SgIoHdr, interface_id), 0);
        assert_eq!(offset_of!(SgIoHdr, dxfer_direction), 4);
        assert_eq!(offset_of!(SgIoHdr, cmd_len), 8);
        assert_eq!(offset_of!(SgIoHdr, mx_sb_len), 9);
        assert_eq!(offset_of!(SgIoHdr, iovec_count), 10);
    }

    #[test]
    fn sg_io_number() {
        assert_eq!(SG_IO, 0x2285);
        assert_eq!(SG_INTERFACE_ID, 0x53);
    }

    #[test]
    fn ata16_identify_is_what_smartctl_sends() {
        // `smartctl -r ioctl` in the QEMU guest.
        let want = [
            0x85, 0x08, 0x0e, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xec, 0,
        ];
        assert_eq!(ata16(Protocol::PioIn, &AtaTask::identify()), want);
    }

    #[test]
    fn ata16_return_status_is_what_smartctl_sends() {
        let want = [
            0x85, 0x06, 0x2c, 0, 0xda, 0, 0, 0, 0, 0, 0x4f, 0, 0xc2, 0, 0xb0, 0,
        ];
        assert_eq!(
            ata16(Protocol::NonData, &AtaTask::smart(SMART_RETURN_STATUS)),
            want
        );
    }

    #[test]
    fn ata16_smart_read_data_and_thresholds() {
        let d = ata16(Protocol::PioIn, &AtaTask::smart(SMART_READ_DATA));
        assert_eq!(
            d,
            [0x85, 0x08, 0x0e, 0, 0xd0, 0, 1, 0, 0, 0, 0x4f, 0, 0xc2, 0, 0xb0, 0]
        );
        let t = ata16(Protocol::PioIn, &AtaTask::smart(SMART_READ_THRESHOLDS));
        assert_eq!(
            t,
            [0x85, 0x08, 0x0e, 0, 0xd1, 0, 1, 0, 1, 0, 0x4f, 0, 0xc2, 0, 0xb0, 0]
        );
        let p = ata16(Protocol::NonData, &AtaTask::check_power_mode());
        assert_eq!(
            p,
            [0x85, 0x06, 0x2c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xe5, 0]
        );
    }

    #[test]
    fn ata12_layout() {
        let c = ata12(Protocol::PioIn, &AtaTask::smart(SMART_READ_THRESHOLDS));
        assert_eq!(c, [0xa1, 0x08, 0x0e, 0xd1, 1, 1, 0x4f, 0xc2, 0, 0xb0, 0, 0]);
        let c = ata12(Protocol::NonData, &AtaTask::smart(SMART_RETURN_STATUS));
        assert_eq!(c, [0xa1, 0x06, 0x2c, 0xda, 0, 0, 0x4f, 0xc2, 0, 0xb0, 0, 0]);
    }

    #[test]
    fn scsi_cdbs() {
        assert_eq!(inquiry(96), [0x12, 0, 0, 0, 96, 0]);
        // Allocation length is big-endian whatever the host's byte order.
        assert_eq!(
            log_sense(0x2f, 0x0102),
            [0x4d, 0, 0x6f, 0, 0, 0, 0, 0x01, 0x02, 0]
        );
        assert_eq!(log_sense(0x0d, 64)[2], 0x4d);
    }

    #[test]
    fn outcome_recovered_error_with_ata_registers_is_ok() {
        // Real libata sense for RETURN STATUS in QEMU.
        let o = Outcome {
            status: 2,
            host_status: 0,
            driver_status: DRIVER_SENSE,
            transferred: 0,
            sense: vec![
                0x72, 0x01, 0x00, 0x1d, 0, 0, 0, 0x0e, 0x09, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0x4f, 0,
                0xc2, 0, 0x50,
            ],
        };
        assert!(o.ok());
        let illegal = Outcome {
            sense: vec![
                0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0,
            ],
            ..o.clone()
        };
        assert!(!illegal.ok());
        assert!(
            illegal.describe().contains("ILLEGAL REQUEST"),
            "{}",
            illegal.describe()
        );
        let dead = Outcome {
            status: 0,
            host_status: 1,
            ..o
        };
        assert!(!dead.ok());
    }
}
