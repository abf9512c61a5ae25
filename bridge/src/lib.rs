//! sitewatch bridge: sitewatch MQTT topics into PostgreSQL, and syslog
//! batches into Grafana Loki.
//!
//! # Layout
//! Data flows one way:
//! MQTT ([`source`]) → bounded channel → batching and retries ([`writer`])
//! → decode ([`sink::batch`], using `sitewatch-wire`) → `log` messages to
//! Loki ([`sink::loki`]) → PostgreSQL ([`sink::postgres`]) →
//! acknowledgement to the broker.
//!
//! * [`config`]: TOML file + environment, validated (pure); the sinks'
//!   sections are validated by their own `config` modules;
//! * [`source`]: the MQTT 5 persistent session (rumqttc): the member loop
//!   (the bridge's own session) and, in `source/drain.rs`, the drain loop
//!   (a dead peer's session during a takeover);
//! * [`takeover`]: share groups: the session lease, and when to drain the
//!   session of a member that died;
//! * [`seq_gaps`]: per-site counts of missing sequence numbers, for
//!   `/metrics`;
//! * [`writer`]: batches, retries (one helper reports every database
//!   failure), acks after commit;
//! * [`sink`]: where messages go. Dependencies point one way, towards
//!   [`sink::batch`]:
//!   * [`sink::batch`]: the decoded batch ([`sink::batch::Prepared`]) and
//!     the pure planning of its `log` messages; imports no sink;
//!   * [`sink::loki`]: Loki pushes, with [`sink::loki::config`]
//!     (`[loki]`), `labels`, `proto`, `client`;
//!   * [`sink::postgres`]: one transaction per batch, with
//!     [`sink::postgres::config`] (`[postgres]`) and one private file
//!     per table family (`sites`, `status`, `heartbeat`, `disk`, `logs`,
//!     `streams`, `smart`, `events`, `rejected`, `boots`), each with its
//!     SQL and a `write_*` function;
//!   * [`sink::state`] (the site-state rule), [`sink::classify`] (which
//!     database errors are retried), [`sink::migrations`] (the schema);
//!   * [`sink::postgres::retention`] (`[retention]`): the history tables'
//!     weekly partitions, created ahead and dropped past retention on a
//!     timer, and the writer's rule for messages older than retention;
//! * [`http`]: `/healthz` and `/metrics`;
//! * [`forget`]: the `forget` command (retire rows from the "now" tables);
//! * [`metrics`], [`health`]: shared counters and flags;
//! * [`notify`]: systemd readiness, status and the watchdog;
//! * [`online`]: `check --online`, each service reached step by step.
//!
//! Delivery is at-least-once from the broker and idempotent in the
//! database, so every valid message is stored exactly once.
//!
//! [`run`] is the whole service; [`Bridge`] is the same with a handle, for
//! tests and embedding.

pub mod config;
pub mod forget;
pub mod health;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod online;
pub mod seq_gaps;
pub mod service;
pub mod sink;
pub mod source;
pub mod takeover;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Runs the bridge until `shutdown` resolves, then shuts down gracefully:
/// stops taking messages, commits and acks the current batch, disconnects
/// from the broker. Gives up after `shutdown_timeout_secs` (unacked
/// messages are then redelivered to the next run) and returns an error.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut bridge = Bridge::start(config).await?;
    tokio::select! {
        _ = shutdown => {
            tracing::info!("Shutting down.");
            notify::stopping();
            bridge.stop().await
        }
        why = bridge.failed() => {
            let _ = bridge.stop().await;
            Err(anyhow::anyhow!(why))
        }
    }
}

/// Connects to the database, runs the migrations and exits.
pub async fn migrate_only(config: &Config) -> anyhow::Result<sink::migrations::MigrationReport> {
    let mut client = sink::postgres::connect(&config.postgres).await?;
    sink::migrations::migrate(&mut client)
        .await
        .with_context(|| format!("migrating {}", config.postgres.display))
}

/// A running bridge.
pub struct Bridge {
    http_addr: SocketAddr,
    shutdown_timeout: std::time::Duration,
    client: rumqttc::v5::AsyncClient,
    /// Stop taking messages; commit and ack what is in hand.
    draining: CancellationToken,
    /// Stop polling the broker connection.
    stop_source: CancellationToken,
    /// Stop the HTTP server.
    stop_http: CancellationToken,
    source: JoinHandle<source::Ended>,
    writer: JoinHandle<()>,
    /// The session lease and takeover task (share groups only).
    takeover: Option<JoinHandle<()>>,
    /// Refreshes the seq-gap metrics.
    gaps: JoinHandle<()>,
    /// Creates and drops history partitions.
    partitions: JoinHandle<()>,
    fatal: tokio::sync::watch::Receiver<Option<String>>,
    http: JoinHandle<anyhow::Result<()>>,
}

impl Bridge {
    /// Binds the HTTP listener and starts the tasks. Returns once the
    /// listener is bound; broker and database connect in the background
    /// (with retries), and `/healthz` tells when both are up.
    pub async fn start(config: Config) -> anyhow::Result<Bridge> {
        let mut registry = Registry::default();
        let metrics = metrics::Metrics::new(&mut registry);
        let health = Arc::new(health::Health::default());

        let listener = http::bind(config.http_listen).await?;
        let http_addr = listener
            .local_addr()
            .context("reading the HTTP listener address")?;

        let lease = CancellationToken::new();
        let mut source = source::Source::new(&config, health.clone(), metrics.clone())?;
        if config.share_group.is_some() {
            source = source.connect_when(lease.clone());
        }
        match &config.loki {
            Some(_) => {
                metrics.loki_configured.set(1);
            }
            None => tracing::warn!(
                "No [loki] section: syslog batches (log messages) will be stored in \
                 rejected_messages as no_log_sink, not delivered."
            ),
        }
        metrics.loki_up.set(1);
        let client = source.client();
        // The Receive Maximum: see `source` on flow control.
        let (tx, rx) = mpsc::channel(config.receive_maximum());

        tracing::info!(
            http = %http_addr,
            client_id = %config.client_id,
            filter = %config.filter,
            db = %config.postgres.display,
            "Starting sitewatch-bridge."
        );

        let (fatal_tx, fatal) = tokio::sync::watch::channel(None);
        let draining = CancellationToken::new();
        let stop_source = CancellationToken::new();
        let stop_http = CancellationToken::new();

        let writer = writer_for(
            &config,
            &source,
            rx,
            health.clone(),
            metrics.clone(),
            fatal_tx.clone(),
        )?;
        if let Some(l) = &writer.loki {
            tracing::info!(loki = l.display(), "Syslog batches go to Loki.");
        }
        let schema_ready = writer.schema_ready.clone();
        if let Some(period) = notify::watchdog_period() {
            tracing::debug!(?period, "systemd watchdog enabled");
            tokio::spawn(notify::watchdog(
                period,
                writer.beat.clone(),
                stop_http.clone(),
            ));
        }
        let writer = tokio::spawn(writer.run(draining.clone()));
        let source = tokio::spawn(source.run(tx, draining.clone(), stop_source.clone()));
        let takeover = match &config.share_group {
            Some(group) => {
                let t = takeover::Takeover {
                    config: config.clone(),
                    group: group.clone(),
                    after: config.takeover_after,
                    held: lease,
                    schema_ready: schema_ready.clone(),
                    fatal: fatal_tx,
                    metrics: metrics.clone(),
                };
                Some(tokio::spawn(t.run(stop_source.clone())))
            }
            None => None,
        };
        let gaps = tokio::spawn(seq_gaps::run(
            config.postgres.clone(),
            metrics.clone(),
            schema_ready.clone(),
            stop_source.clone(),
        ));
        let partitions = tokio::spawn(sink::postgres::retention::run(
            config.postgres.clone(),
            config.retention.clone(),
            schema_ready,
            stop_source.clone(),
        ));
        let state = Arc::new(http::HttpState {
            registry,
            metrics,
            health,
            db: http::DbProbe::new(config.postgres.clone()),
            loki_configured: config.loki.is_some(),
        });
        let http = tokio::spawn(http::serve(listener, state, stop_http.clone()));

        Ok(Bridge {
            http_addr,
            shutdown_timeout: config.shutdown_timeout,
            client,
            draining,
            stop_source,
            stop_http,
            source,
            writer,
            takeover,
            gaps,
            partitions,
            fatal,
            http,
        })
    }

    /// Address of the HTTP endpoint (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Resolves with the reason if the bridge hits an error it cannot
    /// recover from (e.g. the database refuses the login or a migration
    /// fails); never resolves otherwise.
    pub async fn failed(&mut self) -> String {
        loop {
            if let Some(why) = self.fatal.borrow_and_update().clone() {
                return why;
            }
            if self.fatal.changed().await.is_err() {
                // Writer gone without a fatal error (it only returns at
                // shutdown): nothing more will be reported.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Graceful shutdown; see [`run`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        self.draining.cancel();
        let mut clean = true;
        match tokio::time::timeout_at(deadline, &mut self.writer).await {
            Ok(_) => {
                // Acks queued by the writer go out before the DISCONNECT.
                let disconnect = tokio::time::timeout_at(deadline, self.client.disconnect()).await;
                if !matches!(disconnect, Ok(Ok(()))) {
                    self.stop_source.cancel();
                }
                if tokio::time::timeout_at(deadline, &mut self.source)
                    .await
                    .is_err()
                {
                    clean = false;
                }
            }
            Err(_) => {
                tracing::warn!(
                    "The current batch could not be committed before the shutdown deadline; \
                     the broker will redeliver it."
                );
                clean = false;
                self.writer.abort();
            }
        }
        self.stop_source.cancel();
        self.source.abort();
        // Ends the lease last: its database connection holds the lock that
        // keeps peers off this bridge's session until the DISCONNECT is out.
        if let Some(t) = self.takeover.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), t).await;
        }
        self.gaps.abort();
        self.partitions.abort();
        self.stop_http.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.http).await;
        self.http.abort();
        if clean {
            tracing::info!("Stopped.");
            Ok(())
        } else {
            anyhow::bail!(
                "shutdown took longer than {:?}; unacknowledged messages will be redelivered",
                self.shutdown_timeout
            )
        }
    }

    /// Stops every task at once without committing, acking or
    /// disconnecting, as a crash would (for tests).
    pub fn kill(self) {
        self.writer.abort();
        self.source.abort();
        if let Some(t) = &self.takeover {
            t.abort();
        }
        self.gaps.abort();
        self.partitions.abort();
        self.http.abort();
    }
}

/// The writer for `source`'s session: batches from `rx` into PostgreSQL
/// (and Loki), acknowledged on `source`'s connection.
pub(crate) fn writer_for(
    config: &Config,
    source: &source::Source,
    rx: mpsc::Receiver<source::Received>,
    health: Arc<health::Health>,
    metrics: metrics::Metrics,
    fatal: tokio::sync::watch::Sender<Option<String>>,
) -> anyhow::Result<writer::Writer> {
    let loki = match &config.loki {
        Some(l) => Some(
            sink::loki::LokiSink::new(l, metrics.clone(), health.clone())
                .context("setting up the Loki client")?
                .into(),
        ),
        None => None,
    };
    Ok(writer::Writer {
        sinks: vec![sink::postgres::PgSink::new(config.postgres.clone())
            .with_max_skew(config.max_clock_skew)
            .with_retention(config.retention.clone())],
        in_flight: config.batch_in_flight,
        loki,
        rx,
        client: source.client(),
        generation: source.generation(),
        max_messages: config.batch_max_messages,
        max_wait: config.batch_max_wait,
        health,
        metrics,
        fatal,
        pending_acks: std::collections::VecDeque::new(),
        schema_ready: CancellationToken::new(),
        beat: notify::Beat::default(),
    })
}
