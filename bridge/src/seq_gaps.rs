//! Missing sequence numbers per site, for `/metrics`.
//!
//! Every agent message carries (boot, seq); the `boots` table keeps the
//! highest seq and the count received per boot, and the `boot_gaps` view
//! their difference. A gap is either a message still queued in the
//! agent's outbox (it closes when the backlog drains) or one the agent
//! dropped when its outbox was full, which it counts in its heartbeat
//! (`outbox_dropped_*`). Ops compare the two: a gap that stays open and
//! is not counted is a bug. Refreshed from the database every
//! [`REFRESH`] instead of per message, so the write path stays lean.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, SiteLabel};
use crate::sink::postgres::config::PostgresSettings;

/// How often the figures are read.
pub const REFRESH: Duration = Duration::from_secs(15);

/// Refreshes [`Metrics::site_seq_missing`] and [`Metrics::seq_missing`]
/// until `stop` is cancelled, starting once `schema_ready` is (the
/// writer's migrations create the view). Database errors are logged at
/// debug level and retried next round (the writer reports database
/// health).
pub async fn run(
    settings: PostgresSettings,
    metrics: Metrics,
    schema_ready: CancellationToken,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = schema_ready.cancelled() => {}
    }
    let mut client = None;
    let mut shown: HashSet<String> = HashSet::new();
    loop {
        if client
            .as_ref()
            .is_none_or(|c: &tokio_postgres::Client| c.is_closed())
        {
            client = crate::sink::postgres::connect(&settings).await.ok();
        }
        if let Some(c) = &client {
            match read(c).await {
                Ok(rows) => publish(&metrics, &mut shown, rows),
                Err(e) => tracing::debug!(err = format!("{e:#}"), "Could not read seq gaps."),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

async fn read(client: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "SELECT site, sum(missing)::int8 FROM boot_gaps GROUP BY site HAVING sum(missing) > 0",
            &[],
        )
        .await
        .context("reading boot_gaps")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Sets the gauges from `rows`; a site shown before and now without a
/// gap drops to 0 rather than vanishing (its series stays continuous).
fn publish(metrics: &Metrics, shown: &mut HashSet<String>, rows: Vec<(String, i64)>) {
    let mut total = 0i64;
    let now: HashSet<String> = rows.iter().map(|(s, _)| s.clone()).collect();
    for site in shown.iter().filter(|s| !now.contains(*s)) {
        metrics
            .site_seq_missing
            .get_or_create(&SiteLabel { site: site.clone() })
            .set(0);
    }
    for (site, missing) in rows {
        total = total.saturating_add(missing);
        metrics
            .site_seq_missing
            .get_or_create(&SiteLabel { site: site.clone() })
            .set(missing);
        shown.insert(site);
    }
    metrics.seq_missing.set(total);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn a_closed_gap_goes_to_zero_and_the_total_follows() {
        let metrics = Metrics::new(&mut Registry::default());
        let mut shown = HashSet::new();
        publish(&metrics, &mut shown, vec![("a".into(), 3), ("b".into(), 4)]);
        assert_eq!(metrics.seq_missing.get(), 7);
        publish(&metrics, &mut shown, vec![("b".into(), 1)]);
        let get = |s: &str| {
            metrics
                .site_seq_missing
                .get_or_create(&SiteLabel { site: s.into() })
                .get()
        };
        assert_eq!((get("a"), get("b")), (0, 1));
        assert_eq!(metrics.seq_missing.get(), 1);
    }
}
