//! The native SMART read: ioctls at the edge, pure parsers in
//! [`crate::sources::smart::ata`], [`crate::sources::smart::nvme`] and [`crate::sources::smart::scsi`].
//!
//! [`read`] decides the path per device:
//!
//! - **NVMe** (`nvme*` or `--type nvme`): admin passthrough, Identify
//!   Controller and the SMART / Health log. Needs CAP_SYS_ADMIN.
//! - **Everything else** through `SG_IO` (needs CAP_SYS_RAWIO for the ATA
//!   commands): INQUIRY, then ATA PASS-THROUGH(16), falling back to (12)
//!   for bridges that only know the short CDB: CHECK POWER MODE first (a
//!   spun-down disk is reported as standby, never woken), IDENTIFY, SMART
//!   READ DATA, READ THRESHOLDS, RETURN STATUS. A device that refuses both
//!   CDBs (ILLEGAL REQUEST: a USB bridge without SAT, a SAS disk) is asked
//!   for the SCSI log pages 0x2F (informational exceptions) and 0x0D
//!   (temperature). If nothing answers, the result is
//!   [`Reading::Unsupported`] with the reason in plain words.
//!
//! [`read`] blocks (a dying disk can take the whole command timeout), so
//! the agent calls it on a blocking thread.

pub mod discover;
pub mod nvme;
pub mod sense;
pub mod sg;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::ata::{self, AtaHealth};
use super::report::{DeviceType, Reading};
use super::scsi;
use sg::{AtaTask, Dir, Outcome, Protocol};

/// Per-command timeout for ATA commands (a healthy disk answers in
/// milliseconds; a sick one may retry internally for seconds).
const ATA_TIMEOUT_MS: u32 = 15_000;
/// Per-command timeout for INQUIRY and LOG SENSE.
const SCSI_TIMEOUT_MS: u32 = 10_000;
/// INQUIRY allocation length (standard data is 36 bytes or more).
const INQUIRY_LEN: u8 = 96;
/// LOG SENSE allocation length for the two pages we read.
const LOG_PAGE_LEN: u16 = 252;

/// What to say when an ioctl is refused for lack of a capability.
const RAWIO_HINT: &str = "ATA pass-through needs CAP_SYS_RAWIO (run as root, or \
     AmbientCapabilities=CAP_SYS_RAWIO in the systemd unit)";
const ADMIN_HINT: &str = "NVMe admin commands need CAP_SYS_ADMIN (run as root, or \
     AmbientCapabilities=CAP_SYS_ADMIN in the systemd unit)";

/// ENOSYS: the kernel never returns it for these ioctls; an emulator that
/// does not forward them does (qemu-user).
const ENOSYS_HINT: &str = "the ioctl is not available here (an emulator such as qemu-user \
     does not forward it; run on the real machine)";

/// Reads SMART / health data from the device node `path` (blocking).
///
/// `Err` means the device could not be asked at all (no such device,
/// permission, a transport error) and says why; a device that answers but
/// has no usable health interface is `Ok(Reading::Unsupported)`.
pub fn read(path: &Path, kind: DeviceType) -> Result<Reading, String> {
    read_with(path, kind, Standby::Skip)
}

/// What to do with an ATA disk that CHECK POWER MODE finds spun down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standby {
    /// Report [`Reading::Standby`] and leave it asleep (`standby_skip =
    /// true`, the default: a NVR disk woken every interval wears out).
    Skip,
    /// Read it anyway, which spins it up (`standby_skip = false`).
    Wake,
}

/// [`read`] with an explicit [`Standby`] policy.
pub fn read_with(path: &Path, kind: DeviceType, standby: Standby) -> Result<Reading, String> {
    let file = open(path)?;
    let fd = file.as_fd();
    let name = kernel_name(path);
    let nvme = match kind {
        DeviceType::Nvme => true,
        DeviceType::Auto => name.starts_with("nvme"),
        _ => false,
    };
    if nvme {
        return read_nvme(fd, &name);
    }
    read_scsi(fd, kind, &name, standby)
}

/// Opens like smartctl: read-only (SG_IO and the NVMe admin ioctl need no
/// write access) and non-blocking (no wait for removable media).
fn open(path: &Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            // SAFETY: geteuid has no preconditions and cannot fail.
            std::io::ErrorKind::PermissionDenied if unsafe { libc::geteuid() } == 0 => format!(
                "cannot open {}: permission denied even as root: a sandbox blocks it \
                 (systemd DevicePolicy=/DeviceAllow=, a container, or a security module)",
                path.display()
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "cannot open {}: permission denied (run as root, or give the agent's user \
                 read access to the device node, e.g. the `disk` group)",
                path.display()
            ),
            std::io::ErrorKind::NotFound => {
                format!("cannot open {}: no such device", path.display())
            }
            _ => format!("cannot open {}: {e}", path.display()),
        })
}

/// The kernel name of the device behind `path` (`/dev/disk/by-id/...`
/// resolved), for the NVMe guess and the USB check.
fn kernel_name(path: &Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_permission(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn read_nvme(fd: BorrowedFd<'_>, name: &str) -> Result<Reading, String> {
    let admin_err = |what: &str, e: nvme::AdminError| match &e {
        nvme::AdminError::Io(io) if is_permission(io) => format!("{what}: {io}: {ADMIN_HINT}"),
        nvme::AdminError::Io(io) if io.raw_os_error() == Some(libc::ENOTTY) => {
            format!("{what}: not an NVMe device ({io})")
        }
        nvme::AdminError::Io(io) if io.raw_os_error() == Some(libc::ENOSYS) => {
            format!("{what}: {ENOSYS_HINT} ({io})")
        }
        _ => format!("{what}: {e}"),
    };
    let id = nvme::identify_controller(fd).map_err(|e| admin_err("NVMe Identify Controller", e))?;
    let mut identity = super::nvme::parse_identify_controller(&id)
        .map_err(|e| format!("NVMe Identify Controller: {e}"))?;
    // TNVMCAP is optional (0 on many consumer drives and on QEMU); the
    // namespace's block device size is what the NVR sees anyway.
    if identity.capacity_bytes.is_none() {
        identity.capacity_bytes = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
            .ok()
            .and_then(|t| capacity_from_sysfs_sectors(&t));
    }
    let log = nvme::smart_log(fd).map_err(|e| admin_err("NVMe SMART / Health log", e))?;
    let health =
        super::nvme::parse_health_log(&log).map_err(|e| format!("NVMe SMART / Health log: {e}"))?;
    Ok(Reading::Nvme { identity, health })
}

/// Bytes from a `/sys/class/block/*/size` text (512-byte units whatever
/// the logical block size); `None` for 0 or garbage.
fn capacity_from_sysfs_sectors(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(512))
        .filter(|&b| b > 0)
}

/// Why an ATA pass-through attempt did not produce a reading.
enum AtaFail {
    /// The CDB itself was refused (ILLEGAL REQUEST): try the other length
    /// or the SCSI pages.
    Refused(String),
    /// The disk or transport failed; stop here.
    Error(String),
}

/// The SG_IO path: ATA pass-through, then SCSI log pages.
fn read_scsi(
    fd: BorrowedFd<'_>,
    kind: DeviceType,
    name: &str,
    standby: Standby,
) -> Result<Reading, String> {
    let inquiry = send_in(
        fd,
        &sg::inquiry(INQUIRY_LEN),
        usize::from(INQUIRY_LEN),
        SCSI_TIMEOUT_MS,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTTY) | Some(libc::EINVAL) => {
            format!("not a SCSI or ATA disk: SG_IO is not supported by this device ({e})")
        }
        Some(libc::ENOSYS) => format!("SG_IO INQUIRY: {ENOSYS_HINT} ({e})"),
        _ if is_permission(&e) => format!("SG_IO INQUIRY: {e}: {RAWIO_HINT}"),
        _ => format!("SG_IO INQUIRY: {e}"),
    })?;
    let identity = match &inquiry {
        Ok(buf) => scsi::parse_inquiry(buf).ok(),
        Err(_) => None,
    };

    let lengths: &[u8] = match kind {
        DeviceType::Sat12 => &[12],
        DeviceType::Sat => &[16],
        DeviceType::Scsi => &[],
        _ => &[16, 12],
    };
    let mut refusals = Vec::new();
    for &len in lengths {
        match read_ata(fd, len, standby) {
            Ok(r) => return Ok(r),
            Err(AtaFail::Refused(why)) => refusals.push(format!("ATA PASS-THROUGH({len}) {why}")),
            Err(AtaFail::Error(e)) => return Err(e),
        }
    }

    let ie = log_page(fd, scsi::PAGE_IE);
    let temp = log_page(fd, scsi::PAGE_TEMPERATURE);
    let ie_parsed = ie.as_ref().ok().and_then(|b| scsi::parse_ie_page(b).ok());
    let temp_parsed = temp
        .as_ref()
        .ok()
        .and_then(|b| scsi::parse_temperature_page(b).ok());
    if let (Some(identity), true) = (
        identity.clone(),
        ie_parsed.is_some() || temp_parsed.is_some(),
    ) {
        let temperature_c = temp_parsed
            .flatten()
            .or_else(|| ie_parsed.and_then(|i| i.temperature_c));
        return Ok(Reading::Scsi {
            identity,
            ie: ie_parsed,
            temperature_c,
        });
    }
    if let Err(why) = &ie {
        refusals.push(format!("LOG SENSE 0x2F {why}"));
    }
    if let Err(why) = &temp {
        refusals.push(format!("LOG SENSE 0x0D {why}"));
    }
    let what = identity
        .as_ref()
        .map(|i| format!(" ({} {})", i.vendor, i.product))
        .unwrap_or_default();
    let details = refusals.join("; ");
    let reason = if discover::is_usb(name) {
        format!(
            "USB bridge with no SAT passthrough{what}: the bridge does not pass ATA commands \
             to the disk and has no SCSI health pages, so SMART cannot be read through it \
             ({details}); a SAT-capable enclosure (or --type sat12 for old bridges) is needed"
        )
    } else if kind == DeviceType::Scsi {
        format!("no SCSI health log pages{what} ({details})")
    } else {
        format!("no SAT passthrough and no SCSI health log pages{what} ({details})")
    };
    Ok(Reading::Unsupported { reason })
}

/// One data-in command; the inner `Err` is the device's refusal in words.
fn send_in(
    fd: BorrowedFd<'_>,
    cdb: &[u8],
    len: usize,
    timeout_ms: u32,
) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut buf = vec![0u8; len];
    let o = sg::send(fd, cdb, Dir::FromDev, &mut buf, timeout_ms)?;
    if !o.ok() {
        return Ok(Err(o.describe()));
    }
    buf.truncate(o.transferred.min(len));
    Ok(Ok(buf))
}

/// LOG SENSE of one page; `Err` says why not, in words.
fn log_page(fd: BorrowedFd<'_>, page: u8) -> Result<Vec<u8>, String> {
    match send_in(
        fd,
        &sg::log_sense(page, LOG_PAGE_LEN),
        usize::from(LOG_PAGE_LEN),
        SCSI_TIMEOUT_MS,
    ) {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(why)) => Err(format!("refused: {why}")),
        Err(e) => Err(format!("failed: {e}")),
    }
}

/// Sends one ATA command as a pass-through CDB of `len` (16 or 12).
fn ata_cmd(
    fd: BorrowedFd<'_>,
    len: u8,
    proto: Protocol,
    task: &AtaTask,
    data: &mut [u8],
) -> std::io::Result<Outcome> {
    let dir = match proto {
        Protocol::PioIn => Dir::FromDev,
        Protocol::NonData => Dir::None,
    };
    if len == 12 {
        sg::send(fd, &sg::ata12(proto, task), dir, data, ATA_TIMEOUT_MS)
    } else {
        sg::send(fd, &sg::ata16(proto, task), dir, data, ATA_TIMEOUT_MS)
    }
}

fn ioctl_fail(what: &str, e: std::io::Error) -> AtaFail {
    if is_permission(&e) {
        AtaFail::Error(format!("{what}: {e}: {RAWIO_HINT}"))
    } else {
        AtaFail::Error(format!("{what}: SG_IO failed: {e}"))
    }
}

/// Reads one 512-byte SMART/IDENTIFY block.
fn ata_block(fd: BorrowedFd<'_>, len: u8, task: &AtaTask, what: &str) -> Result<[u8; 512], String> {
    let mut buf = [0u8; 512];
    let o =
        ata_cmd(fd, len, Protocol::PioIn, task, &mut buf).map_err(|e| format!("{what}: {e}"))?;
    if !o.ok() || o.decoded_sense().is_some_and(|s| s.ata_aborted()) {
        return Err(format!("{what}: {}", o.describe()));
    }
    if o.transferred < buf.len() {
        return Err(format!(
            "{what}: only {} of 512 bytes returned",
            o.transferred
        ));
    }
    Ok(buf)
}

/// The ATA sequence with CDB length `len`.
fn read_ata(fd: BorrowedFd<'_>, len: u8, standby: Standby) -> Result<Reading, AtaFail> {
    // CHECK POWER MODE doubles as the probe for whether this CDB length is
    // passed through at all.
    let o = ata_cmd(
        fd,
        len,
        Protocol::NonData,
        &AtaTask::check_power_mode(),
        &mut [],
    )
    .map_err(|e| ioctl_fail("ATA CHECK POWER MODE", e))?;
    let s = o.decoded_sense();
    if let Some(s) = s.filter(|s| s.is_illegal_request()) {
        return Err(AtaFail::Refused(format!("refused: {s}")));
    }
    if o.transport_failed() {
        return Err(AtaFail::Refused(format!("failed: {}", o.describe())));
    }
    if o.ok() {
        if let Some(regs) = s.and_then(|s| s.ata) {
            if regs.status & 0x01 == 0 && sense::is_standby(regs.count) && standby == Standby::Skip
            {
                return Ok(Reading::Standby);
            }
        }
    }
    // Without registers (a bridge that ignores ck_cond) the mode is
    // unknown; like smartctl, go on.

    let id = ata_block(fd, len, &AtaTask::identify(), "ATA IDENTIFY").map_err(|why| {
        // A bridge that took the non-data command but refuses data-in.
        if why.contains("ILLEGAL REQUEST") {
            AtaFail::Refused(why)
        } else {
            AtaFail::Error(why)
        }
    })?;
    let identity =
        ata::parse_identify(&id).map_err(|e| AtaFail::Error(format!("ATA IDENTIFY: {e}")))?;
    if !identity.smart_supported {
        return Ok(Reading::Unsupported {
            reason: format!("the disk {} does not support SMART", identity.model),
        });
    }
    if !identity.smart_enabled {
        return Ok(Reading::Unsupported {
            reason: format!(
                "SMART is disabled on the disk {} (enable it once with `smartctl -s on`)",
                identity.model
            ),
        });
    }
    let data = ata_block(
        fd,
        len,
        &AtaTask::smart(sg::SMART_READ_DATA),
        "SMART READ DATA",
    )
    .map_err(AtaFail::Error)?;
    let mut attributes = ata::parse_smart_data(&data)
        .map_err(|e| AtaFail::Error(format!("SMART READ DATA: {e}")))?;
    // READ THRESHOLDS is obsolete in ACS-3; a disk that refuses it or sends
    // a bad checksum still has attributes worth reporting.
    match ata_block(
        fd,
        len,
        &AtaTask::smart(sg::SMART_READ_THRESHOLDS),
        "SMART READ THRESHOLDS",
    )
    .and_then(|b| ata::parse_thresholds(&b).map_err(|e| e.to_string()))
    {
        Ok(th) => ata::merge_thresholds(&mut attributes, &th),
        Err(e) => tracing::debug!(err = %e, "No SMART thresholds"),
    }
    let health = match ata_cmd(
        fd,
        len,
        Protocol::NonData,
        &AtaTask::smart(sg::SMART_RETURN_STATUS),
        &mut [],
    ) {
        Ok(o) if o.ok() => o
            .decoded_sense()
            .and_then(|s| s.ata)
            .map_or(AtaHealth::Unknown, |r| {
                AtaHealth::from_lba(r.lba_mid, r.lba_high)
            }),
        Ok(o) => {
            tracing::debug!(outcome = %o.describe(), "SMART RETURN STATUS failed");
            AtaHealth::Unknown
        }
        Err(e) => return Err(ioctl_fail("SMART RETURN STATUS", e)),
    };
    Ok(Reading::Ata {
        identity,
        attributes,
        health,
        passthrough: len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_size_is_in_512_byte_units() {
        assert_eq!(capacity_from_sysfs_sectors("2097152\n"), Some(1 << 30));
        assert_eq!(capacity_from_sysfs_sectors("0\n"), None);
        assert_eq!(capacity_from_sysfs_sectors("x"), None);
        assert_eq!(capacity_from_sysfs_sectors(&u64::MAX.to_string()), None);
    }

    #[test]
    fn missing_device_is_a_plain_error() {
        let e = read(Path::new("/dev/sitewatch-no-such-disk"), DeviceType::Auto).unwrap_err();
        assert!(e.contains("no such device"), "{e}");
    }

    #[test]
    fn a_regular_file_is_not_a_disk() {
        // SG_IO on a regular file: ENOTTY/EINVAL, reported in words.
        // Under qemu-user (the cross unit tests) the emulator does not
        // forward these ioctls and returns ENOSYS, also said in words.
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = read(f.path(), DeviceType::Auto).unwrap_err();
        assert!(
            e.contains("not a SCSI or ATA disk") || e.contains("ioctl is not available here"),
            "{e}"
        );
        let e = read(f.path(), DeviceType::Nvme).unwrap_err();
        assert!(
            e.contains("not an NVMe device") || e.contains("ioctl is not available here"),
            "{e}"
        );
    }
}
