//! Certificate dates: `notBefore` and `notAfter` read from an X.509
//! certificate's DER, just enough of it to find them (no crate for this).
//! The calendar arithmetic is the agent's shared date code
//! ([`crate::sources::syslog::time::unix_secs`]).

/// Reads one DER TLV at `d`: (tag, content, rest).
fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *d.first()?;
    let first = *d.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*d.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    Some((tag, d.get(hdr..end)?, d.get(end..)?))
}

/// `(notBefore, notAfter)` in Unix seconds from an X.509 certificate.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer.
    let (tag, _, r) = tlv(rest)?;
    rest = if tag == 0xa0 { tlv(r)?.2 } else { r };
    rest = tlv(rest)?.2; // signature algorithm
    rest = tlv(rest)?.2; // issuer
    let (_, val, _) = tlv(rest)?;
    let (t1, nb, r) = tlv(val)?;
    let (t2, na, _) = tlv(r)?;
    Some((der_time(t1, nb)?, der_time(t2, na)?))
}

/// UTCTime (0x17) or GeneralizedTime (0x18), `Z` form, to Unix seconds.
fn der_time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let y: i64 = s.get(0..2)?.parse().ok()?;
            (if y >= 50 { 1900 + y } else { 2000 + y }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |r: std::ops::Range<usize>| -> Option<u32> { rest.get(r)?.parse().ok() };
    let (mo, d, h, mi) = (n(0..2)?, n(2..4)?, n(4..6)?, n(6..8)?);
    let sec = n(8..10).unwrap_or(0);
    if sec > 60 {
        return None;
    }
    // A leap second (60) counts as the next minute's first.
    Some(crate::sources::syslog::time::unix_secs(year, mo, d, h, mi, 0)? + i64::from(sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(der_time(0x17, b"250101000000Z"), Some(1_735_689_600));
        assert_eq!(der_time(0x18, b"20250101000000Z"), Some(1_735_689_600));
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"junk"), None);
        // RFC 5280's "no well-defined expiration date".
        assert_eq!(der_time(0x18, b"99991231235959Z"), Some(253_402_300_799));
        // Impossible dates are not read as some other day.
        assert_eq!(der_time(0x17, b"250231000000Z"), None);
        assert_eq!(der_time(0x17, b"251301000000Z"), None);
        assert_eq!(der_time(0x17, b"25-101000000Z"), None);
        // A leap second is the next minute's first.
        assert_eq!(der_time(0x17, b"161231235960Z"), Some(1_483_228_800));
    }
}
