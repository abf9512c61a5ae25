//! The status file: what `sitewatch-agent status` shows of a running agent
//! (OpenWrt has no `systemctl status`).
//!
//! The daemon keeps a [`Board`] (inside the [`Publisher`], so every source
//! and the uplink can reach it) with the connection state and the last
//! result of each source. A writer task ([`write_loop`]) turns it, with
//! the outbox figures and the syslog counters, into one small JSON
//! document ([`Status`]) and replaces the file atomically (a temporary
//! file, then rename). It looks every `[status] interval_secs` (5 s),
//! writes only when something changed, and at least every [`REFRESH`] so
//! a reader can tell a live agent from a dead one. It never fsyncs: the
//! default place is on tmpfs, so there is no flash wear.
//!
//! Where ([`StatusConfig::path`]): `[status] file` if set; else
//! `$RUNTIME_DIRECTORY/status.json` when systemd sets it
//! (`RuntimeDirectory=sitewatch`, i.e. `/run/sitewatch`); else
//! [`DEFAULT_FILE`], `/var/run/sitewatch/status.json`, which is tmpfs on
//! OpenWrt and the same directory as `/run/sitewatch` where `/var/run`
//! links to `/run` (every systemd distribution).
//!
//! The document never holds a secret: the broker is the URL (which cannot
//! carry credentials), cameras are named, not addressed, and texts are the
//! same plain words the agent publishes.
//!
//! The reader side is [`main`] (`sitewatch-agent status [--json]`): exit
//! status 0 only when the agent is connected and its file is up to date.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use toml::de::DeValue;

use crate::config::Config;
use crate::sources::forward::human_bytes as bytes;
use crate::sources::smart::smartctl::Json;
use crate::uplink::publish::{now_ms, Publisher};

/// The status file when neither `[status] file` nor `$RUNTIME_DIRECTORY`
/// is set.
pub const DEFAULT_FILE: &str = "/var/run/sitewatch/status.json";

/// File name inside `$RUNTIME_DIRECTORY`.
const RUNTIME_FILE_NAME: &str = "status.json";

/// The file is rewritten at least this often, even when nothing changed.
pub const REFRESH: Duration = Duration::from_secs(30);

/// A file not rewritten for this many [`REFRESH`] periods is stale.
const STALE_FACTOR: u64 = 3;

/// Version of the document's layout ([`Status::format`]).
pub const FORMAT: u32 = 1;

fn default_interval_secs() -> u32 {
    5
}

/// Longest accepted `[status] interval_secs`.
const MAX_INTERVAL_SECS: u32 = 60;

/// Validated `[status]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// `[status] file`; `None` picks the default ([`StatusConfig::path`]).
    pub file: Option<PathBuf>,
    /// How often the writer looks for changes.
    pub interval: Duration,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            file: None,
            interval: Duration::from_secs(default_interval_secs().into()),
        }
    }
}

impl StatusConfig {
    /// The status file: `[status] file`, else `$RUNTIME_DIRECTORY/status.json`,
    /// else [`DEFAULT_FILE`].
    pub fn path(&self) -> PathBuf {
        self.path_with_env(|k| std::env::var_os(k))
    }

    /// [`StatusConfig::path`] with the environment given (tests).
    pub fn path_with_env(&self, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
        if let Some(f) = &self.file {
            return f.clone();
        }
        // systemd sets one directory per RuntimeDirectory= entry, joined
        // with ':'; the first is ours.
        let runtime = env("RUNTIME_DIRECTORY")
            .and_then(|v| std::env::split_paths(&v).next())
            .filter(|p| p.is_absolute());
        match runtime {
            Some(dir) => dir.join(RUNTIME_FILE_NAME),
            None => PathBuf::from(DEFAULT_FILE),
        }
    }
}

/// A TOML value as written, for messages (strings and integers; other
/// kinds by their type).
fn shown(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("\"{s}\""),
        DeValue::Integer(n) => n.to_string(),
        other => format!("a {}", other.type_str()),
    }
}

/// A TOML integer's value, if it fits an `i64`.
fn integer(v: &DeValue<'_>) -> Option<i64> {
    v.as_integer()
        .and_then(|n| i64::from_str_radix(n.as_str(), n.radix()).ok())
}

/// Reads and checks the `[status]` table (`None`: absent), appending
/// plain-words problems. Walks the parsed table rather than going through
/// a serde struct: one more derived deserializer costs the aarch64 binary
/// several KB.
pub fn from_table(table: Option<&DeValue<'_>>, problems: &mut Vec<String>) -> Option<StatusConfig> {
    let before = problems.len();
    let mut cfg = StatusConfig::default();
    let Some(table) = table else {
        return Some(cfg);
    };
    let Some(table) = table.as_table() else {
        problems.push("status must be a table: [status]".into());
        return None;
    };
    for (key, value) in table {
        let value = value.get_ref();
        match key.get_ref().as_ref() {
            "file" => match value.as_str() {
                Some(f) if Path::new(f).is_absolute() && Path::new(f).file_name().is_some() => {
                    cfg.file = Some(PathBuf::from(f));
                }
                _ => problems.push(format!(
                    "status.file = {}: must be an absolute path to a file \
                     (e.g. \"{DEFAULT_FILE}\")",
                    shown(value)
                )),
            },
            "interval_secs" => match integer(value) {
                Some(n) if (1..=i64::from(MAX_INTERVAL_SECS)).contains(&n) => {
                    cfg.interval = Duration::from_secs(n.unsigned_abs());
                }
                _ => problems.push(format!(
                    "status.interval_secs = {}: must be between 1 and \
                     {MAX_INTERVAL_SECS} seconds",
                    shown(value)
                )),
            },
            other => problems.push(format!(
                "unknown setting status.{other} (known: file, interval_secs)"
            )),
        }
    }
    (problems.len() == before).then_some(cfg)
}

// ------------------------------------------------------------ document

/// The status document, as written to the file (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Status {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// When the file was written, Unix ms.
    pub written_ms: u64,
    /// The writer rewrites the file at least this often…
    pub refresh_secs: u64,
    /// …so a file older than this is stale (the agent hangs or died).
    pub stale_after_secs: u64,
    /// Process id of the agent.
    pub pid: u32,
    /// Agent version.
    pub version: String,
    /// Site id.
    pub site: String,
    /// Boot id of this process.
    pub boot: String,
    /// When the agent started, Unix ms.
    pub started_ms: u64,
    /// The config file.
    pub config: String,
    /// The broker connection.
    pub connection: Connection,
    /// The store-and-forward outbox.
    pub outbox: OutboxStatus,
    /// Which sources the config turns on.
    pub sources: Sources,
    /// Last heartbeat, Unix ms.
    pub heartbeat_ms: Option<u64>,
    /// The uplink interface at the last heartbeat (none: off, or not
    /// read).
    pub uplink: Option<UplinkStatus>,
    /// Last disk report.
    pub disk: Option<DiskStatus>,
    /// Syslog counters since start (when `[syslog]` is on).
    pub syslog: Option<SyslogStatus>,
    /// Last probe of each camera.
    pub cameras: Vec<CameraStatus>,
    /// Last SMART reading of each disk.
    pub smart: Vec<SmartStatus>,
    /// Last cleanup pass of each root that needed one.
    pub cleanup: Vec<CleanupStatus>,
    /// Last reading of each UPS (or why upsd could not be read).
    pub ups: Vec<UpsStatus>,
    /// Last round of each `[[reach.target]]`.
    pub reach: Vec<ReachStatus>,
    /// Last LTE reading (`[lte]`).
    pub lte: Option<LteStatus>,
}

/// The broker connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Connection {
    /// `connecting` (never connected yet), `connected`, `disconnected`
    /// (lost, retrying) or `stopped`.
    pub state: String,
    /// Since when, Unix ms.
    pub since_ms: u64,
    /// The broker URL (it cannot carry credentials).
    pub broker: String,
    /// Connection number of this boot (0 before the first).
    pub session: u32,
    /// Last PUBACK from the broker, Unix ms.
    pub last_puback_ms: Option<u64>,
    /// Why the last attempt failed or the connection was lost.
    pub last_error: Option<String>,
    /// Connections after the first.
    pub reconnects: u64,
    /// Failed connection attempts.
    pub connect_errors: u64,
}

/// Outbox figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutboxStatus {
    /// `memory` or `disk`.
    pub mode: String,
    /// Messages waiting for their PUBACK (in flight included).
    pub messages: u64,
    /// Their topic + payload bytes.
    pub bytes: u64,
    /// Handed to MQTT, not yet acknowledged.
    pub in_flight: u64,
    /// Dropped because the outbox was full, all classes.
    pub dropped: u64,
    /// Of which logs.
    pub dropped_log: u64,
    /// Of which time series (heartbeat, disk).
    pub dropped_series: u64,
    /// Of which retained state.
    pub dropped_state: u64,
    /// Of which events.
    pub dropped_event: u64,
}

/// Which sources the config turns on.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sources {
    /// Mount points reported (`[disk] mounts`).
    pub disk: usize,
    /// `[syslog]` is present.
    pub syslog: bool,
    /// Cameras probed (`[rtsp]`).
    pub cameras: usize,
    /// `[smart]` is present.
    pub smart: bool,
    /// `[cleanup]` roots.
    pub cleanup: usize,
    /// `[ups]` is present.
    pub ups: bool,
    /// `[[reach.target]]` entries.
    pub reach: usize,
    /// `[lte]` is present.
    pub lte: bool,
}

/// The uplink interface at the last heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UplinkStatus {
    /// Interface name.
    pub iface: String,
    /// Its primary IPv4 address (empty: none).
    pub addr: String,
    /// Its class (`public`, `cgnat`, `private`...; empty: no address).
    pub addr_class: String,
    /// A global IPv6 address (empty: none).
    pub addr6: String,
    /// Bytes received since the interface came up.
    pub rx_bytes: u64,
    /// Bytes sent since the interface came up.
    pub tx_bytes: u64,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// One disk report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiskStatus {
    /// When, Unix ms.
    pub at_ms: u64,
    /// One per configured mount.
    pub mounts: Vec<MountStatus>,
}

/// One mount point.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MountStatus {
    /// Mount point as configured.
    pub path: String,
    /// Used % (0 on error).
    pub used_pct: f32,
    /// Bytes available to the agent.
    pub avail_bytes: u64,
    /// Size.
    pub total_bytes: u64,
    /// The error code (`missing`, `not_mounted`, `timeout`…).
    pub error: Option<String>,
}

/// Syslog counters since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyslogStatus {
    /// Lines received from allowed senders.
    pub received: u64,
    /// Parsed as RFC 5424.
    pub rfc5424: u64,
    /// Parsed as RFC 3164.
    pub rfc3164: u64,
    /// Understood by a vendor rule.
    pub vendor: u64,
    /// Relayed whole.
    pub raw: u64,
    /// Dropped by a rate limit.
    pub rate_limited: u64,
    /// From senders not allowed.
    pub denied: u64,
    /// Dropped before publishing.
    pub dropped: u64,
}

/// One camera's last probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CameraStatus {
    /// Camera name.
    pub camera: String,
    /// Class (`ok`, `auth`, `unreachable`…).
    pub class: String,
    /// Plain words (no credentials: see `rtsp::ProbeReport`).
    pub detail: String,
    /// Failed probes in a row.
    pub failures: u32,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// One disk's last SMART reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SmartStatus {
    /// Kernel name, `sda`.
    pub device: String,
    /// `ok`, `unknown`, `warning` or `critical`.
    pub verdict: String,
    /// `read`, `standby` or `unsupported`.
    pub state: String,
    /// The first reason, or why it could not be read.
    pub detail: Option<String>,
    /// Temperature, °C.
    pub temperature_c: Option<i16>,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// One root's last cleanup pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CleanupStatus {
    /// The root as configured.
    pub root: String,
    /// Nothing was deleted (dry run).
    pub dry_run: bool,
    /// Files deleted (or that would be).
    pub deleted_files: u64,
    /// Bytes freed (or that would be).
    pub deleted_bytes: u64,
    /// Errors.
    pub errors: u64,
    /// Used % before.
    pub used_pct_before: f32,
    /// Used % after.
    pub used_pct_after: f32,
    /// Back under the low watermark.
    pub target_reached: bool,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// One UPS's last reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpsStatus {
    /// UPS name in upsd (`upsd` when upsd itself could not be read).
    pub ups: String,
    /// `on_line`, `on_battery`, `low_battery`, `unknown` or `error`.
    pub power: String,
    /// The reading in plain words, or the error.
    pub detail: String,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// One reachability target's last round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReachStatus {
    /// Name and address as the config gives them (`NVR 192.168.1.10`).
    pub target: String,
    /// `up`, `down` or `unknown` (the round could not be run).
    pub state: String,
    /// The round in plain words (loss, round trips, or why not run).
    pub detail: String,
    /// Since when the state holds (this agent's run), Unix ms.
    pub since_ms: u64,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// The LTE modem's last reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LteStatus {
    /// `good`, `fair`, `poor`, `no_service` or `unknown`.
    pub class: String,
    /// The reading in plain words, or why mmcli could not give it.
    pub detail: String,
    /// When, Unix ms.
    pub at_ms: u64,
}

// ------------------------------------------------------------ board

/// What the sources and the uplink report for the status file. Every
/// method takes a short lock and never blocks.
#[derive(Debug, Default)]
pub struct Board {
    inner: Mutex<BoardState>,
}

#[derive(Debug, Default)]
struct BoardState {
    connection: Connection,
    config: String,
    sources: Sources,
    heartbeat_ms: Option<u64>,
    uplink: Option<UplinkStatus>,
    disk: Option<DiskStatus>,
    cameras: Vec<CameraStatus>,
    smart: Vec<SmartStatus>,
    cleanup: Vec<CleanupStatus>,
    ups: Vec<UpsStatus>,
    reach: Vec<ReachStatus>,
    lte: Option<LteStatus>,
    /// Camera names and cleanup roots in the config, to forget removed
    /// ones on reload.
    camera_names: Vec<String>,
    cleanup_roots: Vec<String>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the config's shape (at start and after each reload): which
    /// sources are on, the broker URL; forgets cameras and roots removed.
    pub fn configure(&self, cfg: &Config) {
        let mut s = self.lock();
        s.config = cfg.origin.clone();
        if s.connection.state.is_empty() {
            s.connection.state = "connecting".into();
            s.connection.since_ms = now_ms();
        }
        if let Ok(u) = cfg.mqtt.url() {
            s.connection.broker = u.to_string();
        }
        s.sources = Sources {
            disk: cfg.sources.disk.mounts.len(),
            syslog: cfg.sources.syslog.is_some(),
            cameras: cfg.sources.rtsp.as_ref().map_or(0, |r| r.cameras.len()),
            smart: cfg.sources.smart.is_some(),
            cleanup: cfg.sources.cleanup.as_ref().map_or(0, |c| c.roots.len()),
            ups: cfg.sources.ups.is_some(),
            reach: cfg.sources.reach.as_ref().map_or(0, |r| r.targets.len()),
            lte: cfg.sources.lte.is_some(),
        };
        s.camera_names = cfg
            .sources
            .rtsp
            .iter()
            .flat_map(|r| r.cameras.iter().map(|c| c.target.name.clone()))
            .collect();
        s.cleanup_roots = cfg
            .sources
            .cleanup
            .iter()
            .flat_map(|c| c.roots.iter().map(|r| r.path.clone()))
            .collect();
        let st = &mut *s;
        st.cameras.retain(|c| st.camera_names.contains(&c.camera));
        st.cleanup.retain(|c| st.cleanup_roots.contains(&c.root));
        if st.sources.disk == 0 {
            st.disk = None;
        }
        if !st.sources.ups {
            st.ups.clear();
        }
        // Targets are relabelled or removed by a reload: the next round
        // lists them again.
        st.reach.clear();
        if !st.sources.lte {
            st.lte = None;
        }
    }

    /// The broker URL in use (after a reconfigure).
    pub fn broker(&self, url: String) {
        self.lock().connection.broker = url;
    }

    /// CONNACK for connection number `session`.
    pub fn connected(&self, session: u32) {
        let mut s = self.lock();
        s.connection.state = "connected".into();
        s.connection.since_ms = now_ms();
        s.connection.session = session;
        s.connection.last_error = None;
    }

    /// The connection was lost (or dropped to apply new settings).
    pub fn lost(&self, why: &str) {
        let mut s = self.lock();
        s.connection.state = "disconnected".into();
        s.connection.since_ms = now_ms();
        s.connection.last_error = Some(why.to_owned());
    }

    /// A connection attempt failed (the state and its start stay).
    pub fn attempt_failed(&self, why: &str) {
        self.lock().connection.last_error = Some(why.to_owned());
    }

    /// A PUBACK arrived.
    pub fn puback(&self) {
        self.lock().connection.last_puback_ms = Some(now_ms());
    }

    /// The agent is stopping (written last).
    pub fn stopped(&self) {
        let mut s = self.lock();
        s.connection.state = "stopped".into();
        s.connection.since_ms = now_ms();
    }

    /// A heartbeat was published.
    pub fn heartbeat(&self) {
        self.lock().heartbeat_ms = Some(now_ms());
    }

    /// The uplink as the last heartbeat read it (`None`: not read).
    pub fn uplink(&self, u: Option<UplinkStatus>) {
        self.lock().uplink = u;
    }

    /// A disk report was published.
    pub fn disk(&self, mounts: Vec<MountStatus>) {
        self.lock().disk = Some(DiskStatus {
            at_ms: now_ms(),
            mounts,
        });
    }

    /// A camera was probed.
    pub fn camera(&self, r: &crate::sources::rtsp::ProbeReport, failures: u32) {
        let c = CameraStatus {
            camera: r.camera.clone(),
            class: r.class.as_str().to_owned(),
            detail: r.detail.clone(),
            failures,
            at_ms: now_ms(),
        };
        upsert(&mut self.lock().cameras, c, |x| &x.camera);
    }

    /// A disk's SMART was read.
    pub fn smart(&self, r: &crate::sources::smart::DiskReport) {
        use crate::sources::smart::Reading;
        let (state, detail) = match &r.reading {
            Reading::Standby => ("standby", Some("spun down; not woken".to_owned())),
            Reading::Unsupported { reason } => ("unsupported", Some(reason.clone())),
            _ => ("read", r.verdict.reasons.first().map(|x| x.detail.clone())),
        };
        let s = SmartStatus {
            device: r.device.clone(),
            verdict: r.verdict.level.as_str().to_owned(),
            state: state.to_owned(),
            detail,
            temperature_c: r.reading.temperature_c(),
            at_ms: now_ms(),
        };
        upsert(&mut self.lock().smart, s, |x| &x.device);
    }

    /// A cleanup pass reported on a root.
    pub fn cleanup(&self, r: &crate::sources::cleanup::CleanupReport) {
        let c = CleanupStatus {
            root: r.root.clone(),
            dry_run: r.dry_run,
            deleted_files: r.deleted_files,
            deleted_bytes: r.deleted_bytes,
            errors: r.errors.total,
            used_pct_before: r.used_pct_before,
            used_pct_after: r.used_pct_after,
            target_reached: r.target_reached,
            at_ms: now_ms(),
        };
        upsert(&mut self.lock().cleanup, c, |x| &x.root);
    }
}

impl Board {
    /// A UPS round: each UPS's power state and words (replaces the last).
    pub fn ups(&self, entries: Vec<(String, String, String)>) {
        let at_ms = now_ms();
        self.lock().ups = entries
            .into_iter()
            .map(|(ups, power, detail)| UpsStatus {
                ups,
                power,
                detail,
                at_ms,
            })
            .collect();
    }
}

impl Board {
    /// A reachability round: each target's label, state and words, in
    /// config order (replaces the last; `since_ms` carries over while a
    /// target's state stays the same).
    pub fn reach(&self, entries: Vec<(String, &'static str, String)>) {
        let at_ms = now_ms();
        let mut s = self.lock();
        let next = entries
            .into_iter()
            .map(|(target, state, detail)| {
                let since_ms = s
                    .reach
                    .iter()
                    .find(|r| r.target == target && r.state == state)
                    .map_or(at_ms, |r| r.since_ms);
                ReachStatus {
                    target,
                    state: state.to_owned(),
                    detail,
                    since_ms,
                    at_ms,
                }
            })
            .collect();
        s.reach = next;
    }
}

impl Board {
    /// An LTE reading: its class and words (replaces the last).
    pub fn lte(&self, class: &str, detail: String) {
        self.lock().lte = Some(LteStatus {
            class: class.to_owned(),
            detail,
            at_ms: now_ms(),
        });
    }
}

/// Replaces the entry with `item`'s key, or appends it (a handful of
/// cameras, disks or roots: a list is smaller than a map).
fn upsert<T>(list: &mut Vec<T>, item: T, key: fn(&T) -> &String) {
    match list.iter_mut().find(|x| key(x) == key(&item)) {
        Some(x) => *x = item,
        None => list.push(item),
    }
}

/// The document for `publisher`'s board now (`written_ms` left 0).
pub fn snapshot(publisher: &Publisher, started_ms: u64) -> Status {
    let c = publisher.snapshot();
    let mode = if publisher.shared().lock().outbox.dir().is_some() {
        "disk"
    } else {
        "memory"
    };
    let s = publisher.board().lock();
    let mut connection = s.connection.clone();
    connection.reconnects = c.reconnects;
    connection.connect_errors = c.connect_errors;
    let dropped = [
        c.outbox_dropped_log,
        c.outbox_dropped_series,
        c.outbox_dropped_state,
        c.outbox_dropped_event,
    ];
    Status {
        format: FORMAT,
        written_ms: 0,
        refresh_secs: REFRESH.as_secs(),
        stale_after_secs: REFRESH.as_secs() * STALE_FACTOR,
        pid: std::process::id(),
        version: crate::uplink::publish::AGENT_VERSION.to_owned(),
        site: publisher.site().to_owned(),
        boot: publisher.boot().to_owned(),
        started_ms,
        config: s.config.clone(),
        connection,
        outbox: OutboxStatus {
            mode: mode.to_owned(),
            messages: c.outbox_depth,
            bytes: c.outbox_bytes,
            in_flight: c.outbox_in_flight,
            dropped: dropped.iter().sum(),
            dropped_log: dropped[0],
            dropped_series: dropped[1],
            dropped_state: dropped[2],
            dropped_event: dropped[3],
        },
        sources: s.sources.clone(),
        heartbeat_ms: s.heartbeat_ms,
        uplink: s.uplink.clone(),
        disk: s.disk.clone(),
        syslog: s.sources.syslog.then_some(SyslogStatus {
            received: c.syslog_received,
            rfc5424: c.syslog_rfc5424,
            rfc3164: c.syslog_rfc3164,
            vendor: c.syslog_vendor,
            raw: c.syslog_raw,
            rate_limited: c.syslog_rate_limited,
            denied: c.syslog_denied,
            dropped: c.syslog_dropped,
        }),
        cameras: s.cameras.clone(),
        smart: s.smart.clone(),
        cleanup: s.cleanup.clone(),
        ups: s.ups.clone(),
        reach: s.reach.clone(),
        lte: s.lte.clone(),
    }
}

// ------------------------------------------------------------ JSON

/// Largest document written or read (64 cameras, 16 mounts and a few
/// dozen disks need far less).
const MAX_DOC_LEN: usize = 1 << 20;

/// `v` as compact JSON (serde-json-core, as the wire messages).
pub fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let mut len = 8 * 1024;
    loop {
        let mut buf = vec![0u8; len];
        match sitewatch_wire::encode(v, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(sitewatch_wire::EncodeError::BufferFull) if len < MAX_DOC_LEN => len *= 4,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Parses a status document.
pub fn parse(text: &[u8]) -> Result<Status, String> {
    // The smartctl fallback's bounded JSON reader: the agent has no
    // serde_json, and serde's derived deserializers for this document
    // would cost the aarch64 binary far more than reusing it.
    let v = crate::sources::smart::smartctl::parse_json(text).map_err(|e| {
        tracing::debug!(err = %e, "Status file is not JSON");
        "not valid JSON".to_owned()
    })?;
    Status::from_json(&v)
}

static NULL: Json = Json::Null;

/// Member `key` ([`Json::Null`] if absent).
fn get<'a>(v: &'a Json, key: &str) -> &'a Json {
    v.get(key).unwrap_or(&NULL)
}

/// A string member, owned (empty if absent).
fn string(v: &Json, key: &str) -> String {
    get(v, key).as_str().unwrap_or_default().to_owned()
}

/// An optional string member.
fn opt_string(v: &Json, key: &str) -> Option<String> {
    get(v, key).as_str().map(str::to_owned)
}

/// An integer member (0 if absent).
fn num(v: &Json, key: &str) -> u64 {
    get(v, key).as_u64().unwrap_or(0)
}

/// A number member as a float.
fn float(v: &Json, key: &str) -> Option<f64> {
    match get(v, key) {
        Json::Num(n) => n.parse().ok(),
        _ => None,
    }
}

/// A boolean member (false if absent).
fn flag(v: &Json, key: &str) -> bool {
    get(v, key).as_bool().unwrap_or(false)
}

impl Status {
    /// Reads a parsed document; missing members read as empty or zero, a
    /// different [`FORMAT`] is refused.
    pub fn from_json(v: &Json) -> Result<Status, String> {
        let format = get(v, "format").as_u64();
        if format != Some(u64::from(FORMAT)) {
            return Err(match format {
                Some(f) => format!("format {f}; this agent reads format {FORMAT}"),
                None => "no format member".into(),
            });
        }
        let u32_of = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let usize_of = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let pct = |v: &Json, key: &str| float(v, key).unwrap_or(0.0) as f32;
        let c = get(v, "connection");
        let o = get(v, "outbox");
        let src = get(v, "sources");
        Ok(Status {
            format: FORMAT,
            written_ms: num(v, "written_ms"),
            refresh_secs: num(v, "refresh_secs"),
            stale_after_secs: num(v, "stale_after_secs"),
            pid: u32_of(num(v, "pid")),
            version: string(v, "version"),
            site: string(v, "site"),
            boot: string(v, "boot"),
            started_ms: num(v, "started_ms"),
            config: string(v, "config"),
            connection: Connection {
                state: string(c, "state"),
                since_ms: num(c, "since_ms"),
                broker: string(c, "broker"),
                session: u32_of(num(c, "session")),
                last_puback_ms: get(c, "last_puback_ms").as_u64(),
                last_error: opt_string(c, "last_error"),
                reconnects: num(c, "reconnects"),
                connect_errors: num(c, "connect_errors"),
            },
            outbox: OutboxStatus {
                mode: string(o, "mode"),
                messages: num(o, "messages"),
                bytes: num(o, "bytes"),
                in_flight: num(o, "in_flight"),
                dropped: num(o, "dropped"),
                dropped_log: num(o, "dropped_log"),
                dropped_series: num(o, "dropped_series"),
                dropped_state: num(o, "dropped_state"),
                dropped_event: num(o, "dropped_event"),
            },
            sources: Sources {
                disk: usize_of(num(src, "disk")),
                syslog: flag(src, "syslog"),
                cameras: usize_of(num(src, "cameras")),
                smart: flag(src, "smart"),
                cleanup: usize_of(num(src, "cleanup")),
                ups: flag(src, "ups"),
                reach: usize_of(num(src, "reach")),
                lte: flag(src, "lte"),
            },
            heartbeat_ms: get(v, "heartbeat_ms").as_u64(),
            uplink: match get(v, "uplink") {
                Json::Null => None,
                u => Some(UplinkStatus {
                    iface: string(u, "iface"),
                    addr: string(u, "addr"),
                    addr_class: string(u, "addr_class"),
                    addr6: string(u, "addr6"),
                    rx_bytes: num(u, "rx_bytes"),
                    tx_bytes: num(u, "tx_bytes"),
                    at_ms: num(u, "at_ms"),
                }),
            },
            disk: match get(v, "disk") {
                Json::Null => None,
                d => Some(DiskStatus {
                    at_ms: num(d, "at_ms"),
                    mounts: get(d, "mounts")
                        .items()
                        .iter()
                        .map(|m| MountStatus {
                            path: string(m, "path"),
                            used_pct: pct(m, "used_pct"),
                            avail_bytes: num(m, "avail_bytes"),
                            total_bytes: num(m, "total_bytes"),
                            error: opt_string(m, "error"),
                        })
                        .collect(),
                }),
            },
            syslog: match get(v, "syslog") {
                Json::Null => None,
                y => Some(SyslogStatus {
                    received: num(y, "received"),
                    rfc5424: num(y, "rfc5424"),
                    rfc3164: num(y, "rfc3164"),
                    vendor: num(y, "vendor"),
                    raw: num(y, "raw"),
                    rate_limited: num(y, "rate_limited"),
                    denied: num(y, "denied"),
                    dropped: num(y, "dropped"),
                }),
            },
            cameras: get(v, "cameras")
                .items()
                .iter()
                .map(|x| CameraStatus {
                    camera: string(x, "camera"),
                    class: string(x, "class"),
                    detail: string(x, "detail"),
                    failures: u32_of(num(x, "failures")),
                    at_ms: num(x, "at_ms"),
                })
                .collect(),
            smart: get(v, "smart")
                .items()
                .iter()
                .map(|x| SmartStatus {
                    device: string(x, "device"),
                    verdict: string(x, "verdict"),
                    state: string(x, "state"),
                    detail: opt_string(x, "detail"),
                    temperature_c: get(x, "temperature_c")
                        .as_i64()
                        .map(|t| t.clamp(-999, 999) as i16),
                    at_ms: num(x, "at_ms"),
                })
                .collect(),
            cleanup: get(v, "cleanup")
                .items()
                .iter()
                .map(|x| CleanupStatus {
                    root: string(x, "root"),
                    dry_run: flag(x, "dry_run"),
                    deleted_files: num(x, "deleted_files"),
                    deleted_bytes: num(x, "deleted_bytes"),
                    errors: num(x, "errors"),
                    used_pct_before: pct(x, "used_pct_before"),
                    used_pct_after: pct(x, "used_pct_after"),
                    target_reached: flag(x, "target_reached"),
                    at_ms: num(x, "at_ms"),
                })
                .collect(),
            ups: get(v, "ups")
                .items()
                .iter()
                .map(|x| UpsStatus {
                    ups: string(x, "ups"),
                    power: string(x, "power"),
                    detail: string(x, "detail"),
                    at_ms: num(x, "at_ms"),
                })
                .collect(),
            reach: get(v, "reach")
                .items()
                .iter()
                .map(|x| ReachStatus {
                    target: string(x, "target"),
                    state: string(x, "state"),
                    detail: string(x, "detail"),
                    since_ms: num(x, "since_ms"),
                    at_ms: num(x, "at_ms"),
                })
                .collect(),
            lte: match get(v, "lte") {
                Json::Null => None,
                x => Some(LteStatus {
                    class: string(x, "class"),
                    detail: string(x, "detail"),
                    at_ms: num(x, "at_ms"),
                }),
            },
        })
    }
}

// ------------------------------------------------------------ writer

/// Writes `bytes` to `path` atomically: a temporary file beside it, then
/// rename. Mode 0644 (the document holds no secret; ops read it without
/// root). No fsync: the file lives on tmpfs and must not wear flash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    // Per process: two agents pointed at one file never mix their writes.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            // The umask may have narrowed the mode on creation.
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            f.write_all(bytes)
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        // A full tmpfs must not keep a half-written file.
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Rewrites the status file of `publisher`'s board at `path` every
/// `interval` when something changed (and at least every [`REFRESH`])
/// until `stop`; then marks the agent stopped and writes once more.
/// Write errors are logged once per distinct error; the agent goes on.
pub async fn write_loop(
    publisher: Publisher,
    path: PathBuf,
    interval: Duration,
    started_ms: u64,
    stop: CancellationToken,
) {
    tracing::debug!(file = %path.display(), "Writing the status file");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(Status, tokio::time::Instant)> = None;
    let mut last_error: Option<String> = None;
    loop {
        let stopping = tokio::select! {
            biased;
            () = stop.cancelled() => true,
            _ = ticker.tick() => false,
        };
        if stopping {
            publisher.board().stopped();
        }
        let doc = snapshot(&publisher, started_ms);
        let due = match &last {
            Some((prev, at)) => *prev != doc || at.elapsed() >= REFRESH,
            None => true,
        };
        if due || stopping {
            let mut out = doc.clone();
            out.written_ms = now_ms();
            let res = match to_json(&out) {
                Ok(bytes) => {
                    let p = path.clone();
                    crate::spawn::spawn_blocking(move || write_atomic(&p, &bytes))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("cannot encode it: {e}")),
            };
            match res {
                Ok(()) => {
                    if last_error.take().is_some() {
                        tracing::info!(file = %path.display(), "Status file written again");
                    }
                    last = Some((doc, tokio::time::Instant::now()));
                }
                Err(e) => {
                    if last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(
                            file = %path.display(),
                            err = %e,
                            "Cannot write the status file (`sitewatch-agent status` will not \
                             see this agent); set [status] file to a writable place"
                        );
                    }
                    last_error = Some(e);
                }
            }
        }
        if stopping {
            return;
        }
    }
}

// ------------------------------------------------------------ reader

/// What `status` concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Connected and the file is up to date (exit 0).
    Connected,
    /// Running, file up to date, not connected.
    NotConnected,
    /// The file is older than its `stale_after_secs`.
    Stale,
    /// The agent wrote its last status on a clean stop.
    Stopped,
    /// The process that wrote the file is gone.
    NotRunning,
    /// No file.
    Missing,
    /// The file cannot be read or parsed.
    Unreadable,
}

impl Verdict {
    /// Stable name for `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Connected => "connected",
            Verdict::NotConnected => "not_connected",
            Verdict::Stale => "stale",
            Verdict::Stopped => "stopped",
            Verdict::NotRunning => "not_running",
            Verdict::Missing => "missing",
            Verdict::Unreadable => "unreadable",
        }
    }
}

/// The `--json` output.
#[derive(Debug, Serialize)]
struct Report<'a> {
    file: &'a str,
    ok: bool,
    verdict: &'static str,
    message: &'a str,
    age_secs: Option<u64>,
    status: Option<&'a Status>,
}

/// Whether process `pid` exists (`None`: cannot tell, no /proc).
fn pid_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new(&format!("/proc/{pid}")).exists())
}

/// Judges a parsed document at `now_ms`: the verdict and one sentence.
pub fn judge(s: &Status, now: u64, alive: Option<bool>) -> (Verdict, String) {
    let written = format!("{} ({})", utc(s.written_ms), ago(now, s.written_ms));
    if s.connection.state == "stopped" {
        return (
            Verdict::Stopped,
            format!(
                "The agent stopped at {}; nothing runs now (this is its last status).",
                utc(s.connection.since_ms)
            ),
        );
    }
    if alive == Some(false) {
        return (
            Verdict::NotRunning,
            format!(
                "The agent (pid {}) is not running any more; it last wrote its status at \
                 {written}. It was killed or crashed: see the system log.",
                s.pid
            ),
        );
    }
    let age_ms = now.saturating_sub(s.written_ms);
    if age_ms > s.stale_after_secs.saturating_mul(1000) {
        return (
            Verdict::Stale,
            format!(
                "The agent has stopped updating its status since {written}; it may hang. \
                 The state below is from then."
            ),
        );
    }
    match s.connection.state.as_str() {
        "connected" => (
            Verdict::Connected,
            format!(
                "Connected to {} since {} ({}).",
                s.connection.broker,
                utc(s.connection.since_ms),
                ago(now, s.connection.since_ms)
            ),
        ),
        state => {
            let what = if state == "connecting" {
                "Not connected yet: trying"
            } else {
                "Disconnected: retrying"
            };
            let why = s
                .connection
                .last_error
                .as_deref()
                .map(|e| format!(" Last error: {e}."))
                .unwrap_or_default();
            (
                Verdict::NotConnected,
                format!(
                    "{what} {} since {} ({}).{why} Messages wait in the outbox.",
                    s.connection.broker,
                    utc(s.connection.since_ms),
                    ago(now, s.connection.since_ms)
                ),
            )
        }
    }
}

/// Unix ms as `2026-12-06 20:30:01 UTC`.
pub fn utc(ms: u64) -> String {
    crate::sources::syslog::time::utc_seconds(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

/// How long before `now` `then` was, in words (`4 s ago`, `3 min ago`).
pub fn ago(now: u64, then: u64) -> String {
    if then > now {
        return "in the future: check the clock".into();
    }
    let s = (now - then) / 1000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7_199 => format!("{} min ago", s / 60),
        7_200..=172_799 => format!("{} h {} min ago", s / 3600, s % 3600 / 60),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// The document in plain words, one `Label: value` line per item.
pub fn render(s: &Status, now: u64) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let when = |ms: u64| format!("{} ({})", utc(ms), ago(now, ms));
    let _ = writeln!(
        o,
        "Agent:       site {}, version {}, pid {}, started {} (boot {})",
        s.site,
        s.version,
        s.pid,
        when(s.started_ms),
        s.boot
    );
    let _ = writeln!(o, "Config:      {}", s.config);
    let c = &s.connection;
    let _ = writeln!(
        o,
        "Connection:  {}, broker {}, since {}; session {}, {} reconnects, {} failed attempts",
        c.state,
        c.broker,
        when(c.since_ms),
        c.session,
        c.reconnects,
        c.connect_errors
    );
    if let Some(e) = &c.last_error {
        let _ = writeln!(o, "Last error:  {e}");
    }
    let _ = writeln!(
        o,
        "Last PUBACK: {}",
        c.last_puback_ms.map_or("none yet".into(), when)
    );
    let b = &s.outbox;
    let _ = writeln!(
        o,
        "Outbox:      {} messages, {} ({}), {} in flight; dropped {} (logs {}, series {}, \
         state {}, events {})",
        b.messages,
        bytes(b.bytes),
        b.mode,
        b.in_flight,
        b.dropped,
        b.dropped_log,
        b.dropped_series,
        b.dropped_state,
        b.dropped_event
    );
    let _ = writeln!(
        o,
        "Heartbeat:   {}",
        s.heartbeat_ms
            .map_or("none yet (sent after the first connection)".into(), when)
    );
    if let Some(u) = &s.uplink {
        // The words of `check`'s row (no second copy of them).
        let addr = match crate::sources::heartbeat::addr_advice(&u.addr_class) {
            _ if u.addr.is_empty() => "no IPv4 address".to_owned(),
            Some((what, _)) => format!("{} ({}: {what})", u.addr, u.addr_class),
            None => format!("{} ({})", u.addr, u.addr_class),
        };
        let v6 = if u.addr6.is_empty() {
            String::new()
        } else {
            format!(", IPv6 {}", u.addr6)
        };
        let _ = writeln!(
            o,
            "Uplink:      {}: {addr}{v6}; {} in, {} out ({})",
            u.iface,
            bytes(u.rx_bytes),
            bytes(u.tx_bytes),
            ago(now, u.at_ms)
        );
    }
    match &s.disk {
        Some(d) => {
            let _ = writeln!(o, "Disk:        {}", when(d.at_ms));
            for m in &d.mounts {
                match &m.error {
                    Some(e) => {
                        let _ = writeln!(o, "  {}: error {e}", m.path);
                    }
                    None => {
                        let _ = writeln!(
                            o,
                            "  {}: {:.1}% used, {} free of {}",
                            m.path,
                            m.used_pct,
                            bytes(m.avail_bytes),
                            bytes(m.total_bytes)
                        );
                    }
                }
            }
        }
        None if s.sources.disk == 0 => {
            let _ = writeln!(o, "Disk:        off (no mounts)");
        }
        None => {
            let _ = writeln!(o, "Disk:        no report yet");
        }
    }
    match &s.syslog {
        Some(y) => {
            let _ = writeln!(
                o,
                "Syslog:      {} lines received (RFC 5424 {}, RFC 3164 {}, vendor {}, raw {}); \
                 {} rate-limited, {} denied, {} dropped",
                y.received,
                y.rfc5424,
                y.rfc3164,
                y.vendor,
                y.raw,
                y.rate_limited,
                y.denied,
                y.dropped
            );
        }
        None => {
            let _ = writeln!(o, "Syslog:      off (no [syslog] table)");
        }
    }
    if s.sources.cameras == 0 {
        let _ = writeln!(o, "Cameras:     off (no [rtsp] cameras)");
    } else {
        let _ = writeln!(
            o,
            "Cameras:     {} of {} probed",
            s.cameras.len(),
            s.sources.cameras
        );
        for cam in &s.cameras {
            let _ = writeln!(
                o,
                "  {}: {} ({} failures in a row, {}): {}",
                cam.camera,
                cam.class,
                cam.failures,
                ago(now, cam.at_ms),
                cam.detail
            );
        }
    }
    if !s.sources.smart {
        let _ = writeln!(o, "SMART:       off (no [smart] table)");
    } else if s.smart.is_empty() {
        let _ = writeln!(o, "SMART:       no disk read yet");
    } else {
        let _ = writeln!(o, "SMART:");
        for d in &s.smart {
            let temp = d
                .temperature_c
                .map(|t| format!(", {t} °C"))
                .unwrap_or_default();
            let detail = d
                .detail
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  {}: {} ({}{temp}, {}){detail}",
                d.device,
                d.verdict,
                d.state,
                ago(now, d.at_ms)
            );
        }
    }
    if s.sources.cleanup == 0 {
        let _ = writeln!(o, "Cleanup:     off (no [cleanup] table)");
    } else if s.cleanup.is_empty() {
        let _ = writeln!(
            o,
            "Cleanup:     nothing to do so far (no root above its high watermark)"
        );
    } else {
        let _ = writeln!(o, "Cleanup:");
        for r in &s.cleanup {
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            let _ = writeln!(
                o,
                "  {}: {verb} {} files ({}), disk {:.1}% -> {:.1}% used, {} errors ({})",
                r.root,
                r.deleted_files,
                bytes(r.deleted_bytes),
                r.used_pct_before,
                r.used_pct_after,
                r.errors,
                ago(now, r.at_ms)
            );
        }
    }
    if !s.sources.ups {
        let _ = writeln!(o, "UPS:         off (no [ups] table)");
    } else if s.ups.is_empty() {
        let _ = writeln!(o, "UPS:         no reading yet");
    } else {
        let _ = writeln!(o, "UPS:");
        for u in &s.ups {
            let _ = writeln!(o, "  {}: {} ({})", u.ups, u.detail, ago(now, u.at_ms));
        }
    }
    if s.sources.reach == 0 {
        let _ = writeln!(o, "Reach:       off (no [[reach.target]])");
    } else if s.reach.is_empty() {
        let _ = writeln!(o, "Reach:       no round yet");
    } else {
        let down = s.reach.iter().filter(|r| r.state != "up").count();
        let _ = writeln!(
            o,
            "Reach:       {} of {} targets answer",
            s.reach.len() - down,
            s.reach.len()
        );
        for r in &s.reach {
            // `ago` reads "N s ago": the state has held since then.
            let since = ago(now, r.since_ms);
            let since = since.strip_suffix(" ago").unwrap_or(&since);
            let _ = writeln!(
                o,
                "  {}: {} for {since}: {} ({})",
                r.target,
                r.state,
                r.detail,
                ago(now, r.at_ms)
            );
        }
    }
    match &s.lte {
        _ if !s.sources.lte => {
            let _ = writeln!(o, "LTE:         off (no [lte] table)");
        }
        None => {
            let _ = writeln!(o, "LTE:         no reading yet");
        }
        Some(l) => {
            let _ = writeln!(
                o,
                "LTE:         {}: {} ({})",
                l.class,
                l.detail,
                ago(now, l.at_ms)
            );
        }
    }
    o
}

/// The status file named by the config at `config_path` (`[status] file`,
/// else the default), plus a note when the config could not be read.
///
/// Only `[status]` is read, so `status` works for a user who may not read
/// the rest (password files) and with a config the agent would refuse.
pub fn file_for_config(config_path: &Path) -> (PathBuf, Option<String>) {
    let default = StatusConfig::default();
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => {
            let note = format!(
                "cannot read the config {} ({e}); looking at the default status file",
                config_path.display()
            );
            return (default.path(), Some(note));
        }
    };
    // The parsed document, as Config::parse reads it first.
    match crate::config::Doc::parse(&text) {
        Ok(doc) => match doc.get(&["status", "file"]).and_then(|f| f.as_str()) {
            Some(f) => (PathBuf::from(f), None),
            None => (default.path(), None),
        },
        Err(problem) => {
            let note = format!(
                "cannot read {} ({problem}); looking at the default status file",
                config_path.display()
            );
            (default.path(), Some(note))
        }
    }
}

/// `sitewatch-agent status [--json] [--file F]`: prints the agent's
/// state from its status file to `out`. Returns the exit status: 0 when
/// the agent is connected and the file is up to date, 1 otherwise.
pub fn main(
    config_path: &Path,
    file: Option<&Path>,
    json: bool,
    out: &mut dyn std::io::Write,
) -> u8 {
    let (path, note) = match file {
        Some(f) => (f.to_owned(), None),
        None => file_for_config(config_path),
    };
    let now = now_ms();
    let shown = path.display().to_string();
    let (verdict, message, doc) = match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            Verdict::Missing,
            format!(
                "No status file at {shown}: the agent is not running, or runs with another \
                 config ([status] file; try --config or --file)."
            ),
            None,
        ),
        Err(e) => (
            Verdict::Unreadable,
            format!("Cannot read the status file {shown}: {e}."),
            None,
        ),
        Ok(bytes) => match parse(&bytes) {
            Ok(doc) => {
                let (v, m) = judge(&doc, now, pid_alive(doc.pid));
                (v, m, Some(doc))
            }
            Err(e) => (
                Verdict::Unreadable,
                format!(
                    "The status file {shown} is not a status document ({e}); \
                     was it written by another version?"
                ),
                None,
            ),
        },
    };
    let ok = verdict == Verdict::Connected;
    let res = if json {
        let report = Report {
            file: &shown,
            ok,
            verdict: verdict.as_str(),
            message: &message,
            age_secs: doc
                .as_ref()
                .map(|d| now.saturating_sub(d.written_ms) / 1000),
            status: doc.as_ref(),
        };
        match to_json(&report) {
            Ok(mut b) => {
                b.push(b'\n');
                out.write_all(&b)
            }
            Err(e) => {
                tracing::error!(err = %e, "Cannot encode the status report");
                writeln!(out, "{{\"ok\":false,\"verdict\":\"unreadable\"}}")
            }
        }
    } else {
        let mut text = String::new();
        if let Some(n) = &note {
            text.push_str(&format!("Note: {n}\n"));
        }
        text.push_str(&format!("{message}\n"));
        if let Some(d) = &doc {
            text.push_str(&format!(
                "Status file: {shown}, written {} ({})\n",
                utc(d.written_ms),
                ago(now, d.written_ms)
            ));
            text.push_str(&render(d, now));
        }
        out.write_all(text.as_bytes())
    };
    if let Err(e) = res {
        tracing::debug!(err = %e, "Cannot write the status output");
    }
    u8::from(!ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(state: &str) -> Status {
        Status {
            format: FORMAT,
            written_ms: 1_000_000,
            refresh_secs: 30,
            stale_after_secs: 90,
            pid: 1,
            version: "0.1.0".into(),
            site: "lokasi1".into(),
            boot: "0123456789abcdef".into(),
            started_ms: 900_000,
            config: "/etc/sitewatch/agent.toml".into(),
            connection: Connection {
                state: state.into(),
                since_ms: 950_000,
                broker: "mqtts://broker.example.com:8883".into(),
                session: 1,
                last_puback_ms: Some(999_000),
                last_error: Some("a \"quoted\" \\ error\nline".into()),
                reconnects: 0,
                connect_errors: 2,
            },
            outbox: OutboxStatus {
                mode: "memory".into(),
                messages: 3,
                bytes: 2048,
                ..OutboxStatus::default()
            },
            sources: Sources {
                disk: 1,
                cameras: 1,
                reach: 1,
                lte: true,
                ..Sources::default()
            },
            heartbeat_ms: Some(998_000),
            uplink: Some(UplinkStatus {
                iface: "pppoe-wan".into(),
                addr: "100.72.18.9".into(),
                addr_class: "cgnat".into(),
                addr6: String::new(),
                rx_bytes: 3 << 20,
                tx_bytes: 1 << 20,
                at_ms: 998_000,
            }),
            disk: Some(DiskStatus {
                at_ms: 997_000,
                mounts: vec![MountStatus {
                    path: "/".into(),
                    used_pct: 42.5,
                    avail_bytes: 1 << 30,
                    total_bytes: 4 << 30,
                    error: None,
                }],
            }),
            syslog: None,
            cameras: vec![CameraStatus {
                camera: "gate".into(),
                class: "auth".into(),
                detail: "401 Unauthorized".into(),
                failures: 3,
                at_ms: 990_000,
            }],
            smart: Vec::new(),
            cleanup: Vec::new(),
            ups: vec![UpsStatus {
                ups: "rack".into(),
                power: "on_battery".into(),
                detail: "on battery, charge 80 % \"x\"".into(),
                at_ms: 996_000,
            }],
            reach: vec![ReachStatus {
                target: "NVR 192.168.1.10".into(),
                state: "down".into(),
                detail: "does not answer (3 of 3 lost)".into(),
                since_ms: 400_000,
                at_ms: 995_000,
            }],
            lte: Some(LteStatus {
                class: "poor".into(),
                detail: "lte, Telkomsel (home), connected; signal poor: RSRP -108 dBm".into(),
                at_ms: 990_000,
            }),
        }
    }

    #[test]
    fn document_round_trips_with_escapes() {
        let d = doc("connected");
        let bytes = to_json(&d).expect("encodes");
        assert_eq!(parse(&bytes).expect("parses"), d);
    }

    #[test]
    fn reader_is_lenient_but_checks_the_format() {
        // Unknown members are ignored, missing ones read as empty.
        let d = parse(br#"{"format":1,"pid":7,"new_member":[1,{"x":null}]}"#).expect("reads");
        assert_eq!((d.pid, d.site.as_str(), d.disk), (7, "", None));
        let e = parse(br#"{"format":2}"#).expect_err("newer format");
        assert!(e.contains("format 2"), "{e}");
        assert_eq!(parse(b"{\"format\":1").expect_err("cut"), "not valid JSON");
    }

    #[test]
    fn verdicts() {
        let d = doc("connected");
        assert_eq!(judge(&d, 1_005_000, Some(true)).0, Verdict::Connected);
        assert_eq!(judge(&d, 1_005_000, None).0, Verdict::Connected);
        assert_eq!(judge(&d, 1_005_000, Some(false)).0, Verdict::NotRunning);
        let (v, m) = judge(&d, 1_000_000 + 91_000, Some(true));
        assert_eq!(v, Verdict::Stale);
        assert!(m.contains("stopped updating its status since"), "{m}");
        let (v, m) = judge(&doc("disconnected"), 1_001_000, Some(true));
        assert_eq!(v, Verdict::NotConnected);
        assert!(m.contains("Disconnected"), "{m}");
        assert_eq!(
            judge(&doc("stopped"), 1_001_000, Some(false)).0,
            Verdict::Stopped
        );
    }

    #[test]
    fn words() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_589_001_000), "2026-12-06 20:30:01 UTC");
        assert_eq!(ago(10_000, 6_000), "4 s ago");
        assert_eq!(ago(10_000_000, 0), "2 h 46 min ago");
        let text = render(&doc("connected"), 1_001_000);
        assert!(
            text.contains("/: 42.5% used, 1.0 GiB free of 4.0 GiB"),
            "{text}"
        );
        assert!(
            text.contains(
                "Uplink:      pppoe-wan: 100.72.18.9 (cgnat: in the ISP's carrier-grade NAT \
                 range (100.64.0.0/10): the site has no public IPv4 address); 3.0 MiB in, \
                 1.0 MiB out (3 s ago)"
            ),
            "{text}"
        );
        assert!(text.contains("gate: auth (3 failures in a row"), "{text}");
        assert!(text.contains("Syslog:      off"), "{text}");
        assert!(
            text.contains("Reach:       0 of 1 targets answer"),
            "{text}"
        );
        assert!(
            text.contains("LTE:         poor: lte, Telkomsel (home), connected; signal poor: RSRP -108 dBm (11 s ago)"),
            "{text}"
        );
        assert!(
            text.contains(
                "  NVR 192.168.1.10: down for 10 min: does not answer (3 of 3 lost) (6 s ago)"
            ),
            "{text}"
        );
    }

    #[test]
    fn reach_state_since_carries_over_while_the_state_holds() {
        let b = Board::default();
        let round = |state: &'static str| vec![("NVR 10.0.0.2".to_owned(), state, String::new())];
        b.reach(round("up"));
        let first = b.lock().reach[0].since_ms;
        std::thread::sleep(Duration::from_millis(5));
        b.reach(round("up"));
        let r = b.lock().reach[0].clone();
        assert_eq!(r.since_ms, first, "same state: the same since");
        assert!(r.at_ms > first);
        std::thread::sleep(Duration::from_millis(5));
        b.reach(round("down"));
        let r = b.lock().reach[0].clone();
        assert_eq!((r.state.as_str(), r.since_ms), ("down", r.at_ms));
        assert!(r.since_ms > first);
    }

    #[test]
    fn default_path() {
        let c = StatusConfig::default();
        assert_eq!(c.path_with_env(|_| None), PathBuf::from(DEFAULT_FILE));
        assert_eq!(
            c.path_with_env(|_| Some("/run/sitewatch:/run/other".into())),
            PathBuf::from("/run/sitewatch/status.json")
        );
        let c = StatusConfig {
            file: Some("/tmp/x.json".into()),
            ..StatusConfig::default()
        };
        assert_eq!(c.path_with_env(|_| None), PathBuf::from("/tmp/x.json"));
    }

    #[test]
    fn config_section() {
        let base = "site_id = \"a\"\n[mqtt]\nurl = \"mqtt://127.0.0.1\"\n";
        let parse = |extra: &str| Config::parse(&format!("{base}{extra}"), "t.toml", |_| None);
        assert_eq!(parse("").expect("ok").status, StatusConfig::default());
        let c = parse("[status]\nfile = \"/tmp/s.json\"\ninterval_secs = 2\n").expect("ok");
        assert_eq!(c.status.file, Some(PathBuf::from("/tmp/s.json")));
        assert_eq!(c.status.interval, Duration::from_secs(2));
        let p = parse("[status]\nfile = \"rel.json\"\ninterval_secs = 0\n").expect_err("bad");
        assert_eq!(p.list.len(), 2, "{p}");
        assert!(
            p.list
                .iter()
                .any(|l| l.contains("status.file = \"rel.json\"")),
            "{p}"
        );
        assert!(
            p.list
                .iter()
                .any(|l| l.contains("status.interval_secs = 0")),
            "{p}"
        );
        let p = parse("[status]\npath = \"/x\"\n").expect_err("unknown key");
        assert!(p.list[0].contains("unknown setting status.path"), "{p}");
        assert!(parse("status = 1\n").is_err());
    }

    #[test]
    fn file_from_config_reads_only_the_status_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("agent.toml");
        // The rest need not be valid: only [status] is read.
        std::fs::write(&cfg, "site_id = 1\n[status]\nfile = \"/tmp/x/s.json\"\n").expect("w");
        assert_eq!(
            file_for_config(&cfg),
            (PathBuf::from("/tmp/x/s.json"), None)
        );
        let (p, note) = file_for_config(&dir.path().join("missing.toml"));
        assert_eq!(p, StatusConfig::default().path());
        assert!(note.is_some_and(|n| n.contains("cannot read the config")));
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/status.json");
        write_atomic(&p, b"one").expect("writes");
        write_atomic(&p, b"two").expect("writes");
        assert_eq!(std::fs::read(&p).expect("reads"), b"two");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["status.json"], "no temporary file left");
    }
}
