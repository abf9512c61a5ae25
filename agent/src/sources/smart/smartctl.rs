//! `smartctl --json -a` (smartmontools 7.x) output → [`Reading`], the
//! fallback when the native path cannot read a device.
//!
//! The agent has no serde_json (it would add roughly 60–100 KB to the
//! stripped binary for one optional path, and serde-json-core cannot hold
//! smartctl's nested, variable documents), so this module carries a small
//! bounded JSON reader: at most [`MAX_INPUT_BYTES`], [`MAX_DEPTH`] levels
//! and [`MAX_NODES`] values, numbers kept as text and parsed on use.
//!
//! Fields used (smartctl 7.3): `smartctl.exit_status` and `.messages`,
//! `device.{protocol,type}`, `model_name`, `serial_number`,
//! `firmware_version`, `user_capacity.bytes`, `smart_support`,
//! `smart_status.passed`, `ata_smart_attributes.table[]`
//! (`raw.value` is the undecoded 48-bit raw value, decoded here like the
//! native path), `nvme_smart_health_information_log`,
//! `temperature.{current,op_limit_max,critical_limit_max}`,
//! `scsi_vendor/product/revision`.

use super::ata::{AtaHealth, AtaIdentity, Attribute, ATTRIBUTE_SLOTS};
use super::nvme::{NvmeHealth, NvmeIdentity};
use super::report::Reading;
use super::scsi::{ScsiIdentity, ScsiIe, ASC_FAILURE_PREDICTED};
use super::ParseError;

/// Largest document accepted (`smartctl -a` is 5–20 KB).
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// Most values (of any kind) in one document.
pub const MAX_NODES: usize = 50_000;
/// Longest identity string kept.
const MAX_FIELD_CHARS: usize = 128;

const WHAT: &str = "smartctl JSON";

/// A parsed JSON value. Numbers stay text: smartctl prints 48-bit raw
/// values and 128-bit NVMe counters that `f64` would round.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number as written.
    Num(String),
    /// A string, unescaped.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in document order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Member `key` of an object (the first, if repeated).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of object keys.
    pub fn at(&self, path: &[&str]) -> Option<&Json> {
        path.iter().try_fold(self, |v, k| v.get(k))
    }

    /// A non-negative integer (a fraction or exponent is not one);
    /// saturates above `u64::MAX`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Some(n.parse::<u64>().unwrap_or(u64::MAX))
            }
            _ => None,
        }
    }

    /// An integer that may be negative.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Num(n) => n.parse::<i64>().ok(),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An array's items (empty for anything else).
    pub fn items(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
    nodes: usize,
}

fn err(detail: impl Into<String>) -> ParseError {
    ParseError::invalid(WHAT, detail)
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.at)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn expect(&mut self, lit: &[u8]) -> Result<(), ParseError> {
        if self.b.get(self.at..self.at + lit.len()) == Some(lit) {
            self.at += lit.len();
            Ok(())
        } else {
            Err(err(format!("unexpected input at byte {}", self.at)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, ParseError> {
        if depth > MAX_DEPTH {
            return Err(err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(err(format!("more than {MAX_NODES} values")));
        }
        self.ws();
        match self.b.get(self.at) {
            None => Err(err("unexpected end of input")),
            Some(b'n') => self.expect(b"null").map(|()| Json::Null),
            Some(b't') => self.expect(b"true").map(|()| Json::Bool(true)),
            Some(b'f') => self.expect(b"false").map(|()| Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(err(format!("expected , or ] at byte {}", self.at))),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                self.ws();
                if self.b.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    self.ws();
                    if self.b.get(self.at) != Some(&b'"') {
                        return Err(err(format!("expected a key at byte {}", self.at)));
                    }
                    let k = self.string()?;
                    self.ws();
                    self.expect(b":")?;
                    members.push((k, self.value(depth + 1)?));
                    self.ws();
                    match self.b.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Obj(members));
                        }
                        _ => return Err(err(format!("expected , or }} at byte {}", self.at))),
                    }
                }
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.at;
                while self
                    .b
                    .get(self.at)
                    .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.at += 1;
                }
                let text =
                    std::str::from_utf8(&self.b[start..self.at]).map_err(|_| err("bad number"))?;
                Ok(Json::Num(text.to_owned()))
            }
            Some(_) => Err(err(format!("unexpected input at byte {}", self.at))),
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let h = self
            .b
            .get(self.at..self.at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| err(format!("bad \\u escape at byte {}", self.at)))?;
        self.at += 4;
        Ok(h)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.at += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&c) = self.b.get(self.at) else {
                return Err(err("unterminated string"));
            };
            self.at += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.b.get(self.at) else {
                        return Err(err("unterminated string"));
                    };
                    self.at += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi)
                                && self.b.get(self.at..self.at + 2) == Some(b"\\u")
                            {
                                self.at += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    0xFFFD
                                }
                            } else {
                                hi
                            };
                            char::from_u32(cp).unwrap_or('\u{FFFD}')
                        }
                        _ => return Err(err(format!("bad escape at byte {}", self.at))),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(err("control character in a string")),
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| err("string is not UTF-8"))
    }
}

/// Parses one JSON document (bounded; trailing whitespace only).
pub fn parse_json(input: &[u8]) -> Result<Json, ParseError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(err(format!("larger than {MAX_INPUT_BYTES} bytes")));
    }
    let mut p = Parser {
        b: input,
        at: 0,
        nodes: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.at != input.len() {
        return Err(err(format!("trailing data at byte {}", p.at)));
    }
    Ok(v)
}

fn text(doc: &Json, path: &[&str]) -> String {
    let s = doc.at(path).and_then(Json::as_str).unwrap_or("");
    super::ascii_field(s.bytes().take(MAX_FIELD_CHARS))
}

fn u8_at(doc: &Json, path: &[&str]) -> Option<u8> {
    doc.at(path)
        .and_then(Json::as_u64)
        .map(|v| u8::try_from(v).unwrap_or(u8::MAX))
}

fn u64_at(doc: &Json, path: &[&str]) -> u64 {
    doc.at(path).and_then(Json::as_u64).unwrap_or(0)
}

fn celsius_to_k(c: Option<i64>) -> u16 {
    c.map_or(0, |c| u16::try_from((c + 273).clamp(0, 65535)).unwrap_or(0))
}

/// Converts `smartctl --json -a` output into a [`Reading`].
///
/// - exit status bit 1 (device open failed) or 2 (SMART command failed)
///   with no identity: `Standby` when smartctl said the disk is in
///   standby (`-n standby`), else `Unsupported` with smartctl's messages;
/// - `device.protocol` `ATA`, `NVMe` or `SCSI` → the matching reading;
///   anything else → `Unsupported`.
///
/// For SCSI, `smart_status.passed = false` without an ASC is mapped to
/// ASC 0x5D (failure predicted), which is what smartctl reports it from.
pub fn parse_smartctl_json(json: &[u8]) -> Result<Reading, ParseError> {
    let doc = parse_json(json)?;
    if !matches!(doc, Json::Obj(_)) {
        return Err(err("the document is not an object"));
    }
    let exit = u64_at(&doc, &["smartctl", "exit_status"]);
    let messages: Vec<String> = doc
        .at(&["smartctl", "messages"])
        .map(Json::items)
        .unwrap_or(&[])
        .iter()
        .filter_map(|m| m.get("string").and_then(Json::as_str))
        .take(8)
        .map(|s| s.chars().take(200).collect())
        .collect();
    let protocol = doc
        .at(&["device", "protocol"])
        .and_then(Json::as_str)
        .unwrap_or("");
    let has_identity = doc.get("serial_number").is_some() || doc.get("model_name").is_some();
    if messages
        .iter()
        .any(|m| m.to_ascii_lowercase().contains("standby mode"))
        && !has_identity
    {
        return Ok(Reading::Standby);
    }
    if exit & 0b11 != 0 && !has_identity {
        let why = if messages.is_empty() {
            format!("smartctl exit status {exit}")
        } else {
            messages.join("; ")
        };
        return Ok(Reading::Unsupported {
            reason: format!("smartctl could not read the device: {why}"),
        });
    }
    match protocol {
        "ATA" => Ok(ata(&doc)),
        "NVMe" => Ok(nvme(&doc)),
        "SCSI" => Ok(scsi(&doc)),
        other => Ok(Reading::Unsupported {
            reason: format!("smartctl reports protocol `{other}`, which is not read"),
        }),
    }
}

fn health(doc: &Json) -> Option<bool> {
    doc.at(&["smart_status", "passed"]).and_then(Json::as_bool)
}

fn ata(doc: &Json) -> Reading {
    let identity = AtaIdentity {
        model: text(doc, &["model_name"]),
        serial: text(doc, &["serial_number"]),
        firmware: text(doc, &["firmware_version"]),
        capacity_bytes: doc
            .at(&["user_capacity", "bytes"])
            .and_then(Json::as_u64)
            .filter(|&b| b > 0),
        smart_supported: doc
            .at(&["smart_support", "available"])
            .and_then(Json::as_bool)
            .unwrap_or(false),
        smart_enabled: doc
            .at(&["smart_support", "enabled"])
            .and_then(Json::as_bool)
            .unwrap_or(false),
    };
    let mut attributes: Vec<Attribute> = Vec::new();
    for a in doc
        .at(&["ata_smart_attributes", "table"])
        .map(Json::items)
        .unwrap_or(&[])
    {
        if attributes.len() >= ATTRIBUTE_SLOTS {
            break;
        }
        let Some(id) = u8_at(a, &["id"]).filter(|&i| i != 0) else {
            continue;
        };
        if attributes.iter().any(|x| x.id == id) {
            continue;
        }
        let raw48 = u64_at(a, &["raw", "value"]) & 0xFFFF_FFFF_FFFF;
        let mut raw = [0u8; 6];
        raw.copy_from_slice(&raw48.to_le_bytes()[..6]);
        attributes.push(Attribute {
            id,
            flags: u16::try_from(u64_at(a, &["flags", "value"])).unwrap_or(0),
            current: u8_at(a, &["value"]).unwrap_or(0),
            worst: u8_at(a, &["worst"]).unwrap_or(0),
            raw,
            threshold: u8_at(a, &["thresh"]),
        });
    }
    let kind = doc.at(&["device", "type"]).and_then(Json::as_str);
    Reading::Ata {
        identity,
        attributes,
        health: match health(doc) {
            Some(true) => AtaHealth::Passed,
            Some(false) => AtaHealth::Failing,
            None => AtaHealth::Unknown,
        },
        passthrough: if kind == Some("sat,12") { 12 } else { 16 },
    }
}

fn nvme(doc: &Json) -> Reading {
    let temp = |k: &str| doc.at(&["temperature", k]).and_then(Json::as_i64);
    let identity = NvmeIdentity {
        model: text(doc, &["model_name"]),
        serial: text(doc, &["serial_number"]),
        firmware: text(doc, &["firmware_version"]),
        wctemp_k: celsius_to_k(temp("op_limit_max")),
        cctemp_k: celsius_to_k(temp("critical_limit_max")),
        lpa: 0,
        capacity_bytes: doc
            .at(&["nvme_total_capacity"])
            .and_then(Json::as_u64)
            .filter(|&b| b > 0),
    };
    let log = doc
        .get("nvme_smart_health_information_log")
        .unwrap_or(&Json::Null);
    let n = |k: &str| u64_at(log, &[k]);
    let mut temp_sensors_k = [0u16; 8];
    for (t, v) in temp_sensors_k.iter_mut().zip(
        log.get("temperature_sensors")
            .map(Json::items)
            .unwrap_or(&[]),
    ) {
        *t = celsius_to_k(v.as_i64());
    }
    let health = NvmeHealth {
        critical_warning: u8_at(log, &["critical_warning"]).unwrap_or(0),
        temperature_k: celsius_to_k(log.get("temperature").and_then(Json::as_i64)),
        available_spare: u8_at(log, &["available_spare"]).unwrap_or(0),
        spare_threshold: u8_at(log, &["available_spare_threshold"]).unwrap_or(0),
        percentage_used: u8_at(log, &["percentage_used"]).unwrap_or(0),
        data_units_read: n("data_units_read"),
        data_units_written: n("data_units_written"),
        host_reads: n("host_reads"),
        host_writes: n("host_writes"),
        controller_busy_minutes: n("controller_busy_time"),
        power_cycles: n("power_cycles"),
        power_on_hours: n("power_on_hours"),
        unsafe_shutdowns: n("unsafe_shutdowns"),
        media_errors: n("media_errors"),
        error_log_entries: n("num_err_log_entries"),
        warning_temp_minutes: u32::try_from(n("warning_temp_time")).unwrap_or(u32::MAX),
        critical_temp_minutes: u32::try_from(n("critical_comp_time")).unwrap_or(u32::MAX),
        temp_sensors_k,
    };
    Reading::Nvme { identity, health }
}

fn scsi(doc: &Json) -> Reading {
    let identity = ScsiIdentity {
        vendor: text(doc, &["scsi_vendor"]),
        product: text(doc, &["scsi_product"]),
        revision: text(doc, &["scsi_revision"]),
        peripheral_type: 0,
    };
    let temperature_c = doc
        .at(&["temperature", "current"])
        .and_then(Json::as_u64)
        .and_then(|t| u8::try_from(t).ok());
    let asc = u8_at(doc, &["smart_status", "scsi", "asc"]);
    let ascq = u8_at(doc, &["smart_status", "scsi", "ascq"]).unwrap_or(0);
    let ie = match (asc, health(doc)) {
        (Some(asc), _) => Some(ScsiIe {
            asc,
            ascq,
            temperature_c,
        }),
        (None, Some(passed)) => Some(ScsiIe {
            asc: if passed { 0 } else { ASC_FAILURE_PREDICTED },
            ascq: 0,
            temperature_c,
        }),
        (None, None) => None,
    };
    Reading::Scsi {
        identity,
        ie,
        temperature_c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_and_escapes() {
        let v = parse_json(
            br#" {"a": [1, -2, 3.5e2, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {}} "#,
        )
        .expect("valid");
        assert_eq!(v.at(&["a"]).map(|a| a.items().len()), Some(6));
        assert_eq!(v.get("a").map(|a| a.items()[0].as_u64()), Some(Some(1)));
        assert_eq!(v.get("a").map(|a| a.items()[1].as_i64()), Some(Some(-2)));
        assert_eq!(v.get("a").map(|a| a.items()[2].as_u64()), Some(None));
        assert_eq!(
            v.get("s").and_then(Json::as_str),
            Some("x\"\\/\né\u{1F600}")
        );
        assert_eq!(v.get("o"), Some(&Json::Obj(vec![])));
    }

    #[test]
    fn json_rejects_malformed_and_bounds() {
        for bad in [
            &b""[..],
            b"{",
            b"[1,]",
            b"{\"a\" 1}",
            b"\"abc",
            b"{} x",
            b"\"\\q\"",
            b"\"\x01\"",
            b"nul",
        ] {
            assert!(
                parse_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse_json(deep.as_bytes()).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_json(ok.as_bytes()).is_ok());
        let many = format!("[{}0]", "0,".repeat(MAX_NODES));
        assert!(parse_json(many.as_bytes()).is_err());
        assert_eq!(
            parse_json(b"99999999999999999999999999")
                .ok()
                .and_then(|v| v.as_u64()),
            Some(u64::MAX)
        );
    }

    #[test]
    fn open_failure_and_standby_and_other_protocols() {
        let r = parse_smartctl_json(
            br#"{"smartctl":{"exit_status":2,"messages":[{"string":"Smartctl open device: /dev/sdz failed: No such device","severity":"error"}]}}"#,
        )
        .expect("valid");
        assert!(
            matches!(&r, Reading::Unsupported { reason } if reason.contains("No such device")),
            "{r:?}"
        );
        let r = parse_smartctl_json(
            br#"{"smartctl":{"exit_status":2,"messages":[{"string":"Device is in STANDBY mode, exit(2)","severity":"information"}]},"device":{"name":"/dev/sdb","protocol":"ATA"}}"#,
        )
        .expect("valid");
        assert_eq!(r, Reading::Standby);
        let r = parse_smartctl_json(br#"{"device":{"protocol":"SATA?"},"model_name":"x"}"#)
            .expect("valid");
        assert!(matches!(r, Reading::Unsupported { .. }));
        assert!(parse_smartctl_json(b"[]").is_err());
    }

    fn fixture(name: &str) -> Reading {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/smart")
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        parse_smartctl_json(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn verdict(r: &Reading) -> crate::sources::smart::Verdict {
        crate::sources::smart::judge(r, None, &crate::sources::smart::config::Limits::default())
    }

    #[test]
    fn qemu_ata_document() {
        let r = fixture("smartctl-7.3-ata-qemu.json");
        let Reading::Ata {
            identity,
            attributes,
            health,
            passthrough,
        } = &r
        else {
            panic!("not ATA: {r:?}")
        };
        assert_eq!(identity.model, "QEMU HARDDISK");
        assert_eq!(identity.serial, "QM00001");
        assert_eq!(identity.capacity_bytes, Some(1 << 30));
        assert!(identity.smart_supported && identity.smart_enabled);
        assert_eq!(
            attributes.iter().map(|a| a.id).collect::<Vec<_>>(),
            [1, 3, 4, 5, 9, 12, 190]
        );
        assert_eq!(attributes[6].raw_u48(), 0x1F1F_001F);
        assert_eq!(attributes[6].threshold, Some(50));
        assert!(attributes[0].prefail() && !attributes[5].prefail());
        assert_eq!((*health, *passthrough), (AtaHealth::Passed, 16));
        assert_eq!(r.temperature_c(), Some(31));
        let v = verdict(&r);
        assert_eq!(v.level, crate::sources::smart::Level::Ok, "{v:?}");
    }

    #[test]
    fn qemu_nvme_documents() {
        let r = fixture("smartctl-7.3-nvme-qemu.json");
        let Reading::Nvme { identity, health } = &r else {
            panic!("not NVMe: {r:?}")
        };
        assert_eq!(identity.serial, "deadbeef");
        assert_eq!((identity.wctemp_k, identity.cctemp_k), (343, 373));
        assert_eq!(health.temperature_k, 323);
        assert_eq!(health.host_reads, 1053);
        assert_eq!(verdict(&r).level, crate::sources::smart::Level::Ok);

        let r = fixture("smartctl-7.3-nvme-critical-warning-4.json");
        let v = verdict(&r);
        assert_eq!(v.level, crate::sources::smart::Level::Critical);
        assert_eq!(v.reasons[0].code, "nvme_critical_warning");
        assert!(v.reasons[0].detail.contains("reliability degraded"));
    }

    #[test]
    fn failing_seagate_document() {
        let r = fixture("smartctl-7.3-ata-seagate-failing.json");
        let Reading::Ata { attributes, .. } = &r else {
            panic!("not ATA")
        };
        assert_eq!(attributes.len(), 21);
        assert_eq!(r.power_on_hours(), Some(41_396));
        assert_eq!(r.temperature_c(), Some(41));
        let v = verdict(&r);
        let codes: Vec<_> = v.reasons.iter().map(|r| r.code).collect();
        assert_eq!(v.level, crate::sources::smart::Level::Critical);
        assert_eq!(
            codes,
            [
                "ata_status_failing",
                "prefail_failing_now",
                "reallocated_nonzero",
                "pending_nonzero",
                "uncorrectable_nonzero",
                "reported_uncorrect_nonzero"
            ],
            "{v:#?}"
        );
    }
}
