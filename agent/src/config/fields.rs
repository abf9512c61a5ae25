//! Reading config sections from the parsed document by hand, with the
//! words serde's derived deserializers and toml's `Deserializer` used
//! (`unknown field`, `invalid type`, `missing field`, the `expected one
//! of` lists) and the same place (key, value or table) for the line
//! number.
//!
//! Why: every derived `Deserialize` of a section, with toml's serde
//! `Deserializer` under it, was compiled per type into the aarch64 agent
//! (tens of KB); these functions are compiled once and each section's
//! reader is plain code. Why serde's words: installers and tests already
//! know them, and a section stops at its first mistake as before.
//!
//! Each function mirrors what serde did for one Rust type behind a
//! `#[serde(deny_unknown_fields)]` struct: strings, paths, booleans,
//! unsigned integers, `f32`, lists, string maps, nested structs (a TOML
//! array is read as the struct's fields in order, as serde's `visit_seq`
//! did) and unit enums.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeInteger, DeValue};
use toml::Spanned;

/// A value of the parsed document, with where it is.
pub type Value<'a> = Spanned<DeValue<'a>>;

/// A mistake in a section: serde's message and the bytes of the document
/// it is about (for the line number).
#[derive(Debug)]
pub struct Mistake {
    /// The message, as serde or toml worded it.
    pub message: String,
    /// Where in the document.
    pub span: Range<usize>,
}

/// What reading a value gives.
pub type Res<T> = Result<T, Mistake>;

fn at<T>(message: String, span: Range<usize>) -> Res<T> {
    Err(Mistake { message, span })
}

/// How serde's derive treated a field that is absent from the file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// `#[serde(default)]`: the default.
    Default,
    /// No default: `missing field`.
    Required,
    /// An `Option` without `#[serde(default)]`: `None` when absent from a
    /// table, but serde still wanted it in the array form (`invalid
    /// length`), so it is kept apart from [`Absent::Default`].
    None,
}

/// An integer as toml handed it to serde: the smallest of `i64`, `u64`,
/// `i128`, `u128` it fits.
enum Int {
    I(i64),
    U(u64),
    I128(i128),
    U128(u128),
}

fn int(n: &DeInteger<'_>, span: &Range<usize>) -> Res<Int> {
    let (s, r) = (n.as_str(), n.radix());
    if let Ok(v) = i64::from_str_radix(s, r) {
        Ok(Int::I(v))
    } else if let Ok(v) = u64::from_str_radix(s, r) {
        Ok(Int::U(v))
    } else if let Ok(v) = i128::from_str_radix(s, r) {
        Ok(Int::I128(v))
    } else if let Ok(v) = u128::from_str_radix(s, r) {
        Ok(Int::U128(v))
    } else {
        at("integer number overflowed".into(), span.clone())
    }
}

/// An integer that fits an `i64` (`None`: another kind, or too large).
pub fn int_i64(v: &DeValue<'_>) -> Option<i64> {
    v.as_integer()
        .and_then(|n| i64::from_str_radix(n.as_str(), n.radix()).ok())
}

/// serde's `Unexpected` for `v`, as a visitor that takes none of it saw it.
fn unexpected(v: &Value<'_>) -> Res<String> {
    Ok(match v.get_ref() {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(n) => match int(n, &v.span())? {
            Int::I(n) => format!("integer `{n}`"),
            Int::U(n) => format!("integer `{n}`"),
            Int::I128(n) => format!("integer `{n}` as i128"),
            Int::U128(n) => format!("integer `{n}` as u128"),
        },
        DeValue::Float(f) => {
            let Some(f) = float_of(f.as_str()) else {
                return at("floating-point number overflowed".into(), v.span());
            };
            let mut s = f.to_string();
            if f.is_finite() && !s.contains('.') {
                s.push_str(".0");
            }
            format!("floating point `{s}`")
        }
        DeValue::Boolean(b) => format!("boolean `{b}`"),
        DeValue::Array(_) => "sequence".into(),
        // A datetime reached serde as a map.
        DeValue::Datetime(_) | DeValue::Table(_) => "map".into(),
    })
}

fn float_of(s: &str) -> Option<f64> {
    let f: f64 = s.parse().ok()?;
    (!f.is_infinite() || s.contains("inf")).then_some(f)
}

/// `invalid type: string "30", expected u32`.
fn invalid_type<T>(v: &Value<'_>, expected: &str) -> Res<T> {
    at(
        format!("invalid type: {}, expected {expected}", unexpected(v)?),
        v.span(),
    )
}

/// serde's `expected one of` list.
fn one_of(names: &mut dyn Iterator<Item = &str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.as_slice() {
        [] => String::new(),
        [a] => format!("`{a}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        _ => {
            let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", quoted.join(", "))
        }
    }
}

/// A string (`String`, or an `Option<String>` that is there).
pub fn string(v: &Value<'_>) -> Res<String> {
    match v.get_ref().as_str() {
        Some(s) => Ok(s.to_owned()),
        None => invalid_type(v, "a string"),
    }
}

/// A path (`PathBuf`).
pub fn path(v: &Value<'_>) -> Res<PathBuf> {
    match v.get_ref().as_str() {
        Some(s) => Ok(PathBuf::from(s)),
        None => invalid_type(v, "path string"),
    }
}

/// A boolean.
pub fn boolean(v: &Value<'_>) -> Res<bool> {
    match v.get_ref().as_bool() {
        Some(b) => Ok(b),
        None => invalid_type(v, "a boolean"),
    }
}

/// An unsigned integer of the Rust type named `ty` (`"u32"`), at most
/// `max`; the caller narrows it.
pub fn uint(v: &Value<'_>, ty: &str, max: u64) -> Res<u64> {
    let DeValue::Integer(n) = v.get_ref() else {
        return invalid_type(v, ty);
    };
    let (ok, shown) = match int(n, &v.span())? {
        Int::I(n) => (u64::try_from(n).ok().filter(|&n| n <= max), n.to_string()),
        Int::U(n) => ((n <= max).then_some(n), n.to_string()),
        Int::I128(_) | Int::U128(_) => return invalid_type(v, ty),
    };
    match ok {
        Some(n) => Ok(n),
        None => at(
            format!("invalid value: integer `{shown}`, expected {ty}"),
            v.span(),
        ),
    }
}

/// A `u32`.
pub fn u32(v: &Value<'_>) -> Res<u32> {
    uint(v, "u32", u32::MAX.into()).map(|n| n as u32)
}

/// A `u64`.
pub fn u64(v: &Value<'_>) -> Res<u64> {
    uint(v, "u64", u64::MAX)
}

/// A `usize`.
pub fn usize(v: &Value<'_>) -> Res<usize> {
    uint(v, "usize", usize::MAX as u64).map(|n| n as usize)
}

/// A `u16`.
pub fn u16(v: &Value<'_>) -> Res<u16> {
    uint(v, "u16", u16::MAX.into()).map(|n| n as u16)
}

/// A `u8`.
pub fn u8(v: &Value<'_>) -> Res<u8> {
    uint(v, "u8", u8::MAX.into()).map(|n| n as u8)
}

/// An `f32` (integers too, as serde took them).
pub fn f32(v: &Value<'_>) -> Res<f32> {
    match v.get_ref() {
        DeValue::Float(f) => match float_of(f.as_str()) {
            Some(f) => Ok(f as f32),
            None => at("floating-point number overflowed".into(), v.span()),
        },
        DeValue::Integer(n) => match int(n, &v.span())? {
            Int::I(n) => Ok(n as f32),
            Int::U(n) => Ok(n as f32),
            Int::I128(_) | Int::U128(_) => invalid_type(v, "f32"),
        },
        _ => invalid_type(v, "f32"),
    }
}

/// Any value, checked as toml's own `Value` type took it (integers within
/// `i64`, arrays and tables all through); for a setting that takes several
/// kinds and sorts them out itself.
pub fn any(v: &Value<'_>) -> Res<()> {
    match v.get_ref() {
        DeValue::Integer(n) => match int(n, &v.span())? {
            Int::I(_) => Ok(()),
            Int::U(_) => at("u64 value was too large".into(), v.span()),
            Int::I128(_) | Int::U128(_) => invalid_type(v, "any valid TOML value"),
        },
        DeValue::Float(f) if float_of(f.as_str()).is_none() => {
            at("floating-point number overflowed".into(), v.span())
        }
        DeValue::Array(a) => a.iter().try_for_each(any),
        DeValue::Table(t) => t.values().try_for_each(any),
        _ => Ok(()),
    }
}

/// A list (`Vec<T>`), each element read by `each`.
pub fn list<'a, T>(v: &Value<'a>, each: fn(&Value<'a>) -> Res<T>) -> Res<Vec<T>> {
    match v.get_ref() {
        DeValue::Array(a) => a.iter().map(each).collect(),
        _ => invalid_type(v, "a sequence"),
    }
}

/// A list of strings.
pub fn strings(v: &Value<'_>) -> Res<Vec<String>> {
    list(v, string)
}

/// A table of strings (`BTreeMap<String, String>`).
pub fn string_map(v: &Value<'_>) -> Res<BTreeMap<String, String>> {
    match v.get_ref() {
        DeValue::Table(t) => {
            let mut out = BTreeMap::new();
            for (k, val) in t.iter() {
                out.insert(k.get_ref().to_string(), string(val)?);
            }
            Ok(out)
        }
        // serde saw a datetime as a one-entry map.
        DeValue::Datetime(d) => Ok(BTreeMap::from([(DATETIME_KEY.into(), d.to_string())])),
        _ => invalid_type(v, "a map"),
    }
}

/// The key under which toml handed a datetime to serde.
const DATETIME_KEY: &str = "$__toml_private_datetime";

/// A struct: `fields` are its fields in declaration order (as named in
/// the file) and what an absent one means; `each` gets the index of each
/// field present and its value. `name` is serde's `struct Name`.
pub fn fields<'v, 'a>(
    v: &'v Value<'a>,
    name: &str,
    fields: &[(&str, Absent)],
    each: &mut dyn FnMut(usize, &'v Value<'a>) -> Res<()>,
) -> Res<()> {
    let unknown = |key: &str, span| {
        at(
            format!(
                "unknown field `{key}`, expected {}",
                one_of(&mut fields.iter().map(|f| f.0))
            ),
            span,
        )
    };
    match v.get_ref() {
        DeValue::Table(t) => {
            let mut seen = vec![false; fields.len()];
            for (k, val) in t.iter() {
                let key: &str = k.get_ref();
                let Some(i) = fields.iter().position(|f| f.0 == key) else {
                    return unknown(key, k.span());
                };
                seen[i] = true;
                each(i, val)?;
            }
            for (i, (field, absent)) in fields.iter().enumerate() {
                if *absent == Absent::Required && !seen[i] {
                    return at(format!("missing field `{field}`"), v.span());
                }
            }
            Ok(())
        }
        // serde's derive reads an array as the fields in order.
        DeValue::Array(a) => {
            for (i, el) in a.iter().take(fields.len()).enumerate() {
                each(i, el)?;
            }
            match (a.len()..fields.len()).find(|&i| fields[i].1 != Absent::Default) {
                None => Ok(()),
                Some(i) => {
                    let n = fields.len();
                    let s = if n == 1 { "" } else { "s" };
                    at(
                        format!("invalid length {i}, expected {name} with {n} element{s}"),
                        v.span(),
                    )
                }
            }
        }
        DeValue::Datetime(_) => unknown(DATETIME_KEY, v.span()),
        _ => invalid_type(v, name),
    }
}

/// A unit enum written as its variant's name (`variants` in declaration
/// order); the index of the variant.
pub fn variant(v: &Value<'_>, variants: &[&str]) -> Res<usize> {
    let find = |s: &str, span| match variants.iter().position(|n| *n == s) {
        Some(i) => Ok(i),
        None => at(
            format!(
                "unknown variant `{s}`, expected {}",
                one_of(&mut variants.iter().copied())
            ),
            span,
        ),
    };
    match v.get_ref() {
        DeValue::String(s) => find(s, v.span()),
        // toml's `{ name = {} }` form of an enum.
        DeValue::Table(t) => {
            let mut it = t.iter();
            let (Some((k, val)), None) = (it.next(), it.next()) else {
                let m = if t.is_empty() {
                    "wanted exactly 1 element, found 0 elements"
                } else {
                    "wanted exactly 1 element, more than 1 element"
                };
                return at(m.into(), v.span());
            };
            let i = find(k.get_ref(), k.span())?;
            match val.get_ref() {
                DeValue::Array(a) if a.is_empty() => Ok(i),
                DeValue::Table(t) if t.is_empty() => Ok(i),
                DeValue::Array(_) => at("expected empty array".into(), val.span()),
                DeValue::Table(_) => at("expected empty table".into(), val.span()),
                other => at(
                    format!("expected table, found {}", other.type_str()),
                    val.span(),
                ),
            }
        }
        _ => at("wanted string or table".into(), v.span()),
    }
}

#[cfg(test)]
mod tests {
    //! Messages recorded from the agent when serde's derive and toml's
    //! `Deserializer` still read these sections (main at ecc1693): they
    //! must not drift now that serde is gone.

    use crate::config::Config;

    fn problem(section: &str) -> String {
        let text =
            format!("site_id = \"s1\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{section}\n");
        let p = Config::parse(&text, "t", |_| None).expect_err("a mistake");
        assert_eq!(p.list.len(), 1, "{p}");
        p.list[0].clone()
    }

    #[test]
    fn serde_words_are_kept() {
        for (section, want) in [
            ("[heartbeat]\nbogus_key = 1", "[heartbeat] line 5: unknown field `bogus_key`, expected `interval_secs` or `wan_interface`"),
            ("[heartbeat]\ninterval_secs = 1.5", "[heartbeat] line 5: invalid type: floating point `1.5`, expected u32"),
            ("[heartbeat]\ninterval_secs = 1e10", "[heartbeat] line 5: invalid type: floating point `10000000000.0`, expected u32"),
            ("[heartbeat]\nwan_interface = true", "[heartbeat] line 5: invalid type: boolean `true`, expected a string"),
            ("[heartbeat]\ninterval_secs = -1", "[heartbeat] line 5: invalid value: integer `-1`, expected u32"),
            ("[heartbeat]\ninterval_secs = 1e400", "[heartbeat] line 5: floating-point number overflowed"),
            ("[heartbeat]\ninterval_secs = 999999999999999999999999999999999999999999", "[heartbeat] line 5: integer number overflowed"),
            ("[[heartbeat]]", "[heartbeat] line 4: invalid type: map, expected u32"),
            ("[disk]\nmounts = [\"/\", 2]", "[disk] line 5: invalid type: integer `2`, expected a string"),
            ("[outbox]\nmax_in_flight = 70000", "[outbox] line 5: invalid value: integer `70000`, expected u16"),
            ("[smart]\n[[smart.device]]\ntype = \"usb\"", "[smart] line 6: unknown variant `usb`, expected one of `auto`, `sat`, `sat12`, `nvme`, `scsi`"),
            ("[smart]\ndevice = [[]]", "[smart] line 5: invalid length 0, expected struct DeviceRaw with 2 elements"),
            ("[smart]\n[[smart.device]]\npath = \"/dev/sda\"\ntype = 1", "[smart] line 7: wanted string or table"),
            ("[rtsp]\n[[rtsp.camera]]\nname = \"gate\"", "[rtsp] line 5: missing field `url`"),
            ("[ups]\nnames = 1979-05-27", "[ups] line 5: invalid type: map, expected a sequence"),
            ("[cleanup]\nroot = [1979-05-27]", "[cleanup] line 5: unknown field `$__toml_private_datetime`, expected one of `path`, `high_watermark_pct`, `low_watermark_pct`, `include`, `exclude`, `min_age`, `keep_newest`, `max_deletions_per_run`"),
        ] {
            assert_eq!(problem(section), want, "{section}");
        }
    }
}
