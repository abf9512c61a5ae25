//! NVMe admin passthrough (`linux/nvme_ioctl.h`): Identify Controller and
//! the SMART / Health Information log page.
//!
//! `NVME_IOCTL_ADMIN_CMD` is `_IOWR('N', 0x41, struct nvme_passthru_cmd)`,
//! 0xC0484E41 on every Linux architecture (MIPS and PowerPC encode
//! read|write the same way). `NVME_IOCTL_ID` is `_IO('N', 0x40)`, whose
//! "no data" direction is 0 on most architectures but 1 (bit 29) on MIPS,
//! PowerPC and SPARC: 0x4e40 vs 0x20004e40.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct nvme_passthru_cmd` (= `nvme_admin_cmd`), 72 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct NvmePassthruCmd {
    /// Admin opcode.
    pub opcode: u8,
    /// Flags (0).
    pub flags: u8,
    /// Reserved.
    pub rsvd1: u16,
    /// Namespace id.
    pub nsid: u32,
    /// Command dword 2.
    pub cdw2: u32,
    /// Command dword 3.
    pub cdw3: u32,
    /// Metadata buffer (user pointer as u64).
    pub metadata: u64,
    /// Data buffer (user pointer as u64).
    pub addr: u64,
    /// Metadata length.
    pub metadata_len: u32,
    /// Data length.
    pub data_len: u32,
    /// Command dword 10.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
    /// Milliseconds; 0 is the driver's admin timeout.
    pub timeout_ms: u32,
    /// Completion dword 0.
    pub result: u32,
}

// `struct nvme_passthru_cmd` is 72 bytes on every target we ship; checked
// at compile time for each one.
const _: () = assert!(std::mem::size_of::<NvmePassthruCmd>() == 72);

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
mod dir {
    pub const NONE: u32 = 1;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 4;
    pub const SHIFT: u32 = 29;
}
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
mod dir {
    pub const NONE: u32 = 0;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 1;
    pub const SHIFT: u32 = 30;
}

/// `_IOC(dir, type, nr, size)` for this architecture.
const fn ioc(d: u32, ty: u8, nr: u8, size: u32) -> u32 {
    (d << dir::SHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | (size << IOC_SIZESHIFT)
}

/// `NVME_IOCTL_ID`: returns the namespace id of a namespace block device;
/// fails (ENOTTY) on the controller's character device.
pub const NVME_IOCTL_ID: u32 = ioc(dir::NONE, b'N', 0x40, 0);
/// `NVME_IOCTL_ADMIN_CMD`.
pub const NVME_IOCTL_ADMIN_CMD: u32 = ioc(
    dir::READ | dir::WRITE,
    b'N',
    0x41,
    std::mem::size_of::<NvmePassthruCmd>() as u32,
);

/// Admin opcode Get Log Page.
pub const OPC_GET_LOG_PAGE: u8 = 0x02;
/// Admin opcode Identify.
pub const OPC_IDENTIFY: u8 = 0x06;
/// Identify CNS 1: controller.
pub const CNS_CONTROLLER: u32 = 1;
/// Log identifier SMART / Health Information.
pub const LID_SMART: u8 = 0x02;
/// Size of the Identify Controller data structure.
pub const IDENTIFY_LEN: usize = 4096;
/// Size of the SMART / Health log page.
pub const SMART_LOG_LEN: usize = 512;
/// The controller-wide scope for logs.
pub const NSID_ALL: u32 = 0xFFFF_FFFF;

/// Admin command timeout.
const TIMEOUT_MS: u32 = 10_000;

/// Get Log Page dword 10: LID in bits 7:0, number of dwords minus one
/// (lower 16 bits) in 31:16.
pub fn get_log_cdw10(lid: u8, len: usize) -> u32 {
    let dwords = u32::try_from(len / 4).unwrap_or(u32::MAX).max(1) - 1;
    u32::from(lid) | ((dwords & 0xffff) << 16)
}

/// An admin command that failed.
#[derive(Debug)]
pub enum AdminError {
    /// The ioctl itself failed (EPERM/EACCES without CAP_SYS_ADMIN,
    /// ENOTTY on a device that is not NVMe).
    Io(std::io::Error),
    /// The controller completed the command with this NVMe status.
    Status(u32),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Io(e) => write!(f, "{e}"),
            AdminError::Status(s) => write!(
                f,
                "NVMe status 0x{s:x} (type {}, code 0x{:02x})",
                (s >> 8) & 0x7,
                s & 0xff
            ),
        }
    }
}

/// Sends an admin command whose data goes device-to-host into `buf`.
pub fn admin_read(
    fd: BorrowedFd<'_>,
    mut cmd: NvmePassthruCmd,
    buf: &mut [u8],
) -> Result<u32, AdminError> {
    cmd.addr = buf.as_mut_ptr() as usize as u64;
    cmd.data_len = u32::try_from(buf.len())
        .map_err(|_| AdminError::Io(std::io::ErrorKind::InvalidInput.into()))?;
    if cmd.timeout_ms == 0 {
        cmd.timeout_ms = TIMEOUT_MS;
    }
    // SAFETY: `cmd.addr`/`data_len` describe `buf`, which outlives the
    // synchronous ioctl; the kernel writes at most `data_len` bytes there
    // and updates `cmd.result`.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            NVME_IOCTL_ADMIN_CMD as _,
            std::ptr::addr_of_mut!(cmd),
        )
    };
    match rc {
        0 => Ok(cmd.result),
        r if r < 0 => Err(AdminError::Io(std::io::Error::last_os_error())),
        status => Err(AdminError::Status(status as u32)),
    }
}

/// Identify Controller (4096 bytes).
pub fn identify_controller(fd: BorrowedFd<'_>) -> Result<Vec<u8>, AdminError> {
    let mut buf = vec![0u8; IDENTIFY_LEN];
    let cmd = NvmePassthruCmd {
        opcode: OPC_IDENTIFY,
        cdw10: CNS_CONTROLLER,
        ..NvmePassthruCmd::default()
    };
    admin_read(fd, cmd, &mut buf)?;
    Ok(buf)
}

/// The SMART / Health log (controller scope, 512 bytes).
pub fn smart_log(fd: BorrowedFd<'_>) -> Result<Vec<u8>, AdminError> {
    let mut buf = vec![0u8; SMART_LOG_LEN];
    let cmd = NvmePassthruCmd {
        opcode: OPC_GET_LOG_PAGE,
        nsid: NSID_ALL,
        cdw10: get_log_cdw10(LID_SMART, SMART_LOG_LEN),
        ..NvmePassthruCmd::default()
    };
    admin_read(fd, cmd, &mut buf)?;
    Ok(buf)
}

/// `NVME_IOCTL_ID`: Some(nsid) on a namespace block device.
pub fn namespace_id(fd: BorrowedFd<'_>) -> Option<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NVME_IOCTL_ID as _) };
    u32::try_from(rc).ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn passthru_cmd_layout_matches_the_kernel() {
        assert_eq!(size_of::<NvmePassthruCmd>(), 72);
        // u64 fields are 8-aligned on aarch64, x86_64 and ARM EABI alike.
        assert_eq!(align_of::<NvmePassthruCmd>(), align_of::<u64>());
        assert_eq!(offset_of!(NvmePassthruCmd, nsid), 4);
        assert_eq!(offset_of!(NvmePassthruCmd, cdw2), 8);
        assert_eq!(offset_of!(NvmePassthruCmd, metadata), 16);
        assert_eq!(offset_of!(NvmePassthruCmd, addr), 24);
        assert_eq!(offset_of!(NvmePassthruCmd, metadata_len), 32);
        assert_eq!(offset_of!(NvmePassthruCmd, data_len), 36);
        assert_eq!(offset_of!(NvmePassthruCmd, cdw10), 40);
        assert_eq!(offset_of!(NvmePassthruCmd, cdw15), 60);
        assert_eq!(offset_of!(NvmePassthruCmd, timeout_ms), 64);
        assert_eq!(offset_of!(NvmePassthruCmd, result), 68);
    }

    #[test]
    fn ioctl_numbers() {
        assert_eq!(NVME_IOCTL_ADMIN_CMD, 0xC048_4E41);
        #[cfg(any(
            target_arch = "mips",
            target_arch = "powerpc",
            target_arch = "powerpc64"
        ))]
        assert_eq!(NVME_IOCTL_ID, 0x2000_4e40);
        #[cfg(any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "x86"
        ))]
        assert_eq!(NVME_IOCTL_ID, 0x4e40);
    }

    #[test]
    fn mips_and_powerpc_numbers_by_formula() {
        // The same formula with the MIPS/PowerPC direction bits.
        let none_mips = 1u32 << 29 | (u32::from(b'N') << 8) | 0x40;
        assert_eq!(none_mips, 0x2000_4e40);
        let rw_mips = (2u32 | 4) << 29 | (72 << 16) | (u32::from(b'N') << 8) | 0x41;
        assert_eq!(rw_mips, 0xC048_4E41);
    }

    #[test]
    fn get_log_dword10() {
        assert_eq!(get_log_cdw10(LID_SMART, 512), 0x007F_0002);
        assert_eq!(get_log_cdw10(0x01, 4), 0x0000_0001);
        assert_eq!(get_log_cdw10(0x01, 0), 0x0000_0001);
    }

    #[test]
    fn passthru_bytes_in_memory_are_native_endian() {
        let c = NvmePassthruCmd {
            opcode: OPC_GET_LOG_PAGE,
            nsid: NSID_ALL,
            cdw10: get_log_cdw10(LID_SMART, 512),
            data_len: 512,
            ..NvmePassthruCmd::default()
        };
        // SAFETY: plain old data of 72 bytes, no padding (checked above).
        let bytes: [u8; 72] = unsafe { std::mem::transmute(c) };
        assert_eq!(bytes[0], 0x02);
        assert_eq!(&bytes[4..8], &NSID_ALL.to_ne_bytes());
        assert_eq!(&bytes[36..40], &512u32.to_ne_bytes());
        assert_eq!(&bytes[40..44], &0x007F_0002u32.to_ne_bytes());
    }
}
