//! HTTP endpoint: `/healthz` and `/metrics` (axum).
//!
//! `/healthz` answers `200 ok` only when the bridge is connected to the
//! broker with its subscription in place, the database answered a ping
//! within the last second (pinged on demand over a dedicated connection,
//! with a short timeout), the writer's last attempt did not fail, and,
//! when `[loki]` is configured, the last push to Loki did not fail (a
//! failing Loki holds the pipeline). Otherwise `503` with one
//! plain-words line per problem. Without `[loki]` the answer stays `200`
//! and says, on a second line, that log batches are being rejected.
//!
//! `/metrics` renders the registry in the OpenMetrics text format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::sink::postgres::config::PostgresSettings;

/// How long a successful database ping is trusted.
const PING_FRESH: Duration = Duration::from_secs(1);
/// Longest a health check waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// State shared by the handlers.
pub struct HttpState {
    /// Metrics registry to render.
    pub registry: Registry,
    /// Metrics (for `db_up`).
    pub metrics: Metrics,
    /// Connection flags.
    pub health: Arc<Health>,
    /// Database ping over its own connection.
    pub db: DbProbe,
    /// Whether `[loki]` is configured.
    pub loki_configured: bool,
}

/// Pings the database for `/healthz` over a dedicated connection, so a
/// health check never waits behind a batch.
pub struct DbProbe {
    settings: PostgresSettings,
    inner: Mutex<ProbeState>,
}

struct ProbeState {
    client: Option<tokio_postgres::Client>,
    last_ok: Option<Instant>,
}

impl DbProbe {
    /// A probe that connects on first use.
    pub fn new(settings: PostgresSettings) -> DbProbe {
        DbProbe {
            settings,
            inner: Mutex::new(ProbeState {
                client: None,
                last_ok: None,
            }),
        }
    }

    /// `Ok` if the database answered recently or answers now.
    pub async fn check(&self) -> Result<(), String> {
        let mut st = self.inner.lock().await;
        if st.last_ok.is_some_and(|t| t.elapsed() < PING_FRESH) {
            return Ok(());
        }
        let result = tokio::time::timeout(PING_TIMEOUT, async {
            if st.client.as_ref().is_none_or(|c| c.is_closed()) {
                st.client = Some(crate::sink::postgres::connect(&self.settings).await?);
            }
            match &st.client {
                Some(c) => c
                    .simple_query("SELECT 1")
                    .await
                    .map(|_| ())
                    .context("pinging the database"),
                None => Err(anyhow::anyhow!("no database connection")),
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {
                st.last_ok = Some(Instant::now());
                Ok(())
            }
            Ok(Err(e)) => {
                st.client = None;
                st.last_ok = None;
                Err(format!("{e:#}"))
            }
            Err(_) => {
                st.client = None;
                st.last_ok = None;
                Err(format!(
                    "database {} did not answer within {PING_TIMEOUT:?}",
                    self.settings.display
                ))
            }
        }
    }
}

/// Binds the listener (so the caller learns the port at once).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP listener on {addr}"))
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving HTTP")
}

async fn healthz(State(st): State<Arc<HttpState>>) -> Response {
    let mut problems = Vec::new();
    if let Err(why) = st.health.mqtt() {
        problems.push(format!("mqtt: {why}"));
    }
    match st.db.check().await {
        Ok(()) => {
            if let Err(why) = st.health.writes() {
                problems.push(format!("database writes failing: {why}"));
            }
        }
        Err(why) => {
            st.metrics.db_up.set(0);
            problems.push(format!("database: {why}"));
        }
    }
    if let Err(why) = st.health.loki() {
        problems.push(format!("loki: pushes failing (log batches held): {why}"));
    }
    if problems.is_empty() {
        let body = if st.loki_configured {
            "ok\n"
        } else {
            "ok\nnote: no [loki] configured; log batches are rejected as no_log_sink\n"
        };
        (StatusCode::OK, body).into_response()
    } else {
        let mut body = problems.join("\n");
        body.push('\n');
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(st): State<Arc<HttpState>>) -> Response {
    let body = crate::metrics::render(&st.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
