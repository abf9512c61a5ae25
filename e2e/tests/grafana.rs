//! Proof of the Grafana provisioning in `grafana/` (Grafana itself cannot
//! run here).
//!
//! * `provisioning_files_are_valid`: every data source, dashboard provider,
//!   dashboard and alert file parses and has the fields Grafana's
//!   provisioning requires; uids are unique and every data source uid a
//!   panel, variable or rule uses is provisioned; every panel has a
//!   `gridPos` and targets; every `$variable` a query uses is defined.
//! * `live_links_on_every_camera_table`: every table panel with a camera
//!   column (from `cameras` or `camera_reachability_now`) links the camera
//!   name to sitewatch-live's page through the dashboard's `live_url`
//!   constant, and the link, interpolated as Grafana does, is the page's
//!   `/?site=S&camera=C` under the reverse proxy's `/live-view`.
//! * `every_sql_query_runs_read_only_against_bridge_data`: the real bridge
//!   fills a real PostgreSQL from a real agent plus crafted wire messages
//!   (one site offline through its Last Will, one site with a full disk, a
//!   failed mount, a sequence gap and agent drops, one healthy site, one
//!   site with stalled / auth / frozen / ok cameras, a SMART critical disk,
//!   events, a UPS on battery and LAN devices down and lossy, one site whose clock is a year behind). Every
//!   SQL query of every panel, variable and alert rule is expanded the way
//!   Grafana's PostgreSQL data source expands it (template variables, then
//!   the macros of `pkg/tsdb/grafana-postgresql-datasource/macros.go`) and
//!   run through `psql` as a LOGIN user that only has the `sitewatch_grafana`
//!   role of bridge migration 0003; the rows are checked against the
//!   scenario, and the alert thresholds are applied to the rule results.
//!   That user cannot write.
//! * `alerting::alerting_notifications_are_valid_and_render`
//!   (`grafana/alerting.rs`): the contact point, notification policy and
//!   message templates, checked as Grafana's provisioning checks them,
//!   routed and grouped, and rendered by Go's own text/template.
//! * Loki queries are checked for syntax only (balanced brackets and
//!   quotes, well-formed label matchers on labels the bridge sets): no
//!   LogQL engine is available here.
//!
//! YAML is read with python3's PyYAML (`python3 -c 'import yaml'`), so no
//! YAML crate is needed. The pure helpers (macro expansion, LogQL check,
//! CSV, alert thresholds) live in `sitewatch_e2e::grafana` with their own
//! unit tests. Here: `scenario` publishes the crafted messages, and
//! `panels` is the table of what each panel and alert rule must show, run
//! panel by panel so that a failing panel names itself.

use anyhow::Context;
use serde_json::Value;
use sitewatch_e2e::grafana::alert::firing;
use sitewatch_e2e::grafana::csv::{parse_csv, Rows};
use sitewatch_e2e::grafana::logql::check_logql;
use sitewatch_e2e::grafana::macros::{duration, expand, variables_used, Range, BUILTINS};
use sitewatch_testkit::{free_port, wait_until, ChildGuard, Mosquitto, Postgres};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "grafana/alerting.rs"]
mod alerting;
#[path = "grafana/panels.rs"]
mod panels;
#[path = "grafana/scenario.rs"]
mod scenario;

use panels::Results;

const WAIT: Duration = Duration::from_secs(30);
const PG_UID: &str = "sitewatch-pg";
const LOKI_UID: &str = "sitewatch-loki";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn grafana_dir() -> PathBuf {
    repo().join("grafana")
}

/// Parses a YAML file with python3's PyYAML into JSON.
fn yaml(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8')), default=str))",
        ])
        .arg(path)
        .output()
        .expect("python3 is needed to read YAML (with PyYAML: apt-get install python3-yaml)");
    assert!(
        out.status.success(),
        "{} is not valid YAML (or PyYAML is missing): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python3 printed JSON")
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()))
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *.{ext} in {}", dir.display());
    v
}

fn s<'a>(v: &'a Value, key: &str, ctx: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{ctx}: `{key}` must be a non-empty string"))
}

fn arr<'a>(v: &'a Value, key: &str, ctx: &str) -> &'a Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{ctx}: `{key}` must be a list"))
}

fn boolean(v: &Value, key: &str, ctx: &str) -> bool {
    v.get(key)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("{ctx}: `{key}` must be true or false"))
}

/// A query found in the provisioning, with where it came from.
#[derive(Debug, Clone)]
struct Query {
    /// `file: panel title / refId`.
    origin: String,
    /// Dashboard uid, or "alert".
    dashboard: String,
    /// Panel or rule title.
    title: String,
    text: String,
    /// Alert rules: relative time range in seconds (from, to).
    range: Option<(i64, i64)>,
    /// Alert rules: threshold (type, value) applied to this query.
    threshold: Option<(String, f64)>,
}

#[derive(Default)]
struct Provisioning {
    sql: Vec<Query>,
    logql: Vec<Query>,
    /// Template variable names by dashboard uid.
    variables: BTreeMap<String, BTreeSet<String>>,
    dashboards: BTreeSet<String>,
}

fn datasource_uid(v: &Value, ctx: &str) -> String {
    match v.get("datasource") {
        Some(Value::Object(o)) => o
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{ctx}: datasource without uid"))
            .to_string(),
        other => panic!("{ctx}: datasource must be {{type, uid}}, got {other:?}"),
    }
}

/// Reads and validates everything under grafana/.
fn load() -> Provisioning {
    let g = grafana_dir();
    let mut p = Provisioning::default();

    // Data sources.
    let mut ds_uids = BTreeMap::new();
    for f in files(&g.join("provisioning/datasources"), "yaml") {
        let ctx = f.display().to_string();
        let doc = yaml(&f);
        assert_eq!(doc["apiVersion"], 1, "{ctx}: apiVersion");
        for ds in arr(&doc, "datasources", &ctx) {
            s(ds, "name", &ctx);
            let uid = s(ds, "uid", &ctx).to_string();
            let ty = s(ds, "type", &ctx).to_string();
            let url = s(ds, "url", &ctx);
            assert!(
                ds_uids.insert(uid.clone(), ty.clone()).is_none(),
                "{ctx}: duplicate data source uid {uid}"
            );
            match ty.as_str() {
                "grafana-postgresql-datasource" => {
                    assert!(
                        !url.contains('/'),
                        "{ctx}: host:port only, the database goes in jsonData.database"
                    );
                    let j = &ds["jsonData"];
                    s(j, "database", &ctx);
                    s(j, "sslmode", &ctx);
                    assert!(
                        j["postgresVersion"].is_u64(),
                        "{ctx}: jsonData.postgresVersion"
                    );
                    assert_eq!(j["timescaledb"], false, "{ctx}: jsonData.timescaledb");
                    assert_eq!(s(ds, "user", &ctx), "sitewatch_grafana", "{ctx}: user");
                    let pw = s(&ds["secureJsonData"], "password", &ctx);
                    assert!(
                        pw == "$SITEWATCH_GRAFANA_DB_PASSWORD"
                            || pw == "${SITEWATCH_GRAFANA_DB_PASSWORD}",
                        "{ctx}: the password must come from the environment, not the file"
                    );
                    assert!(ds.get("password").is_none(), "{ctx}: plain-text password");
                }
                "loki" => {
                    assert_eq!(
                        ds["jsonData"]["httpHeaderName1"], "X-Scope-OrgID",
                        "{ctx}: tenant header"
                    );
                    s(&ds["secureJsonData"], "httpHeaderValue1", &ctx);
                }
                other => panic!("{ctx}: unexpected data source type {other}"),
            }
        }
    }
    assert_eq!(
        ds_uids.get(PG_UID).map(String::as_str),
        Some("grafana-postgresql-datasource")
    );
    assert_eq!(ds_uids.get(LOKI_UID).map(String::as_str), Some("loki"));

    // Dashboard providers.
    for f in files(&g.join("provisioning/dashboards"), "yaml") {
        let ctx = f.display().to_string();
        let doc = yaml(&f);
        assert_eq!(doc["apiVersion"], 1, "{ctx}: apiVersion");
        for pr in arr(&doc, "providers", &ctx) {
            s(pr, "name", &ctx);
            s(pr, "folder", &ctx);
            s(pr, "folderUid", &ctx);
            assert_eq!(s(pr, "type", &ctx), "file");
            boolean(pr, "disableDeletion", &ctx);
            boolean(pr, "allowUiUpdates", &ctx);
            assert!(
                pr["updateIntervalSeconds"].is_u64(),
                "{ctx}: updateIntervalSeconds"
            );
            s(&pr["options"], "path", &ctx);
            boolean(&pr["options"], "foldersFromFilesStructure", &ctx);
        }
    }

    // Dashboards.
    for f in files(&g.join("dashboards"), "json") {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let d = json(&f);
        let uid = s(&d, "uid", &name).to_string();
        assert!(uid.len() <= 40, "{name}: uid longer than 40");
        s(&d, "title", &name);
        assert!(
            p.dashboards.insert(uid.clone()),
            "duplicate dashboard uid {uid}"
        );
        let sv = d["schemaVersion"].as_u64().expect("schemaVersion");
        assert!((36..=41).contains(&sv), "{name}: schemaVersion {sv}");
        let mut vars = BTreeSet::new();
        for v in arr(&d["templating"], "list", &name) {
            let vname = s(v, "name", &name).to_string();
            let ctx = format!("{name}: variable {vname}");
            assert!(vars.insert(vname.clone()), "{ctx}: defined twice");
            if s(v, "type", &ctx) == "query" {
                let ds = datasource_uid(v, &ctx);
                assert!(ds_uids.contains_key(&ds), "{ctx}: unknown data source {ds}");
                let q = match &v["query"] {
                    Value::String(q) => q.clone(),
                    // Loki's variable query: {type: 1 (label values), label, stream}.
                    Value::Object(_) => {
                        assert_eq!(v["query"]["type"], 1, "{ctx}: label values query");
                        format!(
                            "label_values({}, {})",
                            s(&v["query"], "stream", &ctx),
                            s(&v["query"], "label", &ctx)
                        )
                    }
                    other => panic!("{ctx}: query {other:?}"),
                };
                let qu = Query {
                    origin: ctx.clone(),
                    dashboard: uid.clone(),
                    title: format!("variable {vname}"),
                    text: q,
                    range: None,
                    threshold: None,
                };
                if ds == PG_UID {
                    p.sql.push(qu);
                } else {
                    p.logql.push(qu);
                }
            }
        }
        p.variables.insert(uid.clone(), vars);
        let mut ids = BTreeSet::new();
        for panel in arr(&d, "panels", &name) {
            let title = s(panel, "title", &name).to_string();
            let ctx = format!("{name}: panel {title}");
            s(panel, "type", &ctx);
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "{ctx}: duplicate id"
            );
            let gp = &panel["gridPos"];
            let (x, w) = (gp["x"].as_u64(), gp["w"].as_u64());
            assert!(
                gp["h"].as_u64().is_some_and(|h| h > 0)
                    && gp["y"].as_u64().is_some()
                    && x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24),
                "{ctx}: gridPos {gp}"
            );
            if panel["type"] == "text" || panel["type"] == "row" {
                continue;
            }
            let pds = datasource_uid(panel, &ctx);
            assert!(
                ds_uids.contains_key(&pds),
                "{ctx}: unknown data source {pds}"
            );
            let targets = arr(panel, "targets", &ctx);
            assert!(!targets.is_empty(), "{ctx}: no targets");
            for t in targets {
                let r = s(t, "refId", &ctx).to_string();
                let tds = datasource_uid(t, &ctx);
                assert_eq!(tds, pds, "{ctx}: target and panel data source differ");
                let mut q = Query {
                    origin: format!("{ctx} / {r}"),
                    dashboard: uid.clone(),
                    title: title.clone(),
                    text: String::new(),
                    range: None,
                    threshold: None,
                };
                if tds == PG_UID {
                    let fmt = s(t, "format", &ctx);
                    assert!(
                        fmt == "table" || fmt == "time_series",
                        "{ctx}: format {fmt}"
                    );
                    assert_eq!(t["rawQuery"], true, "{ctx}: rawQuery");
                    q.text = s(t, "rawSql", &ctx).to_string();
                    if fmt == "time_series" {
                        assert!(
                            [
                                "\"time\"",
                                "$__timeGroupAlias(",
                                "$__time(",
                                "$__timeEpoch("
                            ]
                            .iter()
                            .any(|t| q.text.contains(t)),
                            "{ctx}: time series without a time column"
                        );
                    }
                    p.sql.push(q);
                } else {
                    q.text = s(t, "expr", &ctx).to_string();
                    p.logql.push(q);
                }
            }
        }
    }

    // Alert rules.
    let alert_file = g.join("provisioning/alerting/sitewatch-rules.yaml");
    let doc = yaml(&alert_file);
    assert_eq!(doc["apiVersion"], 1, "alert rules: apiVersion");
    let mut rule_uids = BTreeSet::new();
    for group in arr(&doc, "groups", "alert rules") {
        let gname = s(group, "name", "alert group").to_string();
        assert!(group["orgId"].is_u64(), "{gname}: orgId");
        s(group, "folder", &gname);
        duration(s(group, "interval", &gname));
        for rule in arr(group, "rules", &gname) {
            let uid = s(rule, "uid", &gname).to_string();
            let ctx = format!("alert rule {uid}");
            assert!(uid.len() <= 40, "{ctx}: uid longer than 40");
            assert!(rule_uids.insert(uid.clone()), "{ctx}: duplicate uid");
            let title = s(rule, "title", &ctx).to_string();
            let cond = s(rule, "condition", &ctx).to_string();
            assert!(
                ["NoData", "Alerting", "OK"].contains(&s(rule, "noDataState", &ctx)),
                "{ctx}: noDataState"
            );
            assert!(
                ["Error", "Alerting", "OK"].contains(&s(rule, "execErrState", &ctx)),
                "{ctx}: execErrState"
            );
            duration(s(rule, "for", &ctx));
            assert!(
                rule["labels"].is_object() && rule["annotations"].is_object(),
                "{ctx}: labels/annotations"
            );
            if let Some(d) = rule["annotations"]["__dashboardUid__"].as_str() {
                assert!(p.dashboards.contains(d), "{ctx}: unknown dashboard {d}");
            }
            let data = arr(rule, "data", &ctx);
            let refs: BTreeSet<&str> = data.iter().map(|d| s(d, "refId", &ctx)).collect();
            assert_eq!(refs.len(), data.len(), "{ctx}: duplicate refId");
            assert!(
                refs.contains(cond.as_str()),
                "{ctx}: condition {cond} is not a refId"
            );
            let mut thresholds = BTreeMap::new();
            for d in data {
                let model = &d["model"];
                let r = s(d, "refId", &ctx);
                assert_eq!(model["refId"].as_str(), Some(r), "{ctx}: model.refId");
                if s(d, "datasourceUid", &ctx) == "__expr__" {
                    let ty = s(model, "type", &ctx);
                    assert!(
                        ["threshold", "math", "reduce", "classic_conditions"].contains(&ty),
                        "{ctx}: type {ty}"
                    );
                    let e = s(model, "expression", &ctx);
                    assert!(refs.iter().any(|r| e.contains(r)), "{ctx}: expression {e}");
                    if ty == "threshold" {
                        let ev = &arr(model, "conditions", &ctx)[0]["evaluator"];
                        let t = s(ev, "type", &ctx).to_string();
                        let v = ev["params"][0].as_f64().expect("threshold param");
                        thresholds.insert(e.to_string(), (t, v));
                    }
                } else {
                    let ds = s(d, "datasourceUid", &ctx);
                    assert_eq!(ds, PG_UID, "{ctx}: data source");
                    let rt = &d["relativeTimeRange"];
                    let range = (
                        rt["from"].as_i64().expect("relativeTimeRange.from"),
                        rt["to"].as_i64().expect("relativeTimeRange.to"),
                    );
                    assert!(range.0 > range.1, "{ctx}: relativeTimeRange");
                    assert_eq!(s(model, "format", &ctx), "table", "{ctx}: format");
                    p.sql.push(Query {
                        origin: format!("{ctx} / {r}"),
                        dashboard: "alert".into(),
                        title: title.clone(),
                        text: s(model, "rawSql", &ctx).to_string(),
                        range: Some(range),
                        threshold: None,
                    });
                }
            }
            // Attach each threshold to the query it reads.
            for q in p
                .sql
                .iter_mut()
                .filter(|q| q.dashboard == "alert" && q.title == title)
            {
                let r = q.origin.rsplit(" / ").next().unwrap().to_string();
                if let Some(t) = thresholds.get(&r) {
                    q.threshold = Some(t.clone());
                }
            }
        }
    }
    p
}

#[test]
fn provisioning_files_are_valid() {
    let p = load();
    assert_eq!(p.dashboards.len(), 3, "fleet, site, logs");
    for q in p.sql.iter().chain(p.logql.iter()) {
        for v in variables_used(&q.text) {
            let known = BUILTINS.contains(&v.as_str())
                || p.variables
                    .get(&q.dashboard)
                    .is_some_and(|vs| vs.contains(&v));
            assert!(known, "{}: unknown variable ${v}", q.origin);
        }
    }
    for q in &p.logql {
        check_logql(&q.text).unwrap_or_else(|e| panic!("{}: {e}: {}", q.origin, q.text));
    }
    println!(
        "{} SQL queries, {} Loki queries (syntax only: no LogQL engine here)",
        p.sql.len(),
        p.logql.len()
    );
}

/// Whether a query's select list has a `camera` column (`camera`,
/// `c.camera`, `... AS camera`), not `cameras_down` and the like.
fn selects_camera(sql: &str) -> bool {
    let lower = sql.to_lowercase();
    let Some(list) = lower
        .split_once("select")
        .and_then(|(_, rest)| rest.split_once("\nfrom ").map(|(l, _)| l.to_owned()))
    else {
        return false;
    };
    list.split(',').any(|item| {
        let item = item.trim();
        item == "camera" || item.ends_with(".camera") || item.ends_with(" as camera")
    })
}

#[test]
fn live_links_on_every_camera_table() {
    let g = grafana_dir();
    let mut linked = Vec::new();
    for f in files(&g.join("dashboards"), "json") {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let d = json(&f);
        let vars = arr(&d["templating"], "list", &name);
        let has_site_var = vars.iter().any(|v| v["name"] == "site");
        for panel in arr(&d, "panels", &name) {
            let title = s(panel, "title", &name).to_string();
            let ctx = format!("{name}: panel {title}");
            let Some(targets) = panel["targets"].as_array() else {
                continue;
            };
            let sql: String = targets
                .iter()
                .filter_map(|t| t["rawSql"].as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let camera_table =
                sql.contains("FROM cameras ") || sql.contains("FROM camera_reachability_now ");
            if panel["type"] != "table" || !camera_table || !selects_camera(&sql) {
                continue;
            }
            let link = arr(&panel["fieldConfig"], "overrides", &ctx)
                .iter()
                .filter(|o| o["matcher"]["options"] == "camera")
                .flat_map(|o| o["properties"].as_array().cloned().unwrap_or_default())
                .filter(|p| p["id"] == "links")
                .flat_map(|p| p["value"].as_array().cloned().unwrap_or_default())
                .find(|l| l["title"] == "Live")
                .unwrap_or_else(|| panic!("{ctx}: no Live link on the camera column"));
            let url = s(&link, "url", &ctx);
            // The dashboard's site variable, else the row's site column.
            let site = if has_site_var {
                "${site}"
            } else {
                assert!(
                    sql.contains("site"),
                    "{ctx}: no $site variable and no site column"
                );
                "${__data.fields.site}"
            };
            assert_eq!(
                url,
                format!("${{live_url:raw}}/?site={site}&camera=${{__value.raw}}"),
                "{ctx}: the live page's /?site=S&camera=C under live_url \
                 (:raw: data links percent-encode variables by default)"
            );
            assert_eq!(link["targetBlank"], true, "{ctx}: opens in a new tab");
            let live = vars
                .iter()
                .find(|v| v["name"] == "live_url")
                .unwrap_or_else(|| panic!("{name}: no live_url variable"));
            assert_eq!(live["type"], "constant", "{name}: live_url");
            let base = s(live, "query", &name);
            assert_eq!(base, "/live-view", "{name}: the documented default");
            // Interpolated as Grafana does for site s1, camera gate: the
            // path the nginx example in live/README.md forwards to the page.
            let href = url
                .replace("${live_url:raw}", base)
                .replace(site, "s1")
                .replace("${__value.raw}", "gate");
            assert_eq!(href, "/live-view/?site=s1&camera=gate", "{ctx}");
            linked.push(format!("{name}: {title}"));
        }
    }
    linked.sort();
    assert_eq!(
        linked,
        [
            "fleet-overview.json: Cameras not ok (worst first)",
            "site-detail.json: Cameras from the centre",
            "site-detail.json: Cameras now",
        ],
        "the camera tables"
    );
    let ops = std::fs::read_to_string(repo().join("docs/ops.md")).expect("docs/ops.md");
    assert!(
        ops.contains("`live_url`"),
        "docs/ops.md explains the live_url variable"
    );
}

// ---------------------------------------------------------------------
// Time ranges (the expansion itself is `sitewatch_e2e::grafana::macros`).

fn rfc3339(unix: i64) -> String {
    sitewatch_testkit::loki::rfc3339(i128::from(unix) * 1_000_000_000)
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The range from `from_ago` to `to_ago` seconds before now, as Grafana
/// sends it for a dashboard or an alert rule.
fn relative_range(from_ago: i64, to_ago: i64) -> Range {
    let now = now_s();
    let (from_s, to_s) = (now - from_ago, now - to_ago);
    Range {
        from: rfc3339(from_s),
        to: rfc3339(to_s),
        from_s,
        to_s,
        interval: "1m",
        interval_ms: 60_000,
    }
}

#[test]
fn range_times_are_rfc3339_utc() {
    assert_eq!(rfc3339(1_500_376_552), "2017-07-18T11:15:52Z");
}

// ---------------------------------------------------------------------
// The scenario.

fn healthz(addr: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Runs SQL through psql as `user` in database `sitewatch`.
fn psql_as(db: &Postgres, user: &str, sql: &str) -> anyhow::Result<Rows> {
    psql_in(db, "sitewatch", user, sql).map(|(rows, _)| rows)
}

/// Runs SQL through psql as `user` in `database`: rows and stderr (notices
/// and warnings).
fn psql_in(db: &Postgres, database: &str, user: &str, sql: &str) -> anyhow::Result<(Rows, String)> {
    let psql = sitewatch_testkit::pg_bindir()?.join("psql");
    let mut cmd = Command::new(psql);
    for v in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSERVICE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd
        .env("LC_ALL", "C")
        .args(["-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!(
            "postgres://{user}@127.0.0.1:{}/{database}",
            db.port()
        ))
        .arg("-c")
        .arg(sql)
        .output()
        .context("running psql")?;
    if !out.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut lines = parse_csv(&String::from_utf8_lossy(&out.stdout));
    if lines.is_empty() {
        // A statement without a result (DDL, DO).
        lines.push(Vec::new());
    }
    let cols = lines.remove(0);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    Ok((Rows { cols, rows: lines }, stderr))
}

#[test]
fn every_sql_query_runs_read_only_against_bridge_data() {
    let prov = load();
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Mosquitto::start().expect("mosquitto");
    let db = Postgres::start().expect("postgres");
    db.create_database("sitewatch").expect("create db");
    let http_port = free_port();
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nurl = \"{}\"\nclient_id = \"bridge-grafana\"\n\n[postgres]\nurl = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n[batch]\nmax_wait_ms = 50\n",
            broker.url(),
            db.database_url("sitewatch"),
        ),
    )
    .expect("bridge config");
    let mut bridge = ChildGuard::spawn(
        Command::new(sitewatch_e2e::bridge_bin())
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info"),
    )
    .expect("spawn bridge");
    let addr = format!("127.0.0.1:{http_port}");
    wait_until(WAIT, "bridge /healthz answers 200", || {
        healthz(&addr) == Some(200)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", bridge.log_contents()));

    // A real agent: the healthy site. Its only disk is a tmpfs that is
    // nearly empty.
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "site_id = \"site-online\"\n\n[mqtt]\nurl = \"{}\"\n\n[heartbeat]\ninterval_secs = 1\n\
             wan_interface = \"lo\"\n\n\
             [disk]\ninterval_secs = 1\nmounts = [\"/dev/shm\"]\n",
            broker.url()
        ),
    )
    .expect("agent config");
    let agent = ChildGuard::spawn(
        Command::new(sitewatch_e2e::agent_bin())
            .arg("--config")
            .arg(&agent_cfg)
            .env("RUST_LOG", "info"),
    )
    .expect("spawn agent");

    // Crafted wire messages (docs/wire.md) for the other sites.
    scenario::publish_scenario(&broker, now_s() * 1000);

    let sql = |q: &str| {
        db.psql_db("sitewatch", q)
            .unwrap_or_else(|e| panic!("{q}: {e:#}"))
    };
    wait_until(WAIT, "scenario stored", || {
        sql("select string_agg(site || '=' || state, ',' order by site) from sites")
            == "site-cams=online,site-disk=online,site-down=offline,site-online=online,site-skew=online"
            && sql("select count(*) from disk_usage where site = 'site-disk'") == "10"
            && sql("select count(*) from heartbeats where site = 'site-disk' and seq = 20") == "1"
            && sql("select count(*) from rejected_messages") == "1"
            && sql("select count(*) from heartbeats where site = 'site-cams' and seq = 19") == "1"
            && sql("select count(*) from camera_probes") == "9"
            && sql("select count(*) from cameras") == "4"
            && sql("select count(*) from smart_readings") == "3"
            && sql("select count(*) from events") == "9"
            && sql("select count(*) from ups_readings") == "7"
            && sql("select count(*) from reach_readings") == "9"
            && sql("select count(*) from heartbeats where site = 'site-skew'") == "1"
            && sql("select count(*) >= 2 from heartbeats where site = 'site-online'") == "t"
            && sql("select count(*) >= 1 from disk_usage where site = 'site-online'") == "t"
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nsites: {}\nrejected: {}\ncounts: {}\nagent:\n{}\nbridge:\n{}",
            sql("select * from sites"),
            sql("select topic, reason, detail from rejected_messages"),
            sql("select (select count(*) from camera_probes) || ' ' || (select count(*) from cameras) \
                 || ' ' || (select count(*) from smart_readings) || ' ' || (select count(*) from events) \
                 || ' ' || (select string_agg(site || ':' || seq, ',') from heartbeats where site like 'site-%' and site <> 'site-online')"),
            agent.log_contents(),
            bridge.log_contents()
        )
    });

    // The read-only login: a user that has only the migration's role.
    sql(
        "INSERT INTO bridge_sessions (client_id, share_group, last_seen, taken_over_at, \
         taken_over_by, taken_over_messages) VALUES \
         ('b-live', 'g', now(), NULL, NULL, 0), \
         ('b-drained', 'g', now() - interval '10 minutes', now() - interval '9 minutes', 'b-live', 36), \
         ('b-dead', 'g', now() - interval '5 minutes', NULL, NULL, 0)",
    );
    // sitewatch-live's probes from the centre (bridge migration 10): every
    // camera of the online site-cams unreachable for 20 min (the rule
    // fires), one of two failing at site-online (no alert), site-down's
    // failing but the site is offline (its own alert), and site-skew's
    // all failing but the rows are stale (sitewatch-live stopped).
    sql(
        "INSERT INTO camera_reachability_now (site, camera, ts, class, class_since, detail, \
         host, url, addr, duration_ms, ddns) VALUES \
         ('site-cams', 'lobby', now() - interval '1 minute', 'tcp_timeout', now() - interval '20 minutes', \
          '203.0.113.7:554: no answer', 'cams.example', 'rtsp://cams.example:554/1', '203.0.113.7', 3000, NULL), \
         ('site-cams', 'gate', now() - interval '2 minutes', 'tcp_timeout', now() - interval '25 minutes', \
          '203.0.113.7:554: no answer', 'cams.example', 'rtsp://cams.example:554/2', '203.0.113.7', 3000, NULL), \
         ('site-online', 'door', now(), 'ok', now() - interval '1 day', 'DESCRIBE ok', \
          'online.example', 'rtsp://online.example:554/1', '198.51.100.2', 40, true), \
         ('site-online', 'till', now(), 'auth', now() - interval '1 hour', 'DESCRIBE 401', \
          'online.example', 'rtsp://online.example:554/2', '198.51.100.2', 45, false), \
         ('site-down', 'cam1', now(), 'dns', now() - interval '1 hour', 'does not resolve', \
          'down.invalid', 'rtsp://down.invalid:554/1', NULL, 2, NULL), \
         ('site-skew', 'cam1', now() - interval '2 hours', 'tcp_refused', now() - interval '3 hours', \
          'refused', 'skew.example', 'rtsp://skew.example:554/1', '192.0.2.9', 1, NULL)",
    );
    sql("INSERT INTO camera_reachability (site, camera, ts, class, detail, host, addr, duration_ms, ddns) \
         SELECT site, camera, ts, class, detail, host, addr, duration_ms, ddns FROM camera_reachability_now");
    sql("CREATE ROLE grafana_test LOGIN IN ROLE sitewatch_grafana");
    assert_eq!(
        sql("select rolcanlogin from pg_roles where rolname = 'sitewatch_grafana'"),
        "f",
        "the role itself is NOLOGIN until the admin says otherwise"
    );

    let mut results: BTreeMap<String, Rows> = BTreeMap::new();
    let mut alert_firing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut runs = 0;
    for q in &prov.sql {
        let (range, sites): (Range, Vec<&str>) = match q.range {
            Some((from, to)) => (relative_range(from, to), vec![""]),
            // Dashboards: last 6 h (to a minute ahead, so that nothing
            // just stored falls outside); the site detail for every site.
            None => (
                relative_range(6 * 3600, -60),
                if q.dashboard == "sitewatch-site" {
                    vec![
                        "site-down",
                        "site-disk",
                        "site-online",
                        "site-cams",
                        "site-skew",
                    ]
                } else {
                    vec![""]
                },
            ),
        };
        for site in sites {
            let vars = BTreeMap::from([
                ("site", site.to_string()),
                ("watermark", "90".to_string()),
                ("skew_secs", "300".to_string()),
            ]);
            let text = expand(&q.text, &vars, &range);
            assert!(!text.contains('$'), "{}: unexpanded: {text}", q.origin);
            let rows = psql_as(&db, "grafana_test", &text)
                .unwrap_or_else(|e| panic!("{} (site {site:?}): {e:#}\n{text}", q.origin));
            runs += 1;
            if let Some(th) = &q.threshold {
                alert_firing.insert(q.title.clone(), firing(&rows, th));
            }
            results.insert(format!("{}|{}|{site}", q.dashboard, q.title), rows);
        }
    }
    let res = Results {
        rows: results,
        firing: alert_firing,
    };

    assert_eq!(
        sql(
            "select count(*) from rejected_messages where topic like 'sitewatch/v1/site-cams/%' \
             or topic like 'sitewatch/v1/site-skew/%'"
        ),
        "0",
        "every crafted stream, smart, event and skewed message is valid"
    );
    panels::check(&res);

    // The read-only role cannot write, create or change anything.
    for w in [
        "INSERT INTO sites (site, first_seen, last_seen) VALUES ('x', now(), now())",
        "UPDATE sites SET state = 'online'",
        "DELETE FROM heartbeats",
        "TRUNCATE rejected_messages",
        "CREATE TABLE grafana_was_here (x int)",
        "DROP VIEW fleet",
        "ALTER TABLE sites ADD COLUMN x int",
    ] {
        let e = psql_as(&db, "grafana_test", w).expect_err(w);
        let e = format!("{e:#}");
        assert!(
            e.contains("permission denied") || e.contains("must be owner"),
            "{w}: {e}"
        );
    }
    assert_eq!(sql("select count(*) from sites"), "5");
    // Default privileges: a table a later migration creates is readable.
    sql("CREATE TABLE later_table (x int); INSERT INTO later_table VALUES (1)");
    assert_eq!(
        psql_as(&db, "grafana_test", "SELECT x FROM later_table")
            .unwrap()
            .rows,
        [["1"]]
    );

    println!(
        "{} SQL queries ({runs} runs incl. the site detail for 5 sites) ran as the read-only role; \
         {} Loki queries syntax-checked only (no LogQL engine here)",
        prov.sql.len(),
        prov.logql.len()
    );
    drop(agent);
    let _ = bridge.terminate();
}

/// Migration 0003 run by a bridge user without CREATEROLE (a database
/// owner, as a careful admin sets it up): it warns instead of failing, so
/// the bridge still starts; and when the admin created the role first, the
/// same migration grants it read access.
#[test]
fn grafana_role_migration_without_createrole() {
    let migration = std::fs::read_to_string(repo().join("bridge/migrations/0003_grafana_role.sql"))
        .expect("migration 0003");
    let db = Postgres::start().expect("postgres");
    let admin = |q: &str| db.psql(q).unwrap_or_else(|e| panic!("{q}: {e:#}"));
    admin("CREATE ROLE bridge_owner LOGIN");
    admin("CREATE DATABASE owned1 OWNER bridge_owner");
    admin("CREATE DATABASE owned2 OWNER bridge_owner");

    // No role yet, and the owner cannot create it: a warning, no error.
    psql_in(&db, "owned1", "bridge_owner", "CREATE TABLE t (x int)").expect("create table");
    let (_, stderr) =
        psql_in(&db, "owned1", "bridge_owner", &migration).expect("migration must not fail");
    assert!(
        stderr.contains("cannot create role sitewatch_grafana"),
        "{stderr}"
    );
    assert_eq!(
        admin("select count(*) from pg_roles where rolname = 'sitewatch_grafana'"),
        "0"
    );

    // The admin created the role beforehand: the owner's migration grants.
    admin("CREATE ROLE sitewatch_grafana NOLOGIN");
    admin("CREATE ROLE grafana_login LOGIN IN ROLE sitewatch_grafana");
    psql_in(
        &db,
        "owned2",
        "bridge_owner",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (7)",
    )
    .expect("table");
    psql_in(&db, "owned2", "bridge_owner", &migration).expect("migration");
    let (rows, _) = psql_in(&db, "owned2", "grafana_login", "SELECT x FROM t").expect("read");
    assert_eq!(rows.rows, [["7"]]);
    psql_in(&db, "owned2", "grafana_login", "DELETE FROM t").expect_err("read-only");
    // Later tables of the owner are readable too (default privileges).
    psql_in(&db, "owned2", "bridge_owner", "CREATE TABLE later (y int)").expect("later");
    psql_in(&db, "owned2", "grafana_login", "SELECT y FROM later").expect("default privileges");
    // Running it again (another database of the same server) is harmless.
    psql_in(&db, "owned1", "bridge_owner", &migration).expect("again");
}
