//! Prometheus metrics of `sitewatch-live`. Label values come from fixed
//! sets (probe classes), never from the config or the network, so the
//! series count is bounded; no metric holds a URL or a credential.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::probe::Class;

/// Label set `{class}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// A [`Class`] name.
    pub class: &'static str,
}

/// Every metric, registered once in [`Metrics::new`].
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Probes finished, by class.
    pub probes: Family<ClassLabel, Counter>,
    /// Probe results that could not be stored (database down, queue full).
    pub store_failures: Counter,
    /// Cameras whose latest probe was `ok`.
    pub cameras_ok: Gauge,
    /// Cameras configured.
    pub cameras: Gauge,
    /// 1 when the last database write succeeded.
    pub db_up: Gauge,
    /// Live RTSP sessions open now (one per camera, whatever the viewers).
    pub sessions_open: Gauge,
    /// Viewers of all live sessions (players that reloaded a playlist in
    /// the last 10 s).
    pub viewers: Gauge,
    /// Live sessions started since the service started.
    pub sessions_started: Counter,
    /// Segment bytes sent to viewers.
    pub bytes_out: Counter,
    /// Playlist requests refused by a session limit.
    pub limit_refusals: Counter,
    /// Requests refused for want of a token or proxy login.
    pub unauthorized: Counter,
}

impl Metrics {
    /// Creates and registers the metrics under the prefix `sitewatch_live`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sitewatch_live");
        let probes = Family::<ClassLabel, Counter>::default();
        for c in Class::ALL {
            let _ = probes.get_or_create(&ClassLabel { class: c.as_str() });
        }
        registry.register("probes", "Camera probes finished, by class", probes.clone());
        let store_failures = Counter::default();
        registry.register(
            "probe_store_failures",
            "Probe results not stored (database unreachable or queue full)",
            store_failures.clone(),
        );
        let cameras_ok = Gauge::default();
        registry.register(
            "cameras_reachable",
            "Cameras whose latest probe was ok",
            cameras_ok.clone(),
        );
        let cameras = Gauge::default();
        registry.register("cameras", "Cameras configured", cameras.clone());
        let db_up = Gauge::default();
        registry.register(
            "db_up",
            "1 when the last database write succeeded",
            db_up.clone(),
        );
        let sessions_open = Gauge::default();
        registry.register(
            "sessions_open",
            "Live RTSP sessions open",
            sessions_open.clone(),
        );
        let viewers = Gauge::default();
        registry.register(
            "viewers",
            "Players watching a live session (a playlist request in the last 10 s)",
            viewers.clone(),
        );
        let sessions_started = Counter::default();
        registry.register(
            "sessions_started",
            "Live sessions started",
            sessions_started.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "bytes_out",
            "Segment bytes sent to viewers",
            bytes_out.clone(),
        );
        let limit_refusals = Counter::default();
        registry.register(
            "limit_refusals",
            "Live view requests refused by a session limit",
            limit_refusals.clone(),
        );
        let unauthorized = Counter::default();
        registry.register(
            "unauthorized",
            "Requests refused without a viewer token or proxy login",
            unauthorized.clone(),
        );
        Metrics {
            sessions_open,
            viewers,
            sessions_started,
            bytes_out,
            limit_refusals,
            unauthorized,
            registry,
            probes,
            store_failures,
            cameras_ok,
            cameras,
            db_up,
        }
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out = "# encoding failed\n".to_owned();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
