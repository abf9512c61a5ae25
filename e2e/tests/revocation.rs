//! Revoking a site's certificate: `scripts/issue-cert.sh revoke` and its
//! CRL, on the sample broker of `deploy/mosquitto/` (its `crlfile`), with
//! the real agent.
//!
//! - A revoked site's agent is refused (TLS alert `certificate_revoked`,
//!   never a CONNACK) while other sites carry on; before the revocation the
//!   same agent was connected and publishing, so the refusal is the
//!   revocation's doing.
//! - What a reload (SIGHUP) does: new connections are checked against the
//!   new CRL, a connection already open is not (docs/ops.md says so and says
//!   to restart mosquitto to drop it); after a restart the revoked agent
//!   cannot get back in.
//! - mosquitto does not start without its crlfile.
//! - Certificates made before the CA database (`openssl x509 -req`) can be
//!   revoked by their file; a re-issued (rotated) certificate stays valid
//!   while the one it replaced is revoked; `crl` re-signs the list.

mod sample_broker;

use sample_broker::{issue, repo, start_broker, Broker, WAIT};
use sitewatch_testkit::{wait_until, ChildGuard};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The alert OpenSSL sends for a revoked client certificate, as rustls
/// names it in the agent's log.
const REVOKED: &str = "CertificateRevoked";

fn agent_config(dir: &Path, pki: &Path, port: u16, name: &str, site: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let certs = pki.join("sites").join(site);
    std::fs::write(
        &p,
        format!(
            "site_id = \"{site}\"\n\n[mqtt]\nurl = \"mqtts://localhost:{port}\"\n\
             client_id = \"{name}\"\nca_file = \"{ca}\"\nclient_cert_file = \"{cert}\"\n\
             client_key_file = \"{key}\"\n\n[heartbeat]\ninterval_secs = 1\n\n\
             [disk]\nmounts = []\n",
            ca = pki.join("ca.pem").display(),
            cert = certs.join("client.pem").display(),
            key = certs.join("client.key").display(),
        ),
    )
    .expect("agent config");
    p
}

fn agent(config: &Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(sitewatch_e2e::agent_bin())
            .arg("--config")
            .arg(config),
    )
    .expect("agent")
}

/// mosquitto_sub with the bridge's certificate on every heartbeat; waits
/// until the broker has the subscription.
fn watch_heartbeats(b: &Broker, pki: &Path) -> ChildGuard {
    let before = b.log_contents().matches("Received SUBSCRIBE").count();
    let d = pki.join("bridges/bridge.central");
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-V", "5", "-h", "127.0.0.1", "-p"])
        .arg(b.port.to_string())
        .args(["-t", "sitewatch/v1/+/heartbeat", "-v", "--cafile"])
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(d.join("client.pem"))
        .arg("--key")
        .arg(d.join("client.key"));
    let sub = ChildGuard::spawn(&mut cmd).expect("mosquitto_sub");
    wait_until(WAIT, "heartbeat subscription", || {
        b.log_contents().matches("Received SUBSCRIBE").count() > before
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sub.log_contents()));
    sub
}

/// Heartbeats of `site` the subscriber has received.
fn heartbeats(sub: &ChildGuard, site: &str) -> usize {
    let prefix = format!("sitewatch/v1/{site}/heartbeat ");
    sub.log_contents()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .count()
}

/// One QoS 1 publish with a site's certificate: success means the TLS
/// handshake, CONNACK and PUBACK all happened.
fn publish_as(b: &Broker, pki: &Path, site: &str) -> Output {
    let d = pki.join("sites").join(site);
    Command::new("mosquitto_pub")
        .args(["-V", "5", "-q", "1", "-h", "127.0.0.1", "-p"])
        .arg(b.port.to_string())
        .args(["-t", &format!("sitewatch/v1/{site}/probe"), "-m", "x"])
        .arg("--cafile")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(d.join("client.pem"))
        .arg("--key")
        .arg(d.join("client.key"))
        .output()
        .expect("mosquitto_pub")
}

#[test]
fn revoked_site_is_refused_and_other_sites_are_not() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    issue(&pki, &["ca"]);
    issue(&pki, &["server", "localhost", "127.0.0.1"]);
    issue(&pki, &["site", "site-a"]);
    issue(&pki, &["site", "site-b"]);
    issue(&pki, &["bridge", "bridge.central"]);
    let mut broker = start_broker(dir.path(), &pki);
    let sub = watch_heartbeats(&broker, &pki);

    let cfg_a = agent_config(dir.path(), &pki, broker.port, "agent-a", "site-a");
    let cfg_b = agent_config(dir.path(), &pki, broker.port, "agent-b", "site-b");
    let agent_a = agent(&cfg_a);
    let agent_b = agent(&cfg_b);

    // Before the revocation site-a's agent gets in and publishes: the
    // refusals below are the revocation's doing, not a broken set-up.
    wait_until(WAIT, "both sites publish heartbeats", || {
        heartbeats(&sub, "site-a") >= 2 && heartbeats(&sub, "site-b") >= 2
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nsubscriber:\n{}\nagent a:\n{}\nagent b:\n{}",
            sub.log_contents(),
            agent_a.log_contents(),
            agent_b.log_contents()
        )
    });
    assert!(!agent_a.log_contents().contains(REVOKED));

    // The gateway of site-a was stolen.
    let out = issue(&pki, &["revoke", "site-a", "keyCompromise"]);
    assert!(out.contains("revoked"), "{out}");
    broker.install_crl(&pki);
    broker.reload();

    // After the reload a new connection with site-a's certificate is
    // refused in the TLS handshake: the agent never gets a CONNACK and
    // says why; mosquitto_pub fails the same way.
    let cfg_a2 = agent_config(dir.path(), &pki, broker.port, "agent-a-again", "site-a");
    let mut agent_a2 = agent(&cfg_a2);
    agent_a2
        .wait_for_log(REVOKED, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}\nbroker:\n{}", broker.log_contents()));
    let pub_a = publish_as(&broker, &pki, "site-a");
    assert!(
        !pub_a.status.success(),
        "a revoked certificate must not connect after the reload: {pub_a:?}"
    );
    // ...and a new connection of another site is accepted.
    let pub_b = publish_as(&broker, &pki, "site-b");
    assert!(
        pub_b.status.success(),
        "site-b must still connect after the reload: {pub_b:?}\n{}",
        broker.log_contents()
    );

    // A reload does not drop site-a's open connection (mosquitto re-checks
    // only the username of connected clients, src/security_default.c):
    // docs/ops.md says so and says to restart mosquitto. If this fails,
    // mosquitto changed; update the docs.
    let a_at_reload = heartbeats(&sub, "site-a");
    wait_until(WAIT, "site-a's open connection still publishes", || {
        heartbeats(&sub, "site-a") >= a_at_reload + 2
    })
    .unwrap_or_else(|e| panic!("{e:#}\nagent a:\n{}", agent_a.log_contents()));

    // Restart: every client reconnects; site-a's agent cannot.
    let a_refusals = agent_a.log_contents().matches(REVOKED).count();
    drop(sub);
    broker.restart();
    let sub = watch_heartbeats(&broker, &pki);
    wait_until(WAIT, "site-b publishes again after the restart", || {
        heartbeats(&sub, "site-b") >= 2
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nsubscriber:\n{}\nagent b:\n{}\nbroker:\n{}",
            sub.log_contents(),
            agent_b.log_contents(),
            broker.log_contents()
        )
    });
    wait_until(WAIT, "site-a's agent reports the refusal", || {
        agent_a.log_contents().matches(REVOKED).count() > a_refusals
    })
    .unwrap_or_else(|e| panic!("{e:#}\nagent a:\n{}", agent_a.log_contents()));
    assert_eq!(
        heartbeats(&sub, "site-a"),
        0,
        "nothing from the revoked site after the restart\n{}",
        sub.log_contents()
    );
    assert!(
        !agent_b.log_contents().contains(REVOKED),
        "{}",
        agent_b.log_contents()
    );
    // mosquitto 2.0 logs the refusal without the reason or the name.
    let log = broker.log_contents();
    assert!(
        log.contains("certificate verify failed"),
        "the broker log shows the refused handshakes:\n{log}"
    );
}

#[test]
fn broker_does_not_start_without_its_crlfile() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    issue(&pki, &["ca"]);
    issue(&pki, &["server", "localhost", "127.0.0.1"]);
    let mut broker = start_broker(dir.path(), &pki);
    broker.stop();
    std::fs::remove_file(&broker.crl).expect("remove crlfile");
    let err = broker
        .start()
        .expect_err("mosquitto must refuse to start without its crlfile");
    assert!(
        format!("{err:#}").contains("Unable to load certificate revocation file"),
        "{err:#}"
    );
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

/// `openssl verify` with the CRL, as mosquitto checks a client.
fn verify(pki: &Path, cert: &Path) -> Result<(), String> {
    let ca = pki.join("ca.pem");
    let crl = pki.join("crl.pem");
    let out = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        ca.to_str().unwrap(),
        "-CRLfile",
        crl.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn crl_field(pki: &Path, field: &str) -> String {
    let crl = pki.join("crl.pem");
    let out = openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", field]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn older_certificates_rotation_and_crl_resigning() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    issue(&pki, &["ca"]);
    issue(&pki, &["site", "site-b"]);

    // site-c's certificate was made the way issue-cert.sh did before it
    // kept a CA database: openssl x509 -req, nothing in index.txt.
    let c = pki.join("sites/site-c");
    std::fs::create_dir_all(&c).expect("mkdir");
    let p = |f: &str| c.join(f).display().to_string();
    let ext = dir.path().join("ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .expect("ext");
    let ca = pki.join("ca.pem").display().to_string();
    let ca_key = pki.join("ca.key").display().to_string();
    for args in [
        vec![
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &p("client.key"),
        ],
        vec![
            "req",
            "-new",
            "-key",
            &p("client.key"),
            "-subj",
            "/CN=site-c",
            "-out",
            &p("req.csr"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &p("req.csr"),
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "825",
            "-sha256",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            &p("client.pem"),
        ],
    ] {
        let out = openssl(&args);
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    let legacy = dir.path().join("site-c-legacy.pem");
    std::fs::copy(c.join("client.pem"), &legacy).expect("keep the old certificate");
    verify(&pki, &legacy).expect("the old certificate is valid");

    // Rotation: re-issue site-c. The old certificate is recorded and stays
    // valid until it is revoked by its file.
    let out = issue(&pki, &["site", "site-c"]);
    assert!(out.contains("replaced certificate"), "{out}");
    let fresh = c.join("client.pem");
    verify(&pki, &legacy).expect("still valid before it is revoked");
    issue(&pki, &["revoke", legacy.to_str().unwrap(), "superseded"]);
    let err = verify(&pki, &legacy).expect_err("the replaced certificate is revoked");
    assert!(err.contains("certificate revoked"), "{err}");
    verify(&pki, &fresh).expect("the new certificate of site-c stays valid");
    verify(&pki, &pki.join("sites/site-b/client.pem")).expect("site-b stays valid");

    // Revoking twice is harmless; a certificate from another CA is refused.
    issue(&pki, &["revoke", legacy.to_str().unwrap()]);
    let rogue = dir.path().join("rogue");
    issue(&rogue, &["ca"]);
    issue(&rogue, &["site", "site-b"]);
    let out = Command::new(repo().join("scripts/issue-cert.sh"))
        .arg("--dir")
        .arg(&pki)
        .arg("revoke")
        .arg(rogue.join("sites/site-b/client.pem"))
        .output()
        .expect("issue-cert.sh");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not issued by the CA"),
        "{out:?}"
    );

    // `crl` re-signs: a new number and nextUpdate, the same revocations.
    let number_before = crl_field(&pki, "-crlnumber");
    let next_before = crl_field(&pki, "-nextupdate");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    issue(&pki, &["crl"]);
    assert_ne!(crl_field(&pki, "-crlnumber"), number_before);
    assert_ne!(crl_field(&pki, "-nextupdate"), next_before);
    verify(&pki, &legacy).expect_err("still revoked in the re-signed CRL");
    verify(&pki, &fresh).expect("still valid");
    let list = issue(&pki, &["list"]);
    assert_eq!(
        list.lines().filter(|l| l.starts_with("revoked")).count(),
        1,
        "{list}"
    );
    assert_eq!(
        list.lines()
            .filter(|l| l.starts_with("valid") && l.ends_with(" site-c"))
            .count(),
        1,
        "{list}"
    );
}
