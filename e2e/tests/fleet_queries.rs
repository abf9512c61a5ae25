//! The provisioned Grafana SQL, expanded for `scripts/bench/fleet.sh`.
//!
//! Not a check: `cargo test -p sitewatch-e2e --test fleet_queries -- --ignored`
//! writes every SQL query of every provisioned dashboard (panels and
//! variables) and of every alert rule, with the template variables set and
//! Grafana's macros expanded by `sitewatch_e2e::grafana::macros` (the same
//! expansion `tests/grafana.rs` proves against a real bridge), one JSON
//! object per line, to `$FLEET_QUERIES_OUT`:
//!
//! `{"dashboard", "title", "origin", "range", "sql"}`
//!
//! Dashboard queries that use a time macro are written once per range of
//! `$FLEET_QUERIES_RANGES` (default `6h,24h,7d`, each ending now) with
//! Grafana's `$__interval` for a panel about 900 px wide; the others once
//! (range `-`). Alert queries are written once, with their rule's own
//! relative time range. `$site` is `$FLEET_QUERIES_SITE`, `$watermark` 90
//! and `$skew_secs` 300 (the dashboards' defaults). Loki queries are left
//! out (the fleet bench has no Loki). `$FLEET_QUERIES_GRAFANA_DIR` reads
//! another `grafana/` directory instead of the repository's.

use serde_json::{json, Value};
use sitewatch_e2e::grafana::macros::{expand, Range};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

const PG_UID: &str = "sitewatch-pg";

/// The repository's `grafana/`, or `$FLEET_QUERIES_GRAFANA_DIR` (another
/// revision's, to measure a query before a change).
fn grafana_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLEET_QUERIES_GRAFANA_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("grafana")
}

/// One SQL query as provisioned: where it is and its raw text.
struct Raw {
    dashboard: String,
    title: String,
    origin: String,
    text: String,
    /// Alert rules: (from, to) seconds before now.
    rule_range: Option<(i64, i64)>,
}

fn uid_of(v: &Value) -> &str {
    v["datasource"]["uid"].as_str().unwrap_or("")
}

fn dashboards() -> Vec<Raw> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(grafana_dir().join("dashboards"))
        .expect("grafana/dashboards")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).expect("read"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let uid = d["uid"].as_str().expect("uid").to_string();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" && uid_of(v) == PG_UID {
                let vname = v["name"].as_str().unwrap_or("?");
                out.push(Raw {
                    dashboard: uid.clone(),
                    title: format!("variable {vname}"),
                    origin: format!("{name}: variable {vname}"),
                    text: v["query"].as_str().expect("SQL variable query").to_string(),
                    rule_range: None,
                });
            }
        }
        for p in d["panels"].as_array().expect("panels") {
            for t in p["targets"].as_array().into_iter().flatten() {
                if uid_of(t) != PG_UID {
                    continue;
                }
                let title = p["title"].as_str().unwrap_or("?").to_string();
                let r = t["refId"].as_str().unwrap_or("?");
                out.push(Raw {
                    dashboard: uid.clone(),
                    origin: format!("{name}: panel {title} / {r}"),
                    title,
                    text: t["rawSql"].as_str().expect("rawSql").to_string(),
                    rule_range: None,
                });
            }
        }
    }
    out
}

/// The alert rules file, read with python3's PyYAML (as `tests/grafana.rs`).
fn alert_rules() -> Vec<Raw> {
    let path = grafana_dir().join("provisioning/alerting/sitewatch-rules.yaml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8')), default=str))",
        ])
        .arg(&path)
        .output()
        .expect("python3 with PyYAML");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut v = Vec::new();
    for g in doc["groups"].as_array().expect("groups") {
        for rule in g["rules"].as_array().expect("rules") {
            let title = rule["title"].as_str().expect("title").to_string();
            for d in rule["data"].as_array().expect("data") {
                if d["datasourceUid"] != PG_UID {
                    continue;
                }
                let rt = &d["relativeTimeRange"];
                v.push(Raw {
                    dashboard: "alert".into(),
                    origin: format!(
                        "alert rule {} / {}",
                        rule["uid"].as_str().unwrap_or("?"),
                        d["refId"].as_str().unwrap_or("?")
                    ),
                    title: title.clone(),
                    text: d["model"]["rawSql"].as_str().expect("rawSql").to_string(),
                    rule_range: Some((
                        rt["from"].as_i64().expect("from"),
                        rt["to"].as_i64().expect("to"),
                    )),
                });
            }
        }
    }
    v
}

fn rfc3339(unix: i64) -> String {
    sitewatch_testkit::loki::rfc3339(i128::from(unix) * 1_000_000_000)
}

/// Grafana's `$__interval` for a range on a panel about 900 px wide
/// (range / max data points, rounded as `kbn.roundInterval`).
fn interval(secs: i64) -> (&'static str, i64) {
    let raw = secs as f64 / 900.0;
    let table: &[(f64, &str, i64)] = &[
        (7.5, "5s", 5),
        (12.5, "10s", 10),
        (17.5, "15s", 15),
        (25.0, "20s", 20),
        (45.0, "30s", 30),
        (90.0, "1m", 60),
        (210.0, "2m", 120),
        (450.0, "5m", 300),
        (750.0, "10m", 600),
        (1050.0, "15m", 900),
        (1500.0, "20m", 1200),
        (2700.0, "30m", 1800),
        (5400.0, "1h", 3600),
    ];
    table
        .iter()
        .find(|(lim, _, _)| raw < *lim)
        .map(|(_, s, n)| (*s, n * 1000))
        .unwrap_or(("2h", 7_200_000))
}

fn range(now: i64, from_ago: i64, to_ago: i64) -> Range {
    let (from_s, to_s) = (now - from_ago, now - to_ago);
    let (interval, interval_ms) = interval(from_ago - to_ago);
    Range {
        from: rfc3339(from_s),
        to: rfc3339(to_s),
        from_s,
        to_s,
        interval,
        interval_ms,
    }
}

#[test]
#[ignore = "run by scripts/bench/fleet.sh"]
fn expand_provisioned_sql_for_the_fleet_bench() {
    let out_path = std::env::var("FLEET_QUERIES_OUT").expect("FLEET_QUERIES_OUT");
    let site = std::env::var("FLEET_QUERIES_SITE").unwrap_or_else(|_| "site-00001".into());
    let ranges = std::env::var("FLEET_QUERIES_RANGES").unwrap_or_else(|_| "6h,24h,7d".into());
    let ranges: Vec<(String, i64)> = ranges
        .split(',')
        .map(|r| {
            let r = r.trim();
            (
                r.to_string(),
                sitewatch_e2e::grafana::macros::duration(r) as i64,
            )
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let vars = BTreeMap::from([
        ("site", site),
        ("watermark", "90".to_string()),
        ("skew_secs", "300".to_string()),
    ]);
    let mut out = std::fs::File::create(&out_path).expect("create FLEET_QUERIES_OUT");
    let mut n = 0;
    let mut emit = |q: &Raw, label: &str, r: &Range| {
        let sql = expand(&q.text, &vars, r);
        assert!(!sql.contains('$'), "{}: unexpanded: {sql}", q.origin);
        let line = json!({
            "dashboard": q.dashboard,
            "title": q.title,
            "origin": q.origin,
            "range": label,
            "sql": sql,
        });
        writeln!(out, "{line}").expect("write");
        n += 1;
    };
    for q in dashboards().iter().chain(alert_rules().iter()) {
        if let Some((from, to)) = q.rule_range {
            emit(q, &format!("rule {}s", from - to), &range(now, from, to));
        } else if q.text.contains("$__") {
            for (label, secs) in &ranges {
                emit(q, label, &range(now, *secs, 0));
            }
        } else {
            emit(q, "-", &range(now, 6 * 3600, 0));
        }
    }
    println!("{n} queries written to {out_path}");
}

#[test]
fn interval_rounds_like_grafana() {
    assert_eq!(interval(6 * 3600).0, "20s");
    assert_eq!(interval(24 * 3600).0, "2m");
    assert_eq!(interval(7 * 86400).0, "10m");
}
