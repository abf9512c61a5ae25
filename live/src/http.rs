//! HTTP endpoint: `/healthz` and `/metrics` (axum).
//!
//! `/healthz` answers `200 ok` while the service runs and its last
//! database write did not fail; `503` with the reason otherwise.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Serves until `shutdown` is cancelled; errors are logged.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render))
        .with_state(metrics);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(err = %e, "HTTP endpoint failed.");
    }
}

async fn healthz(State(m): State<Arc<Metrics>>) -> Response {
    if m.db_up.get() == 0 && m.store_failures.get() > 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "database: the last probe result could not be stored\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn render(State(m): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
