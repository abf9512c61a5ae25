//! A minimal LogQL check, for want of a LogQL engine here: balanced
//! brackets and quotes outside strings, and every stream selector made of
//! well-formed matchers on labels the bridge sets.

/// Labels the bridge puts on Loki streams (bridge/src/sink/loki/labels.rs).
pub const LOKI_LABELS: &[&str] = &["app", "host", "job", "severity", "site"];

/// Minimal LogQL check: balanced brackets and quotes outside strings, and
/// every stream selector `{...}` made of `label op "value"` matchers on
/// labels the bridge sets, with at least one that cannot match empty.
pub fn check_logql(q: &str) -> Result<(), String> {
    // label_values(selector, label) for variable queries.
    let q = if let Some(inner) = q.strip_prefix("label_values(") {
        let inner = inner.strip_suffix(')').ok_or("label_values( not closed")?;
        let (sel, label) = inner
            .rsplit_once(',')
            .ok_or("label_values needs selector, label")?;
        if !LOKI_LABELS.contains(&label.trim()) {
            return Err(format!("label {label} is not one the bridge sets"));
        }
        sel.trim().to_string()
    } else {
        q.to_string()
    };
    let mut stack = Vec::new();
    let mut in_str = false;
    let mut esc = false;
    let mut selectors = Vec::new();
    let mut sel_start = 0;
    for (i, c) in q.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' | '[' => stack.push(c),
            '{' => {
                stack.push(c);
                sel_start = i + 1;
            }
            ')' | ']' | '}' => {
                let open = stack.pop().ok_or(format!("unbalanced {c}"))?;
                if !matches!((open, c), ('(', ')') | ('[', ']') | ('{', '}')) {
                    return Err(format!("{open} closed by {c}"));
                }
                if c == '}' {
                    selectors.push(q[sel_start..i].to_string());
                }
            }
            _ => {}
        }
    }
    if in_str || !stack.is_empty() {
        return Err("unbalanced quotes or brackets".into());
    }
    if selectors.is_empty() {
        return Err("no stream selector".into());
    }
    for sel in selectors {
        let mut non_empty = false;
        for m in sel.split(", ") {
            let m = m.trim();
            let op_at = m.find(['=', '!']).ok_or(format!("matcher `{m}`"))?;
            let (label, rest) = m.split_at(op_at);
            let op = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| rest.starts_with(op))
                .ok_or(format!("operator in `{m}`"))?;
            let value = &rest[op.len()..];
            if !(value.len() >= 2 && value.starts_with('"') && value.ends_with('"')) {
                return Err(format!("value of `{m}` must be double-quoted"));
            }
            if !LOKI_LABELS.contains(&label) {
                return Err(format!("label {label} is not one the bridge sets"));
            }
            let v = &value[1..value.len() - 1];
            if (op == "=" && !v.is_empty()) || (op == "=~" && !v.contains('*') && !v.is_empty()) {
                non_empty = true;
            }
        }
        if !non_empty {
            return Err(format!(
                "selector {{{sel}}} has no matcher that excludes the empty value"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_queries_pass() {
        for q in [
            r#"{site="$site"}"#,
            r#"sum by (severity) (count_over_time({site=~"$site", app!=""} |= "error" [5m]))"#,
            r#"{job="sitewatch", host=~".+"} | json | line_format "{{.msg}}""#,
            "label_values({job=\"sitewatch\"}, site)",
        ] {
            assert_eq!(check_logql(q), Ok(()), "{q}");
        }
    }

    #[test]
    fn broken_queries_say_why() {
        let err = |q: &str| check_logql(q).expect_err(q);
        assert_eq!(err(r#"{site="a""#), "unbalanced quotes or brackets");
        assert_eq!(err(r#"{site="a")"#), "{ closed by )");
        assert_eq!(err("rate([5m])"), "no stream selector");
        assert_eq!(
            err(r#"{camera="gate"}"#),
            "label camera is not one the bridge sets"
        );
        assert_eq!(
            err("{site=gate}"),
            "value of `site=gate` must be double-quoted"
        );
        assert_eq!(
            err(r#"{site=~".*"}"#),
            r#"selector {site=~".*"} has no matcher that excludes the empty value"#
        );
        assert_eq!(
            err("label_values({site=\"a\"}, camera)"),
            "label  camera is not one the bridge sets"
        );
    }
}
