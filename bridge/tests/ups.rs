//! The `ups` kind (issue 19, item 3) through a real bridge into a real
//! PostgreSQL: a row per UPS, stored once whatever the redeliveries, an
//! unreported figure NULL and never 0, a marker row when upsd could not be
//! read; the site's latest reading on `sites` and in `fleet` (a late
//! older reading does not move it back; stale when the site carries on
//! without readings); a malformed or invalid reading rejected with its
//! reason; an expired one rejected by `ups_readings_days`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// One UPS entry as the agent writes it; `None` figures are left out.
fn entry(name: &str, power: &str, status: &str, charge: Option<f32>, volts: Option<f32>) -> Value {
    let mut e = json!({
        "name": name, "power": power,
        "on_line": status.split(' ').any(|f| f == "OL"),
        "on_battery": status.split(' ').any(|f| f == "OB"),
        "low_battery": status.split(' ').any(|f| f == "LB"),
        "status": status, "load_pct": 23.0,
    });
    if let Some(c) = charge {
        e["charge_pct"] = json!(c);
        e["runtime_secs"] = json!((c * 15.0) as u32);
    }
    if let Some(v) = volts {
        e["input_voltage_v"] = json!(v);
    }
    e
}

fn ups_msg(site: &str, seq: u64, ts_ms: u64, error: Option<&str>, ups: Vec<Value>) -> Msg {
    let mut p = json!({
        "v": 1, "site": site, "boot": "b0000000000000001", "seq": seq, "ts": ts_ms,
        "interval_secs": 15, "ups": ups,
    });
    if let Some(e) = error {
        p["error"] = json!(e);
    }
    Msg::new(
        format!("sitewatch/v1/{site}/ups"),
        serde_json::to_vec(&p).expect("json"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ups_readings_are_stored_once_and_the_site_keeps_the_latest() {
    let env = Env::start();
    let bridge =
        start_bridge(env.config("bridge-ups", "[retention]\nups_readings_days = 30\n")).await;
    let addr = bridge.http_addr();
    let now = now_ms();
    let on_mains = ups_msg(
        "u1",
        1,
        now - 60_000,
        None,
        vec![
            entry("rack", "on_line", "OL", Some(100.0), Some(230.5)),
            entry("small", "on_line", "OL CHRG", None, None),
        ],
    );
    let cut = ups_msg(
        "u1",
        2,
        now - 30_000,
        None,
        vec![
            entry("rack", "on_battery", "OB DISCHRG", Some(80.0), Some(0.0)),
            entry("small", "on_line", "OL", Some(100.0), None),
        ],
    );
    let msgs = vec![
        on_mains,
        cut.clone(),
        // Redelivered.
        cut,
        // Late: older than seq 2, arrives after it.
        ups_msg(
            "u1",
            3,
            now - 45_000,
            None,
            vec![entry("rack", "low_battery", "OB LB", Some(9.0), Some(0.0))],
        ),
        // upsd not reachable: a marker row.
        ups_msg(
            "u2",
            1,
            now - 10_000,
            Some("cannot connect to upsd at 127.0.0.1:3493: Connection refused"),
            vec![],
        ),
        // Rejected: a negative charge (invalid), a figure of the wrong
        // type (malformed), and one past ups_readings_days (expired).
        ups_msg(
            "u1",
            4,
            now - 5_000,
            None,
            vec![entry("rack", "on_line", "OL", Some(-1.0), None)],
        ),
        Msg::new(
            "sitewatch/v1/u1/ups",
            br#"{"v":1,"site":"u1","boot":"b1","seq":5,"ts":1,"interval_secs":15,"ups":[{"name":"rack","power":"on_line","charge_pct":"full"}]}"#.to_vec(),
        ),
        ups_msg(
            "u1",
            6,
            now - 40 * 86_400_000,
            None,
            vec![entry("rack", "on_line", "OL", Some(100.0), None)],
        ),
    ];
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "readings and rejections stored", || {
        env.try_count("SELECT count(*) FROM ups_readings") == Some(6)
            && env.try_count("SELECT count(*) FROM rejected_messages") == Some(3)
    })
    .await;

    // A row per UPS; the redelivery absorbed; unreported figures NULL,
    // a real 0 V kept.
    assert_eq!(
        env.sql(
            "SELECT seq, ups, power, on_line, on_battery, low_battery, status, \
             coalesce(charge_pct::text, '-'), coalesce(runtime_secs::text, '-'), \
             coalesce(input_voltage_v::text, '-') \
             FROM ups_readings WHERE site = 'u1' ORDER BY seq, ups"
        ),
        "1|rack|on_line|t|f|f|OL|100|1500|230.5\n\
         1|small|on_line|t|f|f|OL CHRG|-|-|-\n\
         2|rack|on_battery|f|t|f|OB DISCHRG|80|1200|0\n\
         2|small|on_line|t|f|f|OL|100|1500|-\n\
         3|rack|low_battery|f|t|t|OB LB|9|135|0"
    );
    assert_eq!(
        env.sql("SELECT ups, power, error, interval_secs FROM ups_readings WHERE site = 'u2'"),
        "|unknown|cannot connect to upsd at 127.0.0.1:3493: Connection refused|15"
    );
    assert_eq!(
        env.sql("SELECT max_seq, received FROM boots WHERE site = 'u1'"),
        "3|3",
        "each reading counted once; the rejected ones are not received"
    );

    // The latest reading per site: seq 2 (seq 3 is older), by its key.
    assert_eq!(
        env.sql(
            "SELECT site, ups_power, ups_on_battery, ups_min_charge_pct, ups_min_runtime_secs, \
             ups_errors, ups_seq, ups_interval_secs FROM sites ORDER BY site"
        ),
        "u1|on_battery|1|80|1200|0|2|15\nu2|unknown|0|||1|1|15"
    );
    assert_eq!(
        env.sql(
            "SELECT r.ups, r.power FROM sites s JOIN ups_readings r ON r.site = s.site \
             AND r.boot = s.ups_boot AND r.seq = s.ups_seq AND r.agent_ts = s.ups_agent_ts \
             WHERE s.site = 'u1' ORDER BY r.ups"
        ),
        "rack|on_battery\nsmall|on_line"
    );
    assert_eq!(
        env.sql(
            "SELECT site, ups_power, ups_on_battery, ups_min_runtime_secs, ups_errors \
             FROM fleet ORDER BY site"
        ),
        "u1|on_battery|1|1200|0\nu2|unknown|0||1"
    );
    // The site carries on for more than 3 periods without a reading
    // ([ups] removed): the fleet calls its UPS state stale.
    env.sql(
        "UPDATE sites SET last_seen = ups_received_at + interval '46 seconds' WHERE site = 'u1'",
    );
    assert_eq!(
        env.sql("SELECT ups_power FROM fleet WHERE site = 'u1'"),
        "stale"
    );

    assert_eq!(
        env.sql("SELECT reason FROM rejected_messages ORDER BY reason"),
        "expired\ninvalid\nmalformed"
    );
    assert!(env
        .sql("SELECT detail FROM rejected_messages WHERE reason = 'expired'")
        .contains("30-day retention of ups_readings"),);
    assert!(env
        .sql("SELECT detail FROM rejected_messages WHERE reason = 'invalid'")
        .contains("UPS figures must be finite and >= 0"),);
    eventually(WAIT, "the metrics", || {
        metric(
            addr,
            "sitewatch_bridge_rows_written_total{table=\"ups_readings\"}",
        ) == Some(6.0)
            && metric(
                addr,
                "sitewatch_bridge_messages_received_total{kind=\"ups\"}",
            ) == Some(8.0)
    })
    .await;
    bridge.stop().await.expect("graceful stop");
}
