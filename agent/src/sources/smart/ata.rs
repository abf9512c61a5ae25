//! ATA IDENTIFY DEVICE and SMART READ DATA / READ THRESHOLDS sectors.
//!
//! Layouts from smartmontools `atacmds.h` (7.5) and ACS-3: each SMART
//! sector holds 30 attribute slots of 12 bytes from offset 2 and a
//! checksum in byte 511 that makes all 512 bytes sum to 0 mod 256. A wrong
//! checksum is an error: a bridge that mangles data must not produce
//! verdicts.

use super::{ascii_field, byte_sum, le_u16, le_u32, ParseError};

/// Attribute slots in a SMART data or thresholds sector.
pub const ATTRIBUTE_SLOTS: usize = 30;
const SLOT_LEN: usize = 12;
const SLOTS_AT: usize = 2;

/// What IDENTIFY DEVICE tells about a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtaIdentity {
    /// Model number (words 27–46), trimmed.
    pub model: String,
    /// Serial number (words 10–19), trimmed.
    pub serial: String,
    /// Firmware revision (words 23–26), trimmed.
    pub firmware: String,
    /// User-addressable capacity; `None` when the sector count is zero.
    pub capacity_bytes: Option<u64>,
    /// Word 82 bit 0.
    pub smart_supported: bool,
    /// Word 85 bit 0.
    pub smart_enabled: bool,
}

/// Word `w` of an IDENTIFY sector (little-endian words).
fn word(s: &[u8; 512], w: usize) -> u16 {
    le_u16(s, w * 2)
}

/// ATA strings store two characters per word, high byte first.
fn ata_string(s: &[u8; 512], first: usize, last: usize) -> String {
    ascii_field((first..=last).flat_map(|w| {
        let [lo, hi] = word(s, w).to_le_bytes();
        [hi, lo]
    }))
}

/// A command-set word is valid when bits 15:14 are 01 (ACS-3 7.12.7.41).
fn valid_set_word(w: u16) -> bool {
    w & 0xC000 == 0x4000
}

/// Parses IDENTIFY DEVICE data. The integrity word (255) is checked when
/// its signature byte says it is present (0xA5); QEMU and old disks leave
/// it zero.
pub fn parse_identify(sector: &[u8; 512]) -> Result<AtaIdentity, ParseError> {
    const WHAT: &str = "ATA IDENTIFY";
    if sector.iter().all(|&b| b == 0) {
        return Err(ParseError::invalid(WHAT, "all bytes are zero"));
    }
    if sector[510] == 0xA5 {
        let sum = byte_sum(sector);
        if sum != 0 {
            return Err(ParseError::Checksum { what: WHAT, sum });
        }
    }
    let w83 = word(sector, 83);
    let lba28 = u64::from(le_u32(sector, 60 * 2));
    let lba48 = if valid_set_word(w83) && w83 & (1 << 10) != 0 {
        u64::from(word(sector, 100))
            | u64::from(word(sector, 101)) << 16
            | u64::from(word(sector, 102)) << 32
            | u64::from(word(sector, 103)) << 48
    } else {
        0
    };
    let sectors = if lba48 > 0 { lba48 } else { lba28 };
    // Word 106: bit 12 = logical sector longer than 256 words, size in
    // words 117–118 (in words).
    let w106 = word(sector, 106);
    let sector_bytes = if valid_set_word(w106) && w106 & (1 << 12) != 0 {
        let words = le_u32(sector, 117 * 2);
        u64::from(words) * 2
    } else {
        512
    };
    let sector_bytes = if (512..=65536).contains(&sector_bytes) {
        sector_bytes
    } else {
        512
    };
    let capacity_bytes = sectors.checked_mul(sector_bytes).filter(|&c| c > 0);
    let w82 = word(sector, 82);
    let w85 = word(sector, 85);
    // 0x0000 and 0xFFFF mean the word is not implemented.
    let implemented = |w: u16| w != 0 && w != 0xFFFF;
    let smart_supported = implemented(w82) && w82 & 1 != 0;
    Ok(AtaIdentity {
        model: ata_string(sector, 27, 46),
        serial: ata_string(sector, 10, 19),
        firmware: ata_string(sector, 23, 26),
        capacity_bytes,
        smart_supported,
        smart_enabled: smart_supported && implemented(w85) && w85 & 1 != 0,
    })
}

/// One SMART attribute with its threshold (from READ THRESHOLDS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute id (1–255).
    pub id: u8,
    /// Flags word: bit 0 pre-failure, bit 1 updated online.
    pub flags: u16,
    /// Normalized current value.
    pub current: u8,
    /// Worst normalized value seen.
    pub worst: u8,
    /// Raw value bytes, little-endian; meaning is vendor specific.
    pub raw: [u8; 6],
    /// Threshold; `None` until merged. `Some(0)` means "never fails".
    pub threshold: Option<u8>,
}

/// When an attribute's normalized value crossed its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrState {
    /// No threshold known, threshold 0, or above it now and always.
    Ok,
    /// `current <= threshold`.
    FailingNow,
    /// `worst <= threshold` but not now.
    FailedPast,
}

impl Attribute {
    /// Pre-failure attribute (flags bit 0): at or below threshold predicts
    /// failure, unlike old-age attributes.
    pub fn prefail(&self) -> bool {
        self.flags & 1 != 0
    }

    /// The 48-bit raw value as stored, with no vendor decoding.
    pub fn raw_u48(&self) -> u64 {
        self.raw
            .iter()
            .rev()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b))
    }

    /// The raw value as the rules read it: 9 (power-on hours) masked to 32
    /// bits, 188 (command timeout) to 16 bits, 190/194 (temperature) to the
    /// low byte (min/max sit above it). Seagate packs 1, 7 and 195 (error
    /// counts over operation counts); they stay raw and no rule reads them.
    pub fn raw_value(&self) -> u64 {
        let raw = self.raw_u48();
        match self.id {
            9 => raw & 0xFFFF_FFFF,
            188 => raw & 0xFFFF,
            190 | 194 => raw & 0xFF,
            _ => raw,
        }
    }

    /// Threshold state as smartctl's `ata_get_attr_state` computes it.
    pub fn state(&self) -> AttrState {
        match self.threshold {
            None | Some(0) => AttrState::Ok,
            Some(t) if self.current <= t => AttrState::FailingNow,
            Some(t) if self.worst <= t => AttrState::FailedPast,
            Some(_) => AttrState::Ok,
        }
    }

    /// The common name of the attribute (smartctl's default names), or
    /// `"Unknown_Attribute"`.
    pub fn name(&self) -> &'static str {
        attribute_name(self.id)
    }
}

/// smartctl's default attribute names for the ids seen on CCTV disks.
pub fn attribute_name(id: u8) -> &'static str {
    match id {
        1 => "Raw_Read_Error_Rate",
        2 => "Throughput_Performance",
        3 => "Spin_Up_Time",
        4 => "Start_Stop_Count",
        5 => "Reallocated_Sector_Ct",
        7 => "Seek_Error_Rate",
        8 => "Seek_Time_Performance",
        9 => "Power_On_Hours",
        10 => "Spin_Retry_Count",
        11 => "Calibration_Retry_Count",
        12 => "Power_Cycle_Count",
        18 => "Head_Health",
        183 => "Runtime_Bad_Block",
        184 => "End-to-End_Error",
        187 => "Reported_Uncorrect",
        188 => "Command_Timeout",
        189 => "High_Fly_Writes",
        190 => "Airflow_Temperature_Cel",
        191 => "G-Sense_Error_Rate",
        192 => "Power-Off_Retract_Count",
        193 => "Load_Cycle_Count",
        194 => "Temperature_Celsius",
        195 => "Hardware_ECC_Recovered",
        196 => "Reallocated_Event_Count",
        197 => "Current_Pending_Sector",
        198 => "Offline_Uncorrectable",
        199 => "UDMA_CRC_Error_Count",
        200 => "Multi_Zone_Error_Rate",
        240 => "Head_Flying_Hours",
        241 => "Total_LBAs_Written",
        242 => "Total_LBAs_Read",
        _ => "Unknown_Attribute",
    }
}

fn checked(sector: &[u8; 512], what: &'static str) -> Result<(), ParseError> {
    let sum = byte_sum(sector);
    if sum != 0 {
        return Err(ParseError::Checksum { what, sum });
    }
    if sector.iter().all(|&b| b == 0) {
        return Err(ParseError::invalid(what, "all bytes are zero"));
    }
    Ok(())
}

fn slots(sector: &[u8; 512]) -> impl Iterator<Item = &[u8]> {
    sector[SLOTS_AT..SLOTS_AT + ATTRIBUTE_SLOTS * SLOT_LEN]
        .chunks_exact(SLOT_LEN)
        .filter(|s| s[0] != 0)
}

/// Parses SMART READ DATA (feature 0xD0). Empty slots (id 0) are skipped;
/// a repeated id is an error (the rules key on ids).
pub fn parse_smart_data(sector: &[u8; 512]) -> Result<Vec<Attribute>, ParseError> {
    const WHAT: &str = "SMART data";
    checked(sector, WHAT)?;
    let mut out: Vec<Attribute> = Vec::with_capacity(ATTRIBUTE_SLOTS);
    for s in slots(sector) {
        if out.iter().any(|a| a.id == s[0]) {
            return Err(ParseError::invalid(
                WHAT,
                format!("attribute {} appears twice", s[0]),
            ));
        }
        let mut raw = [0u8; 6];
        raw.copy_from_slice(&s[5..11]);
        out.push(Attribute {
            id: s[0],
            flags: le_u16(s, 1),
            current: s[3],
            worst: s[4],
            raw,
            threshold: None,
        });
    }
    Ok(out)
}

/// Parses SMART READ THRESHOLDS (feature 0xD1) into `(id, threshold)`.
pub fn parse_thresholds(sector: &[u8; 512]) -> Result<Vec<(u8, u8)>, ParseError> {
    checked(sector, "SMART thresholds")?;
    Ok(slots(sector).map(|s| (s[0], s[1])).collect())
}

/// Sets each attribute's threshold from READ THRESHOLDS; attributes
/// without an entry keep `None`.
pub fn merge_thresholds(attrs: &mut [Attribute], th: &[(u8, u8)]) {
    for a in attrs {
        if let Some(&(_, t)) = th.iter().find(|(id, _)| *id == a.id) {
            a.threshold = Some(t);
        }
    }
}

/// SMART RETURN STATUS, decoded by the I/O layer from LBA mid/high of the
/// ATA return descriptor (0x4F/0xC2 passed, 0xF4/0x2C threshold exceeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtaHealth {
    /// The disk says its attributes are above their thresholds.
    Passed,
    /// The disk says a threshold was exceeded: it predicts its own failure.
    Failing,
    /// No usable answer (bridge truncated the registers, command refused).
    Unknown,
}

impl AtaHealth {
    /// Decodes LBA mid/high of a RETURN STATUS result. A bridge that only
    /// returns mid is accepted, as smartctl does ("probable SAT/USB
    /// truncation").
    pub fn from_lba(mid: u8, high: u8) -> AtaHealth {
        match (mid, high) {
            (0x4F, 0xC2) => AtaHealth::Passed,
            (0xF4, 0x2C) => AtaHealth::Failing,
            (0x4F, _) => AtaHealth::Passed,
            (0xF4, _) => AtaHealth::Failing,
            _ => AtaHealth::Unknown,
        }
    }
}

/// Seagate disks (model "ST…", or a SkyHawk/IronWolf/Exos/BarraCuda name)
/// pack several counters into raw 1, 7, 188, 195 and 9.
pub fn is_seagate(model: &str) -> bool {
    let m = model.trim();
    let upper = m.to_ascii_uppercase();
    upper.starts_with("ST") && m.as_bytes().get(2).is_some_and(|b| b.is_ascii_digit())
        || upper.starts_with("SEAGATE")
        || ["SKYHAWK", "IRONWOLF", "EXOS", "BARRACUDA"]
            .iter()
            .any(|n| upper.contains(n))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes an ATA string (two chars per word, high byte first).
    pub(crate) fn put_string(s: &mut [u8; 512], first_word: usize, words: usize, text: &str) {
        let mut b = text.as_bytes().to_vec();
        b.resize(words * 2, b' ');
        for w in 0..words {
            s[(first_word + w) * 2] = b[w * 2 + 1];
            s[(first_word + w) * 2 + 1] = b[w * 2];
        }
    }

    /// A realistic IDENTIFY sector (QEMU-like unless told otherwise).
    pub(crate) fn identify(model: &str, serial: &str, sectors: u64) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0] = 0x40;
        put_string(&mut s, 10, 10, serial);
        put_string(&mut s, 23, 4, "2.5+");
        put_string(&mut s, 27, 20, model);
        let lba28 = sectors.min(0x0FFF_FFFF) as u32;
        s[120..124].copy_from_slice(&lba28.to_le_bytes());
        s[164..166].copy_from_slice(&0x4001u16.to_le_bytes()); // w82 SMART
        s[166..168].copy_from_slice(&0x4400u16.to_le_bytes()); // w83 LBA48
        s[170..172].copy_from_slice(&0x4001u16.to_le_bytes()); // w85 enabled
        for i in 0..4 {
            let w = ((sectors >> (16 * i)) & 0xFFFF) as u16;
            s[200 + 2 * i..202 + 2 * i].copy_from_slice(&w.to_le_bytes());
        }
        s
    }

    /// Sets byte 511 so the sector sums to zero.
    pub(crate) fn seal(s: &mut [u8; 512]) {
        s[511] = 0;
        s[511] = 0u8.wrapping_sub(byte_sum(s));
    }

    /// A SMART READ DATA sector with `attrs` = (id, flags, current, worst, raw).
    pub(crate) fn data_sector(attrs: &[(u8, u16, u8, u8, u64)]) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0] = 0x10; // revision
        for (i, &(id, flags, cur, worst, raw)) in attrs.iter().enumerate() {
            let o = 2 + i * 12;
            s[o] = id;
            s[o + 1..o + 3].copy_from_slice(&flags.to_le_bytes());
            s[o + 3] = cur;
            s[o + 4] = worst;
            s[o + 5..o + 11].copy_from_slice(&raw.to_le_bytes()[..6]);
        }
        seal(&mut s);
        s
    }

    /// A READ THRESHOLDS sector.
    pub(crate) fn threshold_sector(th: &[(u8, u8)]) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0] = 0x10;
        for (i, &(id, t)) in th.iter().enumerate() {
            s[2 + i * 12] = id;
            s[3 + i * 12] = t;
        }
        seal(&mut s);
        s
    }

    /// QEMU's `smart_attributes` table (hw/ide/core.c): 1,3,4,5,9,12,190.
    pub(crate) const QEMU_ATTRS: [(u8, u16, u8, u8, u64); 7] = [
        (1, 0x0003, 0x64, 0x64, 0),
        (3, 0x0003, 0x64, 0x64, 0x10),
        (4, 0x0002, 0x64, 0x64, 0x64),
        (5, 0x0003, 0x64, 0x64, 0),
        (9, 0x0003, 0x64, 0x64, 0x01),
        (12, 0x0000, 0x64, 0x64, 0x20),
        (190, 0x0003, 0x45, 0x45, 0x1F1F001F),
    ];
    pub(crate) const QEMU_THRESH: [(u8, u8); 7] = [
        (1, 0x06),
        (3, 0),
        (4, 0x14),
        (5, 0x24),
        (9, 0),
        (12, 0),
        (190, 0x32),
    ];

    #[test]
    fn identify_reads_strings_capacity_and_smart_bits() {
        let s = identify("QEMU HARDDISK", "QM00001", 2_097_152);
        let id = parse_identify(&s).expect("valid");
        assert_eq!(id.model, "QEMU HARDDISK");
        assert_eq!(id.serial, "QM00001");
        assert_eq!(id.firmware, "2.5+");
        assert_eq!(id.capacity_bytes, Some(2_097_152 * 512));
        assert!(id.smart_supported && id.smart_enabled);
    }

    #[test]
    fn identify_with_integrity_word_is_checked() {
        let mut s = identify("ST4000VX016-3CV104", "WW12345", 7_814_037_168);
        s[510] = 0xA5;
        seal(&mut s);
        let id = parse_identify(&s).expect("valid checksum");
        assert_eq!(id.capacity_bytes, Some(7_814_037_168 * 512));
        s[100] ^= 1;
        assert!(matches!(
            parse_identify(&s),
            Err(ParseError::Checksum { .. })
        ));
    }

    #[test]
    fn identify_smart_disabled_and_unimplemented_words() {
        let mut s = identify("X", "Y", 1000);
        s[170] = 0x00; // w85 bit0 clear
        assert!(!parse_identify(&s).expect("ok").smart_enabled);
        s[164..166].copy_from_slice(&[0xFF, 0xFF]);
        s[170..172].copy_from_slice(&[0xFF, 0xFF]);
        let id = parse_identify(&s).expect("ok");
        assert!(!id.smart_supported && !id.smart_enabled);
        assert!(parse_identify(&[0u8; 512]).is_err());
    }

    #[test]
    fn smart_data_parses_qemu_table_and_merges_thresholds() {
        let mut attrs = parse_smart_data(&data_sector(&QEMU_ATTRS)).expect("valid");
        assert_eq!(
            attrs.iter().map(|a| a.id).collect::<Vec<_>>(),
            [1, 3, 4, 5, 9, 12, 190]
        );
        let th = parse_thresholds(&threshold_sector(&QEMU_THRESH)).expect("valid");
        merge_thresholds(&mut attrs, &th);
        let t190 = &attrs[6];
        assert_eq!(t190.name(), "Airflow_Temperature_Cel");
        assert_eq!(t190.raw_u48(), 0x1F1F001F);
        assert_eq!(t190.raw_value(), 31);
        assert_eq!(t190.threshold, Some(0x32));
        assert!(t190.prefail());
        assert!(!attrs[5].prefail());
        assert!(attrs.iter().all(|a| a.state() == AttrState::Ok));
    }

    #[test]
    fn wrong_checksum_is_rejected() {
        let mut s = data_sector(&QEMU_ATTRS);
        s[20] = s[20].wrapping_add(1);
        assert_eq!(
            parse_smart_data(&s),
            Err(ParseError::Checksum {
                what: "SMART data",
                sum: 1
            })
        );
        let mut t = threshold_sector(&QEMU_THRESH);
        t[511] ^= 0x80;
        assert!(matches!(
            parse_thresholds(&t),
            Err(ParseError::Checksum { .. })
        ));
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let s = data_sector(&[(5, 3, 100, 100, 0), (5, 3, 100, 100, 1)]);
        assert!(matches!(
            parse_smart_data(&s),
            Err(ParseError::Invalid { .. })
        ));
    }

    #[test]
    fn attribute_states_and_masks() {
        let a = |cur, worst, th| Attribute {
            id: 5,
            flags: 3,
            current: cur,
            worst,
            raw: [0; 6],
            threshold: th,
        };
        assert_eq!(a(36, 36, Some(36)).state(), AttrState::FailingNow);
        assert_eq!(a(100, 30, Some(36)).state(), AttrState::FailedPast);
        assert_eq!(a(100, 100, Some(36)).state(), AttrState::Ok);
        assert_eq!(a(0, 0, Some(0)).state(), AttrState::Ok);
        assert_eq!(a(0, 0, None).state(), AttrState::Ok);
        let mut t = a(100, 100, None);
        t.id = 188;
        t.raw = [0x00, 0x00, 0x01, 0x00, 0x01, 0x00];
        assert_eq!(t.raw_value(), 0);
        t.id = 9;
        t.raw = [0x10, 0x00, 0x00, 0x00, 0x5A, 0x02];
        assert_eq!(t.raw_value(), 0x10);
    }

    #[test]
    fn return_status_decoding() {
        assert_eq!(AtaHealth::from_lba(0x4F, 0xC2), AtaHealth::Passed);
        assert_eq!(AtaHealth::from_lba(0xF4, 0x2C), AtaHealth::Failing);
        assert_eq!(AtaHealth::from_lba(0x4F, 0x00), AtaHealth::Passed);
        assert_eq!(AtaHealth::from_lba(0, 0), AtaHealth::Unknown);
    }

    #[test]
    fn seagate_detection() {
        assert!(is_seagate("ST4000VX016-3CV104"));
        assert!(is_seagate("Seagate IronWolf ZA500NM10002"));
        assert!(is_seagate("ST8000VE001-3CC101 SkyHawk"));
        assert!(!is_seagate("WDC WD40PURZ-85AKKY0"));
        assert!(!is_seagate("STORAGE DEVICE"));
        assert!(!is_seagate("QEMU HARDDISK"));
    }
}
