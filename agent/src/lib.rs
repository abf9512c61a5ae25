//! sitewatch-agent: the site daemon that reports a CCTV site's health to
//! the central MQTT broker.
//!
//! # Layout
//!
//! Data flows one way: **sources → publish queue → MQTT uplink**.
//!
//! - [`config`]: TOML → validated [`Config`]; collects every problem.
//! - Sources, one module per capability, each a task that samples on its
//!   own interval and hands messages to the [`publish::Publisher`]:
//!   [`heartbeat`] (host metrics from [`host`]), [`disk`] (mount points)
//!   and [`syslog`] (a syslog receiver relaying `log` batches).
//! - [`publish`]: the publish queue; stamps site/boot/seq, encodes with
//!   `sitewatch_wire`, never blocks a source.
//! - [`mqtt`]: the uplink task; birth, Last Will, reconnects, graceful
//!   death.
//! - [`diagnose`] and [`check`]: plain-words connection diagnostics for
//!   installers.
//!
//! The binary (`main.rs`) only parses arguments, sets up logging and the
//! runtime, and calls [`run`] with a shutdown future wired to SIGTERM and
//! SIGINT. Tests call [`run`] in-process or run the binary.

#![warn(missing_docs)]

pub mod check;
pub mod config;
pub mod diagnose;
pub mod disk;
pub mod heartbeat;
pub mod host;
pub mod mqtt;
pub mod outbox;
pub mod publish;
pub mod syslog;

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Agent version reported in status and heartbeat messages.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

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

/// Runs the agent until `shutdown` completes, then publishes the retained
/// `offline`/`shutdown` status and disconnects.
///
/// Returns an error only for set-up problems (unreadable certificate or
/// password file…); broker trouble is retried forever.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    install_crypto_provider();
    let started = tokio::time::Instant::now();
    let boot = publish::new_boot_id();
    let (client, eventloop) = mqtt::connect(&config)
        .with_context(|| format!("preparing the MQTT connection from {}", config.origin))?;
    let heartbeat_secs = u32::try_from(config.heartbeat.interval.as_secs()).unwrap_or(u32::MAX);
    let publisher = publish::Publisher::new(&config.site_id, boot, heartbeat_secs, client)?;
    tracing::info!(
        site = %config.site_id,
        boot = %publisher.boot(),
        version = AGENT_VERSION,
        broker = %config.mqtt.url,
        "Starting"
    );

    let (session_tx, session_rx) = tokio::sync::watch::channel(0u32);
    let first_connect = move || {
        let mut rx = session_rx.clone();
        async move {
            // Err only if the uplink is gone; then there is nothing to wait for.
            let _ = rx.wait_for(|s| *s > 0).await;
        }
    };

    let stop_sources = CancellationToken::new();
    let mut sources = JoinSet::new();
    sources.spawn(heartbeat::run(
        publisher.clone(),
        config.heartbeat.interval,
        started,
        first_connect(),
        stop_sources.clone(),
    ));
    sources.spawn(disk::run(
        publisher.clone(),
        config.disk.clone(),
        first_connect(),
        stop_sources.clone(),
    ));
    if let Some(sys) = config.syslog.clone() {
        sources.spawn(syslog::run(publisher.clone(), sys, stop_sources.clone()));
    }

    let stop_uplink = CancellationToken::new();
    let uplink = mqtt::Uplink::new(
        eventloop,
        publisher.clone(),
        mqtt::target(&config)?,
        session_tx,
    );
    let mut uplink = tokio::spawn(uplink.run(stop_uplink.clone()));

    tokio::pin!(shutdown);
    let uplink_ended = tokio::select! {
        () = &mut shutdown => false,
        _ = &mut uplink => true,
    };

    // Stop the sources first so the shutdown status is the last message.
    stop_sources.cancel();
    if tokio::time::timeout(SOURCES_STOP_TIMEOUT, async {
        while sources.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("Sources did not stop in time");
        sources.abort_all();
    }

    if uplink_ended {
        anyhow::bail!("the MQTT uplink task ended unexpectedly");
    }
    stop_uplink.cancel();
    match tokio::time::timeout(UPLINK_STOP_TIMEOUT, &mut uplink).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => anyhow::bail!("the MQTT uplink task failed: {e}"),
        Err(_) => {
            uplink.abort();
            tracing::warn!("MQTT uplink did not stop in time");
        }
    }
    let c = publisher.counters().snapshot();
    tracing::info!(
        published = c.published,
        acked = c.acked,
        dropped = c.dropped,
        reconnects = c.reconnects,
        "Stopped"
    );
    Ok(())
}
