//! Secrets never leak: a full pipeline (agent -> password-protected
//! mosquitto -> bridge -> PostgreSQL with a password, Loki with basic auth
//! or a bearer token) runs with debug logs, and every output is searched
//! for every secret it was configured with: agent and bridge output
//! (`RUST_LOG=debug`), `sitewatch-agent check` and `check --online`,
//! `sitewatch-bridge check`, every MQTT payload (`mosquitto_sub -v` on
//! `sitewatch/v1/#` as a privileged user), `/metrics` and `/healthz`, the
//! Loki entries, and a data-only `pg_dump` of the database. A run with
//! deliberately wrong passwords covers the error paths.
//!
//! The testkit's mosquitto writes `allow_anonymous true` before the
//! extra configuration; mosquitto applies the last value of a global
//! option, so the `allow_anonymous false` added here wins. The test
//! proves it by checking that an anonymous client is refused.
//!
//! Binaries: as in e2e.rs, next to this test executable
//! (`SITEWATCH_AGENT_BIN` / `SITEWATCH_BRIDGE_BIN` override).

use sitewatch_e2e::{agent_bin, bridge_bin};
use sitewatch_testkit::{
    free_port, pg_bindir, wait_until, ChildGuard, LokiReceiver, Mosquitto, Postgres,
};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

// Every secret is a distinctive string that cannot occur by chance.
const AGENT_PASS: &str = "AgentMqttS3cret-7f3a9d";
const AGENT_FILE_PASS: &str = "AgentFileS3cret-91bc0e";
const BRIDGE_MQTT_PASS: &str = "BridgeMqttS3cret-4d2e6f";
const ADMIN_PASS: &str = "AdminMqttS3cret-e1c2b3";
const PG_PASS: &str = "PgRoleS3cret-55aa12";
const LOKI_PASS: &str = "LokiBasicS3cret-0c1d88";
const LOKI_TOKEN: &str = "LokiBearerT0ken-77ef01";
const WRONG_MQTT_PASS: &str = "WrongMqttS3cret-aa11cc";
const WRONG_LOKI_PASS: &str = "WrongLokiS3cret-bb22dd";

const ALL_SECRETS: &[&str] = &[
    AGENT_PASS,
    AGENT_FILE_PASS,
    BRIDGE_MQTT_PASS,
    ADMIN_PASS,
    PG_PASS,
    LOKI_PASS,
    LOKI_TOKEN,
    WRONG_MQTT_PASS,
    WRONG_LOKI_PASS,
];

/// Writes a file readable by its owner only (as secrets should be).
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Minimal HTTP GET: `(status, body)`.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_owned()))
}

/// Every output collected in a run, by label.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.0.push((label.into(), text.into()));
    }

    fn get(&self, label: &str) -> &str {
        self.0
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| panic!("no output {label}"))
    }

    /// Panics naming every (output, secret) pair that leaked, with context.
    fn assert_clean(&self) {
        let mut leaks = Vec::new();
        for (label, text) in &self.0 {
            eprintln!("searched {label}: {} bytes", text.len());
            // SECRETS_TEST_DUMP=DIR keeps every searched output, for review.
            if let Some(dir) = std::env::var_os("SECRETS_TEST_DUMP") {
                let name: String = label
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let _ = std::fs::write(Path::new(&dir).join(name), text);
            }
            for secret in ALL_SECRETS {
                if let Some(at) = text.find(secret) {
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(80)
                        .map_or(0, |(i, _)| i);
                    let to = (at + secret.len() + 80).min(text.len());
                    let to = (to..=text.len())
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(text.len());
                    leaks.push(format!("{secret} in {label}: ...{}...", &text[from..to]));
                }
            }
        }
        assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    }
}

/// Broker with a password file, PostgreSQL with a password role, Loki.
struct Stack {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    db: Postgres,
    loki: LokiReceiver,
    sub: ChildGuard,
}

impl Stack {
    fn start(loki: LokiReceiver) -> Stack {
        let dir = tempfile::tempdir().expect("tmp");
        let pw = dir.path().join("mosquitto.passwd");
        for (i, (user, pass)) in [
            ("site-a", AGENT_PASS),
            ("site-b", AGENT_FILE_PASS),
            ("bridge", BRIDGE_MQTT_PASS),
            ("admin", ADMIN_PASS),
        ]
        .into_iter()
        .enumerate()
        {
            let mut cmd = Command::new("mosquitto_passwd");
            cmd.arg("-b");
            if i == 0 {
                cmd.arg("-c");
            }
            let st = cmd
                .arg(&pw)
                .args([user, pass])
                .status()
                .expect("run mosquitto_passwd");
            assert!(st.success(), "mosquitto_passwd for {user}");
        }
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let broker = Mosquitto::builder()
            .extra_config(&format!(
                "password_file {}\nallow_anonymous false",
                pw.display()
            ))
            .start()
            .expect("mosquitto");

        // The workaround for the testkit's `allow_anonymous true` works.
        let anon = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-t", "sitewatch/v1/anon/heartbeat", "-m", "x", "-q", "1"])
            .output()
            .expect("mosquitto_pub");
        assert!(
            !anon.status.success(),
            "an anonymous client must be refused"
        );

        let db = Postgres::start().expect("postgres");
        db.create_database("sitewatch").expect("create database");
        db.psql(&format!(
            "CREATE ROLE swbridge LOGIN CREATEROLE PASSWORD '{PG_PASS}'; \
             ALTER DATABASE sitewatch OWNER TO swbridge"
        ))
        .expect("create role");
        db.psql_db("sitewatch", "GRANT ALL ON SCHEMA public TO swbridge")
            .expect("grant");

        // Every payload published on the sitewatch tree.
        let sub = ChildGuard::spawn(
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
                .args([
                    "-u",
                    "admin",
                    "-P",
                    ADMIN_PASS,
                    "-v",
                    "-t",
                    "sitewatch/v1/#",
                ])
                .args(["-i", "secrets-spy"]),
        )
        .expect("mosquitto_sub");
        Stack {
            dir,
            broker,
            db,
            loki,
            sub,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn sql(&self, q: &str) -> String {
        self.db
            .psql_db("sitewatch", q)
            .unwrap_or_else(|e| panic!("{q}: {e:#}"))
            .trim()
            .to_owned()
    }

    /// Agent config; `auth` is the `[mqtt]` credential lines.
    fn agent_config(&self, name: &str, site: &str, auth: &str, syslog_port: u16) -> PathBuf {
        let p = self.path(&format!("{name}.toml"));
        write_private(
            &p,
            &format!(
                "site_id = \"{site}\"\n\n[mqtt]\nurl = \"{}\"\n{auth}\n\n\
                 [heartbeat]\ninterval_secs = 1\n\n[disk]\ninterval_secs = 1\nmounts = [\"/\"]\n\n\
                 [syslog]\nudp = [\"127.0.0.1:{syslog_port}\"]\ntcp = [\"127.0.0.1:{}\"]\n\
                 batch_max_wait_ms = 100\n",
                self.broker.url(),
                free_port()
            ),
        );
        p
    }

    /// Bridge config; `postgres` and `loki_auth` are section lines.
    fn bridge_config(
        &self,
        name: &str,
        mqtt_pass: &str,
        postgres: &str,
        loki_auth: &str,
        http: u16,
    ) -> PathBuf {
        let p = self.path(&format!("{name}.toml"));
        write_private(
            &p,
            &format!(
                "[mqtt]\nurl = \"{}\"\nclient_id = \"bridge-{name}\"\nusername = \"bridge\"\n\
                 password = \"{mqtt_pass}\"\n\n[postgres]\n{postgres}\n\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n\n[batch]\nmax_wait_ms = 50\n\n\
                 [loki]\nurl = \"{}\"\nmin_backoff_ms = 50\nmax_backoff_secs = 1\n{loki_auth}\n",
                self.broker.url(),
                self.loki.url()
            ),
        );
        p
    }

    fn pg_url_with_password(&self) -> String {
        format!(
            "postgres://swbridge:{PG_PASS}@127.0.0.1:{}/sitewatch",
            self.db.port()
        )
    }

    fn pg_dump(&self) -> String {
        let out = Command::new(pg_bindir().expect("pg bindir").join("pg_dump"))
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .args(["--data-only", "--no-owner", "-d"])
            .arg(self.db.database_url("sitewatch"))
            .output()
            .expect("pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.env("RUST_LOG", "debug").output().expect("run");
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn spawn(bin: &Path, cfg: &Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(bin)
            .arg("--config")
            .arg(cfg)
            .env("RUST_LOG", "debug"),
    )
    .expect("spawn")
}

fn send_syslog(port: u16, msg: &str) {
    let st = Command::new("logger")
        .args([
            "-d",
            "--rfc3164",
            "-n",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .args(["-t", "nvrd", "-p", "local0.warning", msg])
        .status()
        .expect("run logger (util-linux)");
    assert!(st.success());
}

/// Runs agent + bridge until the site is online, has heartbeats, disk
/// rows and a log line in Loki; collects every output.
fn full_run(
    stack: &Stack,
    out: &mut Outputs,
    tag: &str,
    site: &str,
    agent_auth: &str,
    postgres: &str,
    loki_auth: &str,
) {
    let http = free_port();
    let syslog = free_port();
    let agent_cfg = stack.agent_config(&format!("agent-{tag}"), site, agent_auth, syslog);
    let bridge_cfg = stack.bridge_config(tag, BRIDGE_MQTT_PASS, postgres, loki_auth, http);

    out.add(
        format!("{tag}: sitewatch-bridge check"),
        run(Command::new(bridge_bin())
            .arg("--config")
            .arg(&bridge_cfg)
            .arg("check")),
    );
    out.add(
        format!("{tag}: sitewatch-agent check"),
        run(Command::new(agent_bin())
            .arg("--config")
            .arg(&agent_cfg)
            .arg("check")),
    );
    out.add(
        format!("{tag}: sitewatch-agent check --online"),
        run(Command::new(agent_bin())
            .arg("--config")
            .arg(&agent_cfg)
            .args(["check", "--online"])),
    );

    let bridge = spawn(&bridge_bin(), &bridge_cfg);
    wait_until(WAIT, "bridge healthy", || {
        http_get(http, "/healthz").is_some_and(|(c, _)| c == 200)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", bridge.log_contents()));
    let agent = spawn(&agent_bin(), &agent_cfg);
    let line = format!("secrets test {tag} line");
    let r = wait_until(
        WAIT,
        "site online with heartbeat, disk and a log line",
        || {
            send_syslog(syslog, &line);
            stack.sql(&format!("SELECT state FROM sites WHERE site = '{site}'")) == "online"
                && stack.sql(&format!(
                    "SELECT count(*) FROM heartbeats WHERE site = '{site}'"
                )) != "0"
                && stack.sql(&format!(
                    "SELECT count(*) FROM disk_usage WHERE site = '{site}'"
                )) != "0"
                && stack.loki.entries().iter().any(|e| e.line.contains(&line))
        },
    );
    if let Err(e) = r {
        panic!(
            "{e:#}\nagent:\n{}\nbridge:\n{}",
            agent.log_contents(),
            bridge.log_contents()
        );
    }
    let metrics = http_get(http, "/metrics").expect("metrics");
    assert_eq!(metrics.0, 200);
    out.add(format!("{tag}: /metrics"), metrics.1);
    out.add(
        format!("{tag}: /healthz"),
        http_get(http, "/healthz").expect("healthz").1,
    );
    drop(stop_child(agent, out, &format!("{tag}: agent output")));
    drop(stop_child(bridge, out, &format!("{tag}: bridge output")));
}

/// Stops a child with SIGTERM and records its whole output.
fn stop_child(mut child: ChildGuard, out: &mut Outputs, label: &str) -> ChildGuard {
    let _ = child.terminate();
    let _ = child.wait_timeout(Duration::from_secs(10));
    let log = child.log_contents();
    assert!(!log.is_empty(), "{label} is empty");
    out.add(label, log);
    child
}

#[test]
fn no_secret_appears_in_any_output() {
    let mut out = Outputs::default();

    // Run 1: inline MQTT password, PostgreSQL password in the URL, Loki
    // basic auth.
    let stack = Stack::start(
        LokiReceiver::builder()
            .require_basic_auth("loki-user", LOKI_PASS)
            .start()
            .expect("loki"),
    );
    full_run(
        &stack,
        &mut out,
        "inline",
        "site-a",
        &format!("username = \"site-a\"\npassword = \"{AGENT_PASS}\""),
        &format!("url = \"{}\"", stack.pg_url_with_password()),
        &format!("username = \"loki-user\"\npassword = \"{LOKI_PASS}\""),
    );

    // Run 2 (same broker and database): MQTT password_file, PostgreSQL
    // password_file. Loki here is the basic-auth one again; the bearer
    // token has its own stack below.
    let pw_file = stack.path("agent-b.pass");
    write_private(&pw_file, &format!("{AGENT_FILE_PASS}\n"));
    let pg_pw_file = stack.path("pg.pass");
    write_private(&pg_pw_file, &format!("{PG_PASS}\n"));
    full_run(
        &stack,
        &mut out,
        "files",
        "site-b",
        &format!(
            "username = \"site-b\"\npassword_file = \"{}\"",
            pw_file.display()
        ),
        &format!(
            "url = \"postgres://swbridge@127.0.0.1:{}/sitewatch\"\npassword_file = \"{}\"",
            stack.db.port(),
            pg_pw_file.display()
        ),
        &format!("username = \"loki-user\"\npassword = \"{LOKI_PASS}\""),
    );

    // Run 3: wrong passwords. The agent's MQTT login and the bridge's
    // Loki push are refused; their error paths must not echo the secret.
    let http = free_port();
    let syslog = free_port();
    let bad_agent_cfg = stack.agent_config(
        "agent-wrong",
        "site-a",
        &format!("username = \"site-a\"\npassword = \"{WRONG_MQTT_PASS}\""),
        syslog,
    );
    out.add(
        "wrong: sitewatch-agent check --online",
        run(Command::new(agent_bin())
            .arg("--config")
            .arg(&bad_agent_cfg)
            .args(["check", "--online"])),
    );
    let mut agent = spawn(&agent_bin(), &bad_agent_cfg);
    let bad_bridge_mqtt = stack.bridge_config(
        "wrong-mqtt",
        WRONG_MQTT_PASS,
        &format!("url = \"{}\"", stack.pg_url_with_password()),
        "",
        free_port(),
    );
    out.add(
        "wrong: sitewatch-bridge check (mqtt)",
        run(Command::new(bridge_bin())
            .arg("--config")
            .arg(&bad_bridge_mqtt)
            .arg("check")),
    );
    let bad_bridge = spawn(&bridge_bin(), &bad_bridge_mqtt);
    // A bridge with the right broker password but a wrong Loki password,
    // fed a log line by a good agent.
    let bad_loki_cfg = stack.bridge_config(
        "wrong-loki",
        BRIDGE_MQTT_PASS,
        &format!("url = \"{}\"", stack.pg_url_with_password()),
        &format!("username = \"loki-user\"\npassword = \"{WRONG_LOKI_PASS}\""),
        http,
    );
    out.add(
        "wrong: sitewatch-bridge check (loki)",
        run(Command::new(bridge_bin())
            .arg("--config")
            .arg(&bad_loki_cfg)
            .arg("check")),
    );
    let loki_bridge = spawn(&bridge_bin(), &bad_loki_cfg);
    let requests_before = stack.loki.requests();
    let good_syslog = free_port();
    let good_cfg = stack.agent_config(
        "agent-good",
        "site-c",
        &format!("username = \"site-a\"\npassword = \"{AGENT_PASS}\""),
        good_syslog,
    );
    let good = spawn(&agent_bin(), &good_cfg);
    let r = wait_until(WAIT, "refused Loki pushes", || {
        send_syslog(good_syslog, "secrets test wrong-loki line");
        stack.loki.requests() > requests_before
    });
    if let Err(e) = r {
        panic!(
            "{e:#}\nwrong agent:\n{}\nwrong-loki bridge:\n{}",
            agent.log_contents(),
            loki_bridge.log_contents()
        );
    }
    // Give both failing paths time to retry and log a few times.
    std::thread::sleep(Duration::from_secs(3));
    if let Some((_, body)) = http_get(http, "/metrics") {
        out.add("wrong: /metrics", body);
    }
    if let Some((_, body)) = http_get(http, "/healthz") {
        out.add("wrong: /healthz", body);
    }
    let _ = agent.terminate();
    drop(stop_child(good, &mut out, "wrong: good agent output"));
    drop(stop_child(
        loki_bridge,
        &mut out,
        "wrong: loki bridge output",
    ));
    drop(stop_child(
        bad_bridge,
        &mut out,
        "wrong: mqtt bridge output",
    ));
    let _ = agent.wait_timeout(Duration::from_secs(10));
    out.add("wrong: agent output", agent.log_contents());

    // Run 4: Loki bearer token (own stack: the receiver takes one scheme).
    let bearer = Stack::start(
        LokiReceiver::builder()
            .require_bearer(LOKI_TOKEN)
            .start()
            .expect("loki"),
    );
    full_run(
        &bearer,
        &mut out,
        "bearer",
        "site-a",
        &format!("username = \"site-a\"\npassword = \"{AGENT_PASS}\""),
        &format!("url = \"{}\"", bearer.pg_url_with_password()),
        &format!("bearer_token = \"{LOKI_TOKEN}\""),
    );

    for (name, s) in [("main", &stack), ("bearer", &bearer)] {
        out.add(format!("{name}: pg_dump --data-only"), s.pg_dump());
        let lines: Vec<String> = s
            .loki
            .entries()
            .iter()
            .map(|e| format!("{:?} {:?} {}", e.labels, e.metadata("ip"), e.line))
            .collect();
        assert!(!lines.is_empty(), "{name}: Loki got nothing");
        out.add(format!("{name}: loki entries"), lines.join("\n"));
        let payloads = s.sub.log_contents();
        assert!(
            payloads.contains("sitewatch/v1/site-a/heartbeat"),
            "{name}: the spy saw no heartbeat:\n{payloads}"
        );
        out.add(format!("{name}: mqtt payloads"), payloads);
    }

    // The outputs are real: the online check talked to the broker, the
    // dump holds rows, the debug logs are debug logs.
    assert!(out.get("inline: /metrics").contains("sitewatch_bridge_"));
    assert!(out.get("main: pg_dump --data-only").contains("site-b"));
    assert!(out.get("inline: bridge output").contains("DEBUG"));
    out.assert_clean();
}

/// The search finds a secret (so a clean result means something).
#[test]
fn leak_detector_finds_a_secret() {
    let mut out = Outputs::default();
    out.add("clean", "nothing to see");
    out.add("leaky", format!("connecting with password={PG_PASS} now"));
    let r = std::panic::catch_unwind(|| out.assert_clean());
    let msg = r.expect_err("must panic");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("in leaky"), "{msg}");
}
