//! SCSI INQUIRY and LOG SENSE pages 0x2F (informational exceptions) and
//! 0x0D (temperature), for SAS disks and USB bridges without SAT.
//!
//! Log pages are a 4-byte header (page code, subpage, length BE) and
//! parameters of `code u16 BE, control, length, value…`; the page length
//! is clamped to the buffer so a lying header cannot read past it.

use super::{ascii_field, ParseError};

/// Standard INQUIRY data needed for vendor/product/revision.
pub const INQUIRY_MIN_LEN: usize = 36;
/// Log page: Informational Exceptions.
pub const PAGE_IE: u8 = 0x2F;
/// Log page: Temperature.
pub const PAGE_TEMPERATURE: u8 = 0x0D;
/// ASC of an informational exception "failure prediction threshold
/// exceeded".
pub const ASC_FAILURE_PREDICTED: u8 = 0x5D;

/// What standard INQUIRY tells about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiIdentity {
    /// T10 vendor id (bytes 8–15), trimmed; `ATA` means a SAT layer.
    pub vendor: String,
    /// Product id (bytes 16–31), trimmed.
    pub product: String,
    /// Product revision (bytes 32–35), trimmed.
    pub revision: String,
    /// Peripheral device type (byte 0 bits 4:0); 0 = disk.
    pub peripheral_type: u8,
}

impl ScsiIdentity {
    /// Vendor `ATA`: the kernel (libata) or a bridge translates SCSI to ATA,
    /// so ATA PASS-THROUGH is worth trying.
    pub fn sat_hint(&self) -> bool {
        self.vendor == "ATA"
    }
}

/// Parses standard INQUIRY data.
pub fn parse_inquiry(buf: &[u8]) -> Result<ScsiIdentity, ParseError> {
    ParseError::need("SCSI INQUIRY", INQUIRY_MIN_LEN, buf)?;
    Ok(ScsiIdentity {
        peripheral_type: buf[0] & 0x1F,
        vendor: ascii_field(buf[8..16].iter().copied()),
        product: ascii_field(buf[16..32].iter().copied()),
        revision: ascii_field(buf[32..36].iter().copied()),
    })
}

/// The informational exceptions general parameter (page 0x2F, code 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiIe {
    /// Additional sense code; 0 = nothing to report, 0x5D = failure
    /// predicted.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// Most recent temperature reading, °C; `None` when absent or 0xFF.
    pub temperature_c: Option<u8>,
}

impl ScsiIe {
    /// The device predicts its own failure (ASC 0x5D).
    pub fn failure_predicted(&self) -> bool {
        self.asc == ASC_FAILURE_PREDICTED
    }
}

/// Iterates the parameters of a log page after checking its page code:
/// yields `(code, value)`. Bounded by the buffer and the page length.
fn log_params<'a>(
    buf: &'a [u8],
    page: u8,
    what: &'static str,
) -> Result<impl Iterator<Item = (u16, &'a [u8])>, ParseError> {
    ParseError::need(what, 4, buf)?;
    if buf[0] & 0x3F != page {
        return Err(ParseError::invalid(
            what,
            format!("page code {:#04x}, expected {page:#04x}", buf[0] & 0x3F),
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let body = &buf[4..buf.len().min(4 + len)];
    let mut at = 0usize;
    Ok(std::iter::from_fn(move || {
        let h = body.get(at..at + 4)?;
        let code = u16::from_be_bytes([h[0], h[1]]);
        let plen = usize::from(h[3]);
        let start = at + 4;
        let end = (start + plen).min(body.len());
        at = start + plen;
        Some((code, &body[start..end]))
    }))
}

/// Parses LOG SENSE page 0x2F. A page without the general parameter (code
/// 0) or with fewer than 2 value bytes is an error.
pub fn parse_ie_page(buf: &[u8]) -> Result<ScsiIe, ParseError> {
    const WHAT: &str = "SCSI informational exceptions page";
    let (_, v) = log_params(buf, PAGE_IE, WHAT)?
        .find(|(code, _)| *code == 0)
        .ok_or_else(|| ParseError::invalid(WHAT, "no general parameter (code 0)"))?;
    if v.len() < 2 {
        return Err(ParseError::invalid(
            WHAT,
            "general parameter shorter than 2 bytes",
        ));
    }
    Ok(ScsiIe {
        asc: v[0],
        ascq: v[1],
        temperature_c: v.get(2).copied().filter(|&t| t != 0xFF),
    })
}

/// Parses LOG SENSE page 0x0D: the current temperature (parameter 0,
/// value byte 1), `None` when absent or 0xFF (no valid reading).
pub fn parse_temperature_page(buf: &[u8]) -> Result<Option<u8>, ParseError> {
    let found = log_params(buf, PAGE_TEMPERATURE, "SCSI temperature page")?
        .find(|(code, _)| *code == 0)
        .and_then(|(_, v)| v.get(1).copied());
    Ok(found.filter(|&t| t != 0xFF))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn inquiry(vendor: &str, product: &str) -> Vec<u8> {
        let mut b = vec![0u8; 96];
        let mut put = |at: usize, len: usize, s: &str| {
            let mut v = s.as_bytes().to_vec();
            v.resize(len, b' ');
            b[at..at + len].copy_from_slice(&v);
        };
        put(8, 8, vendor);
        put(16, 16, product);
        put(32, 4, "0191");
        b[4] = 91;
        b
    }

    /// Page 0x2F as scsi_debug returns it.
    pub(crate) fn ie_page(asc: u8, ascq: u8, temp: u8) -> Vec<u8> {
        vec![0x2F, 0, 0, 8, 0, 0, 0x03, 4, asc, ascq, temp, 0]
    }

    /// Page 0x0D: temperature 0 and reference temperature 1.
    pub(crate) fn temp_page(t: u8) -> Vec<u8> {
        vec![0x0D, 0, 0, 12, 0, 0, 3, 2, 0, t, 0, 1, 3, 2, 0, 65]
    }

    #[test]
    fn inquiry_fields_and_sat_hint() {
        let id = parse_inquiry(&inquiry("ATA", "QEMU HARDDISK")).expect("ok");
        assert_eq!(id.vendor, "ATA");
        assert_eq!(id.product, "QEMU HARDDISK");
        assert_eq!(id.revision, "0191");
        assert_eq!(id.peripheral_type, 0);
        assert!(id.sat_hint());
        let l = parse_inquiry(&inquiry("Linux", "scsi_debug")).expect("ok");
        assert!(!l.sat_hint());
        assert!(parse_inquiry(&[0u8; 35]).is_err());
    }

    #[test]
    fn ie_page_ok_and_failure_predicted() {
        let ok = parse_ie_page(&ie_page(0, 0, 38)).expect("ok");
        assert_eq!(ok.temperature_c, Some(38));
        assert!(!ok.failure_predicted());
        let bad = parse_ie_page(&ie_page(0x5D, 0x10, 0xFF)).expect("ok");
        assert!(bad.failure_predicted());
        assert_eq!(bad.temperature_c, None);
        assert!(parse_ie_page(&temp_page(38)).is_err(), "wrong page code");
        assert!(parse_ie_page(&[0x2F, 0, 0, 0]).is_err(), "no parameter");
    }

    #[test]
    fn temperature_page() {
        assert_eq!(
            parse_temperature_page(&temp_page(38)).expect("ok"),
            Some(38)
        );
        assert_eq!(parse_temperature_page(&temp_page(0xFF)).expect("ok"), None);
        // A page length that claims more than the buffer holds is clamped.
        let mut p = temp_page(40);
        p[3] = 0xFF;
        assert_eq!(parse_temperature_page(&p).expect("ok"), Some(40));
        assert_eq!(parse_temperature_page(&[0x0D, 0, 0, 0]).expect("ok"), None);
    }
}
