//! The `reach` kind (issue 19, item 2) through a real bridge into a real
//! PostgreSQL: a row per target, stored once whatever the redeliveries,
//! loss computed and round trips NULL (not 0) when nothing answered; the
//! latest round per target in `reach_targets` (a late older round does
//! not move it back, `state_since` and `last_up_at` follow); an invalid
//! or expired round rejected with its reason.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// One target's round as the agent writes it: `received` of 3 answered
/// (round trips only when one did).
fn target(name: &str, received: u32) -> Value {
    let mut t = json!({
        "name": name, "address": "192.168.1.10", "kind": "icmp",
        "state": if received > 0 { "up" } else { "down" },
        "sent": 3, "received": received,
    });
    if received > 0 {
        t["rtt_min_ms"] = json!(0.5);
        t["rtt_avg_ms"] = json!(1.0);
        t["rtt_max_ms"] = json!(2.5);
    }
    t
}

fn reach_msg(site: &str, seq: u64, ts_ms: u64, targets: Vec<Value>) -> Msg {
    let p = json!({
        "v": 1, "site": site, "boot": "b0000000000000001", "seq": seq, "ts": ts_ms,
        "interval_secs": 30, "targets": targets,
    });
    Msg::new(
        format!("sitewatch/v1/{site}/reach"),
        serde_json::to_vec(&p).expect("json"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reach_rounds_are_stored_once_and_each_target_keeps_its_latest() {
    let env = Env::start();
    let bridge =
        start_bridge(env.config("bridge-reach", "[retention]\nreach_readings_days = 30\n")).await;
    let addr = bridge.http_addr();
    let now = now_ms();
    let first = reach_msg(
        "r1",
        1,
        now - 90_000,
        vec![target("NVR", 3), target("switch", 3)],
    );
    let nvr_down = reach_msg(
        "r1",
        2,
        now - 30_000,
        vec![target("NVR", 0), target("switch", 2)],
    );
    let msgs = vec![
        first,
        nvr_down.clone(),
        // Redelivered.
        nvr_down,
        // Late: older than seq 2, arrives after it (the NVR still up).
        reach_msg(
            "r1",
            3,
            now - 60_000,
            vec![target("NVR", 1), target("switch", 3)],
        ),
        // Rejected: more answers than probes (invalid), and one past
        // reach_readings_days (expired).
        reach_msg(
            "r1",
            4,
            now - 5_000,
            vec![json!({
                "name": "NVR", "address": "192.168.1.10", "kind": "icmp", "state": "up",
                "sent": 3, "received": 4,
            })],
        ),
        reach_msg("r1", 5, now - 40 * 86_400_000, vec![target("NVR", 3)]),
    ];
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "rounds and rejections stored", || {
        env.try_count("SELECT count(*) FROM reach_readings") == Some(6)
            && env.try_count("SELECT count(*) FROM rejected_messages") == Some(2)
    })
    .await;

    // A row per target; the redelivery absorbed; loss computed, round
    // trips NULL when nothing answered.
    assert_eq!(
        env.sql(
            "SELECT seq, target, state, sent, received, round(loss_pct::numeric, 1), \
             coalesce(rtt_avg_ms::text, '-'), interval_secs \
             FROM reach_readings ORDER BY seq, target"
        ),
        "1|NVR|up|3|3|0.0|1|30\n\
         1|switch|up|3|3|0.0|1|30\n\
         2|NVR|down|3|0|100.0|-|30\n\
         2|switch|up|3|2|33.3|1|30\n\
         3|NVR|up|3|1|66.7|1|30\n\
         3|switch|up|3|3|0.0|1|30"
    );
    assert_eq!(
        env.sql("SELECT max_seq, received FROM boots WHERE site = 'r1'"),
        "3|3",
        "each round counted once; the rejected ones are not received"
    );
    // The latest per target is seq 2 (seq 3 is older); the NVR has been
    // down since then, last answered in seq 3's round (received late).
    assert_eq!(
        env.sql(
            "SELECT target, seq, state, state_since = ts, \
             extract(epoch FROM ts - last_up_at)::int, coalesce(rtt_avg_ms::text, '-') \
             FROM reach_targets ORDER BY target"
        ),
        "NVR|2|down|t|30|-\nswitch|2|up|f|0|1"
    );
    // An older round in a later batch (an outbox draining its backlog
    // after fresher rounds): the NVR answered at -45 s. It moves
    // `last_up_at` only; the latest state stays seq 2's, down since -30 s.
    publish_all(
        &env.broker.url(),
        &[reach_msg(
            "r1",
            6,
            now - 45_000,
            vec![target("NVR", 2), target("switch", 0)],
        )],
    )
    .await;
    eventually(WAIT, "the late round stored", || {
        env.try_count("SELECT count(*) FROM reach_readings") == Some(8)
    })
    .await;
    assert_eq!(
        env.sql(
            "SELECT target, seq, state, state_since = ts, \
             extract(epoch FROM ts - last_up_at)::int, coalesce(rtt_avg_ms::text, '-') \
             FROM reach_targets ORDER BY target"
        ),
        "NVR|2|down|t|15|-\nswitch|2|up|f|0|1",
        "the late round moved the NVR's last_up_at to -45 s and nothing else"
    );
    assert_eq!(
        env.sql("SELECT reason FROM rejected_messages ORDER BY reason"),
        "expired\ninvalid"
    );
    assert!(env
        .sql("SELECT detail FROM rejected_messages WHERE reason = 'expired'")
        .contains("30-day retention of reach_readings"));
    assert!(env
        .sql("SELECT detail FROM rejected_messages WHERE reason = 'invalid'")
        .contains("received + refused above sent"));
    eventually(WAIT, "the metrics", || {
        metric(
            addr,
            "sitewatch_bridge_rows_written_total{table=\"reach_readings\"}",
        ) == Some(8.0)
            && metric(
                addr,
                "sitewatch_bridge_messages_received_total{kind=\"reach\"}",
            ) == Some(7.0)
    })
    .await;
    bridge.stop().await.expect("graceful stop");
}
