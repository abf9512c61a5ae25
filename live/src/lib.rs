//! `sitewatch-live`: the centre's view of each site's cameras through the
//! site's public host (DDNS name) and port forward.
//!
//! # Layout
//! - [`config`]: the TOML file, raw then validated (pure but for reading
//!   password files);
//! - [`ddns`]: the probed host name against the site's uplink address
//!   (pure);
//! - [`probe`]: one camera's reachability (DNS, TCP, RTSP DESCRIBE) and
//!   its [`probe::Class`];
//! - [`prober`]: the periodic round, spread over the interval with
//!   bounded concurrency, and the one database writer;
//! - [`store`]: the rows in PostgreSQL (tables of the bridge's schema);
//! - [`fmp4`]: fragmented MP4 boxes (pure);
//! - [`hls`]: live sessions (retina → fMP4 segments → HLS playlist), one
//!   per camera, with the limits and the idle close;
//! - [`http`]: the page, live view, auth, `/healthz` and `/metrics`;
//! - [`metrics`]: the Prometheus registry.
//!
//! [`run`] takes its shutdown future, so tests run the service in-process.

#![deny(missing_docs)]

pub mod config;
pub mod ddns;
pub mod fmp4;
pub mod hls;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod prober;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Runs the service until `shutdown` resolves: the HTTP endpoint and the
/// periodic probe.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let service = Service::start(config).await?;
    shutdown.await;
    tracing::info!("Shutting down.");
    service.stop().await
}

/// A running service (for tests and [`run`]).
pub struct Service {
    http_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Service {
    /// Binds the HTTP listener and starts the prober.
    pub async fn start(config: Config) -> anyhow::Result<Service> {
        let config = Arc::new(config);
        let metrics = Arc::new(metrics::Metrics::new());
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_listen))?;
        let http_addr = listener.local_addr().context("local address")?;
        tracing::info!(%http_addr, sites = config.sites.len(),
            cameras = config.cameras().count(), "HTTP endpoint listening.");
        let mut tasks = tokio::task::JoinSet::new();
        let registry = hls::Registry::new(config.clone(), cancel.clone());
        let state = Arc::new(http::AppState {
            config: config.clone(),
            metrics: metrics.clone(),
            registry,
        });
        tasks.spawn(http::serve(listener, state, cancel.clone()));
        if config.probe.interval.is_some() {
            tasks.spawn(prober::run(config.clone(), metrics.clone(), cancel.clone()));
        } else {
            tracing::info!("Probe off (probe.interval_secs = 0).");
        }
        Ok(Service {
            http_addr,
            cancel,
            tasks,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops every task and waits for them (a probe in flight is
    /// abandoned; its result is not stored).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        while let Some(r) = self.tasks.join_next().await {
            r.context("a task panicked")?;
        }
        Ok(())
    }
}
