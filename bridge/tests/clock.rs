//! Clock sanity: per-site skew is measured, stored and exported, and the
//! time series of a site whose clock is off by more than
//! `[clock] max_skew_secs` are stored at the bridge's receive time with
//! the agent's own timestamp kept in `agent_ts`.

use std::time::Duration;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

fn heartbeat_at(site: &str, seq: u64, ts: u64) -> Msg {
    let payload = serde_json::json!({
        "v": 1, "site": site, "boot": "b0000000000000001", "seq": seq, "ts": ts,
        "agent_version": "0.1.0", "interval_secs": 30,
        "uptime_secs": 60, "agent_uptime_secs": 30,
        "load": [0.25, 0.5, 1.125],
        "mem_total_bytes": 268_435_456u64, "mem_available_bytes": 134_217_728u64,
        "agent_rss_bytes": 3_145_728u64,
        "counters": {"published": seq, "dropped": 0}
    });
    Msg::new(
        format!("sitewatch/v1/{site}/heartbeat"),
        serde_json::to_vec(&payload).expect("json"),
    )
}

fn disk_at(site: &str, seq: u64, ts: u64) -> Msg {
    let payload = serde_json::json!({
        "v": 1, "site": site, "boot": "b0000000000000001", "seq": seq, "ts": ts,
        "mounts": [{"path": "/srv/recordings", "fs_type": "ext4",
                    "total_bytes": 1000u64, "used_bytes": 500u64, "avail_bytes": 500u64,
                    "used_pct": 50.0, "inodes_total": 10u64, "inodes_free": 5u64,
                    "read_only": false}]
    });
    Msg::new(
        format!("sitewatch/v1/{site}/disk"),
        serde_json::to_vec(&payload).expect("json"),
    )
}

/// Unix ms of a timestamptz column, as psql prints it.
fn ms(col: &str) -> String {
    format!("(extract(epoch FROM {col}) * 1000)::bigint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_site_is_stored_at_receive_time() {
    let env = Env::start();
    let config = env.config("bridge-clock", "[clock]\nmax_skew_secs = 300\n");
    let bridge = start_bridge(config).await;
    let addr = bridge.http_addr();

    const TWO_DAYS_MS: u64 = 2 * 86_400 * 1000;
    let now = now_ms();
    // A gateway without RTC, two days behind; and a healthy one, 2 s old.
    let bad_ts = now - TWO_DAYS_MS;
    let ok_ts = now - 2_000;
    publish_all(
        &env.broker.url(),
        &[
            heartbeat_at("clk-bad", 1, bad_ts),
            disk_at("clk-bad", 2, bad_ts + 1_000),
            heartbeat_at("clk-ok", 1, ok_ts),
            disk_at("clk-ok", 2, ok_ts + 1_000),
        ],
    )
    .await;
    eventually(WAIT, "all four stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(2)
            && env.try_count("SELECT count(*) FROM disk_usage") == Some(2)
    })
    .await;

    // Skewed: ts is the receive time, agent_ts the agent's time.
    assert_eq!(
        env.sql(&format!(
            "SELECT {}, ts = received_at FROM heartbeats WHERE site = 'clk-bad'",
            ms("agent_ts")
        )),
        format!("{bad_ts}|t")
    );
    assert_eq!(
        env.sql(&format!(
            "SELECT {}, ts = received_at FROM disk_usage WHERE site = 'clk-bad'",
            ms("agent_ts")
        )),
        format!("{}|t", bad_ts + 1_000)
    );
    // Within the bound: ts unchanged, agent_ts equal to it.
    assert_eq!(
        env.sql(&format!(
            "SELECT {}, agent_ts = ts FROM heartbeats WHERE site = 'clk-ok'",
            ms("ts")
        )),
        format!("{ok_ts}|t")
    );
    assert_eq!(
        env.sql(&format!(
            "SELECT {}, agent_ts = ts FROM disk_usage WHERE site = 'clk-ok'",
            ms("ts")
        )),
        format!("{}|t", ok_ts + 1_000)
    );

    // Skew stored per site (the freshest message of the batch counts).
    let skew = |site: &str| -> i64 {
        env.count(&format!(
            "SELECT clock_skew_ms FROM sites WHERE site = '{site}' AND clock_skew_at IS NOT NULL"
        ))
    };
    let bad = skew("clk-bad");
    let bad_expected = -i64::try_from(TWO_DAYS_MS).unwrap() + 1_000;
    assert!(
        (bad_expected - 60_000..=bad_expected).contains(&bad),
        "clk-bad skew {bad} ms, expected about {bad_expected}"
    );
    let ok = skew("clk-ok");
    assert!((-60_000..=0).contains(&ok), "clk-ok skew {ok} ms");

    // And exported.
    let body = http_get(addr, "/metrics").expect("metrics").1;
    let m = |site: &str| {
        metric_in(
            &body,
            &format!("sitewatch_bridge_site_clock_skew_seconds{{site=\"{site}\"}}"),
        )
        .unwrap_or_else(|| panic!("no skew series for {site} in\n{body}"))
    };
    let bad_s = m("clk-bad");
    assert!(
        (-172_860.0..=-172_790.0).contains(&bad_s),
        "clk-bad metric {bad_s}"
    );
    let ok_s = m("clk-ok");
    assert!((-60.0..=0.0).contains(&ok_s), "clk-ok metric {ok_s}");
    assert!(body.contains("# TYPE sitewatch_bridge_site_clock_skew_seconds gauge"));

    // The fleet view's latest heartbeat / disk sample is the received one.
    assert_eq!(
        env.sql("SELECT site, disk_max_used_pct FROM fleet ORDER BY site"),
        "clk-bad|50\nclk-ok|50"
    );

    bridge.stop().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_bound_disables_the_correction() {
    let env = Env::start();
    let config = env.config("bridge-clock0", "[clock]\nmax_skew_secs = 0\n");
    let bridge = start_bridge(config).await;
    let ts = now_ms() - 2 * 86_400 * 1000;
    publish_all(&env.broker.url(), &[heartbeat_at("clk-raw", 1, ts)]).await;
    eventually(WAIT, "stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(1)
    })
    .await;
    assert_eq!(
        env.sql(&format!(
            "SELECT {}, agent_ts = ts FROM heartbeats",
            ms("ts")
        )),
        format!("{ts}|t")
    );
    assert!(env.count("SELECT clock_skew_ms FROM sites") < -86_400_000);
    bridge.stop().await.expect("graceful stop");
}
