//! A private mosquitto broker per test.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rustix::process::Signal;
use tempfile::TempDir;

use crate::process::{
    file_len, is_root, mosquitto_binary, open_log, read_lossy, read_lossy_from, send_signal,
    stop_child, wait_child,
};
use crate::TestCerts;

/// How long a broker may take to open its listeners.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop()` waits after `SIGTERM` before resorting to `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh-port attempts when a port is stolen between picking and binding.
const PORT_ATTEMPTS: usize = 5;

/// Certificate files for one TLS listener, copied into the broker's own
/// directory so the broker (and `restart()`) do not depend on the
/// lifetime of the caller's certificate directory.
#[derive(Debug, Clone)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    fn from_certs(certs: &TestCerts) -> TlsFiles {
        TlsFiles {
            ca: certs.ca_cert.clone(),
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
        }
    }

    fn copy_into(&self, dir: &Path, prefix: &str) -> anyhow::Result<TlsFiles> {
        let copy = |src: &Path, name: &str| -> anyhow::Result<PathBuf> {
            let dst = dir.join(format!("{prefix}-{name}"));
            std::fs::copy(src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            Ok(dst)
        };
        Ok(TlsFiles {
            ca: copy(&self.ca, "ca.pem")?,
            cert: copy(&self.cert, "server.pem")?,
            key: copy(&self.key, "server.key")?,
        })
    }
}

/// Configures a [`Mosquitto`] before starting it.
///
/// A plain-MQTT listener is always present; TLS and mutual-TLS listeners
/// are added on their own ports so one broker can serve positive and
/// negative tests.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start() is called"]
pub struct MosquittoBuilder {
    tls: Option<TlsFiles>,
    mtls: Option<TlsFiles>,
    persistence: bool,
    extra_config: String,
}

impl MosquittoBuilder {
    /// Adds a TLS listener that authenticates the server only, using
    /// `certs`' server certificate; clients trust [`TestCerts::ca_cert`].
    pub fn tls(mut self, certs: &TestCerts) -> Self {
        self.tls = Some(TlsFiles::from_certs(certs));
        self
    }

    /// Adds a TLS listener with `require_certificate true`: clients must
    /// present a certificate signed by `certs`' CA, as site agents do in
    /// production.
    pub fn mtls(mut self, certs: &TestCerts) -> Self {
        self.mtls = Some(TlsFiles::from_certs(certs));
        self
    }

    /// Whether the broker saves retained messages, subscriptions and
    /// queued QoS>0 messages to disk on shutdown (default `false`). The
    /// database survives [`Mosquitto::restart`].
    pub fn persistence(mut self, enabled: bool) -> Self {
        self.persistence = enabled;
        self
    }

    /// Appends raw `mosquitto.conf` lines, e.g. `autosave_interval 1` or
    /// `message_size_limit 1024`.
    ///
    /// They are placed in the global section, before any `listener`
    /// line, so per-listener options (`cafile`, `require_certificate`…)
    /// do not belong here: they would configure a default listener on
    /// port 1883.
    pub fn extra_config(mut self, lines: &str) -> Self {
        self.extra_config.push_str(lines);
        if !self.extra_config.ends_with('\n') {
            self.extra_config.push('\n');
        }
        self
    }

    /// Starts the broker and waits until every listener accepts TCP.
    ///
    /// Retries with fresh ports if a port was taken between picking and
    /// binding.
    pub fn start(self) -> anyhow::Result<Mosquitto> {
        let binary = mosquitto_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-mosquitto-")
            .tempdir()
            .context("creating a temporary directory for mosquitto")?;
        let tls = self
            .tls
            .as_ref()
            .map(|files| files.copy_into(dir.path(), "tls"))
            .transpose()?;
        let mtls = self
            .mtls
            .as_ref()
            .map(|files| files.copy_into(dir.path(), "mtls"))
            .transpose()?;
        let persist_dir = dir.path().join("persist");
        std::fs::create_dir(&persist_dir)
            .with_context(|| format!("creating {}", persist_dir.display()))?;
        let mut broker = Mosquitto {
            binary,
            config_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            persist_dir,
            port: 0,
            tls_port: None,
            mtls_port: None,
            tls,
            mtls,
            persistence: self.persistence,
            extra_config: self.extra_config,
            child: None,
            dir,
        };
        let wanted = 1 + usize::from(broker.tls.is_some()) + usize::from(broker.mtls.is_some());
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let mut ports = crate::free_ports(wanted)?.into_iter();
            broker.port = ports.next().context("free_ports returned too few ports")?;
            broker.tls_port = broker.tls.as_ref().and_then(|_| ports.next());
            broker.mtls_port = broker.mtls.as_ref().and_then(|_| ports.next());
            broker.write_config()?;
            match broker.spawn_and_wait() {
                Ok(()) => return Ok(broker),
                Err(StartError::PortInUse(err)) => last_err = Some(err),
                Err(StartError::Other(err)) => return Err(err),
            }
        }
        let err = last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt made"));
        Err(err.context(format!(
            "mosquitto: ports kept being taken, gave up after {PORT_ATTEMPTS} attempts"
        )))
    }
}

enum StartError {
    /// A listener port was taken: worth retrying with other ports.
    PortInUse(anyhow::Error),
    Other(anyhow::Error),
}

/// A mosquitto broker on `127.0.0.1`, private to one test.
///
/// Config, persistence database and log live in a temporary directory;
/// `Drop` kills the broker and removes it. The log has `log_type all`, so
/// [`Mosquitto::log_contents`] shows every connect, subscribe and publish,
/// which is the quickest way to see why a test failed.
///
/// When the test runs as root the config says `user root`: otherwise
/// mosquitto 2 drops to the `mosquitto` user after binding, which can
/// neither write the log nor save the persistence database in our
/// root-owned `0700` directory.
#[derive(Debug)]
pub struct Mosquitto {
    binary: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    persist_dir: PathBuf,
    port: u16,
    tls_port: Option<u16>,
    mtls_port: Option<u16>,
    tls: Option<TlsFiles>,
    mtls: Option<TlsFiles>,
    persistence: bool,
    extra_config: String,
    child: Option<Child>,
    // Last field: removed after Drop::drop has killed the broker.
    dir: TempDir,
}

impl Mosquitto {
    /// A builder for brokers with TLS, mTLS, persistence or extra config.
    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder {
            tls: None,
            mtls: None,
            persistence: false,
            extra_config: String::new(),
        }
    }

    /// Starts a broker with only a plain (unencrypted, anonymous) listener.
    pub fn start() -> anyhow::Result<Mosquitto> {
        Self::builder().start()
    }

    /// Port of the plain MQTT listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Port of the TLS listener, if [`MosquittoBuilder::tls`] was used.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Port of the mutual-TLS listener, if [`MosquittoBuilder::mtls`] was
    /// used.
    pub fn mtls_port(&self) -> Option<u16> {
        self.mtls_port
    }

    /// `mqtt://127.0.0.1:PORT` for the plain listener.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://localhost:PORT` for the TLS listener. Uses `localhost`
    /// because that is the name in the server certificate (which also
    /// carries the IP SAN `127.0.0.1`).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("mqtts://localhost:{p}"))
    }

    /// `mqtts://localhost:PORT` for the mutual-TLS listener.
    pub fn mtls_url(&self) -> Option<String> {
        self.mtls_port.map(|p| format!("mqtts://localhost:{p}"))
    }

    /// Pid of the running broker, `None` after [`Mosquitto::stop`] or
    /// [`Mosquitto::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory holding config, certificates, log and
    /// persistence database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the generated `mosquitto.conf`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Path of the broker log (it also receives stdout/stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The broker log so far, across restarts.
    pub fn log_contents(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Sends signal `sig` (see [`crate::sig`]) to the running broker, e.g.
    /// `SIGSTOP`/`SIGCONT` to simulate a hung broker whose TCP connections
    /// stay open.
    pub fn signal(&mut self, sig: i32) -> anyhow::Result<()> {
        let child = self
            .child
            .as_mut()
            .context("mosquitto is not running (stopped or killed)")?;
        if let Some(status) = child.try_wait().context("checking mosquitto")? {
            bail!(
                "mosquitto (pid {}) already exited with {status}; log:\n{}",
                child.id(),
                read_lossy(&self.log_path)
            );
        }
        send_signal(child.id(), sig).context("signalling mosquitto")
    }

    /// Graceful shutdown: `SIGTERM` (mosquitto saves its persistence
    /// database), wait, `SIGKILL` after 10 s. No-op if not running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::TERM, STOP_TIMEOUT, "mosquitto")?;
        }
        Ok(())
    }

    /// Crash: `SIGKILL` and reap. Nothing is saved. No-op if not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing mosquitto")?;
            child.wait().context("waiting for killed mosquitto")?;
        }
        Ok(())
    }

    /// Starts the broker again with the same ports, config and
    /// persistence directory, e.g. after [`Mosquitto::kill`] in a
    /// store-and-forward test. A still-running broker is stopped
    /// gracefully first. Fails (without trying other ports) if a port was
    /// taken meanwhile.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        match self.spawn_and_wait() {
            Ok(()) => Ok(()),
            Err(StartError::PortInUse(err) | StartError::Other(err)) => {
                Err(err.context("restarting mosquitto on its previous ports"))
            }
        }
    }

    fn listener_ports(&self) -> Vec<u16> {
        std::iter::once(self.port)
            .chain(self.tls_port)
            .chain(self.mtls_port)
            .collect()
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let mut conf = String::from("# Generated by sitewatch-testkit.\n");
        if is_root() {
            conf.push_str("user root\n");
        }
        // Writing to a String cannot fail.
        let _ = write!(
            conf,
            "allow_anonymous true\n\
             persistence {persistence}\n\
             persistence_location {persist}/\n\
             log_dest file {log}\n\
             log_type all\n\
             log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
             connection_messages true\n\
             max_inflight_messages 0\n\
             max_queued_messages 100000\n\
             set_tcp_nodelay true\n",
            persistence = self.persistence,
            persist = self.persist_dir.display(),
            log = self.log_path.display(),
        );
        if !self.extra_config.is_empty() {
            conf.push_str("\n# extra_config\n");
            conf.push_str(&self.extra_config);
        }
        let _ = write!(conf, "\nlistener {} 127.0.0.1\n", self.port);
        for (port, files, require_cert) in [
            (self.tls_port, &self.tls, false),
            (self.mtls_port, &self.mtls, true),
        ] {
            if let (Some(port), Some(files)) = (port, files) {
                let _ = write!(
                    conf,
                    "\nlistener {port} 127.0.0.1\n\
                     cafile {}\n\
                     certfile {}\n\
                     keyfile {}\n\
                     require_certificate {require_cert}\n",
                    files.ca.display(),
                    files.cert.display(),
                    files.key.display(),
                );
            }
        }
        std::fs::write(&self.config_path, conf)
            .with_context(|| format!("writing {}", self.config_path.display()))
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log_offset = file_len(&self.log_path);
        let (stdout, stderr) = open_log(&self.log_path).map_err(StartError::Other)?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))
            .map_err(StartError::Other)?;
        let pid = child.id();
        self.child = Some(child);
        let result = self.wait_ready(log_offset);
        if result.is_err() {
            // Leave nothing running behind a failed start.
            let _ = self.kill();
        }
        result.map_err(|err| {
            let new_log = read_lossy_from(&self.log_path, log_offset);
            let err = anyhow::anyhow!(
                "mosquitto (pid {pid}, config {}, ports {:?}) did not start: {err:#}\n\
                 --- mosquitto log ---\n{new_log}",
                self.config_path.display(),
                self.listener_ports(),
            );
            if new_log.contains("Address already in use") {
                StartError::PortInUse(err)
            } else {
                StartError::Other(err)
            }
        })
    }

    /// Ready means: still running, logged "… running" since `log_offset`
    /// (so every listener is bound by *this* process, not by whoever may
    /// have stolen a port), and every port accepts TCP.
    fn wait_ready(&mut self, log_offset: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let ports = self.listener_ports();
        loop {
            let child = self.child.as_mut().context("mosquitto not spawned")?;
            if let Some(status) = wait_child(child, Duration::ZERO)? {
                self.child = None;
                bail!("mosquitto exited with {status}");
            }
            let logged_running = read_lossy_from(&self.log_path, log_offset)
                .lines()
                .any(|line| line.trim_end().ends_with(" running"));
            if logged_running
                && ports.iter().all(|&port| {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                })
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("timed out after {READY_TIMEOUT:?} waiting for listeners {ports:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // Nothing to save: the directory is deleted right after.
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn taken_port_is_reported_as_port_in_use() {
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let taken = squatter.local_addr().expect("addr").port();
        let mut broker = Mosquitto::start().expect("start broker");
        broker.stop().expect("stop");
        broker.port = taken;
        broker.write_config().expect("config");
        match broker.spawn_and_wait() {
            Err(StartError::PortInUse(err)) => {
                assert!(format!("{err:#}").contains("Address already in use"));
            }
            Err(StartError::Other(err)) => panic!("wrong classification: {err:#}"),
            Ok(()) => panic!("started on a taken port"),
        }
        assert!(broker.pid().is_none());
    }
}
