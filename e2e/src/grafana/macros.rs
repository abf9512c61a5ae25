//! Grafana's query expansion for the PostgreSQL data source: template
//! variables first, then the macros of
//! `pkg/tsdb/grafana-postgresql-datasource/macros.go`; and Grafana's
//! duration strings.

use std::collections::BTreeMap;

/// Grafana's built-in variables a query may use without defining them.
pub const BUILTINS: &[&str] = &[
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__rate_interval",
];

/// Grafana duration strings (`1m`, `30s`, `2h`, `1d`): checked and returned in seconds.
pub fn duration(s: &str) -> f64 {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("bad duration {s}"));
    n * match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 604800.0,
        _ => panic!("bad duration {s}"),
    }
}

/// Every `$name`, `${name}` or `${name:fmt}` in a query (not macros `$__x(`).
pub fn variables_used(q: &str) -> Vec<String> {
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            if b.get(i + 1) == Some(&b'{') {
                let end = q[i..].find('}').map(|e| i + e).expect("unclosed ${");
                let name = q[i + 2..end].split(':').next().unwrap().to_string();
                out.push(name);
                i = end;
            } else {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                let name = &q[start..end];
                let is_macro = name.starts_with("__") && b.get(end) == Some(&b'(');
                if !name.is_empty() && !is_macro {
                    out.push(name.to_string());
                }
                i = end.max(i + 1) - 1;
            }
        }
        i += 1;
    }
    out
}

/// Grafana's time range for one query, as RFC 3339 (UTC) strings.
pub struct Range {
    /// Start, RFC 3339 (`$__timeFrom()`).
    pub from: String,
    /// End, RFC 3339 (`$__timeTo()`).
    pub to: String,
    /// Start, Unix seconds (`$__unixEpochFrom()`).
    pub from_s: i64,
    /// End, Unix seconds (`$__unixEpochTo()`).
    pub to_s: i64,
    /// `$__interval`.
    pub interval: &'static str,
    /// `$__interval_ms`.
    pub interval_ms: i64,
}

/// Template variables first (the frontend's `templateSrv.replace`, which
/// for a single value of an SQL data source inserts it raw), then the data
/// source's macros.
pub fn expand(q: &str, vars: &BTreeMap<&str, String>, r: &Range) -> String {
    let mut all: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    all.push(("__interval".into(), r.interval.into()));
    all.push(("__interval_ms".into(), r.interval_ms.to_string()));
    all.push(("__range_s".into(), (r.to_s - r.from_s).to_string()));
    // Longest names first so that $site does not eat $site_x.
    all.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = q.to_string();
    for (k, v) in &all {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("[[{k}]]"), v);
        // `$name` not followed by an identifier character.
        let pat = format!("${k}");
        let mut res = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&pat) {
            let after = rest[i + pat.len()..].chars().next();
            res.push_str(&rest[..i]);
            if after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                res.push_str(&pat);
            } else {
                res.push_str(v);
            }
            rest = &rest[i + pat.len()..];
        }
        res.push_str(rest);
        out = res;
    }
    macros(&out, r)
}

/// `pkg/tsdb/grafana-postgresql-datasource/macros.go` (timescaledb off):
/// `\$([_a-zA-Z0-9]+)\(([^\)]*)\)`, arguments split at `,` and trimmed.
fn macros(sql: &str, r: &Range) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find("$__") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..name_len];
        if tail[name_len..].starts_with('(') {
            let close = tail[name_len..].find(')').expect("macro not closed") + name_len;
            let args: Vec<&str> = tail[name_len + 1..close]
                .split(',')
                .map(str::trim)
                .collect();
            let after = &tail[close + 1..];
            // Pre-5.3 compatibility: `$__timeGroup(...)` directly followed by
            // ',' gets the alias.
            let name = if name == "__timeGroup" && after.starts_with(',') {
                "__timeGroupAlias"
            } else {
                name
            };
            out.push_str(&macro_value(name, &args, r));
            rest = after;
        } else {
            out.push_str("$__");
            rest = &rest[i + 3..];
        }
    }
    out.push_str(rest);
    out
}

fn go_float(v: f64) -> String {
    // Go's %v for float64: no trailing ".0" on whole numbers.
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn macro_value(name: &str, args: &[&str], r: &Range) -> String {
    let group = |args: &[&str]| {
        assert!(args.len() >= 2, "{name} needs a column and an interval");
        let secs = go_float(duration(args[1].trim_matches('\'')));
        format!("floor(extract(epoch from {})/{secs})*{secs}", args[0])
    };
    match name {
        "__time" => format!("{} AS \"time\"", args[0]),
        "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", args[0]),
        "__timeFilter" => format!("{} BETWEEN '{}' AND '{}'", args[0], r.from, r.to),
        "__timeFrom" => format!("'{}'", r.from),
        "__timeTo" => format!("'{}'", r.to),
        "__timeGroup" => group(args),
        "__timeGroupAlias" => format!("{} AS \"time\"", group(args)),
        "__unixEpochFilter" => format!("{0} >= {1} AND {0} <= {2}", args[0], r.from_s, r.to_s),
        "__unixEpochFrom" => r.from_s.to_string(),
        "__unixEpochTo" => r.to_s.to_string(),
        other => panic!("macro {other} is not one Grafana's PostgreSQL data source knows"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Range {
        Range {
            from: "2017-07-18T11:15:52Z".into(),
            to: "2017-07-18T11:16:52Z".into(),
            from_s: 1_500_376_552,
            to_s: 1_500_376_612,
            interval: "5m",
            interval_ms: 300_000,
        }
    }

    #[test]
    fn macro_expansion_matches_grafana() {
        let r = range();
        let vars = BTreeMap::from([("site", "a".to_string()), ("site_x", "b".to_string())]);
        assert_eq!(
            expand(
                "SELECT $__timeGroupAlias(ts, $__interval), $__timeGroup(ts, '1h'), x FROM t \
                 WHERE $__timeFilter(ts) AND s = '$site' AND t = '${site}' AND u = '$site_x' \
                 AND v > $__timeFrom() AND w < $__timeTo() GROUP BY $__timeGroup(ts,'30s')",
                &vars,
                &r
            ),
            "SELECT floor(extract(epoch from ts)/300)*300 AS \"time\", \
             floor(extract(epoch from ts)/3600)*3600 AS \"time\", x FROM t \
             WHERE ts BETWEEN '2017-07-18T11:15:52Z' AND '2017-07-18T11:16:52Z' AND s = 'a' \
             AND t = 'a' AND u = 'b' AND v > '2017-07-18T11:15:52Z' AND w < '2017-07-18T11:16:52Z' \
             GROUP BY floor(extract(epoch from ts)/30)*30"
        );
    }

    #[test]
    fn epoch_macros_and_builtin_variables() {
        let r = range();
        let vars = BTreeMap::new();
        assert_eq!(
            expand(
                "$__unixEpochFilter(t) $__unixEpochFrom() $__unixEpochTo() $__timeEpoch(ts) \
                 $__time(ts) $__interval_ms $__range_s [[__interval]]",
                &vars,
                &r
            ),
            "t >= 1500376552 AND t <= 1500376612 1500376552 1500376612 \
             extract(epoch from ts) as \"time\" ts AS \"time\" 300000 60 5m"
        );
        // `$__` not followed by `(` is left alone.
        assert_eq!(expand("a $__b c", &vars, &r), "a $__b c");
    }

    #[test]
    #[should_panic(expected = "macro __nope is not one")]
    fn unknown_macro_is_refused() {
        expand("$__nope(x)", &BTreeMap::new(), &range());
    }

    #[test]
    fn durations_in_seconds() {
        assert_eq!(duration("30s"), 30.0);
        assert_eq!(duration("1m"), 60.0);
        assert_eq!(duration("1.5h"), 5400.0);
        assert_eq!(duration("1d"), 86400.0);
        assert_eq!(duration("250ms"), 0.25);
        assert_eq!(go_float(3600.0), "3600");
        assert_eq!(go_float(0.5), "0.5");
    }

    #[test]
    #[should_panic(expected = "bad duration 5y")]
    fn unknown_duration_unit_is_refused() {
        duration("5y");
    }

    #[test]
    fn variables_but_not_macros() {
        assert_eq!(
            variables_used("a = '$site' AND b = ${watermark} AND c = ${x:csv} AND $__timeFilter(t) AND $__interval"),
            ["site", "watermark", "x", "__interval"]
        );
        assert!(variables_used("no variables, $ alone").is_empty());
    }
}
