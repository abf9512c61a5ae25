//! Syslog line parser: one received line → one [`Record`]; never fails.
//!
//! Pure and bounded: works on the bytes it is given (a line is already
//! cut to `max_line_bytes` by the receiver), allocates nothing, looks at
//! each byte a small constant number of times, and returns slices of the
//! input. It must not do I/O, log, or decide policy (host names from
//! config, rate limits): the caller does that.
//!
//! Order of attempts, first match wins:
//!
//! 1. RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`;
//!    STRUCTURED-DATA is kept verbatim.
//! 2. A timestamp after the PRI (or at the start of a line without PRI):
//!    BSD `Mmm dd hh:mm:ss` (day padded or not, optional fraction,
//!    optional year `Mmm dd yyyy hh:mm:ss`) or ISO 8601
//!    (`2025-01-02T03:04:05.678+07:00`, a space instead of `T`, zone
//!    optional). Then an optional HOSTNAME and a TAG (`app[pid]:`) as in
//!    RFC 3164. A line without a year gets the year nearest to the receive
//!    time; a line without a zone gets the source's configured zone.
//! 3. Vendor rules, inside 2 or on a line with only a PRI:
//!    MikroTik RouterOS topics (`system,info,account user admin logged
//!    in`, its default remote format, which has no timestamp and no host;
//!    and the same after a BSD header), and Ubiquiti UniFi device ids
//!    (`U7PG2,788a2056b181,v4.0.66.10832:` in the HOSTNAME position).
//! 4. `<PRI>` and then text: format `no_timestamp`; a leading `tag:` is
//!    still read.
//! 5. Anything else is `raw`: the whole line is the message.
//!
//! Invalid UTF-8 is left to the caller (fields are bytes; it converts
//! lossily). Trailing CR, LF and NUL bytes are trimmed; other control
//! bytes stay in the message (the JSON encoder escapes them).

use sitewatch_wire::payload::LogFormat;

use super::time::{self, Civil};

/// Facility given to a line without PRI (RFC 3164 §4.3.3: user).
pub const DEFAULT_FACILITY: u8 = 1;
/// Severity given to a line without PRI (RFC 3164 §4.3.3: notice).
pub const DEFAULT_SEVERITY: u8 = 5;

/// Longest token accepted as a HOSTNAME, APP-NAME, PROCID or MSGID.
const MAX_TOKEN: usize = 255;

/// What the parser needs besides the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseCtx {
    /// Receive time, Unix ms; anchors RFC 3164 year inference.
    pub rx_ms: u64,
    /// Zone for timestamps that carry none, seconds east of UTC.
    pub tz_offset_secs: i32,
}

/// A parsed line. Text fields are slices of the input (not yet UTF-8
/// checked); empty means "absent".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Device timestamp, Unix ms, when the line had a readable one.
    pub ts: Option<u64>,
    /// Facility 0–23.
    pub facility: u8,
    /// Severity 0–7.
    pub severity: u8,
    /// Which rule understood the line.
    pub format: LogFormat,
    /// HOSTNAME from the line (empty if none).
    pub host: &'a [u8],
    /// APP-NAME / TAG / MikroTik topics (empty if none).
    pub app: &'a [u8],
    /// PROCID or `[pid]`.
    pub procid: Option<&'a [u8]>,
    /// MSGID (RFC 5424).
    pub msgid: Option<&'a [u8]>,
    /// STRUCTURED-DATA as sent (RFC 5424).
    pub sd: Option<&'a [u8]>,
    /// The message.
    pub msg: &'a [u8],
}

impl<'a> Record<'a> {
    fn raw(line: &'a [u8]) -> Record<'a> {
        Record {
            ts: None,
            facility: DEFAULT_FACILITY,
            severity: DEFAULT_SEVERITY,
            format: LogFormat::Raw,
            host: b"",
            app: b"",
            procid: None,
            msgid: None,
            sd: None,
            msg: line,
        }
    }
}

/// Parses one line. Never fails: what cannot be understood is kept whole
/// as a `raw` record.
pub fn parse<'a>(line: &'a [u8], ctx: &ParseCtx) -> Record<'a> {
    let line = trim_line(line);
    let (pri, rest) = match parse_pri(line) {
        Pri::Valid(pri, rest) => (Some(pri), rest),
        Pri::Absent => (None, line),
        // `<999>` or `<x>`: not syslog as we know it; keep it whole.
        Pri::Invalid => return Record::raw(line),
    };
    let (facility, severity) = match pri {
        Some(p) => (p / 8, p % 8),
        None => (DEFAULT_FACILITY, DEFAULT_SEVERITY),
    };
    let mut rec = Record {
        facility,
        severity,
        ..Record::raw(rest)
    };
    if pri.is_some() {
        if let Some(after_version) = rest.strip_prefix(b"1 ") {
            parse_5424(after_version, ctx, &mut rec);
            return rec;
        }
    }
    // Some senders put a space after the PRI (`<181> Sep 8 ...`).
    let body = if pri.is_some() {
        skip_spaces(rest)
    } else {
        rest
    };
    if let Some((ts, after)) = parse_timestamp(body, ctx) {
        rec.ts = ts;
        rec.format = LogFormat::Rfc3164;
        parse_3164_tail(after, &mut rec);
        return rec;
    }
    if pri.is_none() {
        return Record::raw(line);
    }
    rec.format = LogFormat::NoTimestamp;
    parse_no_timestamp(body, &mut rec);
    rec
}

/// Drops trailing CR, LF and NUL, and leading LF/CR/NUL (left over by
/// senders that put the delimiter first).
fn trim_line(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n' | 0] = line {
        line = rest;
    }
    while let [b'\r' | b'\n' | 0, rest @ ..] = line {
        line = rest;
    }
    line
}

enum Pri<'a> {
    Valid(u8, &'a [u8]),
    Absent,
    Invalid,
}

/// `<PRI>`: 1–3 digits, value 0–191.
fn parse_pri(line: &[u8]) -> Pri<'_> {
    let Some(rest) = line.strip_prefix(b"<") else {
        return Pri::Absent;
    };
    let digits = rest
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 3 || rest.get(digits) != Some(&b'>') {
        return Pri::Invalid;
    }
    let value = rest[..digits]
        .iter()
        .fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
    match u8::try_from(value) {
        Ok(v) if v <= 191 => Pri::Valid(v, &rest[digits + 1..]),
        _ => Pri::Invalid,
    }
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

/// Splits off the next space-delimited token: `(token, rest after one
/// space)`. The token may be empty when `s` starts with a space.
fn token(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, b""),
    }
}

fn nil(tok: &[u8]) -> Option<&[u8]> {
    if tok.is_empty() || tok == b"-" {
        None
    } else {
        Some(cap(tok))
    }
}

fn cap(tok: &[u8]) -> &[u8] {
    &tok[..tok.len().min(MAX_TOKEN)]
}

/// RFC 5424 after `<PRI>1 `. Lenient: missing trailing fields are
/// absent, a malformed SD is left in the message.
fn parse_5424<'a>(s: &'a [u8], ctx: &ParseCtx, rec: &mut Record<'a>) {
    rec.format = LogFormat::Rfc5424;
    let (ts, s) = token(s);
    rec.ts = if ts == b"-" {
        None
    } else {
        parse_iso(ts, ctx).and_then(|(t, rest)| rest.is_empty().then_some(t))
    };
    let (host, s) = token(s);
    rec.host = nil(host).unwrap_or(b"");
    let (app, s) = token(s);
    rec.app = nil(app).unwrap_or(b"");
    let (procid, s) = token(s);
    rec.procid = nil(procid);
    let (msgid, s) = token(s);
    rec.msgid = nil(msgid);
    let (sd, msg) = split_sd(s);
    rec.sd = sd;
    rec.msg = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
}

/// STRUCTURED-DATA: `-` or one or more `[id k="v"...]` elements, quotes
/// and `\]` escapes respected. Returns `(sd, msg)`.
fn split_sd(s: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if let Some(rest) = s.strip_prefix(b"-") {
        return match rest {
            [] => (None, b""),
            [b' ', msg @ ..] => (None, msg),
            // "-foo": not a NILVALUE; all message.
            _ => (None, s),
        };
    }
    if s.first() != Some(&b'[') {
        return (None, s);
    }
    let mut i = 0;
    let mut end = 0;
    while s.get(i) == Some(&b'[') {
        let mut in_quotes = false;
        let mut j = i + 1;
        let mut closed = false;
        while j < s.len() {
            match s[j] {
                b'\\' if in_quotes => j += 1,
                b'"' => in_quotes = !in_quotes,
                b']' if !in_quotes => {
                    closed = true;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        if !closed {
            break;
        }
        end = j + 1;
        i = end;
    }
    if end == 0 {
        // Unterminated: not structured data.
        return (None, s);
    }
    let msg = match &s[end..] {
        [b' ', msg @ ..] => msg,
        other => other,
    };
    (Some(&s[..end]), msg)
}

/// A timestamp at the start of `s`: BSD or ISO. Returns `(unix ms if the
/// date is possible, rest after one space)`.
fn parse_timestamp<'a>(s: &'a [u8], ctx: &ParseCtx) -> Option<(Option<u64>, &'a [u8])> {
    if let Some((civil, rest)) = parse_bsd(s) {
        let ts = time::infer_unix_ms(&civil, ctx.tz_offset_secs, ctx.rx_ms);
        return Some((ts, rest));
    }
    if s.first().is_some_and(u8::is_ascii_digit) {
        if let Some((ts, rest)) = parse_iso(s, ctx) {
            return match rest {
                [] => Some((Some(ts), rest)),
                [b' ', rest @ ..] => Some((Some(ts), rest)),
                _ => None,
            };
        }
    }
    None
}

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

/// `n` ASCII digits at `s[at..]`.
fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let d = s.get(at..at + n)?;
    d.iter().try_fold(0u32, |v, &b| {
        b.is_ascii_digit().then(|| v * 10 + u32::from(b - b'0'))
    })
}

/// `hh:mm:ss[.frac]` at the start of `s`; returns `(h, m, s, ms, len)`.
fn parse_clock(s: &[u8]) -> Option<(u32, u32, u32, u32, usize)> {
    let h = digits(s, 0, 2)?;
    if s.get(2) != Some(&b':') || s.get(5) != Some(&b':') {
        return None;
    }
    let m = digits(s, 3, 2)?;
    let sec = digits(s, 6, 2)?;
    let mut len = 8;
    let mut ms = 0;
    if s.get(8) == Some(&b'.') || s.get(8) == Some(&b',') {
        let frac = s[9..].iter().take_while(|b| b.is_ascii_digit()).count();
        if frac == 0 || frac > 9 {
            return None;
        }
        // First three digits are milliseconds.
        for k in 0..3 {
            ms = ms * 10
                + s.get(9 + k)
                    .filter(|_| k < frac)
                    .map_or(0, |b| u32::from(b - b'0'));
        }
        len = 9 + frac;
    }
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some((h, m, sec.min(59), ms, len))
}

/// BSD timestamp: `Mmm dd hh:mm:ss`, `Mmm  d hh:mm:ss`, `Mmm d hh:mm:ss`,
/// optional `.fraction`, or `Mmm dd yyyy hh:mm:ss`. Followed by a space or
/// the end (a trailing `:` as some devices write is accepted).
fn parse_bsd(s: &[u8]) -> Option<(Civil, &[u8])> {
    let mon = s.get(..3)?;
    let month = MONTHS
        .iter()
        .position(|m| mon.eq_ignore_ascii_case(&m[..]))?;
    let mut i = 3;
    let spaces = s[i..].iter().take(3).take_while(|&&b| b == b' ').count();
    if spaces == 0 || spaces > 2 {
        return None;
    }
    i += spaces;
    let dlen = s[i..]
        .iter()
        .take(3)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if dlen == 0 || dlen > 2 {
        return None;
    }
    let day = digits(s, i, dlen)?;
    i += dlen;
    if s.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let mut year = None;
    if s.get(i + 4) == Some(&b' ') {
        if let Some(y) = digits(s, i, 4) {
            year = Some(i64::from(y));
            i += 5;
        }
    }
    let (hour, minute, second, millis, len) = parse_clock(&s[i..])?;
    i += len;
    let rest = match s.get(i..)? {
        [] => &s[i..],
        [b' ', rest @ ..] => rest,
        [b':', b' ', rest @ ..] => rest,
        [b':'] => &s[s.len()..],
        _ => return None,
    };
    if day == 0 || day > 31 {
        return None;
    }
    let civil = Civil {
        year,
        month: month as u32 + 1,
        day,
        hour,
        minute,
        second,
        millis,
    };
    Some((civil, rest))
}

/// ISO 8601 / RFC 3339 at the start of `s`: `yyyy-mm-dd`, `T` or a space,
/// `hh:mm:ss`, optional fraction, optional `Z` or `±hh:mm` / `±hhmm`.
/// Without a zone the context's zone is used. Returns `(unix ms, rest)`.
fn parse_iso<'a>(s: &'a [u8], ctx: &ParseCtx) -> Option<(u64, &'a [u8])> {
    let year = digits(s, 0, 4)?;
    if s.get(4) != Some(&b'-') || s.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(s, 5, 2)?;
    let day = digits(s, 8, 2)?;
    if !matches!(s.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (hour, minute, second, millis, len) = parse_clock(&s[11..])?;
    let mut i = 11 + len;
    let offset = match s.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let h = digits(s, i + 1, 2)?;
            let (m, n) = if s.get(i + 3) == Some(&b':') {
                (digits(s, i + 4, 2)?, 6)
            } else {
                (digits(s, i + 3, 2)?, 5)
            };
            if h > 18 || m > 59 {
                return None;
            }
            i += n;
            let secs = i32::try_from(h * 3600 + m * 60).ok()?;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => ctx.tz_offset_secs,
    };
    let civil = Civil {
        year: Some(i64::from(year)),
        month,
        day,
        hour,
        minute,
        second,
        millis,
    };
    let ts = time::to_unix_ms(i64::from(year), &civil, offset)?;
    Some((ts, &s[i..]))
}

/// Whether a token is a RouterOS topic list: two or more comma-separated
/// lowercase words, one of which is a RouterOS level (`info`, `error`...).
/// Single-topic lines cannot be told apart from text and are not matched.
pub fn is_mikrotik_topics(tok: &[u8]) -> bool {
    const LEVELS: [&[u8]; 7] = [
        b"info",
        b"warning",
        b"error",
        b"critical",
        b"debug",
        b"packet",
        b"raw",
    ];
    if tok.len() > 128 || !tok.contains(&b',') {
        return false;
    }
    let mut level = false;
    for word in tok.split(|&b| b == b',') {
        if word.is_empty()
            || !word
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return false;
        }
        level |= LEVELS.contains(&word);
    }
    level
}

/// A UniFi device id (`U7PG2,788a2056b181,v4.0.66.10832` or
/// `788a2056b183,v4.0.66.10832`, maybe with a trailing `:`). Returns the
/// host to use: the name before the MAC, else the MAC.
fn unifi_host(tok: &[u8]) -> Option<&[u8]> {
    let tok = tok.strip_suffix(b":").unwrap_or(tok);
    let mut parts = tok.split(|&b| b == b',');
    let first = parts.next()?;
    let second = parts.next()?;
    let is_mac = |p: &[u8]| p.len() == 12 && p.iter().all(u8::is_ascii_hexdigit);
    // The name before the MAC, or the MAC itself when it comes first.
    let named = is_mac(second) && !first.is_empty() && !first.contains(&b':');
    (is_mac(first) || named).then_some(first)
}

/// `(app, procid, message)` of a tagged line.
type Tag<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// Reads `TAG[pid]: ` at the start of `s`. A tag is 1–255 bytes without
/// space, `[` or `:` and must end in `:` or `[pid]` (otherwise the text is
/// the message and there is no tag). Returns `(app, procid, msg)`.
fn parse_tag(s: &[u8]) -> Option<Tag<'_>> {
    let n = s
        .iter()
        .take(MAX_TOKEN + 1)
        .take_while(|&&b| b != b' ' && b != b'[' && b != b':')
        .count();
    if n == 0 || n > MAX_TOKEN {
        return None;
    }
    let app = &s[..n];
    let mut rest = &s[n..];
    let mut procid = None;
    if rest.first() == Some(&b'[') {
        let close = rest.iter().take(MAX_TOKEN + 2).position(|&b| b == b']')?;
        procid = Some(&rest[1..close]).filter(|p| !p.is_empty() && !p.contains(&b' '));
        procid?;
        rest = &rest[close + 1..];
        if let Some(r) = rest.strip_prefix(b":") {
            rest = r;
        }
    } else if let Some(r) = rest.strip_prefix(b":") {
        rest = r;
    } else {
        return None;
    }
    let msg = rest.strip_prefix(b" ").unwrap_or(rest);
    Some((app, procid, msg))
}

fn is_ipv6(tok: &[u8]) -> bool {
    std::str::from_utf8(tok).is_ok_and(|t| t.parse::<std::net::Ipv6Addr>().is_ok())
}

/// After an RFC 3164 timestamp: `[HOSTNAME ]TAG: MSG`, with vendor rules.
fn parse_3164_tail<'a>(s: &'a [u8], rec: &mut Record<'a>) {
    rec.msg = s;
    let (first, after_first) = token(s);
    if first.is_empty() {
        return;
    }
    // UniFi: the device id stands where the hostname goes.
    if let Some(host) = unifi_host(first) {
        rec.host = cap(host);
        rec.format = LogFormat::Vendor;
        tag_or_message(after_first, rec);
        return;
    }
    // No hostname (busybox / devlog style): the first token is the tag
    // (`app:`, `app[12]:`, `app:text`), unless it is an IPv6 address.
    if parse_tag(s).is_some() && (first.contains(&b':') || first.contains(&b'[')) && !is_ipv6(first)
    {
        tag_or_message(s, rec);
        return;
    }
    // MikroTik with topics but no identity.
    if is_mikrotik_topics(first) && !after_first.is_empty() {
        rec.app = first;
        rec.msg = after_first;
        rec.format = LogFormat::Vendor;
        return;
    }
    if after_first.is_empty() {
        // A single word: the message, not a host.
        return;
    }
    rec.host = cap(first);
    let (second, after_second) = token(after_first);
    if let Some(_id) = unifi_host(second) {
        rec.format = LogFormat::Vendor;
        tag_or_message(after_second, rec);
        return;
    }
    if is_mikrotik_topics(second) && !after_second.is_empty() {
        rec.app = second;
        rec.msg = after_second;
        rec.format = LogFormat::Vendor;
        return;
    }
    tag_or_message(after_first, rec);
}

fn tag_or_message<'a>(s: &'a [u8], rec: &mut Record<'a>) {
    match parse_tag(s) {
        Some((app, procid, msg)) => {
            rec.app = app;
            rec.procid = procid;
            rec.msg = msg;
        }
        None => rec.msg = s,
    }
}

/// `<PRI>` then no timestamp: MikroTik's default remote format, UniFi
/// switches (`MiniSwitch 7483c04f9d75,USW_FLEX_MINI-1.8.6.694: ...`),
/// `tag: message`, or plain text.
fn parse_no_timestamp<'a>(s: &'a [u8], rec: &mut Record<'a>) {
    rec.msg = s;
    let (first, after_first) = token(s);
    if is_mikrotik_topics(first) && !after_first.is_empty() {
        rec.app = first;
        rec.msg = after_first;
        rec.format = LogFormat::Vendor;
        return;
    }
    if let Some(host) = unifi_host(first) {
        rec.host = cap(host);
        rec.format = LogFormat::Vendor;
        tag_or_message(after_first, rec);
        return;
    }
    let (second, after_second) = token(after_first);
    if !first.contains(&b':') && !first.is_empty() && unifi_host(second).is_some() {
        rec.host = cap(first);
        rec.format = LogFormat::Vendor;
        tag_or_message(after_second, rec);
        return;
    }
    if first.ends_with(b":") || first.contains(&b'[') {
        tag_or_message(s, rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RX: u64 = 1_764_284_441_300; // 2025-11-27T23:00:41.3Z

    fn ctx() -> ParseCtx {
        ParseCtx {
            rx_ms: RX,
            tz_offset_secs: 0,
        }
    }

    fn p(line: &str) -> Record<'_> {
        parse(line.as_bytes(), &ctx())
    }

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).expect("utf8")
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let r = p(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] hello"#,
        );
        assert_eq!(r.format, LogFormat::Rfc5424);
        assert_eq!((r.facility, r.severity), (20, 5));
        assert_eq!(r.ts, Some(1_065_910_455_003));
        assert_eq!(s(r.host), "mymachine.example.com");
        assert_eq!(s(r.app), "evntslog");
        assert_eq!(r.procid, None);
        assert_eq!(r.msgid, Some(&b"ID47"[..]));
        assert_eq!(
            r.sd.map(s),
            Some(
                r#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#
            )
        );
        assert_eq!(s(r.msg), "hello");
    }

    #[test]
    fn rfc5424_sd_with_escaped_bracket_and_bom() {
        let r = p("<13>1 - host app 12 - [x a=\"b\\]c\"] \u{feff}msg");
        assert_eq!(r.ts, None);
        assert_eq!(r.sd.map(s), Some("[x a=\"b\\]c\"]"));
        assert_eq!(r.procid.map(s), Some("12"));
        assert_eq!(s(r.msg), "msg");
        // Unterminated SD stays in the message.
        let r = p("<13>1 - host app - - [x a=\"b] oops");
        assert_eq!(r.sd, None);
        assert_eq!(s(r.msg), "[x a=\"b] oops");
    }

    #[test]
    fn rfc3164_classic() {
        let r = p("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(r.format, LogFormat::Rfc3164);
        assert_eq!((r.facility, r.severity), (4, 2));
        assert_eq!(s(r.host), "mymachine");
        assert_eq!(s(r.app), "su");
        assert_eq!(s(r.msg), "'su root' failed for lonvick on /dev/pts/8");
        // Year inferred: 2025 (nearest to RX in Nov 2025).
        assert_eq!(r.ts, Some(1_760_220_855_000));
    }

    #[test]
    fn no_pri_no_timestamp_is_raw() {
        let r = p("Use the BFG!");
        assert_eq!(r.format, LogFormat::Raw);
        assert_eq!((r.facility, r.severity), (1, 5));
        assert_eq!(s(r.msg), "Use the BFG!");
        assert_eq!(p("<999>x").format, LogFormat::Raw);
        assert_eq!(s(p("<999>x").msg), "<999>x");
        assert_eq!(p("").format, LogFormat::Raw);
    }

    #[test]
    fn mikrotik_default_and_bsd() {
        let r = p("<30>system,info,account user admin logged in from 10.0.0.2 via winbox");
        assert_eq!(r.format, LogFormat::Vendor);
        assert_eq!(s(r.app), "system,info,account");
        assert_eq!(r.host, b"");
        assert_eq!(r.ts, None);
        let r = p("<30>Sep 25 01:37:18 MikroTik system,info,account user abc logged in");
        assert_eq!(r.format, LogFormat::Vendor);
        assert_eq!(s(r.host), "MikroTik");
        assert_eq!(s(r.app), "system,info,account");
        assert_eq!(s(r.msg), "user abc logged in");
    }

    #[test]
    fn timestamps() {
        let r = p("<13>2025-11-27T23:00:40.123+07:00 host app: x");
        assert_eq!(r.ts, Some(1_764_259_240_123));
        let r = p("<13>2025-11-27 23:00:40 host app: x");
        assert_eq!(r.ts, Some(1_764_284_440_000));
        // Unpadded day, fraction.
        let r = p("<13>Nov 7 23:00:40.5 host app: x");
        assert_eq!(r.ts.map(|t| t % 1000), Some(500));
        // Year in the BSD form.
        let r = p("<13>Nov 27 2024 23:00:40 host app: x");
        assert_eq!(r.ts, Some(1_732_748_440_000));
        // Impossible date: still rfc3164, no ts.
        let r = p("<13>Feb 30 23:00:40 host app: x");
        assert_eq!((r.format, r.ts), (LogFormat::Rfc3164, None));
    }

    #[test]
    fn control_bytes_and_trim() {
        let r = p("<13>hello\0world\r\n\0");
        assert_eq!(r.format, LogFormat::NoTimestamp);
        assert_eq!(r.msg, b"hello\0world");
        let bin = [0xffu8, 0xfe, b'<', 0, 1, 2];
        let r = parse(&bin, &ctx());
        assert_eq!(r.format, LogFormat::Raw);
        assert_eq!(r.msg, &bin[..]);
    }
}
