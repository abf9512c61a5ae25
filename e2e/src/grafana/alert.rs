//! An alert rule's threshold applied to its query's table result, as
//! Grafana's threshold expression would.

use super::csv::Rows;

/// Applies a Grafana threshold `(type, value)` to a rule's table result:
/// the rows (as their string columns, i.e. the alert labels) that would
/// fire. The first numeric column is the value.
pub fn firing(rows: &Rows, threshold: &(String, f64)) -> Vec<String> {
    let mut out = Vec::new();
    for r in &rows.rows {
        let mut labels = Vec::new();
        let mut value = None;
        for (c, v) in rows.cols.iter().zip(r) {
            match v.parse::<f64>() {
                Ok(n) if value.is_none() => value = Some(n),
                _ => labels.push(format!("{c}={v}")),
            }
        }
        let v = value.expect("a numeric value column");
        let fires = match threshold.0.as_str() {
            "gt" => v > threshold.1,
            "lt" => v < threshold.1,
            other => panic!("threshold type {other}"),
        };
        if fires {
            out.push(labels.join(","));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(cols: &[&str], rows: &[&[&str]]) -> Rows {
        Rows {
            cols: cols.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|v| v.to_string()).collect())
                .collect(),
        }
    }

    #[test]
    fn rows_above_or_below_fire_with_their_labels() {
        let r = rows(
            &["site", "pct", "path"],
            &[&["a", "96.5", "/"], &["b", "40", "/srv"]],
        );
        assert_eq!(firing(&r, &("gt".into(), 90.0)), ["site=a,path=/"]);
        assert_eq!(firing(&r, &("lt".into(), 50.0)), ["site=b,path=/srv"]);
        assert!(firing(&r, &("gt".into(), 99.0)).is_empty());
    }

    #[test]
    fn only_the_first_number_is_the_value() {
        let r = rows(&["site", "n", "m"], &[&["a", "5", "100"]]);
        assert_eq!(firing(&r, &("gt".into(), 4.0)), ["site=a,m=100"]);
    }
}
