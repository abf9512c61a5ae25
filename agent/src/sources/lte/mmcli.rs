//! ModemManager's `mmcli --output-keyvalue` (`-K`) text, read without
//! I/O: the modem's state, access technology, operator and signal, and
//! what they mean for a site's uplink.
//!
//! The format is mmcli's own (`cli/mmcli-output.c`,
//! `dump_output_keyvalue`): one `KEY : VALUE` line per field, the key
//! left-justified and padded to the longest key, the value escaped with
//! GLib's `g_strescape` (`\"`, `\\`, `\n`… and every byte outside
//! 0x20..0x7e as a three-digit octal escape), `--` for a field without a
//! value, and list fields as `KEY.length` then `KEY.value[1]`… The signal
//! figures of `--signal-get` are `%.2lf` numbers, without units in this
//! output (`cli/mmcli-modem-signal.c`).

use std::fmt::Write as _;

/// Most bytes of mmcli output read (a modem's whole `-K` listing is about
/// 4 KiB).
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Most lines read.
const MAX_LINES: usize = 1024;
/// Longest value kept (operator names are short; anything longer is cut).
pub const MAX_VALUE_LEN: usize = 64;

/// Why mmcli's output could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

/// The `KEY : VALUE` pairs of `-K` output, values unescaped (`--` kept
/// as is: [`value`] treats it as absent).
pub fn parse_keyvalue(out: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(ParseError(format!(
            "mmcli printed more than {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    let text = std::str::from_utf8(out)
        .map_err(|_| ParseError("mmcli printed something that is not text".into()))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if n >= MAX_LINES {
            return Err(ParseError(format!(
                "mmcli printed more than {MAX_LINES} lines"
            )));
        }
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(" : ") else {
            return Err(ParseError(format!(
                "line {} is not mmcli's KEY : VALUE: {:?}",
                n + 1,
                cut(line)
            )));
        };
        let key = key.trim_end();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ParseError(format!("line {} has no key", n + 1)));
        }
        pairs.push((key.to_owned(), unescape(value)));
    }
    if pairs.is_empty() {
        return Err(ParseError("mmcli printed no field".into()));
    }
    Ok(pairs)
}

/// `s` cut to [`MAX_VALUE_LEN`] bytes at a character boundary.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_VALUE_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Undoes `g_strescape`: the C escapes and three-digit octal bytes
/// (UTF-8 sequences come back whole; a stray byte becomes U+FFFD). An
/// escape `g_strescape` never writes is kept as written.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        let simple = match c {
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(x) = simple {
            out.push(x);
            i += 2;
            continue;
        }
        let digits = b[i + 1..]
            .iter()
            .take(3)
            .take_while(|d| (b'0'..=b'7').contains(d))
            .count();
        if digits == 3 {
            let n = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(n) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b'\\');
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key`, `None` when absent or `--`.
pub fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| *v != "--" && !v.is_empty())
}

/// A `%.2lf` figure within `range` (anything else is absent: a modem
/// reporting nonsense should not raise an alarm).
fn figure(
    pairs: &[(String, String)],
    key: &str,
    range: std::ops::RangeInclusive<f32>,
) -> Option<f32> {
    value(pairs, key)?
        .parse::<f32>()
        .ok()
        .filter(|x| range.contains(x))
}

/// What `mmcli -m MODEM -K` says of the modem.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Modem {
    /// `modem.generic.state`: `connected`, `registered`, `searching`,
    /// `disabled`, `failed`, `locked`…
    pub state: String,
    /// `modem.generic.state-failed-reason` (`sim-missing`…), when failed.
    pub failed_reason: Option<String>,
    /// The first of `modem.generic.access-technologies`: `lte`, `5gnr`,
    /// `umts`, `hspa-plus`, `gsm`…
    pub tech: Option<String>,
    /// `modem.generic.signal-quality.value`, 0-100 (ModemManager's own
    /// scale from the RSSI).
    pub quality_pct: Option<u8>,
    /// `modem.3gpp.operator-name`.
    pub operator: Option<String>,
    /// `modem.3gpp.registration-state`: `home`, `roaming`, `searching`,
    /// `denied`, `idle`…
    pub registration: Option<String>,
}

/// Reads [`Modem`] from `-K` pairs; `Err` without a state (not a modem
/// listing).
pub fn modem(pairs: &[(String, String)]) -> Result<Modem, ParseError> {
    let state = value(pairs, "modem.generic.state")
        .ok_or_else(|| ParseError("mmcli's listing has no modem.generic.state".into()))?;
    let text = |k: &str| value(pairs, k).map(|v| cut(v).to_owned());
    Ok(Modem {
        state: cut(state).to_owned(),
        failed_reason: text("modem.generic.state-failed-reason"),
        tech: text("modem.generic.access-technologies.value[1]"),
        quality_pct: value(pairs, "modem.generic.signal-quality.value")
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|q| *q <= 100),
        operator: text("modem.3gpp.operator-name"),
        registration: text("modem.3gpp.registration-state"),
    })
}

/// What `mmcli -m MODEM --signal-get -K` says: the extended signal of the
/// radio in use (LTE first, then 5G NR, then UMTS/GSM RSSI).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signal {
    /// `modem.signal.refresh.rate`, seconds; 0: ModemManager does not poll
    /// the extended signal (`--signal-setup` turns it on).
    pub refresh_secs: Option<u32>,
    /// Reference signal received power, dBm (LTE or 5G NR).
    pub rsrp_dbm: Option<f32>,
    /// Reference signal received quality, dB.
    pub rsrq_db: Option<f32>,
    /// Signal to noise ratio, dB.
    pub snr_db: Option<f32>,
    /// Received signal strength, dBm.
    pub rssi_dbm: Option<f32>,
}

/// Reads [`Signal`] from `--signal-get -K` pairs (every figure may be
/// absent: a modem without the Signal interface, or polling off).
pub fn signal(pairs: &[(String, String)]) -> Signal {
    let f = |k: &str, r| figure(pairs, k, r);
    let rsrp = f("modem.signal.lte.rsrp", -160.0..=-20.0);
    let nr = rsrp.is_none();
    let pick = |lte: &str, nr5g: &str, r: std::ops::RangeInclusive<f32>| {
        if nr {
            f(nr5g, r)
        } else {
            f(lte, r)
        }
    };
    Signal {
        refresh_secs: value(pairs, "modem.signal.refresh.rate").and_then(|v| v.parse().ok()),
        rsrp_dbm: rsrp.or_else(|| f("modem.signal.5g.rsrp", -160.0..=-20.0)),
        rsrq_db: pick(
            "modem.signal.lte.rsrq",
            "modem.signal.5g.rsrq",
            -40.0..=20.0,
        ),
        snr_db: pick("modem.signal.lte.snr", "modem.signal.5g.snr", -30.0..=50.0),
        rssi_dbm: f("modem.signal.lte.rssi", -130.0..=0.0)
            .or_else(|| f("modem.signal.umts.rssi", -130.0..=0.0))
            .or_else(|| f("modem.signal.gsm.rssi", -130.0..=0.0)),
    }
}

/// How good the uplink's radio is, for events and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// RSRP at or above -90 dBm (or quality at or above 50 %).
    Good,
    /// RSRP from -100 to -90 dBm (quality 25-49 %): works, little margin.
    Fair,
    /// RSRP below -100 dBm (quality under 25 %): drops and slow uploads.
    Poor,
    /// Not registered on a network: searching, denied, disabled, failed,
    /// locked (SIM PIN), or no modem at all.
    NoService,
    /// Registered but no figure to judge by.
    Unknown,
}

impl Class {
    /// The word on the wire and the dashboards.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Good => "good",
            Class::Fair => "fair",
            Class::Poor => "poor",
            Class::NoService => "no_service",
            Class::Unknown => "unknown",
        }
    }
}

/// ModemManager states in which the modem is on a network.
const SERVING: [&str; 4] = ["registered", "connecting", "connected", "disconnecting"];

/// The class of a reading: service first, then RSRP, then quality.
pub fn classify(m: &Modem, s: &Signal) -> Class {
    if !SERVING.contains(&m.state.as_str()) {
        return Class::NoService;
    }
    match (s.rsrp_dbm, m.quality_pct) {
        (Some(r), _) if r >= -90.0 => Class::Good,
        (Some(r), _) if r >= -100.0 => Class::Fair,
        (Some(_), _) => Class::Poor,
        (None, Some(q)) if q >= 50 => Class::Good,
        (None, Some(q)) if q >= 25 => Class::Fair,
        (None, Some(_)) => Class::Poor,
        (None, None) => Class::Unknown,
    }
}

/// A reading in plain words: `lte, Telkomsel (home), connected; signal
/// good: RSRP -85 dBm, RSRQ -9 dB, SNR 12.5 dB, RSSI -60 dBm, quality 72 %`.
pub fn describe(m: &Modem, s: &Signal) -> String {
    let mut o = String::new();
    if let Some(t) = &m.tech {
        let _ = write!(o, "{t}, ");
    }
    if let Some(op) = &m.operator {
        let _ = write!(o, "{op}");
        if let Some(r) = &m.registration {
            let _ = write!(o, " ({r})");
        }
        o.push_str(", ");
    }
    o.push_str(&m.state);
    if let Some(r) = &m.failed_reason {
        let _ = write!(o, " ({r})");
    }
    let _ = write!(o, "; signal {}", classify(m, s).as_str().replace('_', " "));
    let mut figures = Vec::new();
    let mut add = |name: &str, v: Option<f32>, unit: &str| {
        if let Some(v) = v {
            figures.push(format!("{name} {} {unit}", trim(v)));
        }
    };
    add("RSRP", s.rsrp_dbm, "dBm");
    add("RSRQ", s.rsrq_db, "dB");
    add("SNR", s.snr_db, "dB");
    add("RSSI", s.rssi_dbm, "dBm");
    if let Some(q) = m.quality_pct {
        figures.push(format!("quality {q} %"));
    }
    if !figures.is_empty() {
        let _ = write!(o, ": {}", figures.join(", "));
    }
    o
}

/// `-85`, `12.5`: a figure without trailing zeros.
fn trim(v: f32) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
}

/// The event numbers of a reading (the wire's numbers are non-negative:
/// dBm and dB below zero travel as their magnitude, `*_neg_*`).
pub fn numbers(m: &Modem, s: &Signal) -> Vec<(&'static str, u64)> {
    let neg = |v: Option<f32>| v.filter(|x| *x <= 0.0).map(|x| (-x).round() as u64);
    let mut n = Vec::new();
    if let Some(q) = m.quality_pct {
        n.push(("quality_pct", u64::from(q)));
    }
    for (k, v) in [
        ("rsrp_neg_dbm", neg(s.rsrp_dbm)),
        ("rsrq_neg_db", neg(s.rsrq_db)),
        ("rssi_neg_dbm", neg(s.rssi_dbm)),
    ] {
        if let Some(v) = v {
            n.push((k, v));
        }
    }
    if let Some(snr) = s.snr_db.filter(|x| *x >= 0.0) {
        n.push(("snr_db", snr.round() as u64));
    }
    n
}

/// A change of class to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The class reported before (`None`: the first report since start).
    pub from: Option<Class>,
    /// The new class.
    pub to: Class,
    /// `info` (better), `warning` (poor), `critical` (no service).
    pub severity: &'static str,
}

/// Rounds a new class must hold before it is reported: one round of a
/// signal near a threshold must not make an event pair.
pub const DEBOUNCE_ROUNDS: u8 = 2;

/// The class last reported and the one waiting to be confirmed.
#[derive(Debug, Default)]
pub struct Tracker {
    reported: Option<Class>,
    pending: Option<(Class, u8)>,
}

impl Tracker {
    /// The event for this round's class, if any: a class is reported once
    /// it held [`DEBOUNCE_ROUNDS`] rounds in a row. The first report after
    /// start is an event only when it is bad (a restart says nothing about
    /// a good signal); `Unknown` never is one.
    pub fn observe(&mut self, class: Class) -> Option<Change> {
        if class == Class::Unknown || self.reported == Some(class) {
            self.pending = None;
            return None;
        }
        let seen = match self.pending {
            Some((c, n)) if c == class => n.saturating_add(1),
            _ => 1,
        };
        if seen < DEBOUNCE_ROUNDS {
            self.pending = Some((class, seen));
            return None;
        }
        self.pending = None;
        let from = self.reported.replace(class);
        let severity = match class {
            Class::NoService => "critical",
            Class::Poor => "warning",
            _ => "info",
        };
        if from.is_none() && severity == "info" {
            return None;
        }
        Some(Change {
            from,
            to: class,
            severity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mmcli -m any -K` of a connected LTE modem, as mmcli prints it
    /// (padding to the longest key, `--` for empty fields, the operator
    /// name escaped by g_strescape).
    pub const MODEM_K: &str = "\
modem.dbus-path                                 : /org/freedesktop/ModemManager1/Modem/0
modem.generic.device-identifier                 : 2c2cf8e9f6e5d4a3b2c1d0e9f8a7b6c5d4e3f2a1
modem.generic.manufacturer                      : QUALCOMM INCORPORATED
modem.generic.model                             : SIMCOM_SIM7600G-H
modem.generic.state                             : connected
modem.generic.state-failed-reason               : --
modem.generic.power-state                       : on
modem.generic.access-technologies.length        : 1
modem.generic.access-technologies.value[1]      : lte
modem.generic.signal-quality.value              : 72
modem.generic.signal-quality.recent             : yes
modem.3gpp.imei                                 : 862636051234567
modem.3gpp.operator-code                        : 51010
modem.3gpp.operator-name                        : Telkomsel \\303\\251 \\\"x\\\"
modem.3gpp.registration-state                   : home
";

    /// `mmcli -m any --signal-get -K` with polling on (LTE only).
    pub const SIGNAL_K: &str = "\
modem.signal.refresh.rate   : 30
modem.signal.cdma1x.rssi    : --
modem.signal.cdma1x.ecio    : --
modem.signal.evdo.rssi      : --
modem.signal.evdo.ecio      : --
modem.signal.evdo.sinr      : --
modem.signal.evdo.io        : --
modem.signal.gsm.rssi       : --
modem.signal.umts.rssi      : --
modem.signal.umts.rscp      : --
modem.signal.umts.ecio      : --
modem.signal.lte.rssi       : -60.00
modem.signal.lte.rsrq       : -9.00
modem.signal.lte.rsrp       : -85.00
modem.signal.lte.snr        : 12.50
modem.signal.5g.rsrq        : --
modem.signal.5g.rsrp        : --
modem.signal.5g.snr         : --
";

    #[test]
    fn reads_a_connected_lte_modem() {
        let m = modem(&parse_keyvalue(MODEM_K.as_bytes()).expect("parses")).expect("modem");
        assert_eq!(m.state, "connected");
        assert_eq!(m.tech.as_deref(), Some("lte"));
        assert_eq!(m.quality_pct, Some(72));
        assert_eq!(m.operator.as_deref(), Some("Telkomsel é \"x\""));
        assert_eq!(m.registration.as_deref(), Some("home"));
        assert_eq!(m.failed_reason, None, "-- is absent");
        let s = signal(&parse_keyvalue(SIGNAL_K.as_bytes()).expect("parses"));
        assert_eq!(
            s,
            Signal {
                refresh_secs: Some(30),
                rsrp_dbm: Some(-85.0),
                rsrq_db: Some(-9.0),
                snr_db: Some(12.5),
                rssi_dbm: Some(-60.0),
            }
        );
        assert_eq!(classify(&m, &s), Class::Good);
        assert_eq!(
            describe(&m, &s),
            "lte, Telkomsel é \"x\" (home), connected; signal good: RSRP -85 dBm, \
             RSRQ -9 dB, SNR 12.5 dB, RSSI -60 dBm, quality 72 %"
        );
        assert_eq!(
            numbers(&m, &s),
            [
                ("quality_pct", 72),
                ("rsrp_neg_dbm", 85),
                ("rsrq_neg_db", 9),
                ("rssi_neg_dbm", 60),
                ("snr_db", 13)
            ]
        );
    }

    #[test]
    fn classes() {
        let m = |state: &str, q: Option<u8>| Modem {
            state: state.into(),
            quality_pct: q,
            ..Modem::default()
        };
        let s = |rsrp: Option<f32>| Signal {
            rsrp_dbm: rsrp,
            ..Signal::default()
        };
        let on = m("registered", Some(90));
        assert_eq!(classify(&on, &s(Some(-90.0))), Class::Good);
        assert_eq!(classify(&on, &s(Some(-90.5))), Class::Fair);
        assert_eq!(classify(&on, &s(Some(-100.0))), Class::Fair);
        assert_eq!(classify(&on, &s(Some(-100.5))), Class::Poor, "RSRP first");
        assert_eq!(classify(&m("connected", Some(49)), &s(None)), Class::Fair);
        assert_eq!(classify(&m("connected", Some(24)), &s(None)), Class::Poor);
        assert_eq!(classify(&m("connected", None), &s(None)), Class::Unknown);
        for st in ["searching", "disabled", "failed", "locked", "enabled"] {
            assert_eq!(
                classify(&m(st, Some(90)), &s(Some(-70.0))),
                Class::NoService
            );
        }
    }

    #[test]
    fn polling_off_and_5g_and_nonsense() {
        let p = parse_keyvalue(
            b"modem.signal.refresh.rate : 0\nmodem.signal.lte.rsrp : --\n\
              modem.signal.5g.rsrp : -95.00\nmodem.signal.5g.snr : 3.00\n\
              modem.signal.lte.snr : 40.00\nmodem.signal.umts.rssi : 7.00\n",
        )
        .expect("parses");
        let s = signal(&p);
        assert_eq!(s.refresh_secs, Some(0));
        assert_eq!((s.rsrp_dbm, s.snr_db), (Some(-95.0), Some(3.0)), "5G's own");
        assert_eq!(s.rssi_dbm, None, "a positive RSSI is nonsense");
    }

    #[test]
    fn bad_output_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\n\n",
            b"error: couldn't find modem\n",
            b"modem.generic.state connected\n",
            b" : x\n",
            b"\xff\xfe : x\n",
        ] {
            assert!(parse_keyvalue(bad).is_err(), "{bad:?}");
        }
        let big = "k : v\n".repeat(MAX_LINES + 1);
        assert!(parse_keyvalue(big.as_bytes()).is_err());
        let p = parse_keyvalue(b"modem.generic.model : x\n").expect("parses");
        assert!(modem(&p).is_err(), "no state: not a modem listing");
        // Escapes g_strescape never writes are kept; a trailing backslash too.
        assert_eq!(unescape(r"a\qb\7\"), "a\\qb\\7\\");
        assert_eq!(unescape(r"\101\102\x"), "AB\\x");
        assert_eq!(unescape(r"\777"), "\\777", "not a byte");
    }

    #[test]
    fn tracker_debounces_and_reports_a_bad_start() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(Class::Good), None);
        assert_eq!(t.observe(Class::Good), None, "a good start is not news");
        assert_eq!(t.observe(Class::Poor), None, "one round is not enough");
        assert_eq!(t.observe(Class::Good), None, "back: nothing happened");
        assert_eq!(t.observe(Class::Poor), None);
        let c = t.observe(Class::Poor).expect("two rounds poor");
        assert_eq!(
            (c.from, c.to, c.severity),
            (Some(Class::Good), Class::Poor, "warning")
        );
        assert_eq!(t.observe(Class::Unknown), None);
        assert_eq!(t.observe(Class::Poor), None);
        assert_eq!(t.observe(Class::NoService), None);
        let c = t.observe(Class::NoService).expect("no service");
        assert_eq!((c.from, c.severity), (Some(Class::Poor), "critical"));
        t.observe(Class::Fair);
        let c = t.observe(Class::Fair).expect("back");
        assert_eq!((c.to, c.severity), (Class::Fair, "info"));

        let mut t = Tracker::default();
        t.observe(Class::NoService);
        let c = t
            .observe(Class::NoService)
            .expect("a bad start is reported");
        assert_eq!((c.from, c.to), (None, Class::NoService));
    }
}
