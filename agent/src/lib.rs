//! sitewatch-agent: the site daemon that reports a CCTV site's health to
//! the central MQTT broker.
//!
//! # Layout
//!
//! Data flows one way: **sources → publish → outbox → pump → MQTT
//! uplink**.
//!
//! - [`config`]: TOML → validated [`Config`]; collects every problem.
//! - Sources, one module per capability, each a task that samples on its
//!   own interval and hands messages to the [`uplink::publish::Publisher`]:
//!   [`heartbeat`] (host metrics from [`host`]), [`disk`] (mount points)
//!   and [`syslog`] (a syslog receiver relaying `log` batches).
//! - Reporting sources stay free of MQTT and wire types: [`rtsp`] (camera
//!   probes), [`smart`] and [`cleanup`] send their own reports over a
//!   small channel to [`forward`], whose forwarders turn them into
//!   retained state and `event`s for the publisher.
//! - [`uplink`]: everything from a source's message to the broker's
//!   PUBACK, one folder: `publish` (stamps site/boot/seq, encodes with
//!   `sitewatch_wire`, never blocks a source), `outbox` (store-and-forward,
//!   memory or disk, until PUBACK; knows nothing of MQTT), `link` (what
//!   the publisher, the pump and the uplink share), `mqtt` (the uplink
//!   task: birth, Last Will, reconnects, graceful death) and `pkid`
//!   (rumqttc packet ids → outbox records).
//! - [`diagnose`] and [`check`]: plain-words connection diagnostics for
//!   installers. `check --online` is a folder: the broker steps, the
//!   certificate dates, the clock, the table, and one file of rows per
//!   capability (`check/disk.rs`, `syslog.rs`, `rtsp.rs`, `smart.rs`,
//!   `cleanup.rs`).
//! - [`cleanup`]: retention cleanup of recording folders (oldest files
//!   first, between watermarks); each pass is an `event` through
//!   [`forward`].
//! - [`notify`]: systemd readiness, status, watchdog (no-op elsewhere).
//! - [`reload`]: what a SIGHUP changes (diff of old and new config).
//! - [`smart`]: SMART disk health: parsers, verdict rules, state and the
//!   polling task.
//! - [`status`]: the status file a running agent rewrites (connection,
//!   outbox, each source's last result) and `sitewatch-agent status`;
//!   [`once`]: every source one round, printed (`sitewatch-agent once`).
//!
//! The binary (`main.rs`) only parses arguments, sets up logging and the
//! runtime, and calls [`run_with`] with a shutdown future wired to SIGTERM
//! and SIGINT and reloads wired to SIGHUP. Tests call [`run`] in-process
//! or run the binary.

#![warn(missing_docs)]

pub mod check;
pub mod cleanup;
pub mod clock;
pub mod config;
pub mod diagnose;
pub mod disk;
pub mod forward;
pub mod heartbeat;
pub mod host;
pub mod notify;
pub mod once;
pub mod perms;
pub mod reload;
pub mod rtsp;
pub mod smart;
pub mod status;
pub mod syslog;
pub mod uplink;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use uplink::publish::AGENT_VERSION;
use uplink::{link, mqtt, outbox, publish};

/// How long sources get to stop after shutdown is requested. They only
/// wait on timers, except the syslog source, which publishes its pending
/// batches first (bounded at 1.5 s).
const SOURCES_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the uplink gets to say goodbye (its own steps are bounded too).
const UPLINK_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs ring as rustls' process-wide crypto provider, for any rustls
/// user that asks for the default. Our own TLS config names ring
/// explicitly; this only makes the choice unambiguous.
fn install_crypto_provider() {
    // Err means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A set-up problem that a restart will not fix (unreadable password or
/// certificate file…): the binary exits with `EX_CONFIG` (78) for it.
#[derive(Debug)]
pub struct SetupError(pub anyhow::Error);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for SetupError {}

/// Applies a new log filter (`[log] level`); `Err` says why it is invalid.
pub type SetLogLevel = Box<dyn Fn(Option<&str>) -> Result<(), String> + Send>;

/// Extras for [`run_with`] beyond what the tests need.
#[derive(Default)]
pub struct Extras {
    /// The config file, re-read on each reload request.
    pub config_path: Option<PathBuf>,
    /// One message per reload request (SIGHUP).
    pub reload: Option<tokio::sync::mpsc::Receiver<()>>,
    /// Applies a reloaded `[log] level`.
    pub set_log_level: Option<SetLogLevel>,
    /// Syslog sockets from systemd (socket activation).
    pub inherited: syslog::Inherited,
    /// Feed the systemd watchdog (from `WATCHDOG_USEC`).
    pub watchdog: bool,
}

/// The restartable sources.
struct Sources {
    publisher: publish::Publisher,
    session_rx: tokio::sync::watch::Receiver<u32>,
    started: tokio::time::Instant,
    stop: CancellationToken,
    heartbeat: Option<(CancellationToken, JoinHandle<()>)>,
    disk: Option<(CancellationToken, JoinHandle<()>)>,
    syslog: Option<syslog::Syslog>,
    rtsp: Option<(CancellationToken, JoinHandle<()>)>,
    cleanup: Option<(CancellationToken, JoinHandle<()>)>,
    smart: Option<(CancellationToken, JoinHandle<()>)>,
    /// Where the SMART task keeps previous raw values (growth across
    /// restarts): systemd's `$STATE_DIRECTORY`, else the outbox directory
    /// (the outbox only reads its own `*.seg` files), else nowhere.
    state_dir: Option<PathBuf>,
    inherited: Arc<Mutex<syslog::Inherited>>,
}

impl Sources {
    fn first_connect(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.session_rx.clone();
        async move {
            // Err only if the uplink is gone; then there is nothing to wait for.
            let _ = rx.wait_for(|s| *s > 0).await;
        }
    }

    fn start_heartbeat(&mut self, cfg: &config::HeartbeatConfig) {
        let stop = self.stop.child_token();
        let task = tokio::spawn(heartbeat::run(
            self.publisher.clone(),
            cfg.interval,
            self.started,
            self.first_connect(),
            stop.clone(),
        ));
        self.heartbeat = Some((stop, task));
    }

    fn start_disk(&mut self, cfg: &config::DiskConfig) {
        let stop = self.stop.child_token();
        let task = tokio::spawn(disk::run(
            self.publisher.clone(),
            cfg.clone(),
            self.first_connect(),
            stop.clone(),
        ));
        self.disk = Some((stop, task));
    }

    /// Runs a reporting source (camera probes, SMART, cleanup): `source`
    /// sends its reports over a small bounded channel (it waits when the
    /// forwarder is behind, it never grows memory) and `forward` turns them
    /// into messages ([`forward`]). When the source stops it drops its
    /// sender, so the forwarder drains what is left and ends.
    fn spawn_reporting<T, S, SF, F, FF>(
        &self,
        source: S,
        forward: F,
    ) -> (CancellationToken, JoinHandle<()>)
    where
        T: Send + 'static,
        S: FnOnce(tokio::sync::mpsc::Sender<T>, CancellationToken) -> SF + Send + 'static,
        SF: Future<Output = ()> + Send + 'static,
        F: FnOnce(publish::Publisher, tokio::sync::mpsc::Receiver<T>) -> FF + Send + 'static,
        FF: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.child_token();
        let publisher = self.publisher.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let forwarder = tokio::spawn(forward(publisher, rx));
            source(tx, token).await;
            let _ = forwarder.await;
        });
        (stop, task)
    }

    /// Camera probes (off when `cfg` is `None`).
    fn start_rtsp(&mut self, cfg: Option<&rtsp::RtspConfig>) {
        if let Some(cfg) = cfg.cloned() {
            self.rtsp = Some(self.spawn_reporting(
                move |tx, stop| rtsp::run(cfg, tx, stop),
                forward::forward_rtsp,
            ));
        }
    }

    /// Retention cleanup (off when `cfg` is `None`), each pass an `event`.
    fn start_cleanup(&mut self, cfg: Option<&cleanup::CleanupConfig>) {
        if let Some(cfg) = cfg.cloned() {
            self.cleanup = Some(self.spawn_reporting(
                move |tx, stop| cleanup::run(cfg, tx, stop),
                forward::forward_cleanup,
            ));
        }
    }

    /// SMART readings (off when `cfg` is `None`): native ioctls, disks from
    /// the config or discovered in /sys/block.
    fn start_smart(&mut self, cfg: Option<&smart::SmartConfig>) {
        if let Some(cfg) = cfg.cloned() {
            let state_dir = self.state_dir.clone();
            let (reader, discover) = smart::task::native(&cfg);
            self.smart = Some(self.spawn_reporting(
                move |tx, stop| {
                    smart::task::run_with(cfg, state_dir, reader, Some(discover), tx, stop)
                },
                forward::forward_smart,
            ));
        }
    }

    async fn stop_task(slot: &mut Option<(CancellationToken, JoinHandle<()>)>) {
        if let Some((stop, task)) = slot.take() {
            stop.cancel();
            if tokio::time::timeout(SOURCES_STOP_TIMEOUT, task)
                .await
                .is_err()
            {
                tracing::warn!("A source did not stop in time");
            }
        }
    }

    async fn stop_all(&mut self) {
        self.stop.cancel();
        let syslog = self.syslog.take();
        let all = async {
            Self::stop_task(&mut self.heartbeat).await;
            Self::stop_task(&mut self.disk).await;
            Self::stop_task(&mut self.rtsp).await;
            Self::stop_task(&mut self.cleanup).await;
            Self::stop_task(&mut self.smart).await;
            if let Some(s) = syslog {
                s.stop().await;
            }
        };
        if tokio::time::timeout(SOURCES_STOP_TIMEOUT, all)
            .await
            .is_err()
        {
            tracing::warn!("Sources did not stop in time");
        }
    }
}

/// Runs the agent until `shutdown` completes, then publishes the retained
/// `offline`/`shutdown` status and disconnects.
///
/// Returns an error only for set-up problems (unreadable certificate or
/// password file…, as [`SetupError`]); broker trouble is retried forever.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config, shutdown, Extras::default()).await
}

/// [`run`] with reloads, socket activation and the systemd watchdog.
pub async fn run_with(
    config: Config,
    shutdown: impl Future<Output = ()>,
    extras: Extras,
) -> anyhow::Result<()> {
    install_crypto_provider();
    let Extras {
        config_path,
        reload: mut reload_rx,
        set_log_level,
        inherited,
        watchdog,
    } = extras;
    let started = tokio::time::Instant::now();
    let boot = publish::new_boot_id();
    let mut mqtt_print = mqtt::fingerprint(&config)
        .with_context(|| format!("preparing the MQTT connection from {}", config.origin))
        .map_err(SetupError)?;
    let (client, eventloop) = mqtt::connect(&config)
        .with_context(|| format!("preparing the MQTT connection from {}", config.origin))
        .map_err(SetupError)?;
    let heartbeat_secs = u32::try_from(config.heartbeat.interval.as_secs()).unwrap_or(u32::MAX);
    let outbox = open_outbox(&config.outbox);
    let memory_only = outbox.dir().is_none();
    let shared = link::Shared::new(link::Link {
        outbox,
        tracker: uplink::pkid::PkidTracker::new(),
        connected: false,
        client,
    });
    let publisher =
        publish::Publisher::new(&config.site_id, boot, heartbeat_secs, Arc::clone(&shared))?;
    publisher.board().configure(&config);
    let stop_status = CancellationToken::new();
    let status_task = tokio::spawn(status::write_loop(
        publisher.clone(),
        config.status.path(),
        config.status.interval,
        publish::now_ms(),
        stop_status.clone(),
    ));
    let stop_tasks = CancellationToken::new();
    let pump = tokio::spawn(link::pump(Arc::clone(&shared), stop_tasks.clone()));
    let sync = tokio::spawn(link::sync(Arc::clone(&shared), stop_tasks.clone()));
    tracing::info!(
        site = %config.site_id,
        boot = %publisher.boot(),
        version = AGENT_VERSION,
        broker = %config.mqtt.url,
        "Starting"
    );

    let (session_tx, session_rx) = tokio::sync::watch::channel(0u32);
    let mut sources = Sources {
        publisher: publisher.clone(),
        session_rx,
        started,
        stop: CancellationToken::new(),
        heartbeat: None,
        disk: None,
        syslog: None,
        rtsp: None,
        cleanup: None,
        smart: None,
        state_dir: std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| std::env::split_paths(&v).next())
            .or_else(|| config.outbox.dir.clone()),
        inherited: Arc::new(Mutex::new(inherited)),
    };
    sources.start_heartbeat(&config.heartbeat);
    sources.start_disk(&config.disk);
    sources.start_rtsp(config.rtsp.as_ref());
    sources.start_cleanup(config.cleanup.as_ref());
    sources.start_smart(config.smart.as_ref());
    if let Some(sys) = config.syslog.clone() {
        sources.syslog = Some(syslog::Syslog::start(
            publisher.clone(),
            sys,
            Arc::clone(&sources.inherited),
        ));
    }

    let stop_uplink = CancellationToken::new();
    let (reconf_tx, reconf_rx) = tokio::sync::mpsc::channel(1);
    let mut uplink = mqtt::Uplink::new(
        eventloop,
        publisher.clone(),
        mqtt::target(&config).map_err(SetupError)?,
        session_tx,
    )
    .with_reconfigure(reconf_rx);
    if watchdog {
        uplink = uplink.with_watchdog(notify::Watchdog::from_env());
    }
    let mut uplink = tokio::spawn(uplink.run(stop_uplink.clone()));
    notify::ready(&format!(
        "Running; connecting to {} (site {})",
        config.mqtt.url, config.site_id
    ));

    let mut current = config;
    tokio::pin!(shutdown);
    let uplink_ended = loop {
        tokio::select! {
            () = &mut shutdown => break false,
            _ = &mut uplink => break true,
            () = recv_reload(&mut reload_rx) => {
                let Some(path) = config_path.as_deref() else {
                    tracing::warn!("Reload requested but the config path is unknown; ignored");
                    continue;
                };
                notify::reloading();
                let words = reload::apply(
                    path,
                    &mut current,
                    &mut mqtt_print,
                    &mut sources,
                    &reconf_tx,
                    set_log_level.as_deref(),
                )
                .await;
                publisher.board().configure(&current);
                notify::reloaded(&words);
            }
        }
    };

    // Stop the sources first so the shutdown status is the last message.
    notify::stopping();
    sources.stop_all().await;

    // The pump stops first: the uplink's shutdown hands over the last
    // records itself, then the offline status.
    stop_tasks.cancel();
    let _ = pump.await;
    let _ = sync.await;
    if uplink_ended {
        finish_outbox(&shared, memory_only).await;
        stop_status_file(status_task, stop_status).await;
        anyhow::bail!("the MQTT uplink task ended unexpectedly");
    }
    stop_uplink.cancel();
    let res = match tokio::time::timeout(UPLINK_STOP_TIMEOUT, &mut uplink).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("the MQTT uplink task failed: {e}")),
        Err(_) => {
            uplink.abort();
            tracing::warn!("MQTT uplink did not stop in time");
            Ok(())
        }
    };
    finish_outbox(&shared, memory_only).await;
    stop_status_file(status_task, stop_status).await;
    res?;
    let c = publisher.snapshot();
    tracing::info!(
        published = c.published,
        acked = c.acked,
        dropped = c.dropped,
        reconnects = c.reconnects,
        "Stopped"
    );
    Ok(())
}

/// Opens the configured outbox; a disk directory that cannot be used (a
/// dead USB disk, a read-only mount) falls back to memory only, so
/// monitoring goes on. Logs what was replayed.
fn open_outbox(cfg: &outbox::OutboxConfig) -> outbox::Outbox {
    let (ob, report) = match outbox::Outbox::open(cfg) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(
                "Cannot use the outbox directory: {e:#}; keeping messages in memory only \
                 (lost on restart)"
            );
            let mem = outbox::OutboxConfig {
                dir: None,
                ..cfg.clone()
            };
            match outbox::Outbox::open(&mem) {
                Ok(v) => v,
                Err(e) => {
                    // Cannot happen: the settings were validated.
                    tracing::error!("Cannot open the memory outbox: {e:#}; using defaults");
                    outbox::Outbox::open(&outbox::OutboxConfig::default())
                        .unwrap_or_else(|e| panic!("default outbox: {e:#}"))
                }
            }
        }
    };
    if let Some(dir) = &report.dir {
        tracing::info!(
            dir = %dir.display(),
            records = report.records.total(),
            bytes = report.bytes.total(),
            segments = report.segments,
            "Outbox on disk opened; undelivered records from earlier runs are sent first"
        );
        if report.corrupt_regions > 0 || report.read_errors > 0 {
            tracing::warn!(
                dir = %dir.display(),
                corrupt_regions = report.corrupt_regions,
                corrupt_bytes = report.corrupt_bytes,
                read_errors = report.read_errors,
                "Damaged outbox data skipped (counted in outbox_corrupt)"
            );
        }
    }
    ob
}

/// At exit: flushes a disk outbox, or says what a memory outbox loses.
async fn finish_outbox(shared: &Arc<link::Shared>, memory_only: bool) {
    let depth = shared.lock().outbox.stats().depth.total();
    if memory_only {
        if depth > 0 {
            tracing::warn!(
                records = depth,
                "Messages never acknowledged by the broker are lost (memory-only outbox)"
            );
        }
        return;
    }
    let s = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || s.lock().outbox.sync_now()).await {
        Ok(Ok(())) => tracing::info!(records = depth, "Outbox flushed to disk"),
        Ok(Err(e)) => tracing::warn!("Cannot flush the outbox: {e:#}"),
        Err(e) => tracing::warn!(err = %e, "Outbox flush task failed"),
    }
}

/// Lets the status writer mark the agent stopped and write a last time
/// (bounded: a hung status directory never holds up the exit).
async fn stop_status_file(task: JoinHandle<()>, stop: CancellationToken) {
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .is_err()
    {
        tracing::warn!("The status file was not written at exit");
    }
}

/// The next reload request; never completes without an open channel.
async fn recv_reload(rx: &mut Option<tokio::sync::mpsc::Receiver<()>>) {
    if let Some(r) = rx {
        if r.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}
