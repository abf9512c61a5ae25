//! What Grafana's alerting file provisioning does to a value before it
//! uses it, and what a Go template may call: pure helpers for
//! `tests/grafana/alerting.rs`.
//!
//! - [`expand_env`]: the environment interpolation of
//!   `pkg/services/provisioning/values` (`interpolateValue`): `$$` is a
//!   literal `$`, `$__env{NAME}` (setting.ExpandVar), then Go's
//!   `os.ExpandEnv` (`$NAME`, `${NAME}`; unset = empty). Grafana applies
//!   it to contact point settings, notification policies and rule labels,
//!   not to templates nor (Grafana 9.2 to 12) rule annotations.
//! - [`env_refs`]: the variable names such a value reads.
//! - [`template_functions`]: the function names a Go template calls.
//! - [`prom_duration`]: Prometheus durations (`1h30m`), as policies use.

use std::collections::BTreeSet;

/// Go text/template's built-in functions.
pub const GO_BUILTINS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
    "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
];

/// Functions Grafana adds for alert rule annotation and label templates
/// (Prometheus-style, `pkg/services/ngalert/state/template`).
pub const RULE_TEMPLATE_FUNCS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "title",
    "toUpper",
    "toLower",
    "match",
    "reReplaceAll",
    "args",
    "externalURL",
    "pathPrefix",
    "graphLink",
    "tableLink",
    "safeHtml",
    "first",
    "label",
    "value",
    "strvalue",
];

const GO_KEYWORDS: &[&str] = &[
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
    "nil", "true", "false",
];

/// Grafana's provisioning interpolation of one string value, with
/// `lookup` as the environment.
pub fn expand_env(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    value
        .split("$$")
        .map(|part| os_expand(&expand_env_macro(part, lookup), lookup))
        .collect::<Vec<_>>()
        .join("$")
}

/// `$__env{NAME}` (Grafana's setting.ExpandVar; `$__file{}` and
/// `$__vault{}` are left alone here: the files are not used).
fn expand_env_macro(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("$__env{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 7..];
        match after.find('}') {
            Some(j) => {
                out.push_str(&lookup(&after[..j]).unwrap_or_default());
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_shell_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_alnum(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// Go's `getShellName`: the name after a `$` and how many bytes it took.
fn shell_name(s: &[u8]) -> (&[u8], usize) {
    if s[0] == b'{' {
        if s.len() > 2 && is_shell_special(s[1]) && s[2] == b'}' {
            return (&s[1..2], 3);
        }
        for i in 1..s.len() {
            if s[i] == b'}' {
                if i == 1 {
                    return (&[], 2); // bad syntax: ${}
                }
                return (&s[1..i], i + 1);
            }
        }
        return (&[], 1); // bad syntax: no closing brace
    }
    if is_shell_special(s[0]) {
        return (&s[0..1], 1);
    }
    let n = s.iter().take_while(|c| is_alnum(**c)).count();
    (&s[..n], n)
}

/// Go's `os.Expand` with the environment `lookup`.
fn os_expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 0;
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.extend_from_slice(&b[i..j]);
            let (name, w) = shell_name(&b[j + 1..]);
            if name.is_empty() && w > 0 {
                // invalid syntax: the characters are eaten
            } else if name.is_empty() {
                out.push(b'$');
            } else {
                let name = std::str::from_utf8(name).expect("ascii name");
                out.extend_from_slice(lookup(name).unwrap_or_default().as_bytes());
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    if i < b.len() {
        out.extend_from_slice(&b[i..]);
    }
    String::from_utf8(out).expect("utf-8 in, utf-8 out")
}

/// Every environment variable name `value` reads through [`expand_env`]
/// (including names that are not valid shell names, such as `labels` in
/// `{{ $labels.site }}`: exactly what would be wiped out).
pub fn env_refs(value: &str) -> Vec<String> {
    let seen = std::cell::RefCell::new(Vec::new());
    let record = |name: &str| {
        seen.borrow_mut().push(name.to_string());
        None
    };
    expand_env(value, &record);
    seen.into_inner()
}

/// The function names a Go template calls: identifiers in its actions
/// that are not keywords, fields (`.X`), variables (`$x`), literals or
/// comments.
pub fn template_functions(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").expect("unclosed {{");
        let action = after[..end].trim_start_matches('-').trim_end_matches('-');
        rest = &after[end + 2..];
        if action.trim_start().starts_with("/*") {
            continue;
        }
        // Drop string literals, then split on Go template punctuation.
        let mut cleaned = String::new();
        let mut quote = None;
        let mut prev = ' ';
        for c in action.chars() {
            match quote {
                Some(q) if c == q && prev != '\\' => quote = None,
                Some(_) => {}
                None if c == '"' || c == '`' => quote = Some(c),
                None => cleaned.push(c),
            }
            prev = c;
        }
        for tok in cleaned.split(|c: char| c.is_whitespace() || "()|,=:".contains(c)) {
            let first = match tok.chars().next() {
                Some(c) => c,
                None => continue,
            };
            if first == '.' || first == '$' || first.is_ascii_digit() || first == '-' {
                continue;
            }
            if GO_KEYWORDS.contains(&tok) {
                continue;
            }
            if tok.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                out.insert(tok.to_string());
            }
        }
    }
    out
}

/// A Prometheus duration (`30s`, `5m`, `1h30m`, `1d`) in seconds, as
/// Grafana's notification policies parse them (`model.ParseDuration`).
pub fn prom_duration(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next().unwrap());
        }
        let n: u64 = num.parse().map_err(|_| format!("bad duration {s}"))?;
        num.clear();
        total += match unit.as_str() {
            "ms" => n / 1000,
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86400,
            "w" => n * 604800,
            "y" => n * 31_536_000,
            _ => return Err(format!("bad unit {unit} in {s}")),
        };
    }
    if !num.is_empty() {
        return Err(format!("{s}: a number without a unit"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("123:abc".into()),
            "CHAT" => Some("-100".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_like_grafana_provisioning() {
        assert_eq!(expand_env("${TOKEN}", &env), "123:abc");
        assert_eq!(expand_env("$TOKEN/$CHAT", &env), "123:abc/-100");
        assert_eq!(expand_env("$__env{CHAT}", &env), "-100");
        assert_eq!(expand_env("${UNSET}", &env), "");
        assert_eq!(expand_env("a$$b", &env), "a$b");
        assert_eq!(expand_env("cost 5$", &env), "cost 5$");
        // A Go template variable is eaten: why templates never go in
        // interpolated fields.
        assert_eq!(
            expand_env("{{ $labels.site }}", &env),
            "{{ .site }}",
            "os.ExpandEnv wipes $labels"
        );
        assert_eq!(expand_env("${}x", &env), "x", "bad syntax is eaten");
    }

    #[test]
    fn env_refs_names_every_variable_read() {
        assert_eq!(env_refs("${A} $B $__env{C} $$D"), ["C", "A", "B"]);
        assert_eq!(env_refs("{{ $labels.site }}"), ["labels"]);
        assert!(env_refs("{{ template \"x\" . }}").is_empty());
    }

    #[test]
    fn finds_the_functions_a_template_calls() {
        let f = template_functions(
            r#"{{ define "a" }}{{ if gt (len .Alerts) 1 }}{{ humanize $values.A.Value }}{{ end }}{{ index .Labels "x y" | printf "%s" }}{{/* toUpper */}}{{ end }}"#,
        );
        let want: BTreeSet<String> = ["gt", "len", "humanize", "index", "printf"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(f, want);
    }

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(prom_duration("30s"), Ok(30));
        assert_eq!(prom_duration("1h30m"), Ok(5400));
        assert_eq!(prom_duration("4h"), Ok(14400));
        assert!(prom_duration("5").is_err());
        assert!(prom_duration("5x").is_err());
    }
}
