//! Calendar arithmetic for the agent: civil dates to Unix time and back
//! (syslog timestamps, `check`'s certificate dates, cleanup reports),
//! RFC 3164 year inference, and fixed UTC offsets.
//!
//! The calendar is jiff's, the agent's only copy of it: jiff is linked
//! anyway through retina, and these functions cost the stripped aarch64
//! binary 704 bytes over the hand-written arithmetic it replaces here and
//! in `check` (2,411,616 -> 2,412,320 bytes, scripts/build-release.sh,
//! 2026-12-06). Only `civil::Date` day counts and `Time` are used: they
//! cover jiff's whole range, years -9999 to 9999, including RFC 5280's
//! "no expiry" 9999-12-31T23:59:59Z, which `jiff::Timestamp` cannot hold
//! (it ends a day earlier so that any offset stays in range). The test
//! kit formats with jiff too (`sitewatch_testkit::loki::rfc3339`); the
//! fuzz target `civil_date` checks all of this against reference
//! arithmetic.
//!
//! Pure functions, no I/O and no time-zone database: a zone is a fixed
//! offset from UTC (`+07:00`), configured per source. Daylight-saving
//! rules are not applied (sites in the target regions do not use them; a
//! site that does sets the offset it wants to see).

use jiff::civil::{Date, DateTime, Time};
use jiff::SignedDuration;

/// 1970-01-01.
const EPOCH: Date = Date::constant(1970, 1, 1);
/// Unix seconds of -9999-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the
/// ends of jiff's civil range.
const MIN_SECS: i64 = -377_705_116_800;
const MAX_SECS: i64 = 253_402_300_799;

/// Unix seconds of a UTC date and time, or `None` for an impossible one
/// (31 April, 29 February 2025, 24:00, second 60) or a year outside
/// -9999..=9999.
pub fn unix_secs(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> Option<i64> {
    let date = Date::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
    )
    .ok()?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Whole days: `Date::duration_since` counts 24-hour days.
    let days = date.duration_since(EPOCH).as_hours() / 24;
    Some(days * 86_400 + i64::from(hour * 3600 + minute * 60 + second))
}

/// The UTC date and time of Unix seconds, or `None` outside the years
/// -9999..=9999.
pub fn utc(secs: i64) -> Option<DateTime> {
    if !(MIN_SECS..=MAX_SECS).contains(&secs) {
        return None;
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as i32; // [0, 86_399]
    let date = EPOCH
        .checked_add(SignedDuration::from_hours(days * 24))
        .ok()?;
    let time = Time::new(
        (rem / 3600) as i8,
        (rem / 60 % 60) as i8,
        (rem % 60) as i8,
        0,
    )
    .ok()?;
    Some(date.to_datetime(time))
}

/// `2024-01-02 03:04 UTC` for messages to people (`<secs> s since 1970`
/// beyond the year 9999).
pub fn utc_minutes(secs: i64) -> String {
    people(secs, false)
}

/// `2024-01-02 03:04:05 UTC`, as [`utc_minutes`] with seconds.
pub fn utc_seconds(secs: i64) -> String {
    people(secs, true)
}

fn people(secs: i64, with_seconds: bool) -> String {
    let Some(t) = utc(secs) else {
        return format!("{secs} s since 1970");
    };
    let hm = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    );
    if with_seconds {
        format!("{hm}:{:02} UTC", t.second())
    } else {
        format!("{hm} UTC")
    }
}

/// The date `(year, month, day)` of a day count from 1970-01-01, clamped
/// to jiff's years -9999..=9999. For callers that still format their own
/// text; [`utc`], [`utc_minutes`] and [`utc_seconds`] are the better fit.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let t = utc(days.saturating_mul(86_400)).unwrap_or(if days < 0 {
        DateTime::MIN
    } else {
        DateTime::MAX
    });
    (i64::from(t.year()), t.month() as u32, t.day() as u32)
}

/// A wall-clock time as a syslog line writes it, without the year or
/// without the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year, when the line had one.
    pub year: Option<i64>,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// 0–23.
    pub hour: u32,
    /// 0–59.
    pub minute: u32,
    /// 0–59 (a leap second 60 is read as 59).
    pub second: u32,
    /// Milliseconds 0–999.
    pub millis: u32,
}

/// Unix milliseconds of a complete civil time at UTC offset `offset_secs`,
/// or `None` before 1970 or for an impossible date (31 April).
pub fn to_unix_ms(year: i64, c: &Civil, offset_secs: i32) -> Option<u64> {
    if !(1970..=9999).contains(&year) || c.millis > 999 {
        return None;
    }
    let secs = unix_secs(year, c.month, c.day, c.hour, c.minute, c.second)?;
    let ms = (secs - i64::from(offset_secs))
        .checked_mul(1000)?
        .checked_add(i64::from(c.millis))?;
    u64::try_from(ms).ok()
}

/// Unix milliseconds of `c`, taking the year from the line if it has one,
/// else the year (previous, current or next, in the zone `offset_secs`)
/// that puts the time nearest to `rx_ms`. This is what RFC 3164 asks of a
/// receiver and stays right across New Year in both directions: a line
/// stamped `Dec 31 23:59:59` received at 00:00:05 on 1 January belongs to
/// the year before. `None` when no candidate is a possible date (29
/// February with no leap year among the three) or when `rx_ms` is past
/// the year 9999.
pub fn infer_unix_ms(c: &Civil, offset_secs: i32, rx_ms: u64) -> Option<u64> {
    if let Some(y) = c.year {
        return to_unix_ms(y, c, offset_secs);
    }
    let rx_local_secs = i64::try_from(rx_ms / 1000).ok()? + i64::from(offset_secs);
    let year = i64::from(utc(rx_local_secs)?.year());
    let rx = i64::try_from(rx_ms).ok()?;
    let mut best: Option<(u64, i64)> = None;
    for y in [year - 1, year, year + 1] {
        if let Some(ts) = to_unix_ms(y, c, offset_secs) {
            let dist = (i64::try_from(ts).ok()? - rx).abs();
            if best.is_none_or(|(_, d)| dist < d) {
                best = Some((ts, dist));
            }
        }
    }
    best.map(|(ts, _)| ts)
}

/// Parses a fixed UTC offset: `Z`, `UTC`, `+07:00`, `-0530`, `+7`.
/// Returns seconds east of UTC; at most ±18 hours.
pub fn parse_offset(text: &str) -> Option<i32> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("gmt")
    {
        return Some(0);
    }
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    if h.is_empty() || h.len() > 2 || m.is_empty() || m.len() > 2 {
        return None;
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 18 || m > 59 || (h == 18 && m > 0) {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// `+07:00` style text for an offset, for messages.
pub fn format_offset(offset_secs: i32) -> String {
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let a = offset_secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn civil(month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Civil {
        Civil {
            year: None,
            month,
            day,
            hour,
            minute,
            second,
            millis: 0,
        }
    }

    #[test]
    fn unix_secs_matches_known_dates() {
        let day = |y, m, d| unix_secs(y, m, d, 0, 0, 0).map(|s| s / 86_400);
        assert_eq!(day(1970, 1, 1), Some(0));
        assert_eq!(day(2000, 3, 1), Some(11_017));
        assert_eq!(day(2024, 2, 29), Some(19_782));
        assert_eq!(unix_secs(1969, 12, 31, 0, 0, 0), Some(-86_400));
        // RFC 5280's "no well-defined expiration date".
        assert_eq!(unix_secs(9999, 12, 31, 23, 59, 59), Some(253_402_300_799));
        // Round trip over a wide range, including century rules.
        for d in (-800_000..800_000).step_by(97) {
            let t = utc(d * 86_400).expect("in range");
            let (y, m, dd) = (t.year().into(), t.month() as u32, t.day() as u32);
            assert_eq!(day(y, m, dd), Some(d), "{y}-{m}-{dd}");
        }
    }

    #[test]
    fn leap_years() {
        for y in [2000, 2024, 1600, -4] {
            assert!(unix_secs(y, 2, 29, 0, 0, 0).is_some(), "{y}");
        }
        for y in [1900, 2023, 2100, -100] {
            assert_eq!(unix_secs(y, 2, 29, 0, 0, 0), None, "{y}");
        }
        assert_eq!(unix_secs(10_000, 1, 1, 0, 0, 0), None);
    }

    #[test]
    fn dates_for_people() {
        assert_eq!(utc_minutes(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minutes(-1), "1969-12-31 23:59 UTC");
        assert_eq!(utc_minutes(1_704_164_645), "2024-01-02 03:04 UTC");
        assert_eq!(utc_minutes(253_402_300_799), "9999-12-31 23:59 UTC");
        assert_eq!(utc_minutes(253_402_300_800), "253402300800 s since 1970");
        assert_eq!(utc_minutes(i64::MIN), format!("{} s since 1970", i64::MIN));
        assert_eq!(utc_seconds(1_704_164_645), "2024-01-02 03:04:05 UTC");
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(i64::MAX), (9999, 12, 31));
        assert_eq!(civil_from_days(i64::MIN), (-9999, 1, 1));
    }

    #[test]
    fn year_is_inferred_nearest_to_receive_time() {
        // 2025-06-15T12:00:00Z
        let rx = 1_749_988_800_000;
        let ts = infer_unix_ms(&civil(6, 15, 11, 59, 0), 0, rx).expect("ts");
        assert_eq!(ts, rx - 60_000);
        // A line from Dec 31 received on Jan 1 belongs to the year before.
        let jan1 = to_unix_ms(2026, &civil(1, 1, 0, 0, 5), 0).expect("rx");
        let ts = infer_unix_ms(&civil(12, 31, 23, 59, 59), 0, jan1).expect("ts");
        assert_eq!(ts, jan1 - 6_000);
        // A device clock a little ahead: Jan 1 received on Dec 31 is next year.
        let dec31 = to_unix_ms(2025, &civil(12, 31, 23, 59, 58), 0).expect("rx");
        let ts = infer_unix_ms(&civil(1, 1, 0, 0, 1), 0, dec31).expect("ts");
        assert_eq!(ts, dec31 + 3_000);
        // With a zone: the New Year is local.
        let wib = 7 * 3600;
        let rx = to_unix_ms(2026, &civil(1, 1, 0, 0, 10), wib).expect("rx");
        let ts = infer_unix_ms(&civil(12, 31, 23, 59, 50), wib, rx).expect("ts");
        assert_eq!(ts, rx - 20_000);
    }

    #[test]
    fn feb_29_picks_a_leap_year() {
        let rx = to_unix_ms(2025, &civil(1, 10, 0, 0, 0), 0).expect("rx");
        let ts = infer_unix_ms(&civil(2, 29, 1, 0, 0), 0, rx).expect("ts");
        assert_eq!(
            ts,
            to_unix_ms(2024, &civil(2, 29, 1, 0, 0), 0).expect("2024")
        );
        // No leap year within a year of receive time: unreadable.
        let rx = to_unix_ms(2022, &civil(7, 1, 0, 0, 0), 0).expect("rx");
        assert_eq!(infer_unix_ms(&civil(2, 29, 1, 0, 0), 0, rx), None);
    }

    #[test]
    fn impossible_dates_are_none() {
        assert_eq!(to_unix_ms(2025, &civil(4, 31, 0, 0, 0), 0), None);
        assert_eq!(to_unix_ms(2025, &civil(13, 1, 0, 0, 0), 0), None);
        assert_eq!(to_unix_ms(2025, &civil(1, 1, 24, 0, 0), 0), None);
        assert_eq!(to_unix_ms(1969, &civil(12, 31, 0, 0, 0), 0), None);
        // Before the epoch once the zone is applied.
        assert_eq!(to_unix_ms(1970, &civil(1, 1, 0, 0, 0), 3600), None);
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+07:00"), Some(25_200));
        assert_eq!(parse_offset("-05:30"), Some(-19_800));
        assert_eq!(parse_offset("+0530"), Some(19_800));
        assert_eq!(parse_offset("+7"), Some(25_200));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("UTC"), Some(0));
        for bad in [
            "",
            "7",
            "+19:00",
            "+07:60",
            "Asia/Jakarta",
            "+07:0x",
            "+123",
        ] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
        assert_eq!(format_offset(-19_800), "-05:30");
        assert_eq!(format_offset(25_200), "+07:00");
    }
}
