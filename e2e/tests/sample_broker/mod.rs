//! The sample broker of `deploy/mosquitto/` with certificates from
//! `scripts/issue-cert.sh`, shared by `acl.rs` and `revocation.rs`: a real
//! mosquitto running that very configuration file with only its paths and
//! port rewritten for a temporary directory.

// Each test file uses a part of this module.
#![allow(dead_code)]

use sitewatch_testkit::{free_port, sig, wait_until, ChildGuard};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Runs `scripts/issue-cert.sh --dir PKI ARGS...`; returns its stdout.
pub fn issue(pki: &Path, args: &[&str]) -> String {
    let out = Command::new(repo().join("scripts/issue-cert.sh"))
        .arg("--dir")
        .arg(pki)
        .args(args)
        .output()
        .expect("run scripts/issue-cert.sh");
    assert!(
        out.status.success(),
        "issue-cert.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// mosquitto with deploy/mosquitto/sitewatch.{conf,acl}, paths and port
/// rewritten for a temp dir. Its `crlfile` is `crl`, a copy of the CA's
/// `crl.pem` as an operator would install it.
pub struct Broker {
    child: Option<ChildGuard>,
    pub port: u16,
    pub log: PathBuf,
    pub crl: PathBuf,
    conf: PathBuf,
}

pub fn start_broker(dir: &Path, pki: &Path) -> Broker {
    let port = free_port();
    let conf = std::fs::read_to_string(repo().join("deploy/mosquitto/sitewatch.conf"))
        .expect("read sample conf");
    let acl = dir.join("sitewatch.acl");
    std::fs::copy(repo().join("deploy/mosquitto/sitewatch.acl"), &acl).expect("copy acl");
    let crl = dir.join("broker-crl.pem");
    std::fs::copy(pki.join("crl.pem"), &crl).expect("copy the CA's crl.pem (issue-cert.sh ca)");
    let server = pki.join("server/localhost");
    let mut conf = conf
        .replace("/etc/mosquitto/sitewatch.acl", &acl.display().to_string())
        .replace(
            "/etc/mosquitto/certs/server.pem",
            &server.join("server.pem").display().to_string(),
        )
        .replace(
            "/etc/mosquitto/certs/server.key",
            &server.join("server.key").display().to_string(),
        )
        .replace(
            "/etc/mosquitto/certs/ca.pem",
            &pki.join("ca.pem").display().to_string(),
        )
        .replace("/etc/mosquitto/certs/crl.pem", &crl.display().to_string())
        .replace("listener 8883", &format!("listener {port} 127.0.0.1"));
    assert!(conf.contains(&format!("listener {port} 127.0.0.1")));
    assert!(
        conf.contains(&format!("\ncrlfile {}\n", crl.display())),
        "the sample config checks client certificates against a CRL"
    );
    let log = dir.join("mosquitto.log");
    conf.push_str(&format!(
        "\npersistence_location {}/\nlog_dest file {}\nlog_type all\n",
        dir.display(),
        log.display()
    ));
    // As root mosquitto would switch to its own user and lose access to
    // the root-owned temp dir.
    conf.push_str("user root\n");
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf).expect("write conf");
    let mut broker = Broker {
        child: None,
        port,
        log,
        crl,
        conf: path,
    };
    broker.start().expect("broker up");
    broker
}

impl Broker {
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.log_contents().matches(needle).count()
    }

    /// Starts mosquitto (again, same port and config) and waits until it
    /// runs; an error if it exits first.
    pub fn start(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "broker already running");
        let before = self.count(" running");
        let bin = sitewatch_testkit::mosquitto_binary()?;
        let mut child = ChildGuard::spawn(Command::new(bin).arg("-c").arg(&self.conf))?;
        let up = wait_until(WAIT, "sample broker runs (or exits)", || {
            self.count(" running") > before || child.try_status().is_some()
        });
        if let Some(status) = child.try_status() {
            anyhow::bail!(
                "mosquitto exited with {status}:\n{}\n{}",
                child.log_contents(),
                self.log_contents()
            );
        }
        up?;
        self.child = Some(child);
        Ok(())
    }

    /// Clean stop (SIGTERM), as `systemctl stop mosquitto`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate().expect("SIGTERM mosquitto");
            assert!(
                child.wait_timeout(WAIT).is_some(),
                "mosquitto did not stop on SIGTERM"
            );
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start().expect("broker restarts");
    }

    /// Copies the CA's current `crl.pem` over the broker's crlfile, as
    /// docs/ops.md tells operators to.
    pub fn install_crl(&self, pki: &Path) {
        std::fs::copy(pki.join("crl.pem"), &self.crl).expect("install crl.pem");
    }

    /// SIGHUP, as `systemctl reload mosquitto`; returns once mosquitto
    /// has logged the reload.
    pub fn reload(&mut self) {
        let before = self.count("Reloading config");
        self.child
            .as_mut()
            .expect("broker running")
            .signal(sig::HUP)
            .expect("SIGHUP mosquitto");
        wait_until(WAIT, "mosquitto reloaded", || {
            self.count("Reloading config") > before
        })
        .expect("reload logged");
        // The reload is logged, then applied in the same step of
        // mosquitto's single-threaded main loop (src/loop.c), before it
        // accepts another connection: nothing to wait for.
    }
}
