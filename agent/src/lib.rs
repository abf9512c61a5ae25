//! sitewatch-agent: the site daemon that reports a CCTV site's health to
//! the central MQTT broker.
//!
//! # Layout
//!
//! Data flows one way: **sources → publish → outbox → pump → MQTT
//! uplink**.
//!
//! - [`sources`]: one folder per capability and one contract,
//!   [`sources::Source`]: a source's config section (raw → validated),
//!   how it starts, its `check --online` rows, its `check` summary and its
//!   `once` round. The registry at the end of `sources/mod.rs` lists them
//!   (`heartbeat`, `disk`, `syslog`, `rtsp`, `smart`, `cleanup`) and
//!   expands to the per-source code the config loader, `check`, `once`,
//!   reload and shutdown call; [`sources::Supervisor`] owns the running
//!   ones. Sources publish through the [`uplink::publish::Publisher`];
//!   `rtsp`, `smart` and `cleanup` report over a small channel to
//!   their forwarders (`<name>/forward.rs`, shared bits in
//!   `sources/forward.rs`), which turn reports into retained state and
//!   `event`s.
//! - [`uplink`]: everything from a source's message to the broker's
//!   PUBACK, one folder: `publish` (stamps site/boot/seq, encodes with
//!   `sitewatch_wire`, never blocks a source), `outbox` (store-and-forward,
//!   memory or disk, until PUBACK; knows nothing of MQTT), `link` (what
//!   the publisher, the pump and the uplink share), `mqtt` (the uplink
//!   task: birth, Last Will, reconnects, graceful death) and `pkid`
//!   (rumqttc packet ids → outbox records).
//! - [`config`]: TOML → validated [`Config`]; collects every problem. It
//!   reads `site_id`, `[mqtt]`, `[log]`, `[outbox]` and `[status]` itself
//!   and every source's section through the registry.
//! - [`reload`]: what a SIGHUP changes (diff of old and new config); the
//!   sources' part is [`sources::Supervisor::reload`].
//! - [`diagnose`] and [`check`]: plain-words connection diagnostics for
//!   installers. `check --online` is a folder: the broker steps, the
//!   certificate dates, the clock and the table; each source adds its own
//!   rows (`sources/<name>/check.rs`).
//! - [`notify`]: systemd readiness, status, watchdog (no-op elsewhere).
//! - [`status`]: the status file a running agent rewrites (connection,
//!   outbox, each source's last result) and `sitewatch-agent status`;
//!   [`once`]: every source one round, printed (`sitewatch-agent once`).
//! - [`discover`]: `sitewatch-agent discover`, ONVIF camera discovery
//!   printing `[[rtsp.camera]]` blocks (pure XML/SOAP/HTTP reading in
//!   its `xml`, `proto` and `http` modules; the sockets in `client`).
//! - Leaves: [`host`] (host metrics), [`clock`] (wall-clock checks),
//!   [`perms`] (config file permissions), [`spawn`] (tasks and
//!   `block_on` through boxed futures: tokio's machinery compiled once).
//!
//! Imports point down: sources use the uplink's publisher and the leaf
//! `check::row` for their rows; no module imports the crate root.
//!
//! The binary (`main.rs`) only parses arguments, sets up logging and the
//! runtime, and calls [`run_with`] with a shutdown future wired to SIGTERM
//! and SIGINT and reloads wired to SIGHUP. Tests call [`run`] in-process
//! or run the binary.

#![warn(missing_docs)]

pub mod check;
pub mod child;
pub mod clock;
pub mod config;
pub mod diagnose;
pub mod discover;
pub mod host;
pub mod notify;
pub mod once;
pub mod perms;
pub mod reload;
pub mod sources;
pub mod spawn;
pub mod status;
pub mod uplink;

// The capability folders at their old paths, for the fuzz targets
// (`fuzz/fuzz_targets/`), which name them so.
pub use sources::{cleanup, rtsp, smart, syslog};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use uplink::publish::AGENT_VERSION;
use uplink::{link, mqtt, outbox, publish};

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
    pub inherited: sources::syslog::Inherited,
    /// Feed the systemd watchdog (from `WATCHDOG_USEC`).
    pub watchdog: bool,
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
    let heartbeat_secs =
        u32::try_from(config.sources.heartbeat.interval.as_secs()).unwrap_or(u32::MAX);
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
    let status_task = crate::spawn::spawn(status::write_loop(
        publisher.clone(),
        config.status.path(),
        config.status.interval,
        publish::now_ms(),
        stop_status.clone(),
    ));
    let stop_tasks = CancellationToken::new();
    let pump = crate::spawn::spawn(link::pump(Arc::clone(&shared), stop_tasks.clone()));
    let sync = crate::spawn::spawn(link::sync(Arc::clone(&shared), stop_tasks.clone()));
    tracing::info!(
        site = %config.site_id,
        boot = %publisher.boot(),
        version = AGENT_VERSION,
        broker = %config.mqtt.url,
        "Starting"
    );

    let (session_tx, session_rx) = tokio::sync::watch::channel(0u32);
    let cx = sources::Context::new(
        publisher.clone(),
        started,
        session_rx,
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| std::env::split_paths(&v).next())
            .or_else(|| config.outbox.dir.clone()),
        inherited,
    );
    let mut sources = sources::Supervisor::start(cx, &config.sources);

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
    let mut uplink = crate::spawn::spawn(uplink.run(stop_uplink.clone()));
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
    sources.stop().await;

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
    match crate::spawn::spawn_blocking(move || s.lock().outbox.sync_now()).await {
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
