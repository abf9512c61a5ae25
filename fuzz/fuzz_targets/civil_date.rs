//! The agent's one civil-date implementation (`syslog::time`, on jiff) and
//! the X.509 date reader built on it (`check::validity`), against
//! reference arithmetic written here from the calendar rules alone (no
//! Hinnant, no jiff, i128 so nothing overflows) and against jiff's
//! `Timestamp` path:
//! - `unix_secs` is `Some` exactly for possible dates and times in the
//!   years -9999..=9999 and then equals the reference;
//! - `utc` round-trips with `unix_secs` and with the reference, and agrees
//!   with `jiff::Timestamp` wherever that is defined;
//! - `utc_minutes` prints the reference's fields;
//! - `to_unix_ms` and `infer_unix_ms` (RFC 3164 year inference) give the
//!   reference's answer, `infer_unix_ms` the nearest of the three years;
//! - a certificate with fuzzed validity times reads as the reference says;
//! - nothing panics on any input, including years far beyond ±9999 and
//!   arbitrary bytes as a certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::check::validity;
use sitewatch_agent::syslog::time::{
    civil_from_days, infer_unix_ms, to_unix_ms, unix_secs, utc, utc_minutes, Civil,
};

/// Leap year by the Gregorian rule.
fn leap(y: i128) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn month_len(y: i128, m: i128) -> i128 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Leap years in [1970, y) (negative for y < 1970), by counting multiples.
fn leaps_since_1970(y: i128) -> i128 {
    let before = |y: i128| {
        let p = y - 1;
        p.div_euclid(4) - p.div_euclid(100) + p.div_euclid(400)
    };
    before(y) - before(1970)
}

/// Days from 1970-01-01 to y-m-d: whole years, then whole months, then days.
fn ref_days(y: i128, m: i128, d: i128) -> i128 {
    let mut days = 365 * (y - 1970) + leaps_since_1970(y);
    for mm in 1..m {
        days += month_len(y, mm);
    }
    days + d - 1
}

fn ref_secs(y: i128, m: i128, d: i128, h: i128, mi: i128, s: i128) -> i128 {
    ref_days(y, m, d) * 86_400 + h * 3600 + mi * 60 + s
}

fn valid(y: i128, m: i128, d: i128, h: i128, mi: i128, s: i128) -> bool {
    (1..=12).contains(&m) && d >= 1 && d <= month_len(y, m) && h < 24 && mi < 60 && s < 60
}

/// The reference inverse: the date of a day count, by estimating the year
/// and correcting it against `ref_days`.
fn ref_date(days: i128) -> (i128, i128, i128) {
    // Never above the true year: long years forward, short ones back.
    let mut y = 1970 + days.div_euclid(if days < 0 { 365 } else { 366 });
    while ref_days(y + 1, 1, 1) <= days {
        // At most a few steps: 366-day years overestimate by < 1 %.
        y += 1.max((days - ref_days(y + 1, 1, 1)) / 366);
    }
    let mut m = 1;
    while m < 12 && ref_days(y, m + 1, 1) <= days {
        m += 1;
    }
    (y, m, days - ref_days(y, m, 1) + 1)
}

const MIN_SECS: i128 = -377_705_116_800; // -9999-01-01T00:00:00Z
const MAX_SECS: i128 = 253_402_300_799; // 9999-12-31T23:59:59Z

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag, u8::try_from(content.len()).expect("short")];
    v.extend_from_slice(content);
    v
}

/// A certificate skeleton with the given validity times (tag, text).
fn cert(nb: (u8, &str), na: (u8, &str)) -> Vec<u8> {
    let validity = der(
        0x30,
        &[der(nb.0, nb.1.as_bytes()), der(na.0, na.1.as_bytes())].concat(),
    );
    let tbs = [
        der(0xa0, &der(0x02, &[2])),
        der(0x02, &[1]),
        der(0x30, &[]),
        der(0x30, &[]),
        validity,
    ]
    .concat();
    der(0x30, &der(0x30, &tbs))
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mode = b.u8();
    let raw = b.i64();

    // 1. Unix seconds to a date and back. Mostly within ±10,000 years
    //    (where jiff is defined), sometimes any i64.
    let secs = if mode & 1 == 0 {
        raw
    } else {
        raw.rem_euclid(2 * 400_000_000_000) - 400_000_000_000
    };
    let s128 = i128::from(secs);
    let in_range = (MIN_SECS..=MAX_SECS).contains(&s128);
    match utc(secs) {
        Some(t) => {
            assert!(in_range, "{secs} is outside jiff's years but gave {t}");
            let (y, m, d) = (
                i128::from(t.year()),
                i128::from(t.month()),
                i128::from(t.day()),
            );
            let (h, mi, s) = (
                i128::from(t.hour()),
                i128::from(t.minute()),
                i128::from(t.second()),
            );
            assert!(valid(y, m, d, h, mi, s), "{t}");
            assert_eq!(ref_secs(y, m, d, h, mi, s), s128, "{t}");
            assert_eq!(ref_date(s128.div_euclid(86_400)), (y, m, d));
            assert_eq!(
                unix_secs(y as i64, m as u32, d as u32, h as u32, mi as u32, s as u32),
                Some(secs)
            );
            assert_eq!(t.subsec_nanosecond(), 0);
            assert_eq!(
                utc_minutes(secs),
                format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02} UTC")
            );
            let days = secs.div_euclid(86_400);
            assert_eq!(civil_from_days(days), (y as i64, m as u32, d as u32));
            // jiff's Timestamp path (a day shorter at both ends).
            if let Ok(ts) = jiff::Timestamp::from_second(secs) {
                assert_eq!(jiff::tz::Offset::UTC.to_datetime(ts), t);
            }
        }
        None => {
            assert!(!in_range, "{secs} is within jiff's years");
            assert_eq!(utc_minutes(secs), format!("{secs} s since 1970"));
            let (y, _, _) = civil_from_days(secs.div_euclid(86_400));
            assert_eq!(y, if secs < 0 { -9999 } else { 9999 });
        }
    }

    // 2. A date and time to Unix seconds: fields mostly near their ranges,
    //    years mostly near jiff's, sometimes any i64.
    let year = if mode & 2 == 0 {
        raw
    } else {
        raw.rem_euclid(20_400) - 10_200
    };
    let (m, d) = (u32::from(b.u8() % 14), u32::from(b.u8() % 33));
    let (h, mi, s) = (
        u32::from(b.u8() % 25),
        u32::from(b.u8() % 61),
        u32::from(b.u8() % 61),
    );
    let (y128, m128, d128) = (i128::from(year), i128::from(m), i128::from(d));
    let (h128, mi128, s128) = (i128::from(h), i128::from(mi), i128::from(s));
    let ok = valid(y128, m128, d128, h128, mi128, s128) && (-9999..=9999).contains(&year);
    let got = unix_secs(year, m, d, h, mi, s);
    assert_eq!(got.is_some(), ok, "{year}-{m}-{d} {h}:{mi}:{s}");
    if let Some(u) = got {
        assert_eq!(i128::from(u), ref_secs(y128, m128, d128, h128, mi128, s128));
    }

    // 3. Syslog: a complete time at a UTC offset, and the year inferred
    //    from the receive time.
    let offset = i32::from_le_bytes(b.take()).rem_euclid(2 * 68_400 + 1) - 68_400;
    let millis = u32::from(u16::from_le_bytes(b.take())) % 1001;
    let c = Civil {
        year: None,
        month: m,
        day: d,
        hour: h,
        minute: mi,
        second: s,
        millis,
    };
    let ms = to_unix_ms(year, &c, offset);
    let expect = (valid(y128, m128, d128, h128, mi128, s128)
        && (1970..=9999).contains(&year)
        && millis <= 999)
        .then(|| {
            (ref_secs(y128, m128, d128, h128, mi128, s128) - i128::from(offset)) * 1000
                + i128::from(millis)
        })
        .filter(|&v| v >= 0);
    assert_eq!(ms.map(i128::from), expect);

    let rx_ms = if mode & 4 == 0 {
        u64::from_le_bytes(b.take())
    } else {
        u64::from_le_bytes(b.take()) % 253_402_300_800_000
    };
    let inferred = infer_unix_ms(&c, offset, rx_ms);
    let rx_local = i128::from(rx_ms / 1000) + i128::from(offset);
    let (rx_year, _, _) = ref_date(rx_local.div_euclid(86_400));
    let expect = if rx_year > 9999 {
        None
    } else {
        let mut best: Option<(i128, i128)> = None;
        for y in [rx_year - 1, rx_year, rx_year + 1] {
            if !(1970..=9999).contains(&y)
                || !valid(y, m128, d128, h128, mi128, s128)
                || millis > 999
            {
                continue;
            }
            let ts = (ref_secs(y, m128, d128, h128, mi128, s128) - i128::from(offset)) * 1000
                + i128::from(millis);
            if ts < 0 {
                continue;
            }
            let dist = (ts - i128::from(rx_ms)).abs();
            if best.is_none_or(|(_, bd)| dist < bd) {
                best = Some((ts, dist));
            }
        }
        best.map(|(ts, _)| ts)
    };
    assert_eq!(
        inferred.map(i128::from),
        expect,
        "rx {rx_ms} offset {offset}"
    );

    // 4. Certificate validity: GeneralizedTime (4-digit year) or UTCTime
    //    (2-digit, 1950–2049), with a leap second allowed.
    let (tag, text, cert_year) = if mode & 8 == 0 {
        let y = year.rem_euclid(10_000);
        (
            0x18,
            format!("{y:04}{:02}{:02}{:02}{:02}{:02}Z", m, d, h, mi, s),
            i128::from(y),
        )
    } else {
        let yy = year.rem_euclid(100);
        let y = if yy >= 50 { 1900 + yy } else { 2000 + yy };
        (
            0x17,
            format!("{yy:02}{:02}{:02}{:02}{:02}{:02}Z", m, d, h, mi, s),
            i128::from(y),
        )
    };
    let sec_ok = s <= 60;
    let expect = (valid(cert_year, m128, d128, h128, mi128, 0) && sec_ok)
        .then(|| ref_secs(cert_year, m128, d128, h128, mi128, 0) + s128);
    let got = validity(&cert((0x17, "700101000000Z"), (tag, &text)));
    assert_eq!(
        got.map(|(nb, na)| (i128::from(nb), i128::from(na))),
        expect.map(|na| (0, na)),
        "{text}"
    );

    // 5. The rest as a certificate: no panic.
    let _ = validity(b.0);
});
