//! Calendar arithmetic for syslog timestamps: civil dates to Unix time,
//! RFC 3164 year inference, and fixed UTC offsets.
//!
//! Pure functions, no I/O and no time-zone database: a zone is a fixed
//! offset from UTC (`+07:00`), configured per source. Daylight-saving
//! rules are not applied (sites in the target regions do not use them; a
//! site that does sets the offset it wants to see).

/// Days from 1970-01-01 to the given proleptic Gregorian date
/// (Howard Hinnant's `days_from_civil`). `month` is 1–12, `day` 1–31.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count from 1970-01-01;
/// the inverse of [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether `year` has a 29 February.
pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
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
    if !(1..=12).contains(&c.month) || c.day == 0 || c.day > days_in_month(year, c.month) {
        return None;
    }
    if c.hour > 23 || c.minute > 59 || c.second > 59 || c.millis > 999 {
        return None;
    }
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let days = days_from_civil(year, c.month, c.day);
    let secs =
        days * 86_400 + i64::from(c.hour) * 3600 + i64::from(c.minute) * 60 + i64::from(c.second)
            - i64::from(offset_secs);
    let ms = secs.checked_mul(1000)?.checked_add(i64::from(c.millis))?;
    u64::try_from(ms).ok()
}

/// Unix milliseconds of `c`, taking the year from the line if it has one,
/// else the year (previous, current or next, in the zone `offset_secs`)
/// that puts the time nearest to `rx_ms`. This is what RFC 3164 asks of a
/// receiver and stays right across New Year in both directions: a line
/// stamped `Dec 31 23:59:59` received at 00:00:05 on 1 January belongs to
/// the year before.
pub fn infer_unix_ms(c: &Civil, offset_secs: i32, rx_ms: u64) -> Option<u64> {
    if let Some(y) = c.year {
        return to_unix_ms(y, c, offset_secs);
    }
    let rx_local_secs = i64::try_from(rx_ms / 1000).ok()? + i64::from(offset_secs);
    let (year, _, _) = civil_from_days(rx_local_secs.div_euclid(86_400));
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
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        // Round trip over a wide range, including century rules.
        for d in (-800_000..800_000).step_by(97) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d, "{y}-{m}-{day}");
        }
    }

    #[test]
    fn leap_years() {
        assert!(is_leap(2000) && is_leap(2024) && !is_leap(1900) && !is_leap(2023));
        assert_eq!(days_in_month(2100, 2), 28);
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
