//! End to end: the real `sitewatch-agent` and `sitewatch-bridge` binaries
//! against a throwaway mosquitto and PostgreSQL (testkit). What ops sees in
//! the `sites`/`fleet` tables is what these tests assert.
//!
//! The binaries are the ones `cargo test --workspace` builds into the same
//! target directory; `SITEWATCH_AGENT_BIN` / `SITEWATCH_BRIDGE_BIN` override.

use anyhow::Context;
use sitewatch_e2e::{agent_bin, bridge_bin};
use sitewatch_testkit::{
    free_port, sig, wait_until, ChildGuard, LokiReceiver, Mosquitto, Postgres, TestCerts,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Fleet {
    dir: tempfile::TempDir,
    /// Loki stand-in; the bridge pushes syslog batches here.
    loki: LokiReceiver,
    broker: Mosquitto,
    db: Postgres,
    db_name: String,
    bridge: Option<ChildGuard>,
    http_port: u16,
}

impl Fleet {
    fn start(certs: Option<&TestCerts>) -> anyhow::Result<Fleet> {
        let dir = tempfile::tempdir()?;
        let mut b = Mosquitto::builder();
        if let Some(c) = certs {
            b = b.tls(c).mtls(c);
        }
        let broker = b.start()?;
        let db = Postgres::start()?;
        let db_name = "sitewatch".to_string();
        db.create_database(&db_name)?;
        let loki = LokiReceiver::start()?;
        let mut fleet = Fleet {
            dir,
            loki,
            broker,
            db,
            db_name,
            bridge: None,
            http_port: free_port(),
        };
        fleet.start_bridge()?;
        Ok(fleet)
    }

    fn start_bridge(&mut self) -> anyhow::Result<()> {
        let cfg = self.dir.path().join("bridge.toml");
        std::fs::write(
            &cfg,
            format!(
                "[mqtt]\nurl = \"{}\"\nclient_id = \"bridge-e2e\"\n\n\
                 [postgres]\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
                 [batch]\nmax_wait_ms = 50\n\n[loki]\nurl = \"{}\"\n",
                self.broker.url(),
                self.db.database_url(&self.db_name),
                self.http_port,
                self.loki.url()
            ),
        )?;
        let mut child = ChildGuard::spawn(
            Command::new(bridge_bin())
                .arg("--config")
                .arg(&cfg)
                .env("RUST_LOG", "info"),
        )?;
        let url = format!("127.0.0.1:{}", self.http_port);
        wait_until(WAIT, "bridge /healthz answers 200", || {
            healthz(&url).is_some_and(|s| s == 200)
        })
        .with_context(|| child.log_contents())?;
        if let Some(status) = child.try_status() {
            anyhow::bail!("bridge exited: {status}\n{}", child.log_contents());
        }
        self.bridge = Some(child);
        Ok(())
    }

    fn sql(&self, q: &str) -> String {
        self.db
            .psql_db(&self.db_name, q)
            .unwrap_or_else(|e| panic!("{q}: {e:#}"))
            .trim()
            .to_string()
    }

    fn count(&self, q: &str) -> i64 {
        let out = self.sql(q);
        out.parse()
            .unwrap_or_else(|e| panic!("{q}: `{out}` is not a number: {e}"))
    }

    fn agent_config(&self, name: &str, site: &str, mqtt: &str) -> PathBuf {
        self.agent_config_with(name, site, mqtt, "")
    }

    fn agent_config_with(&self, name: &str, site: &str, mqtt: &str, extra: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "site_id = \"{site}\"\n\n[mqtt]\n{mqtt}\n\n[heartbeat]\ninterval_secs = 1\n\n\
                 [disk]\ninterval_secs = 1\nmounts = [\"/\", \"{}\"]\n\n{extra}\n",
                self.dir.path().join("not-a-mount").display()
            ),
        )
        .expect("write agent config");
        std::fs::create_dir_all(self.dir.path().join("not-a-mount")).expect("mkdir");
        p
    }

    fn start_agent(&self, cfg: &Path) -> ChildGuard {
        ChildGuard::spawn(
            Command::new(agent_bin())
                .arg("--config")
                .arg(cfg)
                .env("RUST_LOG", "debug"),
        )
        .expect("spawn agent")
    }

    /// Waits until `sites` shows `state`/`reason` for the site, dumping logs on timeout.
    fn wait_state(&self, site: &str, want: &str, agent: Option<&ChildGuard>) {
        let q = format!(
            "select state || '/' || coalesce(reason, '-') from sites where site = '{site}'"
        );
        let r = wait_until(WAIT, &format!("site {site} is {want}"), || {
            self.sql(&q) == want
        });
        if let Err(e) = r {
            panic!(
                "{e:#}\nsites: {}\nagent log:\n{}\nbridge log:\n{}",
                self.sql(&q),
                agent.map(|a| a.log_contents()).unwrap_or_default(),
                self.bridge
                    .as_ref()
                    .map(|b| b.log_contents())
                    .unwrap_or_default()
            );
        }
    }
}

/// HTTP GET status of /healthz, or None when nothing answers.
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

fn plain_mqtt(broker: &Mosquitto) -> String {
    format!("url = \"{}\"", broker.url())
}

#[test]
fn site_goes_online_reports_heartbeat_and_disk_then_lost_on_sigkill() {
    let fleet = Fleet::start(None).expect("fleet");
    let cfg = fleet.agent_config("agent", "lokasi1", &plain_mqtt(&fleet.broker));
    let mut agent = fleet.start_agent(&cfg);

    fleet.wait_state("lokasi1", "online/-", Some(&agent));
    wait_until(WAIT, "two heartbeats and disk rows stored", || {
        fleet.count("select count(*) from heartbeats where site = 'lokasi1'") >= 2
            && fleet.count(
                "select count(*) from disk_usage where site = 'lokasi1' and path = '/' \
                 and error is null and total_bytes > 0",
            ) >= 1
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log_contents()));

    // The root filesystem's numbers look like df's.
    let row = fleet.sql(
        "select fs_type <> '' and used_bytes <= total_bytes and avail_bytes <= total_bytes \
         and used_pct between 0 and 100 and inodes_total >= inodes_free \
         from disk_usage where site = 'lokasi1' and path = '/' limit 1",
    );
    assert_eq!(row, "t");
    // A configured recording path that is only a directory is reported, not
    // silently measured as the root filesystem.
    let not_mounted = fleet.count(
        "select count(*) from disk_usage where site = 'lokasi1' and error = 'not_mounted' \
         and total_bytes = 0",
    );
    assert!(not_mounted > 0);

    // Heartbeat carries the agent's version and real host numbers.
    let hb = fleet.sql(
        "select agent_version = (select agent_version from sites where site = 'lokasi1') \
         and mem_total_bytes > 0 and agent_rss_bytes > 0 and uptime_secs > 0 \
         from heartbeats where site = 'lokasi1' order by seq desc limit 1",
    );
    assert_eq!(hb, "t");

    let boot1 = fleet.sql("select boot from sites where site = 'lokasi1'");
    agent.signal(sig::KILL).expect("kill");
    fleet.wait_state("lokasi1", "offline/lost", Some(&agent));
    assert_eq!(
        fleet.sql("select boot from sites where site = 'lokasi1'"),
        boot1
    );

    // A restarted agent is a new boot and brings the site back online.
    let agent2 = fleet.start_agent(&cfg);
    fleet.wait_state("lokasi1", "online/-", Some(&agent2));
    let boot2 = fleet.sql("select boot from sites where site = 'lokasi1'");
    assert_ne!(boot1, boot2, "a new process must have a new boot id");

    // Nothing was lost between agent and bridge in either boot.
    wait_until(WAIT, "boot 2 has stored messages", || {
        fleet.count(&format!(
            "select coalesce(max(received), 0) from boots where boot = '{boot2}'"
        )) >= 3
    })
    .expect("boot 2 rows");
    assert_eq!(
        fleet.sql("select coalesce(sum(missing), 0) from boot_gaps where site = 'lokasi1'"),
        "0"
    );
    assert_eq!(fleet.sql("select count(*) from rejected_messages"), "0");
}

#[test]
fn sigterm_reports_shutdown_and_exits_cleanly() {
    let fleet = Fleet::start(None).expect("fleet");
    let cfg = fleet.agent_config("agent", "lokasi2", &plain_mqtt(&fleet.broker));
    let mut agent = fleet.start_agent(&cfg);
    fleet.wait_state("lokasi2", "online/-", Some(&agent));

    agent.signal(sig::TERM).expect("term");
    let status = agent
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("agent did not exit after SIGTERM\n{}", agent.log_contents()));
    assert!(
        status.success(),
        "exit status {status}\n{}",
        agent.log_contents()
    );
    fleet.wait_state("lokasi2", "offline/shutdown", Some(&agent));

    // The clean disconnect means the broker discarded the Will: no later
    // `lost` may overwrite `shutdown`.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        fleet.sql("select state || '/' || reason from sites where site = 'lokasi2'"),
        "offline/shutdown"
    );
    assert_eq!(
        fleet.sql("select count(*) from status_events where site = 'lokasi2' and reason = 'lost'"),
        "0"
    );
}

#[test]
fn mutual_tls_agent_reaches_postgres_and_rogue_cert_does_not() {
    let certs_dir = tempfile::tempdir().expect("tmp");
    let certs = TestCerts::generate(certs_dir.path()).expect("certs");
    let fleet = Fleet::start(Some(&certs)).expect("fleet");
    let mtls_url = fleet.broker.mtls_url().expect("mtls listener");
    let good = fleet.agent_config(
        "good",
        "lokasi-mtls",
        &format!(
            "url = \"{mtls_url}\"\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
            certs.ca_cert.display(),
            certs.client_cert.display(),
            certs.client_key.display()
        ),
    );
    let rogue = fleet.agent_config(
        "rogue",
        "lokasi-rogue",
        &format!(
            "url = \"{mtls_url}\"\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
            certs.ca_cert.display(),
            certs.rogue_client_cert.display(),
            certs.rogue_client_key.display()
        ),
    );
    let good_agent = fleet.start_agent(&good);
    let rogue_agent = fleet.start_agent(&rogue);
    fleet.wait_state("lokasi-mtls", "online/-", Some(&good_agent));
    wait_until(WAIT, "mTLS heartbeat stored", || {
        fleet.count("select count(*) from heartbeats where site = 'lokasi-mtls'") > 0
    })
    .expect("heartbeat over mTLS");
    // By now the rogue agent has tried for several seconds.
    assert_eq!(
        fleet.sql("select count(*) from sites where site = 'lokasi-rogue'"),
        "0",
        "a client certificate from another CA must not get in\n{}",
        rogue_agent.log_contents()
    );
}

#[test]
fn syslog_from_logger_reaches_loki_with_site_and_host_labels() {
    let fleet = Fleet::start(None).expect("fleet");
    let udp = free_port();
    let tcp = free_port();
    let cfg = fleet.agent_config_with(
        "agent",
        "lokasi3",
        &plain_mqtt(&fleet.broker),
        &format!(
            "[syslog]\nudp = [\"127.0.0.1:{udp}\"]\ntcp = [\"127.0.0.1:{tcp}\"]\n\
             batch_max_wait_ms = 100\n\n[syslog.hosts]\n\"127.0.0.1\" = \"nvr-1\"\n"
        ),
    );
    let agent = fleet.start_agent(&cfg);
    fleet.wait_state("lokasi3", "online/-", Some(&agent));

    // Real senders: util-linux logger over UDP (RFC 3164) and TCP (RFC 5424).
    let mut sent = Vec::new();
    for i in 0..20 {
        let (proto, port, fmt) = if i % 2 == 0 {
            ("-d", udp, "--rfc3164")
        } else {
            ("-T", tcp, "--rfc5424")
        };
        let msg = format!("e2e line {i} video loss on channel {}", i % 4);
        let st = Command::new("logger")
            .args([proto, fmt, "-n", "127.0.0.1", "-P", &port.to_string()])
            .args(["-t", "nvrd", "-p", "local0.warning", &msg])
            .status()
            .expect("run logger (util-linux)");
        assert!(st.success(), "logger failed for line {i}");
        sent.push(msg);
    }

    let r = wait_until(WAIT, "every line is in Loki", || {
        let entries = fleet.loki.entries();
        sent.iter()
            .all(|m| entries.iter().any(|e| e.line.contains(m.as_str())))
    });
    let entries = fleet.loki.entries();
    if let Err(e) = r {
        panic!(
            "{e:#}\nloki has {} entries: {:#?}\nagent log:\n{}",
            entries.len(),
            entries.iter().map(|e| &e.line).collect::<Vec<_>>(),
            agent.log_contents()
        );
    }
    for m in &sent {
        let hits: Vec<_> = entries
            .iter()
            .filter(|e| e.line.contains(m.as_str()))
            .collect();
        assert_eq!(hits.len(), 1, "`{m}` must arrive exactly once");
        let e = hits[0];
        assert_eq!(e.labels.get("site").map(String::as_str), Some("lokasi3"));
        // The mapped name wins over the hostname logger puts in the line.
        assert_eq!(e.labels.get("host").map(String::as_str), Some("nvr-1"));
        assert_eq!(e.labels.get("app").map(String::as_str), Some("nvrd"));
        assert_eq!(
            e.labels.get("severity").map(String::as_str),
            Some("warning")
        );
        assert_eq!(e.metadata("ip"), Some("127.0.0.1"));
        assert_eq!(e.metadata("facility"), Some("local0"));
        // Within a few minutes of now: the device (logger) stamped it.
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as i128;
        assert!(
            (now_ns - e.timestamp_ns).abs() < 300 * 1_000_000_000,
            "timestamp {}",
            e.timestamp_ns
        );
    }
    // Delivered batches are recorded, so a redelivery would not push again.
    assert!(fleet.count("select count(*) from log_batches where site = 'lokasi3'") >= 1);
    assert_eq!(fleet.sql("select count(*) from rejected_messages"), "0");
}
