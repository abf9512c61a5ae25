//! Proof of the Grafana provisioning in `grafana/` (Grafana itself cannot
//! run here).
//!
//! * `provisioning_files_are_valid`: every data source, dashboard provider,
//!   dashboard and alert file parses and has the fields Grafana's
//!   provisioning requires; uids are unique and every data source uid a
//!   panel, variable or rule uses is provisioned; every panel has a
//!   `gridPos` and targets; every `$variable` a query uses is defined.
//! * `every_sql_query_runs_read_only_against_bridge_data`: the real bridge
//!   fills a real PostgreSQL from a real agent plus crafted wire messages
//!   (one site offline through its Last Will, one site with a full disk, a
//!   failed mount, a sequence gap and agent drops, one healthy site, one
//!   site with stalled / auth / frozen / ok cameras, a SMART critical disk
//!   and events, one site whose clock is a year behind). Every
//!   SQL query of every panel, variable and alert rule is expanded the way
//!   Grafana's PostgreSQL data source expands it (template variables, then
//!   the macros of `pkg/tsdb/grafana-postgresql-datasource/macros.go`) and
//!   run through `psql` as a LOGIN user that only has the `sitewatch_grafana`
//!   role of bridge migration 0003; the rows are checked against the
//!   scenario, and the alert thresholds are applied to the rule results.
//!   That user cannot write.
//! * Loki queries are checked for syntax only (balanced brackets and
//!   quotes, well-formed label matchers on labels the bridge sets): no
//!   LogQL engine is available here.
//!
//! YAML is read with python3's PyYAML (`python3 -c 'import yaml'`), so no
//! YAML crate is needed. The pure helpers (macro expansion, LogQL check,
//! CSV, alert thresholds) live in `sitewatch_e2e::grafana` with their own
//! unit tests; the panel expectations are a table ([`panels`]), so a
//! failing panel names itself.

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

fn publish(broker: &Mosquitto, topic: &str, payload: &str, retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port().to_string(),
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        payload,
    ]);
    if retain {
        cmd.arg("-r");
    }
    let st = cmd.status().expect("run mosquitto_pub (mosquitto-clients)");
    assert!(st.success(), "mosquitto_pub {topic}");
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
            "site_id = \"site-online\"\n\n[mqtt]\nurl = \"{}\"\n\n[heartbeat]\ninterval_secs = 1\n\n\
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

    // Crafted wire messages (docs/wire.md) for the other two sites.
    let now_ms = now_s() * 1000;
    let status = |site: &str, seq: u64, ts: i64, state: &str, reason: Option<&str>| {
        let reason = reason
            .map(|r| format!(",\"reason\":\"{r}\""))
            .unwrap_or_default();
        format!(
            "{{\"v\":1,\"site\":\"{site}\",\"boot\":\"b0000000000000001\",\"seq\":{seq},\"ts\":{ts},\
             \"state\":\"{state}\"{reason},\"session\":1,\"agent_version\":\"0.1.0\",\"heartbeat_secs\":30}}"
        )
    };
    let heartbeat = |site: &str, seq: u64, ts: i64, dropped: u64| {
        format!(
            "{{\"v\":1,\"site\":\"{site}\",\"boot\":\"b0000000000000001\",\"seq\":{seq},\"ts\":{ts},\
             \"agent_version\":\"0.1.0\",\"interval_secs\":30,\"uptime_secs\":86400,\"agent_uptime_secs\":600,\
             \"load\":[0.5,0.4,0.3],\"mem_total_bytes\":268435456,\"mem_available_bytes\":134217728,\
             \"agent_rss_bytes\":3145728,\"counters\":{{\"published\":{seq},\"acked\":{seq},\"reconnects\":0,\
             \"connect_errors\":0,\"dropped\":{dropped},\"disk_errors\":0,\"syslog_dropped\":0}}}}"
        )
    };
    let total: u64 = 1_000_000_000_000;
    let mount = |path: &str, avail: u64| {
        let used = total - avail;
        let pct = used as f64 * 100.0 / total as f64;
        format!(
            "{{\"path\":\"{path}\",\"fs_type\":\"ext4\",\"total_bytes\":{total},\"used_bytes\":{used},\
             \"avail_bytes\":{avail},\"used_pct\":{pct:.2},\"inodes_total\":1000,\"inodes_free\":900,\"read_only\":false}}"
        )
    };
    let failed = |path: &str, err: &str| {
        format!(
            "{{\"path\":\"{path}\",\"fs_type\":\"\",\"total_bytes\":0,\"used_bytes\":0,\"avail_bytes\":0,\
             \"used_pct\":0,\"inodes_total\":0,\"inodes_free\":0,\"read_only\":false,\"error\":\"{err}\"}}"
        )
    };
    let disk = |site: &str, seq: u64, ts: i64, mounts: &[String]| {
        format!(
            "{{\"v\":1,\"site\":\"{site}\",\"boot\":\"b0000000000000001\",\"seq\":{seq},\"ts\":{ts},\
             \"mounts\":[{}]}}",
            mounts.join(",")
        )
    };
    let t = |site: &str, kind: &str| format!("sitewatch/v1/{site}/{kind}");

    // site-down: online with a half-full disk, then its Last Will.
    publish(
        &broker,
        &t("site-down", "status"),
        &status("site-down", 1, now_ms - 600_000, "online", None),
        true,
    );
    publish(
        &broker,
        &t("site-down", "heartbeat"),
        &heartbeat("site-down", 2, now_ms - 590_000, 0),
        false,
    );
    publish(
        &broker,
        &t("site-down", "disk"),
        &disk(
            "site-down",
            3,
            now_ms - 580_000,
            &[mount("/srv/recordings", total / 2)],
        ),
        false,
    );
    // site-disk: online; "/" fills up (96.5 % now, 2 GB more every 15 min
    // over the last hour), the recording disk is not mounted; one heartbeat
    // then a gap of 12 (seq 8..19 never arrive) and 5 messages dropped by
    // the agent.
    publish(
        &broker,
        &t("site-disk", "status"),
        &status("site-disk", 1, now_ms - 4_000_000, "online", None),
        true,
    );
    publish(
        &broker,
        &t("site-disk", "heartbeat"),
        &heartbeat("site-disk", 2, now_ms - 3_990_000, 0),
        false,
    );
    for i in 0..5u64 {
        let avail = total / 1000 * 35 + (4 - i) * 2_000_000_000;
        let ts = now_ms - 3_600_000 + i as i64 * 900_000;
        publish(
            &broker,
            &t("site-disk", "disk"),
            &disk(
                "site-disk",
                3 + i,
                ts,
                &[mount("/", avail), failed("/srv/recordings", "not_mounted")],
            ),
            false,
        );
    }
    publish(
        &broker,
        &t("site-disk", "heartbeat"),
        &heartbeat("site-disk", 20, now_ms - 1_000, 5),
        false,
    );
    // site-cams (correct clock, contiguous seqs 1..19 so no gap): four
    // cameras, three disks and their events, as an agent reports them
    // (docs/wire.md; shapes of wire/vectors/stream-*.json, smart-*.json,
    // event-*.json). gate is ok; lobby went from ok to stalled 20 min ago;
    // yard is frozen for 40 min; dahua-ch1 refuses the password for 4 min.
    // sda is SMART critical, sdb and nvme0n1 are ok.
    let boot = "b0000000000000001";
    let stream = |seq: u64, ago_s: i64, camera: &str, class: &str, failures: u32| {
        let ts = now_ms - ago_s * 1000;
        let figures = match class {
            "ok" => ",\"ttff_ms\":80,\"ttfk_ms\":80,\"codec\":\"avc1.42C01E\",\"width\":640,\"height\":360,\
                     \"fps\":25.0,\"fps_wall\":24.875,\"bitrate_kbps\":1320,\"keyframe_interval_s\":2.0,\
                     \"frames\":200,\"lost_packets\":0,\"rtp_wall_ratio\":1.0"
                .to_string(),
            "frozen" => ",\"ttff_ms\":90,\"codec\":\"avc1.42C01E\",\"width\":1920,\"height\":1080,\
                         \"fps\":25.0,\"fps_wall\":25.0,\"bitrate_kbps\":40,\"frames\":200,\"rtp_wall_ratio\":0.01"
                .to_string(),
            "stalled" => ",\"ttff_ms\":120,\"codec\":\"avc1.640028\",\"width\":1920,\"height\":1080,\
                          \"fps\":3.5,\"fps_wall\":3.5,\"bitrate_kbps\":210,\"frames\":7,\"rtp_wall_ratio\":0.2"
                .to_string(),
            "auth" => ",\"status_code\":401".to_string(),
            other => panic!("class {other}"),
        };
        format!(
            "{{\"v\":1,\"site\":\"site-cams\",\"boot\":\"{boot}\",\"seq\":{seq},\"ts\":{ts},\
             \"camera\":\"{camera}\",\"url\":\"rtsp://192.168.1.64:554/{camera}\",\"transport\":\"tcp\",\
             \"class\":\"{class}\",\"warnings\":[],\"detail\":\"{class} in the test scenario\",\
             \"started\":{},\"probe_ms\":8000,\"failures\":{failures}{figures}}}",
            ts - 9000
        )
    };
    let smart = |seq: u64, ago_s: i64, device: &str, verdict: &str| {
        let ts = now_ms - ago_s * 1000;
        let body = match verdict {
            "critical" => "\"protocol\":\"ata\",\"source\":\"native\",\"state\":\"read\",\"verdict\":\"critical\",\
                \"reasons\":[{\"code\":\"pending_growing\",\"level\":\"critical\",\"detail\":\"16 sectors pending reallocation, 4 more than at the last reading\"},\
                {\"code\":\"reallocated_stable\",\"level\":\"warning\",\"detail\":\"8 reallocated sectors, unchanged\"}],\
                \"model\":\"ST4000VX016-3CV104\",\"serial\":\"ZW60ABCD\",\"firmware\":\"CV11\",\"capacity_bytes\":4000787030016,\
                \"temperature_c\":41,\"power_on_hours\":25760,\"reallocated\":8,\"pending\":16,\"uncorrectable\":0,\"crc_errors\":0,\
                \"attributes\":[{\"id\":5,\"name\":\"Reallocated_Sector_Ct\",\"value\":100,\"worst\":100,\"thresh\":36,\"raw\":8,\"prefail\":true},\
                {\"id\":197,\"name\":\"Current_Pending_Sector\",\"value\":100,\"worst\":100,\"raw\":16,\"prefail\":false}]",
            "ok" if device.starts_with("nvme") => "\"protocol\":\"nvme\",\"source\":\"native\",\"state\":\"read\",\"verdict\":\"ok\",\
                \"reasons\":[],\"model\":\"WD Blue SN570\",\"serial\":\"SN570X1\",\"firmware\":\"234110WD\",\
                \"temperature_c\":38,\"power_on_hours\":4100,\"nvme\":{\"critical_warning\":0,\"available_spare\":100,\
                \"spare_threshold\":10,\"percentage_used\":3,\"media_errors\":0,\"unsafe_shutdowns\":5,\
                \"error_log_entries\":0,\"power_cycles\":40,\"data_units_written\":123456}",
            "ok" => "\"protocol\":\"ata\",\"source\":\"native\",\"state\":\"read\",\"verdict\":\"ok\",\"reasons\":[],\
                \"model\":\"WD40PURZ\",\"serial\":\"WXB1A2\",\"temperature_c\":35,\"power_on_hours\":9000,\
                \"reallocated\":0,\"pending\":0,\"uncorrectable\":0,\"crc_errors\":0,\"attributes\":[]",
            other => panic!("verdict {other}"),
        };
        format!(
            "{{\"v\":1,\"site\":\"site-cams\",\"boot\":\"{boot}\",\"seq\":{seq},\"ts\":{ts},\
             \"device\":\"{device}\",\"path\":\"/dev/{device}\",{body}}}"
        )
    };
    let event = |seq: u64,
                 ago_s: i64,
                 event: &str,
                 severity: &str,
                 subject: &str,
                 from: &str,
                 to: &str| {
        format!(
            "{{\"v\":1,\"site\":\"site-cams\",\"boot\":\"{boot}\",\"seq\":{seq},\"ts\":{},\
             \"event\":\"{event}\",\"severity\":\"{severity}\",\"subject\":\"{subject}\",\
             \"from\":\"{from}\",\"to\":\"{to}\",\"message\":\"{subject} went from {from} to {to}\",\"numbers\":{{}}}}",
            now_ms - ago_s * 1000
        )
    };
    let cams = |kind: &str, name: &str| format!("sitewatch/v1/site-cams/{kind}/{name}");
    publish(
        &broker,
        &t("site-cams", "status"),
        &status("site-cams", 1, now_ms - 3_000_000, "online", None),
        true,
    );
    publish(
        &broker,
        &t("site-cams", "heartbeat"),
        &heartbeat("site-cams", 2, now_ms - 2_990_000, 0),
        false,
    );
    for (seq, ago, camera, class, failures) in [
        (3, 2400, "gate", "ok", 0),
        (4, 2400, "lobby", "ok", 0),
        (5, 2400, "yard", "frozen", 1),
    ] {
        publish(
            &broker,
            &cams("stream", camera),
            &stream(seq, ago, camera, class, failures),
            true,
        );
    }
    publish(
        &broker,
        &cams("smart", "sda"),
        &smart(6, 1800, "sda", "critical"),
        true,
    );
    publish(
        &broker,
        &cams("smart", "sdb"),
        &smart(7, 1800, "sdb", "ok"),
        true,
    );
    publish(
        &broker,
        &cams("smart", "nvme0n1"),
        &smart(8, 1800, "nvme0n1", "ok"),
        true,
    );
    publish(
        &broker,
        &cams("stream", "lobby"),
        &stream(9, 1200, "lobby", "stalled", 1),
        true,
    );
    let ev = t("site-cams", "event");
    publish(
        &broker,
        &ev,
        &event(
            10,
            1200,
            "camera_down",
            "critical",
            "lobby",
            "ok",
            "stalled",
        ),
        false,
    );
    publish(
        &broker,
        &ev,
        &event(
            11,
            1800,
            "disk_verdict",
            "critical",
            "sda",
            "warning",
            "critical",
        ),
        false,
    );
    publish(
        &broker,
        &cams("stream", "dahua-ch1"),
        &stream(12, 240, "dahua-ch1", "auth", 1),
        true,
    );
    publish(
        &broker,
        &ev,
        &event(
            13,
            240,
            "camera_down",
            "critical",
            "dahua-ch1",
            "ok",
            "auth",
        ),
        false,
    );
    publish(
        &broker,
        &ev,
        &event(
            14,
            2400,
            "camera_degraded",
            "warning",
            "yard",
            "ok",
            "frozen",
        ),
        false,
    );
    for (seq, camera, class, failures) in [
        (15, "gate", "ok", 0),
        (16, "lobby", "stalled", 5),
        (17, "yard", "frozen", 9),
        (18, "dahua-ch1", "auth", 2),
    ] {
        publish(
            &broker,
            &cams("stream", camera),
            &stream(seq, 60, camera, class, failures),
            true,
        );
    }
    publish(
        &broker,
        &t("site-cams", "heartbeat"),
        &heartbeat("site-cams", 19, now_ms - 1_000, 0),
        false,
    );
    // site-skew: a gateway that booted with a date a year behind (no
    // battery-backed clock, NTP not synced yet); its heartbeat says so.
    let year_ms = 365 * 86_400_000;
    publish(
        &broker,
        &t("site-skew", "status"),
        &status("site-skew", 1, now_ms - year_ms, "online", None),
        true,
    );
    publish(
        &broker,
        &t("site-skew", "heartbeat"),
        &heartbeat("site-skew", 2, now_ms - year_ms + 1_000, 0).replacen(
            "\"counters\"",
            "\"clock\":\"before_build\",\"counters\"",
            1,
        ),
        false,
    );
    // Something the bridge refuses.
    publish(&broker, &t("site-disk", "heartbeat"), "{not json", false);
    // The Will, last.
    publish(
        &broker,
        &t("site-down", "status"),
        &status("site-down", 0, now_ms - 500_000, "offline", Some("lost")),
        true,
    );

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
            && sql("select count(*) from events") == "4"
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
    check_panels(&res, &panels());

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

// ---------------------------------------------------------------------
// What each panel and alert rule must show for the scenario.

const FLEET: &str = "sitewatch-fleet";
const SITE: &str = "sitewatch-site";
const ALERT: &str = "alert";

/// Every query's rows, by dashboard, title and site (`""` when the query
/// has no `$site`), and each alert rule's firing label sets.
struct Results {
    rows: BTreeMap<String, Rows>,
    firing: BTreeMap<String, Vec<String>>,
}

impl Results {
    fn r(&self, dash: &str, title: &str, site: &str) -> &Rows {
        self.rows
            .get(&format!("{dash}|{title}|{site}"))
            .unwrap_or_else(|| panic!("no query {dash}|{title}|{site}"))
    }

    fn fires(&self, title: &str) -> Vec<String> {
        self.firing
            .get(title)
            .cloned()
            .unwrap_or_else(|| panic!("rule {title}"))
    }

    /// Whether any query of this panel or rule ran.
    fn has(&self, dash: &str, title: &str) -> bool {
        let prefix = format!("{dash}|{title}|");
        self.rows.keys().any(|k| k.starts_with(&prefix))
    }
}

/// One panel (or alert rule) and what its rows must say.
struct Panel {
    dashboard: &'static str,
    title: &'static str,
    check: fn(&Results),
}

/// Runs every panel's check, each on its own: a failure names its panel,
/// and one failing panel does not hide the others.
fn check_panels(res: &Results, panels: &[Panel]) {
    let mut failed = Vec::new();
    for p in panels {
        let name = format!("{} / {}", p.dashboard, p.title);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(res.has(p.dashboard, p.title), "no such panel was queried");
            (p.check)(res)
        }));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("panel {name}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} panel checks failed:\n{}",
        failed.len(),
        panels.len(),
        failed.join("\n")
    );
}

/// The table: each panel's expectations for the scenario.
fn panels() -> Vec<Panel> {
    vec![
        // Fleet overview.
        Panel {
            dashboard: FLEET,
            title: "Bridges (share-group sessions)",
            // The grafana bridge has no share group; the rows inserted
            // before the queries ran are one live, one dead and drained,
            // one dead.
            check: |res| {
                let bridges = res.r(FLEET, "Bridges (share-group sessions)", "");
                assert_eq!(
                    bridges.column("bridge"),
                    ["b-dead", "b-drained", "b-live"],
                    "gone first"
                );
                assert_eq!(bridges.column("state"), ["gone", "gone_drained", "up"]);
                assert_eq!(bridges.get(1, "taken_over_by"), "b-live");
                assert_eq!(bridges.get(1, "taken_over_messages"), "36");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites now",
            check: |res| {
                let now = res.r(FLEET, "Sites now", "");
                assert_eq!(
                    (
                        now.get(0, "offline"),
                        now.get(0, "stale"),
                        now.get(0, "online")
                    ),
                    ("1", "0", "4")
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites (worst first)",
            check: |res| {
                let sites = res.r(FLEET, "Sites (worst first)", "");
                assert_eq!(
                    sites.column("site"),
                    [
                        "site-down",
                        "site-disk",
                        "site-cams",
                        "site-online",
                        "site-skew"
                    ],
                    "worst first: offline, failed mount, SMART critical and cameras down, then the rest"
                );
                assert_eq!(sites.get(0, "state"), "offline");
                assert_eq!(sites.get(0, "reason"), "lost");
                assert_eq!(sites.get(1, "failed_mounts"), "1");
                assert_eq!(sites.get(1, "missing_messages"), "12");
                assert_eq!(sites.get(2, "state"), "online");
                assert_eq!(sites.get(2, "cameras_down"), "2");
                assert_eq!(sites.get(2, "cameras_degraded"), "1");
                assert_eq!(sites.get(2, "smart_critical"), "1");
                assert_eq!(sites.get(2, "smart_warning"), "0");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Disks failed, read-only or above the watermark",
            check: |res| {
                let disks = res.r(FLEET, "Disks failed, read-only or above the watermark", "");
                let disk_rows: Vec<String> = (0..disks.rows.len())
                    .map(|i| {
                        format!(
                            "{} {} {}",
                            disks.get(i, "site"),
                            disks.get(i, "path"),
                            disks.get(i, "problem")
                        )
                    })
                    .collect();
                assert_eq!(
                    disk_rows,
                    [
                        "site-disk /srv/recordings not_mounted",
                        "site-disk / above_watermark"
                    ]
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites with failed or full disks",
            check: |res| {
                assert_eq!(
                    res.r(FLEET, "Sites with failed or full disks", "")
                        .get(0, "sites"),
                    "1"
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sequence gaps and agent drops",
            check: |res| {
                let gaps = res.r(FLEET, "Sequence gaps and agent drops", "");
                assert_eq!(
                    gaps.column("site"),
                    ["site-disk"],
                    "only the site with a gap"
                );
                assert_eq!(gaps.get(0, "missing_current_boot"), "12");
                assert_eq!(gaps.get(0, "dropped"), "5");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Site availability",
            check: |res| {
                let timeline = res.r(FLEET, "Site availability", "");
                let last_down = timeline
                    .rows
                    .iter()
                    .rev()
                    .find(|row| row[timeline.col("metric")] == "site-down")
                    .expect("site-down in the timeline");
                assert_eq!(last_down[timeline.col("up")], "0", "site-down ends offline");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Rejected messages",
            check: |res| {
                assert_eq!(
                    res.r(FLEET, "Rejected messages", "").get(0, "rejected"),
                    "1"
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Latest rejected messages",
            check: |res| {
                assert_eq!(
                    res.r(FLEET, "Latest rejected messages", "")
                        .get(0, "reason"),
                    "malformed"
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Last message stored",
            check: |res| {
                let ingest = res.r(FLEET, "Last message stored", "");
                assert!(
                    ingest
                        .get(0, "seconds_since_last_heartbeat")
                        .parse::<i64>()
                        .unwrap()
                        < 60
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Cameras now",
            check: |res| {
                let cams_now = res.r(FLEET, "Cameras now", "");
                assert_eq!(
                    (
                        cams_now.get(0, "down"),
                        cams_now.get(0, "degraded"),
                        cams_now.get(0, "ok")
                    ),
                    ("2", "1", "1")
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Disks by SMART verdict",
            check: |res| {
                let verdicts = res.r(FLEET, "Disks by SMART verdict", "");
                assert_eq!(
                    (
                        verdicts.get(0, "critical"),
                        verdicts.get(0, "warning"),
                        verdicts.get(0, "unknown"),
                        verdicts.get(0, "ok")
                    ),
                    ("1", "0", "0", "2")
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Cameras not ok (worst first)",
            check: |res| {
                let bad_cams = res.r(FLEET, "Cameras not ok (worst first)", "");
                let bad_rows: Vec<String> = (0..bad_cams.rows.len())
                    .map(|i| {
                        format!(
                            "{} {} {} {}",
                            bad_cams.get(i, "site"),
                            bad_cams.get(i, "camera"),
                            bad_cams.get(i, "class"),
                            bad_cams.get(i, "severity")
                        )
                    })
                    .collect();
                assert_eq!(
                    bad_rows,
                    [
                        "site-cams lobby stalled down",
                        "site-cams dahua-ch1 auth down",
                        "site-cams yard frozen degraded"
                    ],
                    "down before degraded, longest down first; the ok camera is not listed"
                );
                // class_since is the first probe of the class (agent time), not the latest.
                let lobby_for: i64 = bad_cams.get(0, "for_seconds").parse().expect("for_seconds");
                assert!(
                    (1190..1300).contains(&lobby_for),
                    "lobby stalled for {lobby_for} s"
                );
                assert_eq!(bad_cams.get(0, "failures"), "5");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Disks SMART critical or warning",
            check: |res| {
                let smart_bad = res.r(FLEET, "Disks SMART critical or warning", "");
                assert_eq!(smart_bad.column("device"), ["sda"]);
                assert_eq!(smart_bad.get(0, "verdict"), "critical");
                assert_eq!(smart_bad.get(0, "serial"), "ZW60ABCD");
                assert!(
                    smart_bad
                        .get(0, "reasons")
                        .starts_with("critical pending_growing: 16 sectors pending"),
                    "{}",
                    smart_bad.get(0, "reasons")
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Recent events",
            check: |res| {
                let recent = res.r(FLEET, "Recent events", "");
                assert_eq!(
                    recent.column("subject"),
                    ["dahua-ch1", "lobby", "sda", "yard"],
                    "newest first"
                );
                assert_eq!(recent.get(0, "to_state"), "auth");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Clock skew per site",
            check: |res| {
                let skews = res.r(FLEET, "Clock skew per site", "");
                assert_eq!(skews.get(0, "site"), "site-skew", "the skewed site first");
                assert_eq!(skews.get(0, "flag"), "beyond_bound");
                let skew_s: f64 = skews.get(0, "skew_seconds").parse().expect("skew");
                assert!(
                    (-365.0 * 86400.0 - 120.0..-365.0 * 86400.0 + 120.0).contains(&skew_s),
                    "site-skew is a year behind: {skew_s}"
                );
                let flags: BTreeMap<&str, &str> = skews
                    .column("site")
                    .into_iter()
                    .zip(skews.column("flag"))
                    .collect();
                assert_eq!(
                    flags.get("site-down"),
                    Some(&"site_not_online"),
                    "{flags:?}"
                );
                for ok in ["site-cams", "site-disk", "site-online"] {
                    assert_eq!(flags.get(ok), Some(&"ok"), "{flags:?}");
                }
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites with clock skew",
            check: |res| {
                assert_eq!(
                    res.r(FLEET, "Sites with clock skew", "").get(0, "sites"),
                    "1"
                );
            },
        },
        // Site detail.
        Panel {
            dashboard: SITE,
            title: "variable site",
            check: |res| {
                let site_var = res.r(SITE, "variable site", "site-disk");
                assert_eq!(
                    site_var.column("site"),
                    [
                        "site-cams",
                        "site-disk",
                        "site-down",
                        "site-online",
                        "site-skew"
                    ]
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "Days until full (trend of the time range)",
            check: |res| {
                let forecast = res.r(
                    SITE,
                    "Days until full (trend of the time range)",
                    "site-disk",
                );
                assert_eq!(forecast.column("path"), ["/"]);
                let days: f64 = forecast.get(0, "days_until_full").parse().expect("days");
                // 35 GB left, 192 GB more used per day: 0.18 days.
                assert!((0.17..=0.19).contains(&days), "days until full {days}");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Mounts now",
            check: |res| {
                let mounts = res.r(SITE, "Mounts now", "site-disk");
                assert_eq!(mounts.get(0, "error"), "not_mounted");
                let ok_mounts = res.r(SITE, "Mounts now", "site-online");
                assert_eq!(ok_mounts.column("path"), ["/dev/shm"]);
                assert_eq!(ok_mounts.get(0, "error"), "");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Load",
            check: |res| assert!(!res.r(SITE, "Load", "site-online").rows.is_empty()),
        },
        Panel {
            dashboard: SITE,
            title: "Memory",
            check: |res| assert!(!res.r(SITE, "Memory", "site-online").rows.is_empty()),
        },
        Panel {
            dashboard: SITE,
            title: "Disk used % per mount",
            check: |res| {
                assert_eq!(
                    res.r(SITE, "Disk used % per mount", "site-disk").rows.len(),
                    5
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "Status events",
            check: |res| {
                let events = res.r(SITE, "Status events", "site-down");
                assert_eq!(events.get(0, "reason"), "lost");
            },
        },
        Panel {
            dashboard: SITE,
            title: "State",
            check: |res| {
                assert_eq!(res.r(SITE, "State", "site-down").get(0, "state"), "offline");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Cameras now",
            check: |res| {
                let site_cams = res.r(SITE, "Cameras now", "site-cams");
                assert_eq!(
                    site_cams.column("camera"),
                    ["lobby", "dahua-ch1", "yard", "gate"]
                );
                assert_eq!(site_cams.get(3, "resolution"), "640x360");
                assert_eq!(site_cams.get(3, "fps"), "25");
                assert!(res.r(SITE, "Cameras now", "site-online").rows.is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "Camera class",
            check: |res| {
                let timeline = res.r(SITE, "Camera class", "site-cams");
                let mut classes: Vec<String> = timeline
                    .rows
                    .iter()
                    .map(|row| {
                        format!(
                            "{}={}",
                            row[timeline.col("metric")],
                            row[timeline.col("class")]
                        )
                    })
                    .collect();
                classes.sort();
                classes.dedup();
                assert_eq!(
                    classes,
                    ["dahua-ch1=14", "gate=0", "lobby=0", "lobby=19", "yard=2"],
                    "class codes of the value mappings (ok 0, frozen 2, auth 14, stalled 19)"
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "Camera fps",
            check: |res| {
                let fps = res.r(SITE, "Camera fps", "site-cams");
                assert_eq!(fps.rows.len(), 9, "one row per probe, null when no frames");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Camera bitrate",
            check: |res| {
                assert_eq!(res.r(SITE, "Camera bitrate", "site-cams").rows.len(), 9);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Disks now (SMART)",
            check: |res| {
                let disks_now = res.r(SITE, "Disks now (SMART)", "site-cams");
                assert_eq!(disks_now.column("device"), ["sda", "nvme0n1", "sdb"]);
                assert_eq!(disks_now.get(0, "pending"), "16");
                assert_eq!(disks_now.get(0, "reallocated"), "8");
                assert_eq!(disks_now.get(0, "power_on_hours"), "25760");
                assert_eq!(disks_now.get(1, "nvme_percentage_used"), "3");
                assert_eq!(disks_now.get(1, "nvme_available_spare"), "100");
            },
        },
        Panel {
            dashboard: SITE,
            title: "SMART verdict per disk",
            check: |res| {
                let verdict_tl = res.r(SITE, "SMART verdict per disk", "site-cams");
                assert_eq!(verdict_tl.rows.len(), 3);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Disk temperature",
            check: |res| {
                assert_eq!(res.r(SITE, "Disk temperature", "site-cams").rows.len(), 3);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Bad sectors and link errors (ATA)",
            check: |res| {
                assert_eq!(
                    res.r(SITE, "Bad sectors and link errors (ATA)", "site-cams")
                        .rows
                        .len(),
                    2,
                    "sda and sdb, not the NVMe disk"
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "NVMe wear and spare",
            check: |res| {
                let nvme = res.r(SITE, "NVMe wear and spare", "site-cams");
                assert_eq!(nvme.column("metric"), ["nvme0n1"]);
                assert_eq!(nvme.get(0, "percentage_used"), "3");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Power-on hours",
            check: |res| {
                assert_eq!(res.r(SITE, "Power-on hours", "site-cams").rows.len(), 3);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Events of $site",
            check: |res| {
                assert_eq!(res.r(SITE, "Events of $site", "site-cams").rows.len(), 4);
                assert!(res.r(SITE, "Events of $site", "site-disk").rows.is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "Clock of $site",
            check: |res| {
                let clock = res.r(SITE, "Clock of $site", "site-skew");
                assert_eq!(clock.get(0, "flag"), "beyond_bound");
                assert_eq!(
                    res.r(SITE, "Clock of $site", "site-cams").get(0, "flag"),
                    "ok"
                );
            },
        },
        // Alert rules, with their thresholds applied.
        Panel {
            dashboard: ALERT,
            title: "Site offline or stale",
            check: |res| {
                assert_eq!(
                    res.r(ALERT, "Site offline or stale", "").column("site"),
                    ["site-down"],
                    "the down rule sees only the offline site (it fires once it has been down SITE_DOWN_MINUTES)"
                );
                assert!(
                    res.fires("Site offline or stale").is_empty(),
                    "down for seconds only, threshold is minutes"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Disk above watermark",
            check: |res| assert_eq!(res.fires("Disk above watermark"), ["site=site-disk,path=/"]),
        },
        Panel {
            dashboard: ALERT,
            title: "Disk forecast full",
            check: |res| assert_eq!(res.fires("Disk forecast full"), ["site=site-disk,path=/"]),
        },
        Panel {
            dashboard: ALERT,
            title: "Mount failed or read-only",
            check: |res| {
                assert_eq!(
                    res.fires("Mount failed or read-only"),
                    ["site=site-disk,path=/srv/recordings,problem=not_mounted"]
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Bridge not ingesting",
            check: |res| {
                assert!(res.fires("Bridge not ingesting").is_empty());
                let stalled = res.r(ALERT, "Bridge not ingesting", "");
                assert!(
                    stalled
                        .get(0, "minutes_since_heartbeat")
                        .parse::<f64>()
                        .unwrap()
                        < 1.0
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Bridge gone, session not drained",
            check: |res| {
                assert_eq!(
                    res.fires("Bridge gone, session not drained"),
                    ["bridge=b-dead"],
                    "silent 5 min and not drained; the drained and the live one do not fire"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Messages missing (sequence gaps)",
            check: |res| {
                assert_eq!(
                    res.fires("Messages missing (sequence gaps)"),
                    ["site=site-disk"],
                    "12 > GAP_MESSAGES=10"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Camera down",
            check: |res| {
                let mut down_rows = res.r(ALERT, "Camera down", "").column("camera");
                down_rows.sort_unstable();
                assert_eq!(
                    down_rows,
                    ["dahua-ch1", "lobby"],
                    "the rule sees both down cameras of the online site"
                );
                assert_eq!(
                    res.fires("Camera down"),
                    ["site=site-cams,camera=lobby,class=stalled"],
                    "stalled for 20 min > CAMERA_DOWN_MINUTES=10; auth for 4 min not yet; frozen is not down"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Camera degraded",
            check: |res| {
                assert_eq!(
                    res.fires("Camera degraded"),
                    ["site=site-cams,camera=yard,class=frozen"],
                    "frozen for 40 min > CAMERA_DEGRADED_MINUTES=30"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Disk SMART critical",
            check: |res| {
                assert_eq!(
                    res.fires("Disk SMART critical"),
                    ["site=site-cams,device=sda,reason=pending_growing,serial=ZW60ABCD"]
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Site clock skew",
            check: |res| {
                assert_eq!(
                    res.fires("Site clock skew"),
                    ["site=site-skew"],
                    "a year > CLOCK_SKEW_SECONDS=300; the offline site's Will-stamped skew is not counted"
                );
            },
        },
    ]
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
