//! NVMe Identify Controller and SMART / Health Information log (0x02).
//!
//! Offsets from NVMe Base 2.0 (smartmontools `nvme.h`). Counters are
//! 128-bit in the log; they are saturated to `u64`, which no disk reaches.

use super::{ascii_field, le_u16, le_u32, ParseError};

/// Identify Controller bytes the parser needs (up to TNVMCAP at 280..296);
/// the full structure is 4096 bytes and anything past it is ignored.
pub const IDENTIFY_MIN_LEN: usize = 512;
/// Size of Identify Controller data.
pub const IDENTIFY_LEN: usize = 4096;
/// Size of the SMART / Health Information log.
pub const HEALTH_LOG_LEN: usize = 512;

/// What Identify Controller tells about a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeIdentity {
    /// Model number (bytes 24–63), trimmed.
    pub model: String,
    /// Serial number (bytes 4–23), trimmed.
    pub serial: String,
    /// Firmware revision (bytes 64–71), trimmed.
    pub firmware: String,
    /// Warning composite temperature threshold (WCTEMP), kelvin; 0 = none.
    pub wctemp_k: u16,
    /// Critical composite temperature threshold (CCTEMP), kelvin; 0 = none.
    pub cctemp_k: u16,
    /// Log page attributes; bit 0 = SMART log per namespace.
    pub lpa: u8,
    /// Total NVM capacity (TNVMCAP); `None` when 0 (not reported).
    pub capacity_bytes: Option<u64>,
}

fn le_u128_sat(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 16];
    v.copy_from_slice(&b[at..at + 16]);
    u64::try_from(u128::from_le_bytes(v)).unwrap_or(u64::MAX)
}

/// Parses Identify Controller data (CNS 1). Needs at least
/// [`IDENTIFY_MIN_LEN`] bytes.
pub fn parse_identify_controller(buf: &[u8]) -> Result<NvmeIdentity, ParseError> {
    const WHAT: &str = "NVMe Identify Controller";
    ParseError::need(WHAT, IDENTIFY_MIN_LEN, buf)?;
    let buf = &buf[..buf.len().min(IDENTIFY_LEN)];
    if buf[..IDENTIFY_MIN_LEN].iter().all(|&b| b == 0) {
        return Err(ParseError::invalid(WHAT, "all bytes are zero"));
    }
    Ok(NvmeIdentity {
        serial: ascii_field(buf[4..24].iter().copied()),
        model: ascii_field(buf[24..64].iter().copied()),
        firmware: ascii_field(buf[64..72].iter().copied()),
        lpa: buf[261],
        wctemp_k: le_u16(buf, 266),
        cctemp_k: le_u16(buf, 268),
        capacity_bytes: Some(le_u128_sat(buf, 280)).filter(|&c| c > 0),
    })
}

/// The SMART / Health Information log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NvmeHealth {
    /// Critical warning bits; see [`critical_warning_names`].
    pub critical_warning: u8,
    /// Composite temperature, kelvin (0 = not reported).
    pub temperature_k: u16,
    /// Available spare, percent of the factory spare.
    pub available_spare: u8,
    /// Spare threshold, percent; below it the disk warns.
    pub spare_threshold: u8,
    /// Estimate of the life used, percent; may exceed 100.
    pub percentage_used: u8,
    /// Data units read (each 1000 × 512 bytes).
    pub data_units_read: u64,
    /// Data units written (each 1000 × 512 bytes).
    pub data_units_written: u64,
    /// Host read commands.
    pub host_reads: u64,
    /// Host write commands.
    pub host_writes: u64,
    /// Controller busy time, minutes.
    pub controller_busy_minutes: u64,
    /// Power cycles.
    pub power_cycles: u64,
    /// Power-on hours.
    pub power_on_hours: u64,
    /// Unsafe shutdowns (power lost without notice).
    pub unsafe_shutdowns: u64,
    /// Unrecovered data integrity errors.
    pub media_errors: u64,
    /// Error information log entries over the disk's life.
    pub error_log_entries: u64,
    /// Minutes above WCTEMP.
    pub warning_temp_minutes: u32,
    /// Minutes above CCTEMP.
    pub critical_temp_minutes: u32,
    /// Temperature sensors 1–8, kelvin; 0 = not present.
    pub temp_sensors_k: [u16; 8],
}

/// Parses log page 0x02. Needs [`HEALTH_LOG_LEN`] bytes; more is ignored.
pub fn parse_health_log(buf: &[u8]) -> Result<NvmeHealth, ParseError> {
    ParseError::need("NVMe health log", HEALTH_LOG_LEN, buf)?;
    let mut temp_sensors_k = [0u16; 8];
    for (i, t) in temp_sensors_k.iter_mut().enumerate() {
        *t = le_u16(buf, 200 + 2 * i);
    }
    Ok(NvmeHealth {
        critical_warning: buf[0],
        temperature_k: le_u16(buf, 1),
        available_spare: buf[3],
        spare_threshold: buf[4],
        percentage_used: buf[5],
        data_units_read: le_u128_sat(buf, 32),
        data_units_written: le_u128_sat(buf, 48),
        host_reads: le_u128_sat(buf, 64),
        host_writes: le_u128_sat(buf, 80),
        controller_busy_minutes: le_u128_sat(buf, 96),
        power_cycles: le_u128_sat(buf, 112),
        power_on_hours: le_u128_sat(buf, 128),
        unsafe_shutdowns: le_u128_sat(buf, 144),
        media_errors: le_u128_sat(buf, 160),
        error_log_entries: le_u128_sat(buf, 176),
        warning_temp_minutes: le_u32(buf, 192),
        critical_temp_minutes: le_u32(buf, 196),
        temp_sensors_k,
    })
}

/// Names of the critical warning bits, in bit order.
pub const CRITICAL_WARNING_BITS: [&str; 6] = [
    "available spare below threshold",
    "temperature outside its thresholds",
    "reliability degraded by media or internal errors",
    "media placed in read-only mode",
    "volatile memory backup failed",
    "persistent memory region read-only or unreliable",
];

/// Plain-words names of the set bits (bits 6–7 are reserved and named as
/// such so they are not hidden).
pub fn critical_warning_names(bits: u8) -> Vec<&'static str> {
    (0..8)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b| {
            CRITICAL_WARNING_BITS
                .get(b)
                .copied()
                .unwrap_or("reserved bit set")
        })
        .collect()
}

/// Kelvin to whole degrees Celsius (rounded down); `None` for 0 (not
/// reported).
pub fn kelvin_to_c(k: u16) -> Option<i16> {
    (k > 0).then(|| (i32::from(k) - 273).clamp(-273, 1000) as i16)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn identify(model: &str, serial: &str) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        let put = |b: &mut [u8], at: usize, len: usize, s: &str| {
            let mut v = s.as_bytes().to_vec();
            v.resize(len, b' ');
            b[at..at + len].copy_from_slice(&v);
        };
        b[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        put(&mut b, 4, 20, serial);
        put(&mut b, 24, 40, model);
        put(&mut b, 64, 8, "1.0");
        b[261] = 0x02;
        b[266..268].copy_from_slice(&343u16.to_le_bytes());
        b[268..270].copy_from_slice(&373u16.to_le_bytes());
        b[280..288].copy_from_slice(&1_073_741_824u64.to_le_bytes());
        b
    }

    pub(crate) fn health_log(critical_warning: u8, temp_k: u16, media_errors: u64) -> Vec<u8> {
        let mut b = vec![0u8; HEALTH_LOG_LEN];
        b[0] = critical_warning;
        b[1..3].copy_from_slice(&temp_k.to_le_bytes());
        b[3] = 100;
        b[4] = 10;
        b[5] = 3;
        b[32] = 0x2a;
        b[112] = 7;
        b[128..130].copy_from_slice(&1234u16.to_le_bytes());
        b[144] = 2;
        b[160..168].copy_from_slice(&media_errors.to_le_bytes());
        b[176] = 1;
        b[200..202].copy_from_slice(&temp_k.to_le_bytes());
        b
    }

    #[test]
    fn identify_controller_fields() {
        let id = parse_identify_controller(&identify("QEMU NVMe Ctrl", "deadbeef")).expect("ok");
        assert_eq!(id.model, "QEMU NVMe Ctrl");
        assert_eq!(id.serial, "deadbeef");
        assert_eq!(id.firmware, "1.0");
        assert_eq!((id.wctemp_k, id.cctemp_k, id.lpa), (343, 373, 2));
        assert_eq!(id.capacity_bytes, Some(1 << 30));
        assert!(parse_identify_controller(&[0u8; 100]).is_err());
        assert!(parse_identify_controller(&[0u8; 4096]).is_err());
    }

    #[test]
    fn health_log_fields() {
        let h = parse_health_log(&health_log(0x04, 323, 5)).expect("ok");
        assert_eq!(h.critical_warning, 4);
        assert_eq!(h.temperature_k, 323);
        assert_eq!(kelvin_to_c(h.temperature_k), Some(50));
        assert_eq!(
            (h.available_spare, h.spare_threshold, h.percentage_used),
            (100, 10, 3)
        );
        assert_eq!(h.data_units_read, 42);
        assert_eq!(h.power_cycles, 7);
        assert_eq!(h.power_on_hours, 1234);
        assert_eq!(h.unsafe_shutdowns, 2);
        assert_eq!(h.media_errors, 5);
        assert_eq!(h.error_log_entries, 1);
        assert_eq!(h.temp_sensors_k[0], 323);
        assert!(parse_health_log(&[0u8; 511]).is_err());
    }

    #[test]
    fn huge_counters_saturate() {
        let mut b = health_log(0, 300, 0);
        b[160..176].copy_from_slice(&[0xFF; 16]);
        assert_eq!(parse_health_log(&b).expect("ok").media_errors, u64::MAX);
    }

    #[test]
    fn every_critical_warning_bit_is_named() {
        for (bit, name) in CRITICAL_WARNING_BITS.iter().enumerate() {
            assert_eq!(critical_warning_names(1 << bit), [*name]);
        }
        assert_eq!(critical_warning_names(0x84).len(), 2);
        assert!(critical_warning_names(0).is_empty());
    }
}
