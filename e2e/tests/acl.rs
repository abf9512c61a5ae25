//! Trust between sites and the centre: the sample broker configuration in
//! `deploy/mosquitto/` (certificate identity as username, per-site write
//! ACL), certificates from `scripts/issue-cert.sh`, and a real mosquitto
//! running that very file with only its paths and port rewritten.
//!
//! The matrix: a site may publish its own topics; it may not publish to
//! another site's topics nor read anyone's data; a client without a
//! certificate, or with one from another CA, is refused; a bridge reads
//! (also through `$share/`); and end to end, the real agent with site A's
//! certificate reaches PostgreSQL as site A, while the same certificate
//! configured as site B gets nothing stored.

mod sample_broker;

use sample_broker::{issue, start_broker, Broker, WAIT};
use sitewatch_testkit::{free_port, wait_until, ChildGuard, Postgres};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Paths of one client's certificate, key and CA.
struct Client {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Client {
    fn site(pki: &Path, site: &str) -> Client {
        let d = pki.join("sites").join(site);
        Client {
            cert: d.join("client.pem"),
            key: d.join("client.key"),
            ca: pki.join("ca.pem"),
        }
    }

    fn tls_args(&self) -> Vec<String> {
        vec![
            "--cafile".into(),
            self.ca.display().to_string(),
            "--cert".into(),
            self.cert.display().to_string(),
            "--key".into(),
            self.key.display().to_string(),
        ]
    }
}

fn publish(b: &Broker, c: Option<&Client>, topic: &str, msg: &str) -> Output {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-V", "5", "-q", "1", "-h", "127.0.0.1", "-p"])
        .arg(b.port.to_string())
        .args(["-t", topic, "-m", msg]);
    match c {
        Some(c) => cmd.args(c.tls_args()),
        None => cmd.args(["--cafile", &repo_ca(b)]),
    };
    cmd.output().expect("mosquitto_pub")
}

fn repo_ca(b: &Broker) -> String {
    // The CA sits next to the log's directory's pki (see the test set-up).
    b.log
        .parent()
        .expect("dir")
        .join("pki/ca.pem")
        .display()
        .to_string()
}

fn subscribe(b: &Broker, c: &Client, filter: &str) -> ChildGuard {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-V", "5", "-h", "127.0.0.1", "-p"])
        .arg(b.port.to_string())
        .args(["-t", filter, "-v"])
        .args(c.tls_args());
    ChildGuard::spawn(&mut cmd).expect("mosquitto_sub")
}

fn set_up() -> (tempfile::TempDir, PathBuf, Broker) {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    issue(&pki, &["ca"]);
    issue(&pki, &["server", "localhost", "127.0.0.1"]);
    issue(&pki, &["site", "site-a"]);
    issue(&pki, &["site", "site-b"]);
    issue(&pki, &["bridge", "bridge.central"]);
    let rogue = dir.path().join("rogue");
    issue(&rogue, &["ca"]);
    issue(&rogue, &["site", "site-a"]);
    let broker = start_broker(dir.path(), &pki);
    (dir, pki, broker)
}

#[test]
fn acl_matrix_on_the_sample_broker_config() {
    let (dir, pki, broker) = set_up();
    let a = Client::site(&pki, "site-a");
    let bridge = Client {
        cert: pki.join("bridges/bridge.central/client.pem"),
        key: pki.join("bridges/bridge.central/client.key"),
        ca: pki.join("ca.pem"),
    };
    let bridge_sub = subscribe(&broker, &bridge, "sitewatch/v1/#");
    let shared_sub = subscribe(&broker, &bridge, "$share/bridges/sitewatch/v1/+/#");
    let a_snoop = subscribe(&broker, &a, "sitewatch/v1/#");
    // Subscriptions are in place once the broker logged all three.
    wait_until(WAIT, "three subscriptions", || {
        std::fs::read_to_string(&broker.log)
            .map(|l| l.matches("Received SUBSCRIBE").count() >= 3)
            .unwrap_or(false)
    })
    .expect("subscribed");

    let own = publish(&broker, Some(&a), "sitewatch/v1/site-a/heartbeat", "own-a");
    assert!(
        own.status.success(),
        "site-a publishing its own topic: {own:?}"
    );
    let foreign = publish(
        &broker,
        Some(&a),
        "sitewatch/v1/site-b/heartbeat",
        "forged-b",
    );
    assert!(
        String::from_utf8_lossy(&foreign.stderr).contains("Not authorized"),
        "the broker must refuse site-a writing as site-b: {foreign:?}"
    );
    let b = Client::site(&pki, "site-b");
    let own_b = publish(&broker, Some(&b), "sitewatch/v1/site-b/heartbeat", "own-b");
    assert!(own_b.status.success());

    // A client without a certificate, and one from another CA, get nowhere.
    let nocert = publish(&broker, None, "sitewatch/v1/site-a/heartbeat", "nocert");
    assert!(!nocert.status.success(), "no certificate must be refused");
    let rogue = Client {
        cert: dir.path().join("rogue/sites/site-a/client.pem"),
        key: dir.path().join("rogue/sites/site-a/client.key"),
        ca: pki.join("ca.pem"),
    };
    let r = publish(
        &broker,
        Some(&rogue),
        "sitewatch/v1/site-a/heartbeat",
        "rogue",
    );
    assert!(
        !r.status.success(),
        "a certificate from another CA must be refused"
    );

    wait_until(WAIT, "bridge saw both own messages", || {
        let l = bridge_sub.log_contents();
        l.contains("own-a") && l.contains("own-b")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", bridge_sub.log_contents()));
    wait_until(WAIT, "shared subscription saw them", || {
        let l = shared_sub.log_contents();
        l.contains("own-a") && l.contains("own-b")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", shared_sub.log_contents()));
    std::thread::sleep(Duration::from_millis(500));
    for (who, log) in [
        ("bridge", bridge_sub.log_contents()),
        ("share", shared_sub.log_contents()),
    ] {
        for bad in ["forged-b", "nocert", "rogue"] {
            assert!(
                !log.contains(bad),
                "{who} received refused message {bad}:\n{log}"
            );
        }
    }
    // Sites read nothing, not even their own data.
    let snoop = a_snoop.log_contents();
    assert!(
        !snoop.contains("own-a") && !snoop.contains("own-b"),
        "site-a must not read fleet data:\n{snoop}"
    );
}

#[test]
fn agent_with_its_certificate_speaks_only_for_its_site() {
    let (dir, pki, broker) = set_up();
    let db = Postgres::start().expect("postgres");
    let url = db.create_database("acl").expect("db");
    let http = free_port();
    let bridge_cfg = dir.path().join("bridge.toml");
    std::fs::write(
        &bridge_cfg,
        format!(
            "[mqtt]\nurl = \"mqtts://localhost:{port}\"\nclient_id = \"bridge.central\"\n\
             ca_file = \"{ca}\"\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\"\n\n\
             [postgres]\nurl = \"{url}\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
             [batch]\nmax_wait_ms = 50\n",
            port = broker.port,
            ca = pki.join("ca.pem").display(),
            cert = pki.join("bridges/bridge.central/client.pem").display(),
            key = pki.join("bridges/bridge.central/client.key").display(),
        ),
    )
    .expect("bridge config");
    let bridge = ChildGuard::spawn(
        Command::new(sitewatch_e2e::bridge_bin())
            .arg("--config")
            .arg(&bridge_cfg),
    )
    .expect("bridge");

    // site-a's certificate used twice: correctly, and by a gateway
    // misconfigured (or tampered with) to claim site-b.
    let agent_cfg = |name: &str, site: &str| {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "site_id = \"{site}\"\n\n[mqtt]\nurl = \"mqtts://localhost:{port}\"\n\
                 client_id = \"{name}\"\nca_file = \"{ca}\"\nclient_cert_file = \"{cert}\"\n\
                 client_key_file = \"{key}\"\n\n[heartbeat]\ninterval_secs = 1\n\n\
                 [disk]\nmounts = []\n",
                port = broker.port,
                ca = pki.join("ca.pem").display(),
                cert = pki.join("sites/site-a/client.pem").display(),
                key = pki.join("sites/site-a/client.key").display(),
            ),
        )
        .expect("agent config");
        p
    };
    let good = ChildGuard::spawn(
        Command::new(sitewatch_e2e::agent_bin())
            .arg("--config")
            .arg(agent_cfg("agent-a", "site-a")),
    )
    .expect("agent a");
    let liar = ChildGuard::spawn(
        Command::new(sitewatch_e2e::agent_bin())
            .arg("--config")
            .arg(agent_cfg("agent-liar", "site-b")),
    )
    .expect("agent liar");

    let count = |q: &str| -> i64 {
        db.psql_db("acl", q)
            .map(|s| s.trim().parse().unwrap_or(-1))
            .unwrap_or(-1)
    };
    wait_until(WAIT, "site-a online with heartbeats", || {
        count("select count(*) from heartbeats where site = 'site-a'") >= 2
            && count("select count(*) from sites where site = 'site-a' and state = 'online'") == 1
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nbridge:\n{}\nagent:\n{}",
            bridge.log_contents(),
            good.log_contents()
        )
    });
    // By now the liar has tried to publish birth and heartbeats as site-b.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count("select count(*) from sites where site = 'site-b'"),
        0,
        "a certificate for site-a must not get data stored as site-b\n{}",
        liar.log_contents()
    );
    let denied = std::fs::read_to_string(&broker.log).unwrap_or_default();
    assert!(
        denied.contains("Denied PUBLISH") && denied.contains("sitewatch/v1/site-b/"),
        "the broker log shows the refusal"
    );
    drop(url);
}
