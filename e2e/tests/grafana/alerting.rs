//! Who gets the alerts: the contact point, notification policy and
//! templates in `grafana/provisioning/alerting/`, checked the way Grafana
//! checks them when it provisions them, and the messages they make,
//! rendered (Grafana itself cannot run here).
//!
//! * Provisioning: each file's keys as Grafana's `pkg/services/provisioning/
//!   alerting` reads them; each integration's required settings after
//!   Grafana's environment interpolation (grafana/alerting
//!   `receivers/{telegram,email,webhook}/config.go`), present with the
//!   environment set and refused with it unset; secrets only from
//!   `${SITEWATCH_...}` variables; no `$` where Grafana would eat it (rule
//!   labels, settings) and no `${` in annotations; the policy tree names
//!   existing contact points, its durations parse and every group_by label
//!   is on every rule the route receives.
//! * Routing: the policy tree is applied to alerts from every rule (first
//!   matching child, recursively, as Alertmanager does) and grouped: when
//!   the centre goes dark (50 sites offline, most of the fleet offline,
//!   bridge not ingesting) exactly two messages go out, not 52.
//! * Templates: every notification template and every rule annotation is
//!   parsed and executed by Go's own text/template (compiled to
//!   WebAssembly, npm `@evertdespiegeleer/go-template`, installed by this
//!   test) with missing keys as errors, against notifications shaped like
//!   Grafana's (grafana/alerting `templates/template_data.go`: Status,
//!   Labels, Annotations, DashboardURL, SilenceURL, ... and the group's
//!   CommonLabels/CommonAnnotations). Only Go's built-in functions are
//!   available there, so the notification templates use no others; rule
//!   annotations' `humanize` is rendered as `printf "%.4g"`.
//! * The rendered example in docs/ops.md is this test's output.
//!
//! Not checked (needs a running Grafana): the HTTP requests Grafana's
//! notifiers send (Telegram's sendMessage, SMTP, the webhook's JSON body).

use serde_json::{json, Map, Value};
use sitewatch_e2e::grafana::provisioning::{
    env_refs, expand_env, prom_duration, template_functions, GO_BUILTINS, RULE_TEMPLATE_FUNCS,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{grafana_dir, repo, yaml};

const GO_TEMPLATE_PKG: &str = "@evertdespiegeleer/go-template";
const GO_TEMPLATE_VERSION: &str = "1.0.2";
/// The registry's integrity of that version (checked after install).
const GO_TEMPLATE_INTEGRITY: &str =
    "sha512-6IitijdmGnmbjJTZo1OQw1yQanOzHU0Nb54oNyehyhfPsRsjJ9ARJ+BkDc8K1qjIzR6eO6Z3w95DQkx8zdWSKg==";
const TELEGRAM_MAX_RUNES: usize = 4096;
const EXTERNAL_URL: &str = "https://grafana.example.com/";
/// 2026-12-06T22:50:00Z, when every sample alert started.
const STARTS_AT_MS: i64 = 1_796_597_400_000;

/// The environment Grafana would run with (values are fakes).
fn test_env(name: &str) -> Option<String> {
    Some(
        match name {
            "SITEWATCH_TELEGRAM_BOT_TOKEN" => "123456:AAE-fake-token",
            "SITEWATCH_TELEGRAM_CHAT_ID" => "-1001234567890",
            "SITEWATCH_ALERT_EMAILS" => "ops@example.com; oncall@example.com",
            "SITEWATCH_ALERT_WEBHOOK_URL" => "https://tickets.example.com/hooks/grafana",
            "SITEWATCH_ALERT_WEBHOOK_TOKEN" => "fake-bearer",
            _ => return None,
        }
        .to_string(),
    )
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Settings that are secrets: they must be exactly one `${SITEWATCH_*}`.
const SECRET_SETTINGS: &[&str] = &[
    "bottoken",
    "password",
    "authorization_credentials",
    "username",
];

// ---------------------------------------------------------------------
// The Go template renderer.

/// Installs the pinned renderer (once, into the tools cache) and returns
/// its directory.
fn renderer_dir() -> PathBuf {
    let base = std::env::var_os("SITEWATCH_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sitewatch/tools"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/sitewatch/tools"))
        })
        .expect("HOME or SITEWATCH_TOOLS_DIR");
    let dir = base.join(format!("go-template-{GO_TEMPLATE_VERSION}"));
    let wasm = dir.join("node_modules/@evertdespiegeleer/go-template/dist/main.wasm");
    let have = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        have("node") && have("npm"),
        "node and npm are needed to render Grafana's Go templates with Go's text/template \
         (WebAssembly): apt-get install nodejs npm"
    );
    if !wasm.exists() {
        std::fs::create_dir_all(&dir).expect("tools dir");
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(format!("{GO_TEMPLATE_PKG}@{GO_TEMPLATE_VERSION}"))
            .output()
            .expect("npm install");
        assert!(
            out.status.success() && wasm.exists(),
            "npm install {GO_TEMPLATE_PKG}@{GO_TEMPLATE_VERSION} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lock = std::fs::read_to_string(dir.join("package-lock.json")).expect("package-lock.json");
    assert!(
        lock.contains(GO_TEMPLATE_INTEGRITY),
        "{} does not hold {GO_TEMPLATE_PKG}@{GO_TEMPLATE_VERSION} with the pinned integrity",
        dir.display()
    );
    dir
}

/// One `node render-go-template.mjs` for the whole test (loading the
/// WebAssembly takes a while): a request line in, an answer line out.
struct Renderer {
    /// Ends when the test process does (its stdin closes).
    _child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

static RENDERER: std::sync::OnceLock<std::sync::Mutex<Renderer>> = std::sync::OnceLock::new();

/// Renders each (template, data) with Go's text/template; Ok(text) or
/// Err(Go's error).
fn render_all(reqs: &[(String, Value)]) -> Vec<Result<String, String>> {
    let renderer = RENDERER.get_or_init(|| {
        let script = repo().join("e2e/tests/grafana/render-go-template.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .arg(renderer_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node");
        std::sync::Mutex::new(Renderer {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            _child: child,
        })
    });
    let mut r = renderer.lock().unwrap_or_else(|e| e.into_inner());
    reqs.iter()
        .map(|(t, d)| {
            let line = json!({"template": t, "data": d}).to_string();
            writeln!(r.stdin, "{line}").expect("write to the renderer");
            r.stdin.flush().expect("flush");
            let mut answer = String::new();
            r.stdout.read_line(&mut answer).expect("renderer output");
            let v: Value = serde_json::from_str(&answer)
                .unwrap_or_else(|e| panic!("renderer said {answer:?}: {e}"));
            match v.get("ok").and_then(Value::as_str) {
                Some(s) => Ok(s.to_string()),
                None => Err(v["error"].as_str().unwrap_or("?").to_string()),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------
// The files.

struct Alerting {
    rules: Vec<Value>,
    contact_points: Vec<Value>,
    policies: Vec<Value>,
    /// All notification template definitions, in file order.
    templates: String,
}

fn load() -> Alerting {
    let dir = grafana_dir().join("provisioning/alerting");
    let mut a = Alerting {
        rules: Vec::new(),
        contact_points: Vec::new(),
        policies: Vec::new(),
        templates: String::new(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("alerting dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let known = [
        "apiVersion",
        "groups",
        "contactPoints",
        "policies",
        "templates",
        "muteTimes",
        "deleteRules",
        "deleteContactPoints",
        "resetPolicies",
        "deleteTemplates",
        "deleteMuteTimes",
    ];
    for f in files {
        let ctx = f.display().to_string();
        let doc = yaml(&f);
        assert_eq!(doc["apiVersion"], 1, "{ctx}: apiVersion");
        for k in doc.as_object().expect("a mapping").keys() {
            assert!(
                known.contains(&k.as_str()),
                "{ctx}: Grafana does not read `{k}`"
            );
        }
        for g in doc["groups"].as_array().into_iter().flatten() {
            a.rules
                .extend(g["rules"].as_array().expect("rules").iter().cloned());
        }
        a.contact_points.extend(
            doc["contactPoints"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
        a.policies
            .extend(doc["policies"].as_array().into_iter().flatten().cloned());
        for t in doc["templates"].as_array().into_iter().flatten() {
            let name = t["name"].as_str().unwrap_or_default();
            assert!(!name.trim().is_empty(), "{ctx}: template without name");
            let text = t["template"].as_str().expect("template text");
            assert!(!text.trim().is_empty(), "{ctx}: template {name} is empty");
            assert_eq!(t["orgId"], 1, "{ctx}: template {name}: orgId");
            a.templates.push_str(text);
        }
    }
    a
}

/// Grafana's uid rule for contact points: 1-40 of [a-zA-Z0-9-_].
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 40
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The settings of one integration after interpolation, checked as
/// grafana/alerting's `NewConfig`/`ValidateConfig` for its type.
fn check_integration(ty: &str, s: &Map<String, Value>) -> Result<(), String> {
    let str_of = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match ty {
        "telegram" => {
            if str_of("bottoken").is_empty() {
                return Err("could not find Bot Token in settings".into());
            }
            match s.get("chatid") {
                Some(Value::String(c)) if !c.is_empty() => {}
                Some(Value::Number(_)) => {}
                _ => return Err("could not find Chat Id in settings".into()),
            }
            let mode = str_of("parse_mode");
            if !mode.is_empty()
                && !["Markdown", "MarkdownV2", "HTML", "None"]
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&mode))
            {
                return Err(
                    "unknown parse_mode, must be Markdown, MarkdownV2, HTML or None".into(),
                );
            }
        }
        "email" => {
            let addrs: Vec<String> = str_of("addresses")
                .split([',', ';', '\n'])
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            if addrs.is_empty() {
                return Err("could not find addresses in settings".into());
            }
            for a in &addrs {
                if !a.contains('@') {
                    return Err(format!("{a} is not an e-mail address"));
                }
            }
        }
        "webhook" => {
            let url = str_of("url");
            if url.is_empty() {
                return Err("required field 'url' is not specified".into());
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("url {url} is not http(s)"));
            }
            let method = str_of("httpMethod");
            if !["", "POST", "PUT"].contains(&method.as_str()) {
                return Err(format!("httpMethod {method}"));
            }
            let basic = !str_of("username").is_empty() && !str_of("password").is_empty();
            if basic && !str_of("authorization_credentials").is_empty() {
                return Err(
                    "both HTTP Basic Authentication and Authorization Header are set, only 1 is permitted"
                        .into(),
                );
            }
        }
        other => {
            return Err(format!(
                "integration type {other} is not checked by this test"
            ))
        }
    }
    Ok(())
}

/// Applies Grafana's interpolation to every string of a settings tree.
fn interpolate(v: &Value, env: &dyn Fn(&str) -> Option<String>) -> Value {
    match v {
        Value::String(s) => Value::String(expand_env(s, env)),
        Value::Array(a) => Value::Array(a.iter().map(|x| interpolate(x, env)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), interpolate(x, env)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every string in a tree, with its key path.
fn strings(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, &format!("{path}[{i}]"), out)
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                strings(x, &format!("{path}.{k}"), out)
            }
        }
        _ => {}
    }
}

/// Contact points: names and uids, integrations valid with the
/// environment set and refused without it, secrets only from variables.
/// Returns the contact point names.
fn check_contact_points(a: &Alerting) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut uids = BTreeSet::new();
    let mut types = BTreeSet::new();
    for cp in &a.contact_points {
        let name = cp["name"].as_str().unwrap_or_default().trim().to_string();
        assert!(!name.is_empty(), "contact point without a name");
        assert_eq!(cp["orgId"], 1, "{name}: orgId");
        assert!(names.insert(name.clone()), "contact point {name} twice");
        let receivers = cp["receivers"].as_array().expect("receivers");
        assert!(!receivers.is_empty(), "{name}: no receivers");
        for r in receivers {
            let uid = r["uid"].as_str().unwrap_or_default();
            let ctx = format!("contact point {name} / {uid}");
            assert!(valid_uid(uid), "{ctx}: uid must be 1-40 of [a-zA-Z0-9-_]");
            assert!(uids.insert(uid.to_string()), "{ctx}: duplicate uid");
            let ty = r["type"].as_str().unwrap_or_default();
            types.insert(ty.to_string());
            let settings = r["settings"].as_object().expect("settings");
            assert!(!settings.is_empty(), "{ctx}: no settings are set");
            if let Some(d) = r.get("disableResolveMessage") {
                assert!(d.is_boolean(), "{ctx}: disableResolveMessage");
            }
            // Every $ reads a SITEWATCH_ variable: anything else (a Go
            // template variable) would be wiped by the interpolation.
            let mut all = Vec::new();
            strings(&r["settings"], "settings", &mut all);
            for (path, s) in &all {
                for var in env_refs(s) {
                    assert!(
                        var.starts_with("SITEWATCH_"),
                        "{ctx}: {path} reads ${var}: Grafana interpolates settings, \
                         so this would be replaced by the environment (write $$ for a literal $)"
                    );
                }
            }
            for key in SECRET_SETTINGS {
                if let Some(v) = settings.get(*key) {
                    let v = v.as_str().unwrap_or_default();
                    let refs = env_refs(v);
                    assert!(
                        refs.len() == 1 && v == format!("${{{}}}", refs[0]),
                        "{ctx}: {key} must be exactly ${{SITEWATCH_...}}, a secret never goes in the repo"
                    );
                }
            }
            let with_env = interpolate(&r["settings"], &test_env);
            check_integration(ty, with_env.as_object().unwrap())
                .unwrap_or_else(|e| panic!("{ctx}: with the environment set: {e}"));
            let without = interpolate(&r["settings"], &no_env);
            assert!(
                check_integration(ty, without.as_object().unwrap()).is_err(),
                "{ctx}: valid with no environment at all: where does it send to?"
            );
        }
    }
    for t in ["telegram", "email", "webhook"] {
        assert!(types.contains(t), "no {t} integration");
    }
    names
}

// ---------------------------------------------------------------------
// Rules, their sample alerts, and the policy tree.

/// Label values an alert of each rule gets: the string columns of the
/// rule's query (each must appear in its SQL).
fn sample_labels(uid: &str, n: usize) -> Vec<(&'static str, String)> {
    let site = format!("site-{n:02}");
    let l = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    };
    let mut v = match uid {
        "sitewatch-site-down" => l(&[("reason", "lost")]),
        "sitewatch-disk-watermark" | "sitewatch-disk-forecast" => l(&[("path", "/srv/recordings")]),
        "sitewatch-mount-failed" => l(&[("path", "/srv/recordings"), ("problem", "not_mounted")]),
        "sitewatch-sequence-gaps" | "sitewatch-clock-skew" | "sitewatch-site-power-cut" => l(&[]),
        "sitewatch-camera-down" => l(&[("camera", "gate"), ("class", "auth")]),
        "sitewatch-device-down" => l(&[("device", "nvr")]),
        "sitewatch-camera-degraded" => l(&[("camera", "yard"), ("class", "frozen")]),
        "sitewatch-centre-unreachable" => l(&[("classes", "tcp_timeout")]),
        "sitewatch-smart-critical" => l(&[
            ("device", "sda"),
            ("reason", "pending_growing"),
            ("serial", "WD-WX12A3456789"),
        ]),
        "sitewatch-bridge-gone" => return l(&[("bridge", "sitewatch-bridge-central2")]),
        "sitewatch-ingest-stalled" | "sitewatch-fleet-dark" => return Vec::new(),
        other => panic!("rule {other}: add its sample labels to tests/grafana/alerting.rs"),
    };
    v.insert(0, ("site", site));
    v
}

/// The value refId A has for a sample alert of each rule.
fn sample_value(uid: &str) -> f64 {
    match uid {
        "sitewatch-site-down" => 12.5,
        "sitewatch-site-power-cut" => 8.0,
        "sitewatch-device-down" => 12.0,
        "sitewatch-disk-watermark" => 96.5,
        "sitewatch-disk-forecast" => 3.2,
        "sitewatch-mount-failed" => 1.0,
        "sitewatch-ingest-stalled" => 7.0,
        "sitewatch-sequence-gaps" => 42.0,
        "sitewatch-camera-down" => 14.0,
        "sitewatch-camera-degraded" => 41.0,
        "sitewatch-centre-unreachable" => 22.0,
        "sitewatch-smart-critical" => 2.5,
        "sitewatch-clock-skew" => 3600.0,
        "sitewatch-bridge-gone" => 5.0,
        "sitewatch-fleet-dark" => 94.3,
        _ => 1.0,
    }
}

struct Alert {
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    firing: bool,
}

fn rule_by_uid<'a>(a: &'a Alerting, uid: &str) -> &'a Value {
    a.rules
        .iter()
        .find(|r| r["uid"] == uid)
        .unwrap_or_else(|| panic!("no rule {uid}"))
}

/// Grafana's prefix for rule annotation templates.
const RULE_TEMPLATE_PREFIX: &str =
    "{{- $labels := .Labels -}}{{- $values := .Values -}}{{- $value := .Value -}}";

/// Alerts of `uid` for sites `ns`, with labels as Grafana sets them and
/// annotations rendered from the rule's templates by Go.
fn alerts(a: &Alerting, uid: &str, ns: &[usize], firing: bool) -> Vec<Alert> {
    let rule = rule_by_uid(a, uid);
    let mut reqs = Vec::new();
    let mut labels_of = Vec::new();
    for &n in ns {
        let mut labels: BTreeMap<String, String> = rule["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        labels.insert("alertname".into(), rule["title"].as_str().unwrap().into());
        labels.insert("grafana_folder".into(), "Sitewatch".into());
        labels.insert("__alert_rule_uid__".into(), uid.into());
        for (k, v) in sample_labels(uid, n) {
            labels.insert(k.into(), v);
        }
        let public: Map<String, Value> = labels
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let value = sample_value(uid);
        let data = json!({
            "Labels": public,
            "Values": {
                "A": {"Labels": public, "Value": value},
                "C": {"Labels": public, "Value": 1.0},
            },
            "Value": format!("[ var='A' labels={{}} value={value} ]"),
        });
        for (k, t) in rule["annotations"].as_object().unwrap() {
            if k.starts_with("__") {
                continue;
            }
            let t = t.as_str().unwrap().replace("humanize ", "printf \"%.4g\" ");
            reqs.push((format!("{RULE_TEMPLATE_PREFIX}{t}"), data.clone()));
        }
        labels_of.push(labels);
    }
    let rendered = render_all(&reqs);
    let keys: Vec<&String> = rule["annotations"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("__"))
        .collect();
    let mut out = Vec::new();
    for (i, labels) in labels_of.into_iter().enumerate() {
        let mut annotations = BTreeMap::new();
        for (j, k) in keys.iter().enumerate() {
            let text = rendered[i * keys.len() + j]
                .clone()
                .unwrap_or_else(|e| panic!("rule {uid}: annotation {k}: {e}"));
            annotations.insert((*k).clone(), text);
        }
        for (k, v) in rule["annotations"].as_object().unwrap() {
            if k.starts_with("__") {
                annotations.insert(k.clone(), v.as_str().unwrap().to_string());
            }
        }
        out.push(Alert {
            uid: uid.into(),
            labels,
            annotations,
            firing,
        });
    }
    out
}

fn route_matches(route: &Value, labels: &BTreeMap<String, String>) -> bool {
    route["object_matchers"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|m| {
            let m = m.as_array().expect("[label, op, value]");
            let (k, op, v) = (
                m[0].as_str().unwrap(),
                m[1].as_str().unwrap(),
                m[2].as_str().unwrap(),
            );
            let have = labels.get(k).map(String::as_str).unwrap_or("");
            match op {
                "=" => have == v,
                "!=" => have != v,
                other => panic!("matcher op {other}: extend the routing simulation"),
            }
        })
}

/// The effective settings of one route (inherited from its parents).
#[derive(Clone, Debug)]
struct Route {
    id: String,
    receiver: String,
    group_by: Vec<String>,
    group_wait: u64,
    group_interval: u64,
    repeat_interval: u64,
}

fn effective(route: &Value, parent: &Route, id: String) -> Route {
    let dur = |k: &str, d: u64| {
        route[k]
            .as_str()
            .map(|s| prom_duration(s).unwrap_or_else(|e| panic!("route {id}: {k}: {e}")))
            .unwrap_or(d)
    };
    Route {
        receiver: route["receiver"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| parent.receiver.clone()),
        group_by: route["group_by"]
            .as_array()
            .map(|g| g.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_else(|| parent.group_by.clone()),
        group_wait: dur("group_wait", parent.group_wait),
        group_interval: dur("group_interval", parent.group_interval),
        repeat_interval: dur("repeat_interval", parent.repeat_interval),
        id,
    }
}

/// Alertmanager's routing: the deepest matching routes (first matching
/// child unless `continue`), or the route itself.
fn route_alert(route: &Value, eff: &Route, labels: &BTreeMap<String, String>) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, child) in route["routes"].as_array().into_iter().flatten().enumerate() {
        if route_matches(child, labels) {
            let ce = effective(child, eff, format!("{}/{i}", eff.id));
            out.extend(route_alert(child, &ce, labels));
            if !child["continue"].as_bool().unwrap_or(false) {
                break;
            }
        }
    }
    if out.is_empty() {
        out.push(eff.clone());
    }
    out
}

fn root_route(a: &Alerting) -> (&Value, Route) {
    let root = &a.policies[0];
    let defaults = Route {
        id: "root".into(),
        receiver: String::new(),
        group_by: Vec::new(),
        group_wait: 30,
        group_interval: 300,
        repeat_interval: 4 * 3600,
    };
    let eff = effective(root, &defaults, "root".into());
    (root, eff)
}

/// Checks the tree's structure: receivers exist, durations parse and make
/// sense, matchers are well-formed.
fn check_policy_tree(route: &Value, eff: &Route, receivers: &BTreeSet<String>) {
    let ctx = format!("policy {}", eff.id);
    assert!(
        receivers.contains(&eff.receiver),
        "{ctx}: receiver {:?} is not a provisioned contact point",
        eff.receiver
    );
    assert!(eff.group_interval > 0, "{ctx}: group_interval 0");
    assert!(eff.repeat_interval > 0, "{ctx}: repeat_interval 0");
    assert!(
        eff.repeat_interval >= eff.group_interval,
        "{ctx}: repeat_interval shorter than group_interval"
    );
    for k in route.as_object().unwrap().keys() {
        assert!(
            [
                "orgId",
                "receiver",
                "group_by",
                "group_wait",
                "group_interval",
                "repeat_interval",
                "routes",
                "object_matchers",
                "matchers",
                "continue",
                "mute_time_intervals",
                "active_time_intervals",
            ]
            .contains(&k.as_str()),
            "{ctx}: unknown key {k}"
        );
    }
    if eff.id == "root" {
        assert!(
            route.get("object_matchers").is_none() && route.get("matchers").is_none(),
            "the root policy must not have matchers"
        );
    }
    assert!(
        !eff.group_by.iter().any(|g| g == "...") || eff.group_by.len() == 1,
        "{ctx}: group_by '...' must stand alone"
    );
    for m in route["object_matchers"].as_array().into_iter().flatten() {
        let m = m.as_array().expect("object matcher [label, op, value]");
        assert_eq!(m.len(), 3, "{ctx}: object matcher {m:?}");
        assert!(
            ["=", "!=", "=~", "!~"].contains(&m[1].as_str().unwrap_or_default()),
            "{ctx}: matcher op {:?}",
            m[1]
        );
    }
    for (i, child) in route["routes"].as_array().into_iter().flatten().enumerate() {
        let ce = effective(child, eff, format!("{}/{i}", eff.id));
        check_policy_tree(child, &ce, receivers);
    }
}

// ---------------------------------------------------------------------
// Notifications.

/// One notification: the alerts of one group, shaped like Grafana's
/// ExtendedData (its Go field names, which templates use).
fn notification(route: &Route, alerts: &[&Alert]) -> Value {
    let firing = alerts.iter().any(|a| a.firing);
    let common = |f: &dyn Fn(&Alert) -> &BTreeMap<String, String>| -> Map<String, Value> {
        let first = f(alerts[0]);
        first
            .iter()
            .filter(|(k, v)| {
                !k.starts_with("__") && alerts.iter().all(|a| f(a).get(*k) == Some(*v))
            })
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect()
    };
    let group_labels: Map<String, Value> = route
        .group_by
        .iter()
        .filter_map(|g| alerts[0].labels.get(g).map(|v| (g.clone(), json!(v))))
        .collect();
    let extended: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let public = |m: &BTreeMap<String, String>| -> Map<String, Value> {
                m.iter()
                    .filter(|(k, _)| !(k.starts_with("__") && k.ends_with("__")))
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect()
            };
            let from = STARTS_AT_MS - 3_600_000;
            let to = STARTS_AT_MS + 900_000;
            let dashboard = a
                .annotations
                .get("__dashboardUid__")
                .map(|d| format!("{EXTERNAL_URL}d/{d}?from={from}&orgId=1&to={to}"))
                .unwrap_or_default();
            let mut silence = format!(
                "{EXTERNAL_URL}alerting/silence/new?alertmanager=grafana&matcher=__alert_rule_uid__%3D{}",
                a.uid
            );
            for (k, v) in &a.labels {
                if !(k.starts_with("__") || k == "alertname" || k == "grafana_folder") {
                    silence.push_str(&format!("&matcher={k}%3D{v}"));
                }
            }
            silence.push_str("&orgId=1");
            json!({
                "Status": if a.firing { "firing" } else { "resolved" },
                "Labels": public(&a.labels),
                "Annotations": public(&a.annotations),
                "StartsAt": "2026-12-06T22:50:00Z",
                "EndsAt": if a.firing { "0001-01-01T00:00:00Z" } else { "2026-12-06T23:05:00Z" },
                "GeneratorURL": format!("{EXTERNAL_URL}alerting/grafana/{}/view?orgId=1", a.uid),
                "Fingerprint": "0123456789abcdef",
                "SilenceURL": silence,
                "DashboardURL": dashboard,
                "PanelURL": "",
                "Values": {"A": sample_value(&a.uid), "C": 1.0},
                "ValueString": "",
            })
        })
        .collect();
    json!({
        "Receiver": route.receiver,
        "Status": if firing { "firing" } else { "resolved" },
        "Alerts": extended,
        "GroupLabels": group_labels,
        "CommonLabels": common(&|a: &Alert| &a.labels),
        "CommonAnnotations": common(&|a: &Alert| &a.annotations),
        "ExternalURL": EXTERNAL_URL,
        "GroupKey": format!("{{}}/{}:{{}}", route.id),
    })
}

/// Groups alerts as Alertmanager does: by route, then by the route's
/// group_by label values (`...` = all labels).
fn group<'a>(a: &Alerting, alerts: &'a [Alert]) -> BTreeMap<String, (Route, Vec<&'a Alert>)> {
    let (root, eff) = root_route(a);
    let mut groups: BTreeMap<String, (Route, Vec<&Alert>)> = BTreeMap::new();
    for al in alerts {
        for r in route_alert(root, &eff, &al.labels) {
            let key_labels: Vec<String> = if r.group_by.iter().any(|g| g == "...") {
                al.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
            } else {
                r.group_by
                    .iter()
                    .map(|g| format!("{g}={}", al.labels.get(g).map(String::as_str).unwrap_or("")))
                    .collect()
            };
            let key = format!("{}|{}", r.id, key_labels.join(","));
            groups
                .entry(key)
                .or_insert_with(|| (r.clone(), Vec::new()))
                .1
                .push(al);
        }
    }
    groups
}

/// The contact point fields that are templates, rendered for one
/// notification: `(integration uid / field, text)`.
fn render_notification(a: &Alerting, data: &Value) -> Vec<(String, Result<String, String>)> {
    let mut fields = Vec::new();
    for cp in &a.contact_points {
        if cp["name"] != data["Receiver"] {
            continue;
        }
        for r in cp["receivers"].as_array().unwrap() {
            for (k, v) in r["settings"].as_object().unwrap() {
                if let Some(s) = v.as_str().filter(|s| s.contains("{{")) {
                    fields.push((
                        format!("{} / {k}", r["uid"].as_str().unwrap()),
                        s.to_string(),
                    ));
                }
            }
        }
    }
    // Grafana parses the provisioned templates into one set and executes
    // each field's text in it.
    let reqs: Vec<(String, Value)> = fields
        .iter()
        .map(|(_, t)| (format!("{}{t}", a.templates), data.clone()))
        .collect();
    let rendered = render_all(&reqs);
    fields.into_iter().map(|(f, _)| f).zip(rendered).collect()
}

fn telegram_text(a: &Alerting, data: &Value) -> String {
    render_notification(a, data)
        .into_iter()
        .find(|(f, _)| f == "sitewatch-telegram / message")
        .expect("telegram message")
        .1
        .expect("telegram message renders")
}

// ---------------------------------------------------------------------
// The test.

#[test]
fn alerting_notifications_are_valid_and_render() {
    let a = load();
    assert!(!a.rules.is_empty() && !a.templates.is_empty());

    // Contact points.
    let receivers = check_contact_points(&a);

    // Rules: labels are interpolated (no $), annotations are not but newer
    // Grafana expands ${...} in them (none here); every rule is routed by
    // team/severity/scope.
    for r in &a.rules {
        let uid = r["uid"].as_str().unwrap();
        for (k, v) in r["labels"].as_object().unwrap() {
            assert!(
                !v.as_str().unwrap().contains('$'),
                "rule {uid}: label {k}: Grafana interpolates labels with the environment"
            );
        }
        for k in ["team", "severity", "scope"] {
            assert!(r["labels"][k].is_string(), "rule {uid}: label {k}");
        }
        assert!(
            ["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap()),
            "rule {uid}: severity"
        );
        assert!(
            ["site", "centre"].contains(&r["labels"]["scope"].as_str().unwrap()),
            "rule {uid}: scope"
        );
        for (k, v) in r["annotations"].as_object().unwrap() {
            let v = v.as_str().unwrap();
            assert!(!v.contains("${"), "rule {uid}: annotation {k} has ${{");
            if !k.starts_with("__") {
                for f in template_functions(v) {
                    assert!(
                        GO_BUILTINS.contains(&f.as_str())
                            || RULE_TEMPLATE_FUNCS.contains(&f.as_str()),
                        "rule {uid}: annotation {k} calls {f}, which Grafana does not have"
                    );
                }
            }
        }
        for k in ["summary", "description"] {
            assert!(
                r["annotations"][k]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "rule {uid}: annotation {k} (what is wrong / what to do)"
            );
        }
        // The sample labels are the query's string columns.
        let sql = r["data"][0]["model"]["rawSql"].as_str().unwrap();
        for (k, _) in sample_labels(uid, 1) {
            assert!(
                sql.contains(k),
                "rule {uid}: label {k} is not a column of its query"
            );
        }
    }

    // Templates: only Go's built-ins, every `template "x"` defined.
    let defined: BTreeSet<String> = a
        .templates
        .split("define \"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect();
    let mut used_in = a.templates.clone();
    for cp in &a.contact_points {
        let mut all = Vec::new();
        strings(&cp["receivers"], "", &mut all);
        for (_, s) in all {
            used_in.push_str(&s);
        }
    }
    for called in used_in.split("template \"").skip(1) {
        let name = called.split('"').next().unwrap();
        assert!(
            defined.contains(name),
            "template {name} is used but not defined"
        );
    }
    for f in template_functions(&a.templates) {
        assert!(
            GO_BUILTINS.contains(&f.as_str()),
            "notification templates call {f}: only Go's built-ins are checked here"
        );
    }
    // The template file alone renders to nothing (Grafana never executes
    // its top level; whitespace there would hint at a misplaced define).
    let top = render_all(&[(a.templates.clone(), json!({}))]);
    assert_eq!(top[0].as_deref(), Ok(""), "top level of the templates");

    // The policy tree.
    assert_eq!(a.policies.len(), 1, "one policy tree per org");
    assert_eq!(a.policies[0]["orgId"], 1);
    let (root, eff) = root_route(&a);
    check_policy_tree(root, &eff, &receivers);
    let mut all_alerts = Vec::new();
    for r in &a.rules {
        all_alerts.extend(alerts(&a, r["uid"].as_str().unwrap(), &[1], true));
    }
    for al in &all_alerts {
        for r in route_alert(root, &eff, &al.labels) {
            assert_ne!(
                r.id, "root",
                "rule {} is not routed by a sitewatch policy",
                al.uid
            );
            for g in &r.group_by {
                assert!(
                    g == "..." || al.labels.contains_key(g),
                    "rule {}: route {} groups by {g}, which the rule's alerts do not have",
                    al.uid,
                    r.id
                );
            }
            assert!(
                !r.group_by.iter().any(|g| g == "site" || g == "..."),
                "route {} groups by site: one message per site",
                r.id
            );
        }
    }

    // Every rule alone: each message names the site, says what is wrong
    // and what to do, and links the dashboard (with the site).
    for (key, (route, group_alerts)) in group(&a, &all_alerts) {
        let data = notification(&route, &group_alerts);
        for (field, text) in render_notification(&a, &data) {
            let text = text.unwrap_or_else(|e| panic!("{key}: {field}: {e}"));
            assert!(!text.contains("<no value>"), "{key}: {field}: {text}");
            assert!(!text.trim().is_empty(), "{key}: {field} is empty");
            if field.ends_with("title") || field.ends_with("subject") {
                assert!(!text.contains('\n'), "{key}: {field} is one line: {text:?}");
                continue;
            }
            for al in &group_alerts {
                let summary = &al.annotations["summary"];
                assert!(
                    text.contains(summary.as_str()),
                    "{key}: {field} lacks {summary:?}:\n{text}"
                );
                assert!(
                    text.contains(&al.annotations["description"]),
                    "{key}: {field} lacks what to do:\n{text}"
                );
                if let Some(site) = al.labels.get("site") {
                    assert!(
                        text.contains("/d/sitewatch-site?")
                            && text.contains(&format!("&var-site={site}")),
                        "{key}: {field}: no link to {site}'s dashboard:\n{text}"
                    );
                } else {
                    assert!(
                        text.contains("/d/sitewatch-fleet?"),
                        "{key}: {field}: no dashboard link"
                    );
                }
            }
            assert!(text.contains("Silence"), "{key}: {field}: how to silence");
        }
    }

    // The centre goes dark: 50 sites lost, most of the fleet offline,
    // the bridge not ingesting. Two messages, not 52.
    let sites: Vec<usize> = (1..=50).collect();
    let mut outage = alerts(&a, "sitewatch-site-down", &sites, true);
    outage.extend(alerts(&a, "sitewatch-fleet-dark", &[0], true));
    outage.extend(alerts(&a, "sitewatch-ingest-stalled", &[0], true));
    let groups = group(&a, &outage);
    assert_eq!(
        groups.len(),
        2,
        "a centre outage must make two messages (the centre's, then the sites'), got {:?}",
        groups.keys().collect::<Vec<_>>()
    );
    let (centre_route, centre) = groups
        .values()
        .find(|(_, g)| g.iter().any(|a| a.uid == "sitewatch-fleet-dark"))
        .expect("centre group");
    assert_eq!(centre.len(), 2, "fleet dark and ingest stalled together");
    let (site_route, sites_group) = groups
        .values()
        .find(|(_, g)| g.iter().any(|a| a.uid == "sitewatch-site-down"))
        .expect("site-down group");
    assert_eq!(sites_group.len(), 50);
    assert!(
        centre_route.group_wait < site_route.group_wait,
        "the centre's message goes first"
    );
    let centre_text = telegram_text(&a, &notification(centre_route, centre));
    let sites_text = telegram_text(&a, &notification(site_route, sites_group));
    assert!(sites_text.contains("50 alerts in all"), "{sites_text}");
    assert!(sites_text.contains("site-15") && !sites_text.contains("site-16"));
    for t in [&centre_text, &sites_text] {
        assert!(
            t.chars().count() <= TELEGRAM_MAX_RUNES,
            "over Telegram's limit:\n{t}"
        );
    }
    // Every rule with 50 alerts at once still fits one Telegram message.
    for r in &a.rules {
        let uid = r["uid"].as_str().unwrap();
        let many = alerts(&a, uid, &sites, true);
        for (route, g) in group(&a, &many).values() {
            let t = telegram_text(&a, &notification(route, g));
            assert!(
                t.chars().count() <= TELEGRAM_MAX_RUNES,
                "{uid}: {} runes",
                t.chars().count()
            );
        }
    }

    // Resolved.
    let resolved = alerts(&a, "sitewatch-camera-down", &[3], false);
    let groups = group(&a, &resolved);
    let (route, g) = groups.values().next().unwrap();
    let text = telegram_text(&a, &notification(route, g));
    assert!(
        text.starts_with("[RESOLVED] sitewatch: Camera down at site-03"),
        "{text}"
    );
    assert!(!text.contains("What to do"), "{text}");

    // docs/ops.md shows what a centre outage looks like: the centre's
    // message and the sites' message for three sites.
    let few = {
        let mut v = alerts(&a, "sitewatch-site-down", &[1, 2, 3], true);
        v.extend(alerts(&a, "sitewatch-fleet-dark", &[0], true));
        v.extend(alerts(&a, "sitewatch-ingest-stalled", &[0], true));
        v
    };
    let mut example = String::new();
    let groups = group(&a, &few);
    let mut ordered: Vec<_> = groups.values().collect();
    ordered.sort_by_key(|(r, _)| r.group_wait);
    for (route, g) in ordered {
        example.push_str(&telegram_text(&a, &notification(route, g)));
        example.push_str("\n\n");
    }
    let example = example.trim_end().to_string();
    println!("{example}");
    let ops = std::fs::read_to_string(repo().join("docs/ops.md")).expect("docs/ops.md");
    assert!(
        ops.contains(&example),
        "docs/ops.md must show the rendered centre-outage example; paste this (what the test rendered):\n\n{example}"
    );
}
