//! The NUT network protocol (upsd, TCP 3493) as far as the agent reads it:
//! reply lines split into words, `BEGIN LIST ...` / `END LIST ...`
//! containers, `ERR <message>`, and the few variables it reports.
//!
//! Pure and bounded (line length, items per list, flags), so any bytes
//! from the network or the fuzzer give a value or an error, never a
//! panic or unbounded memory. Reference: networkupstools' docs/net-protocol.txt
//! (multi-word elements in double quotes, `\"` and `\\` escaped).

use std::fmt;

/// Longest reply line accepted (upsd's own lines are far shorter).
pub const MAX_LINE: usize = 4096;
/// Most items accepted in one list (`LIST VAR` of a big UPS is ~100).
pub const MAX_ITEMS: usize = 1024;
/// Most words in one line.
pub const MAX_WORDS: usize = 16;
/// Most `ups.status` flags kept.
pub const MAX_FLAGS: usize = 16;
/// Longest `ups.status` flag kept.
pub const MAX_FLAG_LEN: usize = 16;

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// upsd answered `ERR <message>` (`UNKNOWN-UPS`, `ACCESS-DENIED`,
    /// `DRIVER-NOT-CONNECTED`, `DATA-STALE`, ...).
    Server(String),
    /// Not what the protocol allows here (kept short, printable).
    Bad(String),
    /// A bound was exceeded.
    TooLong(&'static str),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Server(m) => write!(f, "upsd answered ERR {m}"),
            ProtoError::Bad(m) => write!(f, "unexpected reply: {m}"),
            ProtoError::TooLong(what) => write!(f, "reply too long ({what})"),
        }
    }
}

/// A short printable excerpt of `s` for error texts.
fn excerpt(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Splits one line into words: separated by spaces or tabs; a word in
/// double quotes may hold spaces, `\x` stands for `x` (so `\"` and `\\`).
pub fn words(line: &str) -> Result<Vec<String>, ProtoError> {
    if line.len() > MAX_LINE {
        return Err(ProtoError::TooLong("line"));
    }
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        if out.len() == MAX_WORDS {
            return Err(ProtoError::TooLong("words"));
        }
        let mut word = String::new();
        if first == '"' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some(e) => word.push(e),
                        None => break,
                    },
                    c => word.push(c),
                }
            }
            if !closed {
                return Err(ProtoError::Bad(format!(
                    "unclosed quote in {}",
                    excerpt(line)
                )));
            }
            if chars.peek().is_some_and(|c| *c != ' ' && *c != '\t') {
                return Err(ProtoError::Bad(format!(
                    "text after a quote in {}",
                    excerpt(line)
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == '\t' {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
}

/// Quotes `s` as one protocol word (for `USERNAME` / `PASSWORD`).
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Checks a one-line reply that must be `OK ...`.
pub fn expect_ok(line: &str) -> Result<(), ProtoError> {
    let w = words(line)?;
    match w.first().map(String::as_str) {
        Some("OK") => Ok(()),
        Some("ERR") => Err(ProtoError::Server(excerpt(w.get(1).map_or("", |s| s)))),
        _ => Err(ProtoError::Bad(excerpt(line))),
    }
}

/// Reads the reply to `LIST <query>` line by line.
#[derive(Debug)]
pub struct ListReader {
    query: Vec<String>,
    begun: bool,
    items: Vec<Vec<String>>,
}

impl ListReader {
    /// For the reply to `LIST <query>` (`query` as sent, e.g. `["VAR", "myups"]`).
    pub fn new(query: &[&str]) -> ListReader {
        ListReader {
            query: query.iter().map(|s| (*s).to_owned()).collect(),
            begun: false,
            items: Vec::new(),
        }
    }

    /// Takes the next line; `Some(items)` once `END LIST <query>` came
    /// (each item's words after the list type, e.g. `[ups, name, value]`).
    pub fn line(&mut self, line: &str) -> Result<Option<Vec<Vec<String>>>, ProtoError> {
        let w = words(line.trim_end_matches(['\r', '\n']))?;
        if w.first().is_some_and(|s| s == "ERR") {
            return Err(ProtoError::Server(excerpt(w.get(1).map_or("", |s| s))));
        }
        let matches_query =
            |rest: &[String]| rest.len() >= 2 && rest[0] == "LIST" && rest[1..] == self.query[..];
        if !self.begun {
            if w.first().is_some_and(|s| s == "BEGIN") && matches_query(&w[1..]) {
                self.begun = true;
                return Ok(None);
            }
            return Err(ProtoError::Bad(excerpt(line)));
        }
        if w.first().is_some_and(|s| s == "END") && matches_query(&w[1..]) {
            return Ok(Some(std::mem::take(&mut self.items)));
        }
        if w.first() != self.query.first() || w.len() < 2 {
            return Err(ProtoError::Bad(excerpt(line)));
        }
        if self.items.len() == MAX_ITEMS {
            return Err(ProtoError::TooLong("list"));
        }
        self.items.push(w[1..].to_vec());
        Ok(None)
    }
}

/// Parses a whole `LIST <query>` reply (tests and the fuzz target).
pub fn parse_list(text: &str, query: &[&str]) -> Result<Vec<Vec<String>>, ProtoError> {
    let mut r = ListReader::new(query);
    for line in text.lines() {
        if let Some(items) = r.line(line)? {
            return Ok(items);
        }
    }
    Err(ProtoError::Bad("reply ended before END LIST".into()))
}

/// The UPS names of a `LIST UPS` reply (`UPS <name> "<description>"`).
pub fn ups_names(items: &[Vec<String>]) -> Vec<String> {
    items.iter().filter_map(|i| i.first().cloned()).collect()
}

/// The power state the dashboards and events use, from `ups.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// `OL`: on mains.
    OnLine,
    /// `OB`: on battery (mains lost).
    OnBattery,
    /// `LB` (or `FSD`, which upsd says to treat as `OB LB`): about to shut down.
    LowBattery,
    /// Neither flag (driver starting, odd UPS).
    Unknown,
}

impl Power {
    /// The word on the wire (`from`/`to` of events) and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Power::OnLine => "on_line",
            Power::OnBattery => "on_battery",
            Power::LowBattery => "low_battery",
            Power::Unknown => "unknown",
        }
    }

    /// Plain words.
    pub fn words(self) -> &'static str {
        match self {
            Power::OnLine => "on line (mains)",
            Power::OnBattery => "on battery",
            Power::LowBattery => "on battery, LOW BATTERY",
            Power::Unknown => "status unknown",
        }
    }
}

/// One UPS's values as read from `LIST VAR`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// `ups.status` flags (`OL`, `OB`, `LB`, `CHRG`, `RB`, ...), bounded.
    pub flags: Vec<String>,
    /// `battery.charge`, percent.
    pub charge_pct: Option<f64>,
    /// `battery.runtime`, seconds.
    pub runtime_secs: Option<f64>,
    /// `ups.load`, percent.
    pub load_pct: Option<f64>,
    /// `input.voltage`, volts.
    pub input_voltage: Option<f64>,
}

/// A number as NUT writes it (decimal, dot); anything else is `None`.
fn number(v: &str) -> Option<f64> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
}

impl Reading {
    /// From the items of a `LIST VAR <ups>` reply (`[ups, name, value]`);
    /// items of another UPS are ignored.
    pub fn from_vars(ups: &str, items: &[Vec<String>]) -> Reading {
        let mut r = Reading::default();
        for i in items {
            let [u, name, value, ..] = i.as_slice() else {
                continue;
            };
            if u != ups {
                continue;
            }
            match name.as_str() {
                "ups.status" => {
                    r.flags = value
                        .split_whitespace()
                        .filter(|f| f.len() <= MAX_FLAG_LEN)
                        .take(MAX_FLAGS)
                        .map(str::to_owned)
                        .collect();
                }
                "battery.charge" => r.charge_pct = number(value),
                "battery.runtime" => r.runtime_secs = number(value),
                "ups.load" => r.load_pct = number(value),
                "input.voltage" => r.input_voltage = number(value),
                _ => {}
            }
        }
        r
    }

    /// Whether `ups.status` holds `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The power state.
    pub fn power(&self) -> Power {
        if self.has("LB") || self.has("FSD") {
            Power::LowBattery
        } else if self.has("OB") {
            Power::OnBattery
        } else if self.has("OL") {
            Power::OnLine
        } else {
            Power::Unknown
        }
    }

    /// Plain words: "on battery, charge 80 %, runtime 12 min, load 23 %, input 0.0 V".
    pub fn describe(&self) -> String {
        let mut s = self.power().words().to_owned();
        if let Some(c) = self.charge_pct {
            s.push_str(&format!(", charge {c:.0} %"));
        }
        if let Some(r) = self.runtime_secs {
            s.push_str(&format!(", runtime {:.0} min", r / 60.0));
        }
        if let Some(l) = self.load_pct {
            s.push_str(&format!(", load {l:.0} %"));
        }
        if let Some(v) = self.input_voltage {
            s.push_str(&format!(", input {v:.1} V"));
        }
        if self.has("RB") {
            s.push_str(", REPLACE BATTERY");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: &str = "BEGIN LIST VAR su700\r\nVAR su700 ups.status \"OB LB\"\nVAR su700 battery.charge \"8\"\nVAR su700 battery.runtime \"120\"\nVAR su700 ups.load \"31.5\"\nVAR su700 input.voltage \"0.0\"\nVAR su700 ups.mfr \"A \\\"quoted\\\" \\\\ name\"\nEND LIST VAR su700\n";

    #[test]
    fn words_quotes_and_escapes() {
        assert_eq!(
            words(r#"VAR a b "x \"y\" \\ z""#).unwrap(),
            ["VAR", "a", "b", r#"x "y" \ z"#]
        );
        assert_eq!(words("  UPS\tsu700   \"\" ").unwrap(), ["UPS", "su700", ""]);
        assert!(words("VAR a \"open").is_err());
        assert!(words("VAR a \"x\"y").is_err());
        assert!(words(&"a ".repeat(MAX_WORDS + 1)).is_err());
        assert!(words(&"a".repeat(MAX_LINE + 1)).is_err());
    }

    #[test]
    fn quote_round_trips() {
        let s = r#"pa "ss" \ word"#;
        assert_eq!(words(&format!("PASSWORD {}", quote(s))).unwrap()[1], s);
    }

    #[test]
    fn list_var_reading() {
        let items = parse_list(VARS, &["VAR", "su700"]).unwrap();
        assert_eq!(items.len(), 6);
        assert_eq!(items[5][2], r#"A "quoted" \ name"#);
        let r = Reading::from_vars("su700", &items);
        assert_eq!(r.flags, ["OB", "LB"]);
        assert_eq!(r.power(), Power::LowBattery);
        assert_eq!(r.charge_pct, Some(8.0));
        assert_eq!(r.runtime_secs, Some(120.0));
        assert_eq!(r.load_pct, Some(31.5));
        assert_eq!(r.input_voltage, Some(0.0));
        assert_eq!(
            r.describe(),
            "on battery, LOW BATTERY, charge 8 %, runtime 2 min, load 32 %, input 0.0 V"
        );
    }

    #[test]
    fn list_ups_names() {
        let t = "BEGIN LIST UPS\nUPS su700 \"Development box\"\nUPS rack \"Unavailable\"\nEND LIST UPS\n";
        assert_eq!(
            ups_names(&parse_list(t, &["UPS"]).unwrap()),
            ["su700", "rack"]
        );
    }

    #[test]
    fn errors_and_mismatches() {
        assert_eq!(
            parse_list("ERR UNKNOWN-UPS\n", &["VAR", "x"]),
            Err(ProtoError::Server("UNKNOWN-UPS".into()))
        );
        assert!(matches!(
            parse_list("BEGIN LIST VAR y\nEND LIST VAR y\n", &["VAR", "x"]),
            Err(ProtoError::Bad(_))
        ));
        assert!(matches!(
            parse_list("BEGIN LIST VAR x\nRW x a \"1\"\n", &["VAR", "x"]),
            Err(ProtoError::Bad(_))
        ));
        assert!(matches!(
            parse_list("BEGIN LIST VAR x\n", &["VAR", "x"]),
            Err(ProtoError::Bad(_))
        ));
        assert_eq!(expect_ok("OK"), Ok(()));
        assert_eq!(
            expect_ok("ERR ACCESS-DENIED"),
            Err(ProtoError::Server("ACCESS-DENIED".into()))
        );
    }

    #[test]
    fn odd_values_are_none_and_bounded() {
        let items = vec![
            vec!["u".into(), "battery.charge".into(), "n/a".into()],
            vec!["u".into(), "ups.load".into(), "-3".into()],
            vec![
                "u".into(),
                "ups.status".into(),
                format!("OL {}", "X ".repeat(40)),
            ],
            vec!["other".into(), "battery.runtime".into(), "5".into()],
        ];
        let r = Reading::from_vars("u", &items);
        assert_eq!(
            (r.charge_pct, r.load_pct, r.runtime_secs),
            (None, None, None)
        );
        assert_eq!(r.flags.len(), MAX_FLAGS);
        assert_eq!(r.power(), Power::OnLine);
        assert_eq!(Reading::default().power(), Power::Unknown);
        let mut big = String::from("BEGIN LIST UPS\n");
        big.push_str(&"UPS a \"\"\n".repeat(MAX_ITEMS + 1));
        assert_eq!(parse_list(&big, &["UPS"]), Err(ProtoError::TooLong("list")));
    }
}
