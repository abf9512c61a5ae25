//! Prometheus metrics of the bridge (prometheus-client registry).
//!
//! Every metric is created here and registered once; the other modules
//! only increment them. Label values come from small fixed sets (message
//! kinds, table names, rejection reasons), never from message contents, so
//! the series count stays bounded whatever the agents send. The one
//! exception is `site_clock_skew_seconds{site}`: one series per site id
//! that sent a valid live message since the bridge started (site ids are
//! validated by the wire decoder and, with the broker ACL, tied to a site
//! certificate). A fleet of thousands of sites means thousands of series,
//! which Prometheus handles easily; series of decommissioned sites stay
//! until the bridge restarts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Rejection reason for a message that decoded but that PostgreSQL refused.
pub const REASON_DB_ERROR: &str = "db_error";
/// Rejection reason for a log batch (or some of its lines) that Loki
/// refused (HTTP 400 or another non-retriable status).
pub const REASON_LOKI_REJECTED: &str = "loki_rejected";
/// Rejection reason for a log batch received while no `[loki]` is set.
pub const REASON_NO_LOG_SINK: &str = "no_log_sink";

/// Tables the bridge inserts rows into (label values of `rows_written`).
pub const TABLES: [&str; 10] = [
    "status_events",
    "heartbeats",
    "disk_usage",
    "log_batches",
    "camera_probes",
    "smart_readings",
    "events",
    "ups_readings",
    "reach_readings",
    "rejected_messages",
];

/// Message kinds used as label values of `messages_received`: the defined
/// kinds, plus `other` for topics whose kind is reserved, unknown or
/// unparsable.
pub const KINDS: [&str; 10] = [
    "status",
    "heartbeat",
    "disk",
    "log",
    "stream",
    "smart",
    "event",
    "ups",
    "reach",
    "other",
];

/// Label values of `loki_requests`: how a push request ended.
pub const LOKI_RESULTS: [&str; 6] = [
    "accepted",
    "refused",
    "rate_limited",
    "server_error",
    "misconfigured",
    "transport_error",
];

/// `{kind="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Message kind.
    pub kind: &'static str,
}

/// `{table="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// Table name.
    pub table: &'static str,
}

/// `{site="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    /// Site id (validated by the wire decoder).
    pub site: String,
}

/// `{reason="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Stable rejection code.
    pub reason: &'static str,
}

/// `{result="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// One of [`LOKI_RESULTS`].
    pub result: &'static str,
}

/// All bridge metrics. Cheap to clone (every metric is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// MQTT messages received from the broker, by kind (redeliveries
    /// included).
    pub messages_received: Family<KindLabel, Counter>,
    /// Rows inserted (conflicting duplicates excluded), by table.
    pub rows_written: Family<TableLabel, Counter>,
    /// Messages stored in `rejected_messages`, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Valid messages that were already stored (redeliveries).
    pub duplicates: Counter,
    /// Batches committed.
    pub batches: Counter,
    /// Time to write and commit one batch (successful attempt).
    pub batch_duration_seconds: Histogram,
    /// Bridge receive time minus agent timestamp, for live messages.
    pub message_lag_seconds: Histogram,
    /// Failed database operations (each retry counts).
    pub db_errors: Counter,
    /// Messages acknowledged to the broker.
    pub acked: Counter,
    /// 1 while connected to the broker with the subscription in place.
    pub mqtt_connected: Gauge,
    /// 1 while the last database operation succeeded.
    pub db_up: Gauge,
    /// Log lines Loki accepted (each counted once, in the push that
    /// stored it).
    pub loki_lines_pushed: Counter,
    /// Bytes of those lines as Loki counts them (line plus structured
    /// metadata names and values, before compression).
    pub loki_bytes_pushed: Counter,
    /// Compressed request bytes sent to Loki, every attempt included.
    pub loki_request_bytes: Counter,
    /// Push requests repeated after a retriable failure (429, 5xx,
    /// transport error, misconfiguration).
    pub loki_retries: Counter,
    /// Log lines Loki refused (kept in `rejected_messages`).
    pub loki_rejected_lines: Counter,
    /// Duration of each push request (answer or failure).
    pub loki_push_duration_seconds: Histogram,
    /// Push requests by result.
    pub loki_requests: Family<ResultLabel, Counter>,
    /// 1 while the last push reached Loki (or Loki is not configured).
    pub loki_up: Gauge,
    /// 1 when `[loki]` is configured.
    pub loki_configured: Gauge,
    /// Latest measured clock skew per site (agent time minus receive
    /// time; positive: the agent's clock is ahead).
    pub site_clock_skew_seconds: Family<SiteLabel, Gauge<f64, AtomicU64>>,
    /// Sequence numbers missing per site, summed over its boots (the
    /// `boot_gaps` view; refreshed by [`crate::seq_gaps`]). Only sites
    /// that have had a gap get a series. A gap is either still in the
    /// agent's outbox or a drop the agent counted in its heartbeat.
    pub site_seq_missing: Family<SiteLabel, Gauge>,
    /// The same over every site.
    pub seq_missing: Gauge,
    /// Share-group sessions of dead peers this bridge drained.
    pub takeovers: Counter,
    /// Messages those drains stored.
    pub takeover_messages: Counter,
    /// 1 while this bridge holds the lease on its own session (share
    /// groups with takeover on).
    pub session_lease_held: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under the prefix
    /// `sitewatch_bridge`. Every label value that can occur is created at
    /// once, so dashboards see zeros rather than missing series.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            messages_received: Family::default(),
            rows_written: Family::default(),
            rejected: Family::default(),
            duplicates: Counter::default(),
            batches: Counter::default(),
            batch_duration_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            message_lag_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 20)),
            db_errors: Counter::default(),
            acked: Counter::default(),
            mqtt_connected: Gauge::default(),
            db_up: Gauge::default(),
            loki_lines_pushed: Counter::default(),
            loki_bytes_pushed: Counter::default(),
            loki_request_bytes: Counter::default(),
            loki_retries: Counter::default(),
            loki_rejected_lines: Counter::default(),
            loki_push_duration_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            loki_requests: Family::default(),
            loki_up: Gauge::default(),
            loki_configured: Gauge::default(),
            site_clock_skew_seconds: Family::default(),
            site_seq_missing: Family::default(),
            seq_missing: Gauge::default(),
            takeovers: Counter::default(),
            takeover_messages: Counter::default(),
            session_lease_held: Gauge::default(),
        };
        for result in LOKI_RESULTS {
            let _ = m.loki_requests.get_or_create(&ResultLabel { result });
        }
        for kind in KINDS {
            let _ = m.messages_received.get_or_create(&KindLabel { kind });
        }
        for table in TABLES {
            let _ = m.rows_written.get_or_create(&TableLabel { table });
        }
        for reason in sitewatch_wire::DecodeError::REASONS.into_iter().chain([
            REASON_DB_ERROR,
            REASON_LOKI_REJECTED,
            REASON_NO_LOG_SINK,
            crate::sink::postgres::retention::REASON_EXPIRED,
        ]) {
            let _ = m.rejected.get_or_create(&ReasonLabel { reason });
        }

        let r = registry.sub_registry_with_prefix("sitewatch_bridge");
        r.register(
            "messages_received",
            "MQTT messages received, by kind (redeliveries included)",
            m.messages_received.clone(),
        );
        r.register(
            "rows_written",
            "Rows inserted into PostgreSQL, by table (duplicates excluded)",
            m.rows_written.clone(),
        );
        r.register(
            "rejected",
            "Messages stored in rejected_messages, by reason",
            m.rejected.clone(),
        );
        r.register(
            "duplicates",
            "Valid messages already stored (redeliveries)",
            m.duplicates.clone(),
        );
        r.register("batches", "Batches committed", m.batches.clone());
        r.register(
            "batch_duration_seconds",
            "Time to write and commit one batch",
            m.batch_duration_seconds.clone(),
        );
        r.register(
            "message_lag_seconds",
            "Bridge receive time minus agent timestamp (live messages)",
            m.message_lag_seconds.clone(),
        );
        r.register(
            "db_errors",
            "Failed database operations, retries included",
            m.db_errors.clone(),
        );
        r.register(
            "acked",
            "Messages acknowledged to the broker after commit",
            m.acked.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while connected to the broker and subscribed",
            m.mqtt_connected.clone(),
        );
        r.register(
            "db_up",
            "1 while the last database operation succeeded",
            m.db_up.clone(),
        );
        r.register(
            "loki_lines_pushed",
            "Log lines Loki accepted",
            m.loki_lines_pushed.clone(),
        );
        r.register(
            "loki_bytes_pushed",
            "Bytes of accepted log lines plus structured metadata, uncompressed",
            m.loki_bytes_pushed.clone(),
        );
        r.register(
            "loki_request_bytes",
            "Compressed push request bytes sent to Loki, retries included",
            m.loki_request_bytes.clone(),
        );
        r.register(
            "loki_retries",
            "Push requests to Loki repeated after a retriable failure",
            m.loki_retries.clone(),
        );
        r.register(
            "loki_rejected_lines",
            "Log lines Loki refused (stored in rejected_messages)",
            m.loki_rejected_lines.clone(),
        );
        r.register(
            "loki_push_duration_seconds",
            "Duration of each push request to Loki",
            m.loki_push_duration_seconds.clone(),
        );
        r.register(
            "loki_requests",
            "Push requests to Loki, by result",
            m.loki_requests.clone(),
        );
        r.register(
            "loki_up",
            "1 while the last push reached Loki (also when Loki is not configured)",
            m.loki_up.clone(),
        );
        r.register(
            "loki_configured",
            "1 when a [loki] section is configured",
            m.loki_configured.clone(),
        );
        r.register(
            "site_clock_skew_seconds",
            "Latest clock skew per site: agent timestamp minus bridge receive time",
            m.site_clock_skew_seconds.clone(),
        );
        r.register(
            "site_seq_missing",
            "Sequence numbers missing per site (boot_gaps): still queued at the agent, or counted drops",
            m.site_seq_missing.clone(),
        );
        r.register(
            "seq_missing",
            "Sequence numbers missing over all sites (boot_gaps)",
            m.seq_missing.clone(),
        );
        r.register(
            "takeovers",
            "Share-group sessions of dead peers drained by this bridge",
            m.takeovers.clone(),
        );
        r.register(
            "takeover_messages",
            "Messages stored while draining dead peers' sessions",
            m.takeover_messages.clone(),
        );
        r.register(
            "session_lease_held",
            "1 while this bridge holds the lease on its own MQTT session",
            m.session_lease_held.clone(),
        );
        m
    }

    /// Label value of `messages_received` for a topic.
    pub fn kind_of(topic: &str) -> &'static str {
        match sitewatch_wire::topic::Topic::parse(topic).map(|t| t.kind) {
            Ok(sitewatch_wire::topic::Kind::Status) => "status",
            Ok(sitewatch_wire::topic::Kind::Heartbeat) => "heartbeat",
            Ok(sitewatch_wire::topic::Kind::Disk) => "disk",
            Ok(sitewatch_wire::topic::Kind::Log) => "log",
            Ok(sitewatch_wire::topic::Kind::Stream) => "stream",
            Ok(sitewatch_wire::topic::Kind::Smart) => "smart",
            Ok(sitewatch_wire::topic::Kind::Event) => "event",
            Ok(sitewatch_wire::topic::Kind::Ups) => "ups",
            Ok(sitewatch_wire::topic::Kind::Reach) => "reach",
            Err(_) => "other",
        }
    }
}

/// Renders the registry in the OpenMetrics text format (which Prometheus
/// scrapes natively).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_preregistered() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.rejected
            .get_or_create(&ReasonLabel {
                reason: "too_large",
            })
            .inc();
        let text = render(&registry);
        for reason in sitewatch_wire::DecodeError::REASONS {
            assert!(
                text.contains(&format!(
                    "sitewatch_bridge_rejected_total{{reason=\"{reason}\"}}"
                )),
                "{reason} missing:\n{text}"
            );
        }
        assert!(text.contains("sitewatch_bridge_rejected_total{reason=\"too_large\"} 1"));
        assert!(text.contains("sitewatch_bridge_rejected_total{reason=\"db_error\"} 0"));
        assert!(text.contains("sitewatch_bridge_batch_duration_seconds_bucket"));
        assert!(text.contains("sitewatch_bridge_mqtt_connected 0"));
        assert!(text.contains("sitewatch_bridge_rejected_total{reason=\"loki_rejected\"} 0"));
        assert!(text.contains("sitewatch_bridge_rejected_total{reason=\"no_log_sink\"} 0"));
        assert!(text.contains("sitewatch_bridge_rejected_total{reason=\"expired\"} 0"));
        assert!(text.contains("sitewatch_bridge_loki_lines_pushed_total 0"));
        assert!(text.contains("sitewatch_bridge_loki_push_duration_seconds_bucket"));
        assert!(text.contains("sitewatch_bridge_loki_requests_total{result=\"rate_limited\"} 0"));
    }

    #[test]
    fn kinds_from_topics() {
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/status"), "status");
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/disk"), "disk");
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/log"), "log");
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/weather"), "other");
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/stream/cam1"), "stream");
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/stream"), "other");
    }
}
