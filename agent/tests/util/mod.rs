//! Helpers for the agent integration tests: temp configs, running the real
//! binary, and an MQTT observer that decodes every message it sees with
//! `sitewatch_wire::decode` (so anything the agent publishes must be
//! accepted by the bridge's decoder).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use sitewatch_testkit::{ChildGuard, Mosquitto};
use sitewatch_wire::payload::{OfflineReason, State, Status};
use sitewatch_wire::Message;

/// Path of the agent binary built by cargo for these tests.
pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sitewatch-agent")
}

/// Environment variables that would change the agent's config; removed
/// from every child so a developer's shell cannot affect the tests.
const ENV_OVERRIDES: [&str; 6] = [
    "SITEWATCH_SITE_ID",
    "SITEWATCH_MQTT_URL",
    "SITEWATCH_MQTT_USERNAME",
    "SITEWATCH_MQTT_PASSWORD",
    "SITEWATCH_MQTT_CA_FILE",
    "RUST_LOG",
];

/// A config for a test: fast intervals, `/` plus a missing mount.
pub struct TestConfig {
    pub site: String,
    pub url: String,
    /// Extra lines for the `[mqtt]` table (ca_file = …).
    pub mqtt_extra: String,
    pub heartbeat_secs: u32,
    pub disk_secs: u32,
    pub mounts: Vec<String>,
}

impl TestConfig {
    pub fn new(site: &str, url: &str) -> TestConfig {
        TestConfig {
            site: site.to_owned(),
            url: url.to_owned(),
            mqtt_extra: String::new(),
            heartbeat_secs: 1,
            disk_secs: 1,
            mounts: vec!["/".into(), "/nonexistent-sitewatch-test".into()],
        }
    }

    /// Replaces the mounts to report.
    pub fn mounts(mut self, mounts: &[&str]) -> Self {
        self.mounts = mounts.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    pub fn mqtt(mut self, line: &str) -> Self {
        self.mqtt_extra.push_str(line);
        self.mqtt_extra.push('\n');
        self
    }

    pub fn text(&self) -> String {
        let mounts: Vec<String> = self.mounts.iter().map(|m| format!("{m:?}")).collect();
        format!(
            "site_id = \"{site}\"\n\
             [mqtt]\nurl = \"{url}\"\nkeep_alive_secs = 5\n{extra}\
             [heartbeat]\ninterval_secs = {hb}\n\
             [disk]\ninterval_secs = {disk}\nmounts = [{mounts}]\nstatvfs_timeout_ms = 2000\n\
             [log]\nlevel = \"info,sitewatch_agent=debug\"\n",
            site = self.site,
            url = self.url,
            extra = self.mqtt_extra,
            hb = self.heartbeat_secs,
            disk = self.disk_secs,
            mounts = mounts.join(", "),
        )
    }

    /// Writes the config into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.toml", self.site));
        std::fs::write(&path, self.text()).expect("write config");
        // As installed configs are: the agent refuses inline passwords in
        // a world-readable file.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod config");
        path
    }
}

fn agent_command() -> Command {
    let mut cmd = Command::new(agent_bin());
    for var in ENV_OVERRIDES {
        cmd.env_remove(var);
    }
    cmd
}

/// Starts `sitewatch-agent --config PATH`.
pub fn spawn_agent(config: &Path) -> ChildGuard {
    ChildGuard::spawn(agent_command().arg("--config").arg(config)).expect("spawn agent")
}

/// Runs `sitewatch-agent check [args] --config PATH` to completion.
pub fn run_check(config: &Path, args: &[&str]) -> Output {
    agent_command()
        .arg("check")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run check")
}

/// `sitewatch-agent status --file FILE` once its plain-words output
/// contains `needle` (the agent rewrites the file within its interval),
/// or the last output after 10 s.
pub fn status_text_when(status_file: &Path, needle: &str) -> String {
    let mut shown = String::new();
    for _ in 0..40 {
        let out = Command::new(agent_bin())
            .args(["status", "--file"])
            .arg(status_file)
            .output()
            .expect("status");
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        if shown.contains(needle) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    shown
}

/// `check --online` output with each `broker STEP | verdict | words | …`
/// table row also rendered as `STEP: verdict: words` (the step labels
/// padded like `TLS:  ok: …`), so assertions can name a step's result.
pub fn check_steps(out: &Output) -> (Option<i32>, String) {
    let (code, mut text) = outcome(out);
    let mut extra = String::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("broker ") else {
            continue;
        };
        let cols: Vec<&str> = rest.split(" | ").map(str::trim).collect();
        if cols.len() >= 3 {
            let label = format!("{}:", cols[0]);
            extra.push_str(&format!("{label:<5} {}: {}\n", cols[1], cols[2]));
        }
    }
    text.push_str(&extra);
    (code, text)
}

/// `(exit code, stdout + stderr)` of a finished command.
pub fn outcome(out: &Output) -> (Option<i32>, String) {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// One message seen by the observer, already decoded.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub retain: bool,
    pub payload: Vec<u8>,
    pub msg: Message,
}

impl Received {
    pub fn status(&self) -> Option<&Status> {
        match &self.msg {
            Message::Status(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_birth(&self) -> bool {
        self.status().is_some_and(|s| s.state == State::Online)
    }

    pub fn is_offline(&self, reason: OfflineReason) -> bool {
        self.status()
            .is_some_and(|s| s.state == State::Offline && s.reason == Some(reason))
    }

    /// `(site, boot, seq)`.
    pub fn identity(&self) -> (String, String, u64) {
        let (s, b, q) = self.msg.identity();
        (s.to_owned(), b.to_owned(), q)
    }
}

/// A subscriber to every sitewatch topic on a broker's plain listener.
///
/// Runs rumqttc's blocking client on a thread; re-subscribes after each
/// reconnect (broker restarts). Every payload is decoded in the test
/// thread, so an undecodable message fails the test.
pub struct Observer {
    rx: mpsc::Receiver<(String, bool, Vec<u8>)>,
    stop: Arc<AtomicBool>,
    /// Everything received so far, in order.
    pub seen: Vec<Received>,
}

impl Observer {
    /// Connects to `broker`'s plain port and returns once subscribed.
    pub fn start(broker: &Mosquitto) -> Observer {
        let id = format!("observer-{}", fastrand::u32(..));
        let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port());
        opts.set_keep_alive(Duration::from_secs(5));
        // Log batches can be up to LOG_BUF_LEN (~191 KiB).
        opts.set_max_packet_size(512 * 1024, 64 * 1024);
        let (client, mut conn) = Client::new(opts, 10);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(200)) {
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let _ = client
                            .try_subscribe(sitewatch_wire::topic::FILTER_ALL, QoS::AtLeastOnce);
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if tx.send((p.topic, p.retain, p.payload.to_vec())).is_err() {
                            break;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("observer subscribed");
        Observer {
            rx,
            stop,
            seen: Vec::new(),
        }
    }

    fn decode(topic: String, retain: bool, payload: Vec<u8>) -> Received {
        let msg = sitewatch_wire::decode(&topic, &payload).unwrap_or_else(|e| {
            panic!(
                "decoder rejected {topic}: {e} ({}): {}",
                e.reason(),
                String::from_utf8_lossy(&payload)
            )
        });
        Received {
            topic,
            retain,
            payload,
            msg,
        }
    }

    /// Waits for the next message matching `pred`; every message received
    /// meanwhile is decoded and kept in `seen`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Received) -> bool,
    ) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, r, p)) => {
                    let m = Self::decode(t, r, p);
                    self.seen.push(m.clone());
                    if pred(&m) {
                        return m;
                    }
                }
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {what}; seen:\n{}",
                    self.dump()
                ),
            }
        }
    }

    /// Collects messages for `dur` without waiting for anything.
    pub fn drain_for(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        while let Ok((t, r, p)) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let m = Self::decode(t, r, p);
            self.seen.push(m);
        }
    }

    /// Messages seen so far, one per line, for failure messages.
    pub fn dump(&self) -> String {
        self.seen
            .iter()
            .map(|m| {
                format!(
                    "{}{} {}\n",
                    m.topic,
                    if m.retain { " (retained)" } else { "" },
                    String::from_utf8_lossy(&m.payload)
                )
            })
            .collect()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The retained status of `site` as a brand-new subscriber sees it.
pub fn retained_status(broker: &Mosquitto, site: &str) -> Received {
    let mut o = Observer::start(broker);
    let topic = format!("sitewatch/v1/{site}/status");
    o.wait_for(Duration::from_secs(5), "retained status", |m| {
        m.topic == topic && m.retain
    })
}
