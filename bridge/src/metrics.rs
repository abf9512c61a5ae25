//! Prometheus metrics of the bridge (prometheus-client registry).
//!
//! Every metric is created here and registered once; the other modules
//! only increment them. Label values come from small fixed sets (message
//! kinds, table names, rejection reasons), never from message contents, so
//! the series count stays bounded whatever the agents send.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Rejection reason for a message that decoded but that PostgreSQL refused.
pub const REASON_DB_ERROR: &str = "db_error";

/// Tables the bridge inserts rows into (label values of `rows_written`).
pub const TABLES: [&str; 4] = [
    "status_events",
    "heartbeats",
    "disk_usage",
    "rejected_messages",
];

/// Message kinds used as label values of `messages_received`: the defined
/// kinds, plus `other` for topics whose kind is reserved, unknown or
/// unparsable.
pub const KINDS: [&str; 4] = ["status", "heartbeat", "disk", "other"];

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

/// `{reason="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Stable rejection code.
    pub reason: &'static str,
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
        };
        for kind in KINDS {
            let _ = m.messages_received.get_or_create(&KindLabel { kind });
        }
        for table in TABLES {
            let _ = m.rows_written.get_or_create(&TableLabel { table });
        }
        for reason in sitewatch_wire::DecodeError::REASONS
            .into_iter()
            .chain([REASON_DB_ERROR])
        {
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
        m
    }

    /// Label value of `messages_received` for a topic.
    pub fn kind_of(topic: &str) -> &'static str {
        match sitewatch_wire::topic::Topic::parse(topic).map(|t| t.kind) {
            Ok(sitewatch_wire::topic::Kind::Status) => "status",
            Ok(sitewatch_wire::topic::Kind::Heartbeat) => "heartbeat",
            Ok(sitewatch_wire::topic::Kind::Disk) => "disk",
            _ => "other",
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
    }

    #[test]
    fn kinds_from_topics() {
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/status"), "status");
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/disk"), "disk");
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/weather"), "other");
        assert_eq!(Metrics::kind_of("sitewatch/v1/a/stream/cam1"), "other");
    }
}
