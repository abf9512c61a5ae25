//! Integration tests: the bridge against a real mosquitto and a real
//! PostgreSQL, each private to its test (see `sitewatch-testkit`).

mod clock;
mod fleet_state;
mod loki;
mod reach;
mod retention;
mod ups;
mod util;

use std::collections::BTreeMap;
use std::time::Duration;

use sitewatch_wire::golden;
use util::*;

/// Every valid golden vector as a message to publish.
fn golden_valid() -> Vec<Msg> {
    golden::VALID
        .iter()
        .map(|v| Msg {
            topic: v.topic.to_owned(),
            payload: v.payload.to_vec(),
            retain: v.retain,
        })
        .collect()
}

const WAIT: Duration = Duration::from_secs(30);

/// Every golden valid vector is stored (the log batch delivered to Loki),
/// and the site state follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_vectors_are_stored() {
    let env = Env::start();
    let loki = blocking(sitewatch_testkit::LokiReceiver::start).expect("loki receiver");
    let bridge = start_bridge(env.config("bridge-valid", &loki_section(&loki.url()))).await;
    let addr = bridge.http_addr();

    let msgs = golden_valid();
    publish_all(&env.broker.url(), &msgs).await;

    eventually(WAIT, "all valid vectors stored", || {
        env.try_count("SELECT count(*) FROM boots WHERE received = 17") == Some(1)
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM status_events"), 3);
    assert_eq!(env.count("SELECT count(*) FROM heartbeats"), 3);
    assert_eq!(env.count("SELECT count(*) FROM disk_usage"), 3);
    assert_eq!(env.count("SELECT count(*) FROM rejected_messages"), 0);
    assert_eq!(
        env.sql("SELECT seq, records, rejected FROM log_batches"),
        "5|2|0"
    );
    assert_eq!(loki.entry_count(), 2);
    // online (s1) then shutdown (s1) apply; the Last Will of s1 arrives
    // after the clean shutdown of the same session and is ignored.
    assert_eq!(
        env.sql("SELECT state, reason, boot, session, agent_version, heartbeat_secs, last_seq FROM sites"),
        "offline|shutdown|9f2c4e1a7b3d5608|1|0.1.0|30|17"
    );
    assert_eq!(
        env.sql("SELECT seq, state, applied FROM status_events ORDER BY seq"),
        "0|offline|f\n1|online|t\n4|offline|t"
    );
    assert_eq!(
        env.sql("SELECT max_seq, received, missing FROM boot_gaps"),
        "17|17|0"
    );
    // Camera streams: history plus the latest per camera.
    assert_eq!(
        env.sql(
            "SELECT camera, class, coalesce(status_code, 0), coalesce(codec, '-'), \
             coalesce(fps, 0), warnings::text FROM camera_probes ORDER BY seq"
        ),
        "gate|ok|0|avc1.42C01E|25|{loss}\ndahua-ch1|auth|401|-|0|{}"
    );
    assert_eq!(
        env.sql("SELECT camera, class, class_since = ts, failures FROM cameras ORDER BY camera"),
        "dahua-ch1|auth|t|3\ngate|ok|t|0"
    );
    // Disk health: history with the attribute table, latest per disk.
    assert_eq!(
        env.sql(
            "SELECT device, verdict, jsonb_array_length(attributes), reasons->0->>'code', \
             coalesce(nvme->>'critical_warning', '-') FROM smart_readings ORDER BY seq"
        ),
        "sda|critical|4|pending_growing|-\nnvme0n1|critical|0|nvme_reliability_degraded|4"
    );
    assert_eq!(
        env.sql("SELECT device, verdict, model FROM disks ORDER BY device"),
        "nvme0n1|critical|QEMU NVMe Ctrl\nsda|critical|ST4000VX016-3CV104"
    );
    assert_eq!(
        env.sql(
            "SELECT event, severity, subject, coalesce(to_state, '-'), \
             coalesce(numbers->>'deleted_bytes', '-') FROM events ORDER BY seq"
        ),
        "camera_down|critical|dahua-ch1|auth|-\ncleanup|info|/srv/recordings|-|21474836480"
    );
    assert_eq!(
        env.sql(
            "SELECT seq, uptime_secs, load1, load15, counters->>'published', \
             coalesce(wan_if, '-'), coalesce(wan_rx_bytes, -1), coalesce(wan_tx_dropped, -1) \
             FROM heartbeats ORDER BY seq"
        ),
        "2|86400|0.25|1.125|2|-|-1|-1\n14|86400|0.25|1.125|2|pppoe-wan|98765432100|1\n\
         17|86400|0.25|1.125|2|pppoe-wan|98765432100|1"
    );
    // The uplink address: in the heartbeat that has one, and the latest
    // heartbeat's on the site (migration 0015).
    assert_eq!(
        env.sql(
            "SELECT seq, coalesce(wan_addr, '-'), coalesce(wan_addr_class, '-'), \
             coalesce(wan_addr6, '-') FROM heartbeats ORDER BY seq"
        ),
        "2|-|-|-\n14|-|-|-\n17|100.72.18.9|cgnat|2001:db8:4006:812::200e"
    );
    assert_eq!(
        env.sql(
            "SELECT f.wan_addr, f.wan_addr_class, f.wan_addr6, f.wan_addr_since = s.hb_ts \
             FROM fleet f JOIN sites s USING (site)"
        ),
        "100.72.18.9|cgnat|2001:db8:4006:812::200e|t"
    );
    assert_eq!(
        env.sql(
            "SELECT site, effective_state, agent_version, disk_max_used_pct, \
             disk_fullest_path, disk_failed_mounts, missing_messages FROM fleet"
        ),
        "lokasi1|offline|0.1.0|99.01|/srv/recordings|1|0"
    );
    assert_eq!(
        env.sql("SELECT error FROM disk_usage WHERE path LIKE '/mnt/usb%'"),
        "not_mounted"
    );
    // UPS readings: a row per UPS, an unreported figure NULL (not 0), the
    // message without UPS as its marker row; the latest on the site.
    assert_eq!(
        env.sql(
            "SELECT seq, ups, power, on_battery, status, coalesce(charge_pct::text, '-'), \
             coalesce(runtime_secs::text, '-'), coalesce(input_voltage_v::text, '-'), \
             coalesce(error, '-') FROM ups_readings ORDER BY seq, ups"
        ),
        "12|nvr-ups|on_line|f|OL CHRG|100|-|-|-\n\
         12|rack|on_battery|t|OB DISCHRG|87.5|1260|0|-\n\
         13||unknown|f||-|-|-|cannot connect to upsd at 127.0.0.1:3493: Connection refused (os error 111)"
    );
    assert_eq!(
        env.sql(
            "SELECT ups_power, ups_on_battery, coalesce(ups_min_charge_pct::text, '-'), \
             ups_errors, ups_seq FROM sites"
        ),
        "unknown|0|-|1|13"
    );
    // Reachability: a row per target, loss computed, no round trip for
    // the target that did not answer nor for the unresolved one; the
    // latest round per target (seq 16 only lists the NVR).
    assert_eq!(
        env.sql(
            "SELECT seq, target, kind, coalesce(port, 0), state, sent, received, refused, \
             coalesce(round(loss_pct::numeric)::text, '-'), coalesce(rtt_avg_ms::text, '-'), \
             coalesce(error, '-') FROM reach_readings ORDER BY seq, target COLLATE \"C\""
        ),
        "15|NVR|icmp|0|up|3|2|0|33|0.538|-\n\
         15|PoE switch|tcp|80|up|3|3|0|0|1.5|-\n\
         15|door camera|icmp|0|down|3|0|0|100|-|-\n\
         15|gate camera|tcp|554|up|3|0|3|0|0.875|-\n\
         16|NVR|icmp|0|unknown|0|0|0|-|-|cannot resolve nvr.lan: failed to lookup address information"
    );
    assert_eq!(
        env.sql(
            "SELECT target, seq, state, last_up_at IS NOT NULL FROM reach_targets \
             ORDER BY target COLLATE \"C\""
        ),
        "NVR|16|unknown|t\nPoE switch|15|up|t\ndoor camera|15|down|f\ngate camera|15|up|t"
    );

    let (code, body) = http_get(addr, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    let m = |s: &str| metric_in(&body, s);
    assert_eq!(
        m("sitewatch_bridge_messages_received_total{kind=\"status\"}"),
        Some(3.0)
    );
    assert_eq!(
        m("sitewatch_bridge_rows_written_total{table=\"heartbeats\"}"),
        Some(3.0)
    );
    assert_eq!(
        m("sitewatch_bridge_rows_written_total{table=\"disk_usage\"}"),
        Some(3.0)
    );
    assert_eq!(
        m("sitewatch_bridge_rows_written_total{table=\"log_batches\"}"),
        Some(1.0)
    );
    assert_eq!(m("sitewatch_bridge_loki_lines_pushed_total"), Some(2.0));
    for (table, rows) in [
        ("camera_probes", 2.0),
        ("smart_readings", 2.0),
        ("events", 2.0),
        ("ups_readings", 3.0),
        ("reach_readings", 5.0),
    ] {
        assert_eq!(
            m(&format!(
                "sitewatch_bridge_rows_written_total{{table=\"{table}\"}}"
            )),
            Some(rows),
            "{table}"
        );
    }
    assert_eq!(
        m("sitewatch_bridge_messages_received_total{kind=\"stream\"}"),
        Some(2.0)
    );
    assert_eq!(
        m("sitewatch_bridge_messages_received_total{kind=\"ups\"}"),
        Some(2.0)
    );
    assert_eq!(
        m("sitewatch_bridge_messages_received_total{kind=\"reach\"}"),
        Some(2.0)
    );
    assert_eq!(m("sitewatch_bridge_acked_total"), Some(18.0));
    assert_eq!(m("sitewatch_bridge_duplicates_total"), Some(0.0));
    assert_eq!(m("sitewatch_bridge_mqtt_connected"), Some(1.0));
    assert!(
        body.contains("sitewatch_bridge_message_lag_seconds_count 18"),
        "{body}"
    );
    bridge.stop().await.expect("graceful stop");
}

/// Every invalid vector, an oversize payload and a payload PostgreSQL
/// refuses each become one `rejected_messages` row with the expected
/// reason; they are acknowledged (not redelivered after a restart) and
/// counted, and the good messages around them are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_stored_acked_and_counted() {
    let env = Env::start();
    let config = || env.config("bridge-reject", "");
    let bridge = start_bridge(config()).await;
    let addr = bridge.http_addr();

    let mut msgs: Vec<Msg> = golden::INVALID
        .iter()
        .map(|v| Msg::new(v.topic, v.payload))
        .collect();
    let (big_topic, big) = golden::too_large();
    msgs.push(Msg::new(big_topic, big.clone()));
    // Valid for the decoder, refused by PostgreSQL (NUL in text): isolated
    // and rejected as db_error, its neighbours stored.
    msgs.push(heartbeat("lokasi1", "b1", 1));
    msgs.push(heartbeat_with("lokasi1", "b1", 2, "bad\u{0}version"));
    msgs.push(heartbeat("lokasi1", "b1", 3));
    publish_all(&env.broker.url(), &msgs).await;

    let expected_rejections = golden::INVALID.len() + 2;
    eventually(WAIT, "every rejection stored", || {
        env.try_count("SELECT count(*) FROM rejected_messages") == Some(expected_rejections as i64)
    })
    .await;
    eventually(WAIT, "good heartbeats stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(2)
    })
    .await;

    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for v in golden::INVALID {
        *want.entry(v.reason.to_owned()).or_default() += 1;
    }
    *want.entry("too_large".into()).or_default() += 1;
    *want.entry("db_error".into()).or_default() += 1;
    let got: BTreeMap<String, i64> = env
        .sql("SELECT reason, count(*) FROM rejected_messages GROUP BY reason")
        .lines()
        .map(|l| {
            let (r, n) = l.split_once('|').expect("row");
            (r.to_owned(), n.parse().expect("count"))
        })
        .collect();
    assert_eq!(got, want);
    // Every reason of the wire contract, plus db_error, was exercised.
    // (`reserved_kind` cannot happen with v1's topic grammar any more.)
    for reason in sitewatch_wire::DecodeError::REASONS {
        if reason == "reserved_kind" {
            continue;
        }
        assert!(got.contains_key(reason), "reason {reason} not exercised");
    }
    assert_eq!(
        env.sql(
            "SELECT topic, payload_len, length(payload) FROM rejected_messages \
             WHERE reason = 'too_large'"
        ),
        format!("sitewatch/v1/lokasi1/heartbeat|{}|65536", big.len())
    );
    assert_eq!(
        env.sql("SELECT topic FROM rejected_messages WHERE reason = 'site_mismatch'"),
        "sitewatch/v1/lokasi2/heartbeat"
    );
    let db_error = env.sql("SELECT detail FROM rejected_messages WHERE reason = 'db_error'");
    assert!(db_error.starts_with("22"), "{db_error}");
    assert_eq!(env.sql("SELECT seq FROM heartbeats ORDER BY seq"), "1\n3");
    // boots counts only stored messages: seq 2 is missing.
    assert_eq!(
        env.sql("SELECT max_seq, received, missing FROM boot_gaps"),
        "3|2|1"
    );

    let body = http_get(addr, "/metrics").expect("metrics").1;
    for (reason, n) in &want {
        let series = format!("sitewatch_bridge_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_in(&body, &series), Some(*n as f64), "{series}");
    }
    assert_eq!(
        metric_in(&body, "sitewatch_bridge_acked_total"),
        Some(msgs.len() as f64)
    );

    // Restart with the same session: nothing is redelivered. A sentinel
    // published after the restart arrives after any redelivery would.
    bridge.stop().await.expect("graceful stop");
    let bridge = start_bridge(config()).await;
    publish_all(&env.broker.url(), &[heartbeat("lokasi1", "b1", 4)]).await;
    eventually(WAIT, "sentinel stored", || {
        env.try_count("SELECT count(*) FROM heartbeats WHERE seq = 4") == Some(1)
    })
    .await;
    assert_eq!(
        env.count("SELECT count(*) FROM rejected_messages"),
        expected_rejections as i64
    );
    assert_eq!(
        metric(
            bridge.http_addr(),
            "sitewatch_bridge_messages_received_total{kind=\"other\"}"
        ),
        Some(0.0)
    );
    bridge.stop().await.expect("graceful stop");
}

/// The same message twice (same site, boot, seq) is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_message_is_stored_once() {
    let env = Env::start();
    let bridge = start_bridge(env.config("bridge-dup", "")).await;
    let hb = heartbeat("site-a", "b1", 7);
    publish_all(&env.broker.url(), &[hb.clone(), hb.clone()]).await;
    // And once more in a later batch.
    eventually(WAIT, "first copies processed", || {
        metric(bridge.http_addr(), "sitewatch_bridge_acked_total") == Some(2.0)
    })
    .await;
    publish_all(&env.broker.url(), &[hb]).await;
    eventually(WAIT, "third copy processed", || {
        metric(bridge.http_addr(), "sitewatch_bridge_acked_total") == Some(3.0)
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM heartbeats"), 1);
    assert_eq!(env.sql("SELECT max_seq, received FROM boots"), "7|1");
    assert_eq!(
        metric(bridge.http_addr(), "sitewatch_bridge_duplicates_total"),
        Some(2.0)
    );
    assert_eq!(
        metric(
            bridge.http_addr(),
            "sitewatch_bridge_rows_written_total{table=\"heartbeats\"}"
        ),
        Some(1.0)
    );
    bridge.stop().await.expect("graceful stop");
}

/// Two batches in flight (the default): a younger batch commits while an
/// older one is held up (a test transaction holds its site's row lock),
/// but its acks wait for the older batch, so acks keep the receive order;
/// once the lock goes, everything is stored once and acked. With one
/// batch at a time the younger batch could not commit first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn younger_batch_commits_first_but_acks_wait_for_the_older() {
    let env = Env::start();
    // Batches of exactly two (a long wait, so a slow publish cannot split
    // them differently): [a2, a3] and [b1, b2].
    let config = env.config(
        "bridge-in-flight",
        "[batch]\nmax_messages = 2\nmax_wait_ms = 2000\n",
    );
    assert_eq!(config.batch_in_flight, 2, "the default");
    let bridge = start_bridge(config).await;
    let addr = bridge.http_addr();
    publish_all(&env.broker.url(), &[heartbeat("site-a", "b1", 1)]).await;
    eventually(WAIT, "site-a known", || {
        metric(addr, "sitewatch_bridge_acked_total") == Some(1.0)
    })
    .await;

    let (locker, conn) = tokio_postgres::connect(&env.db_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    locker
        .batch_execute("BEGIN; SELECT 1 FROM sites WHERE site = 'site-a' FOR UPDATE")
        .await
        .expect("lock site-a");

    let mut msgs = vec![heartbeat("site-a", "b1", 2), heartbeat("site-a", "b1", 3)];
    msgs.extend([heartbeat("site-b", "b1", 1), heartbeat("site-b", "b1", 2)]);
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "the younger batch (site-b) committed", || {
        env.try_count("SELECT count(*) FROM heartbeats WHERE site = 'site-b'") == Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.count("SELECT count(*) FROM heartbeats WHERE site = 'site-a'"),
        1,
        "the older batch is held up by the lock"
    );
    assert_eq!(
        metric(addr, "sitewatch_bridge_acked_total"),
        Some(1.0),
        "no ack may overtake the older batch's"
    );

    locker.batch_execute("ROLLBACK").await.expect("unlock");
    eventually(WAIT, "everything acked", || {
        metric(addr, "sitewatch_bridge_acked_total") == Some(5.0)
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM heartbeats"), 5);
    assert_eq!(
        env.sql("SELECT site, max_seq, received FROM boots ORDER BY site"),
        "site-a|3|3\nsite-b|2|2"
    );
    bridge.stop().await.expect("graceful stop");
}

/// While PostgreSQL is down nothing is acknowledged and `/healthz` says
/// 503;
/// after it comes back every message is stored exactly once and
/// `/healthz` is 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_blocks_then_stores_everything_once() {
    let mut env = Env::start();
    let config = env.config("bridge-outage", "[batch]\nmax_messages = 50\n");
    let bridge = start_bridge(config).await;
    let addr = bridge.http_addr();
    let first: Vec<Msg> = (1..=100).map(|s| heartbeat("site-a", "b1", s)).collect();
    publish_all(&env.broker.url(), &first).await;
    eventually(WAIT, "first 100 stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(100)
    })
    .await;
    let acked_before = metric(addr, "sitewatch_bridge_acked_total").expect("acked");
    assert_eq!(acked_before, 100.0);

    blocking(|| env.pg.stop()).expect("stop postgres");
    let second: Vec<Msg> = (101..=300).map(|s| heartbeat("site-a", "b1", s)).collect();
    publish_all(&env.broker.url(), &second).await;
    eventually(WAIT, "/healthz 503 naming the database", || {
        http_get(addr, "/healthz")
            .is_some_and(|(code, body)| code == 503 && body.contains("database"))
    })
    .await;
    eventually(WAIT, "writer retrying", || {
        metric(addr, "sitewatch_bridge_db_errors_total").is_some_and(|n| n >= 2.0)
    })
    .await;
    assert_eq!(metric(addr, "sitewatch_bridge_db_up"), Some(0.0));
    // The broker connection stays up meanwhile.
    assert_eq!(metric(addr, "sitewatch_bridge_mqtt_connected"), Some(1.0));
    assert_eq!(
        metric(addr, "sitewatch_bridge_acked_total"),
        Some(acked_before),
        "nothing may be acknowledged while the database is down"
    );

    blocking(|| env.pg.restart()).expect("restart postgres");
    eventually(WAIT, "all 300 stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(300)
    })
    .await;
    assert_eq!(
        env.sql("SELECT max_seq, received, missing FROM boot_gaps"),
        "300|300|0"
    );
    eventually(WAIT, "/healthz 200 again", || {
        http_get(addr, "/healthz").is_some_and(|(code, _)| code == 200)
    })
    .await;
    eventually(WAIT, "all acked", || {
        metric(addr, "sitewatch_bridge_acked_total") == Some(300.0)
    })
    .await;
    assert_eq!(metric(addr, "sitewatch_bridge_db_up"), Some(1.0));
    bridge.stop().await.expect("graceful stop");
}

/// A real redelivery of messages the bridge already committed: the
/// broker restarts while the bridge holds an uncommitted batch, so the
/// batch's acks are dropped (they belong to the old connection) and the
/// broker redelivers it on the resumed session. Stored once; counted as
/// duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_batch_after_broker_restart_is_stored_once() {
    let mut env = Env::start();
    let bridge = start_bridge(env.config("bridge-redeliver", "")).await;
    let addr = bridge.http_addr();

    blocking(|| env.pg.stop()).expect("stop postgres");
    let msgs: Vec<Msg> = (1..=100).map(|s| heartbeat("site-r", "b1", s)).collect();
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "bridge holds all 100", || {
        metric(
            addr,
            "sitewatch_bridge_messages_received_total{kind=\"heartbeat\"}",
        ) == Some(100.0)
    })
    .await;
    // Broker restart (persistence on): the session, with its 100
    // unacknowledged messages, survives; the connection does not.
    blocking(|| env.broker.restart()).expect("restart mosquitto");
    eventually(WAIT, "bridge reconnected and got the redelivery", || {
        metric(
            addr,
            "sitewatch_bridge_messages_received_total{kind=\"heartbeat\"}",
        ) == Some(200.0)
    })
    .await;
    blocking(|| env.pg.restart()).expect("restart postgres");
    eventually(WAIT, "both copies processed", || {
        metric(addr, "sitewatch_bridge_duplicates_total") == Some(100.0)
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM heartbeats"), 100);
    assert_eq!(env.sql("SELECT max_seq, received FROM boots"), "100|100");
    assert_eq!(
        metric(
            addr,
            "sitewatch_bridge_rows_written_total{table=\"heartbeats\"}"
        ),
        Some(100.0)
    );
    // Only the redelivered copies (current connection) were acked.
    assert_eq!(metric(addr, "sitewatch_bridge_acked_total"), Some(100.0));

    // Nothing further is redelivered after another restart of the bridge.
    bridge.stop().await.expect("graceful stop");
    let bridge = start_bridge(env.config("bridge-redeliver", "")).await;
    publish_all(&env.broker.url(), &[heartbeat("site-r", "b1", 101)]).await;
    eventually(WAIT, "sentinel stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(101)
    })
    .await;
    assert_eq!(
        metric(
            bridge.http_addr(),
            "sitewatch_bridge_messages_received_total{kind=\"heartbeat\"}"
        ),
        Some(1.0)
    );
    bridge.stop().await.expect("graceful stop");
}

/// The real binary, killed with SIGKILL while it holds unacknowledged
/// messages, and restarted with the same client id: the persistent
/// session redelivers what was in flight and delivers what was published
/// while it was down; everything is stored exactly once. SIGTERM then
/// stops it with exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_binary_resumes_its_session() {
    use sitewatch_testkit::ChildGuard;
    let mut env = Env::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("bridge.toml");
    let http_port = sitewatch_testkit::free_port();
    let text = config_text(&env.broker.url(), &env.db_url, "bridge-bin", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{http_port}"));
    std::fs::write(&config_path, text).expect("write config");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    let spawn = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sitewatch-bridge"));
        cmd.arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info");
        ChildGuard::spawn(&mut cmd).expect("spawn bridge")
    };

    let mut child = spawn();
    eventually(WAIT, "binary healthy", || {
        http_get(addr, "/healthz").is_some_and(|(c, _)| c == 200)
    })
    .await;
    blocking(|| env.pg.stop()).expect("stop postgres");
    let first: Vec<Msg> = (1..=200).map(|s| heartbeat("site-k", "b1", s)).collect();
    publish_all(&env.broker.url(), &first).await;
    eventually(WAIT, "binary holds all 200", || {
        metric(
            addr,
            "sitewatch_bridge_messages_received_total{kind=\"heartbeat\"}",
        ) == Some(200.0)
    })
    .await;
    blocking(|| child.signal(sitewatch_testkit::sig::KILL)).expect("SIGKILL");
    blocking(|| child.wait_timeout(Duration::from_secs(5))).expect("killed");
    // Published while no bridge is connected: queued in its session.
    let second: Vec<Msg> = (201..=300).map(|s| heartbeat("site-k", "b1", s)).collect();
    publish_all(&env.broker.url(), &second).await;
    blocking(|| env.pg.restart()).expect("restart postgres");

    let mut child = spawn();
    eventually(WAIT, "all 300 stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(300)
    })
    .await;
    assert_eq!(
        env.sql("SELECT max_seq, received, missing FROM boot_gaps"),
        "300|300|0"
    );
    eventually(WAIT, "all acked", || {
        metric(addr, "sitewatch_bridge_acked_total") == Some(300.0)
    })
    .await;

    blocking(|| child.signal(sitewatch_testkit::sig::TERM)).expect("SIGTERM");
    let status = blocking(|| child.wait_timeout(Duration::from_secs(15))).expect("exits");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        child.log_contents()
    );
}

/// Late and out-of-order statuses do not overwrite a newer state; every
/// status is recorded with whether it was applied. Exercised both within
/// one batch and across batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_race_rules() {
    let env = Env::start();
    let bridge = start_bridge(env.config("bridge-race", "")).await;
    let url = env.broker.url();
    let t0 = 1_764_284_400_000u64;

    // Batch 1 (one publish burst): birth of session 1, birth of session
    // 2 (reconnect), then session 1's Last Will arriving late.
    publish_all(
        &url,
        &[
            status("r1", "boota", 1, 1, t0, "online"),
            status("r1", "boota", 2, 5, t0 + 60_000, "online"),
            status("r1", "boota", 1, 0, t0, "lost"),
        ],
    )
    .await;
    eventually(WAIT, "batch 1 stored", || {
        env.try_count("SELECT count(*) FROM status_events") == Some(3)
    })
    .await;
    assert_eq!(
        env.sql("SELECT state, boot, session FROM sites"),
        "online|boota|2"
    );

    // Across batches: the clean shutdown of session 2 applies; a second
    // offline of the same session does not.
    publish_all(
        &url,
        &[status("r1", "boota", 2, 9, t0 + 120_000, "shutdown")],
    )
    .await;
    eventually(WAIT, "shutdown stored", || {
        env.try_count("SELECT count(*) FROM status_events") == Some(4)
    })
    .await;
    publish_all(&url, &[status("r1", "boota", 2, 0, t0 + 60_000, "lost")]).await;
    eventually(WAIT, "second offline stored", || {
        env.try_count("SELECT count(*) FROM status_events") == Some(5)
    })
    .await;
    assert_eq!(
        env.sql("SELECT state, reason, session FROM sites"),
        "offline|shutdown|2"
    );

    // New boot: its birth (later agent clock) applies even with a lower
    // session; then a Last Will of the old boot arrives late (ignored);
    // then a boot whose clock is behind (no RTC) is ignored too.
    publish_all(
        &url,
        &[
            status("r1", "bootb", 1, 1, t0 + 600_000, "online"),
            status("r1", "boota", 3, 0, t0 + 300_000, "lost"),
        ],
    )
    .await;
    eventually(WAIT, "new boot stored", || {
        env.try_count("SELECT count(*) FROM status_events") == Some(7)
    })
    .await;
    publish_all(
        &url,
        &[status("r1", "bootc", 1, 1, t0 - 86_400_000, "online")],
    )
    .await;
    eventually(WAIT, "clock-behind boot stored", || {
        env.try_count("SELECT count(*) FROM status_events") == Some(8)
    })
    .await;
    assert_eq!(
        env.sql("SELECT state, reason, boot, session FROM sites"),
        "online||bootb|1"
    );
    let events = [
        "boota|1|0|offline|f", // session 1's will, after session 2's birth
        "boota|1|1|online|t",
        "boota|2|0|offline|f", // second offline of session 2
        "boota|2|5|online|t",
        "boota|2|9|offline|t", // clean shutdown of session 2
        "boota|3|0|offline|f", // old boot's will after the new boot's birth
        "bootb|1|1|online|t",  // new boot, later clock
        "bootc|1|1|online|f",  // new boot, clock behind
    ];
    assert_eq!(
        env.sql(
            "SELECT boot, session, seq, state, applied FROM status_events \
             ORDER BY boot, session, seq"
        ),
        events.join("\n")
    );
    assert_eq!(env.sql("SELECT effective_state FROM fleet"), "online");
    bridge.stop().await.expect("graceful stop");
}

/// A bridge logged in as a member of `sitewatch_writer` (least
/// privilege, `[postgres] migrate = false`) stores every kind; the role
/// cannot delete, truncate or change the schema. Against a database an
/// admin has not migrated, such a bridge stops and says what to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_writer_stores_but_cannot_alter() {
    let env = Env::start();
    sitewatch_bridge::migrate_only(&env.config("bridge-owner", ""))
        .await
        .expect("owner migrates");
    env.sql("CREATE ROLE bridge_w LOGIN IN ROLE sitewatch_writer");
    let user = env
        .db_url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .expect("user");
    let writer_url = env.db_url.replacen(&format!("{user}@"), "bridge_w@", 1);
    let loki = blocking(sitewatch_testkit::LokiReceiver::start).expect("loki receiver");
    let mut config = config_for(
        &env.broker.url(),
        &writer_url,
        "bridge-writer",
        &loki_section(&loki.url()),
    );
    config.postgres.migrate = false;
    let bridge = start_bridge(config).await;
    let msgs = golden_valid();
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "all valid vectors stored by the writer", || {
        env.try_count("SELECT count(*) FROM boots WHERE received = 17") == Some(1)
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM cameras"), 2);
    bridge.stop().await.expect("graceful stop");

    for sql in [
        "DELETE FROM heartbeats",
        "TRUNCATE events",
        "DROP TABLE camera_probes",
        "CREATE TABLE intruder (x int)",
        "ALTER TABLE sites ADD COLUMN x int",
    ] {
        let out = blocking(|| {
            env.pg
                .psql_db(&env.db, &format!("SET ROLE bridge_w; {sql}"))
        });
        let err = out.expect_err(&format!("writer ran: {sql}"));
        assert!(
            format!("{err:#}").contains("permission denied")
                || format!("{err:#}").contains("must be owner"),
            "{sql}: {err:#}"
        );
    }
    assert_eq!(env.count("SELECT count(*) FROM heartbeats"), 3);

    // A fresh database that nobody migrated: the writer bridge waits.
    let fresh_url = blocking(|| env.pg.create_database("fresh")).expect("create db");
    env.sql("GRANT CONNECT ON DATABASE fresh TO bridge_w");
    let fresh_writer = fresh_url.replacen(&format!("{user}@"), "bridge_w@", 1);
    let mut config = config_for(&env.broker.url(), &fresh_writer, "bridge-fresh", "");
    config.postgres.migrate = false;
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        sitewatch_bridge::run(config, std::future::pending()),
    )
    .await
    .expect("run returns by itself");
    let err = format!(
        "{:#}",
        result.expect_err("must refuse an unmigrated schema")
    );
    assert!(err.contains("run `sitewatch-bridge migrate`"), "{err}");
}

/// Migrations can run again, and concurrently, without harm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_concurrency_safe() {
    let env = Env::start();
    let config = env.config("bridge-migrate", "");
    let (a, b) = tokio::join!(
        sitewatch_bridge::migrate_only(&config),
        sitewatch_bridge::migrate_only(&config)
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    let mut applied = [a.applied.clone(), b.applied.clone()].concat();
    applied.sort();
    let all = sitewatch_bridge::sink::migrations::MIGRATIONS;
    let versions: Vec<i32> = all.iter().map(|m| m.version).collect();
    assert_eq!(
        applied, versions,
        "exactly one of the two applies each version"
    );
    assert_eq!(&versions[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
    let again = sitewatch_bridge::migrate_only(&config)
        .await
        .expect("third");
    assert!(again.applied.is_empty());
    assert_eq!(Some(again.current), versions.last().copied());
    let names: Vec<String> = all
        .iter()
        .map(|m| format!("{}|{}", m.version, m.name))
        .collect();
    assert_eq!(
        env.sql("SELECT version, name FROM schema_migrations ORDER BY version"),
        names.join("\n")
    );
    // The schema works after all that.
    let bridge = start_bridge(config).await;
    publish_all(&env.broker.url(), &[heartbeat("m1", "b1", 1)]).await;
    eventually(WAIT, "stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(1)
    })
    .await;
    bridge.stop().await.expect("graceful stop");
}

/// Two bridges in one `$share` group split the messages and together
/// store every one exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_the_load() {
    let env = Env::start();
    let shared = "[consumer]\nshare_group = \"bridges\"\n[batch]\nmax_messages = 50\n";
    let b1 = start_bridge(env.config("bridge-s1", shared)).await;
    let b2 = start_bridge(env.config("bridge-s2", shared)).await;
    let msgs: Vec<Msg> = (1..=100)
        .flat_map(|seq| (0..4).map(move |s| heartbeat(&format!("site-{s}"), "b1", seq)))
        .collect();
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "all 400 stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(400)
    })
    .await;
    let got = |b: &sitewatch_bridge::Bridge| {
        metric(
            b.http_addr(),
            "sitewatch_bridge_messages_received_total{kind=\"heartbeat\"}",
        )
        .expect("metric")
    };
    let (n1, n2) = (got(&b1), got(&b2));
    assert_eq!(n1 + n2, 400.0, "each message went to exactly one bridge");
    assert!(
        n1 > 0.0 && n2 > 0.0,
        "both bridges got a share: {n1} / {n2}"
    );
    assert_eq!(
        env.sql("SELECT sum(received), sum(max_seq), count(*) FROM boots"),
        "400|400|4"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM sites WHERE last_seq = 100"),
        4
    );
    b1.stop().await.expect("stop 1");
    b2.stop().await.expect("stop 2");
}

/// `check` prints every problem and exits 1 without opening a socket;
/// a good file exits 0.
#[test]
fn check_reports_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[postgres]\nurl = \"postgresql://u@127.0.0.1:1/x\"\n\
         [batch]\nmax_messages = 0\n[http]\nlisten = \"here\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitewatch-bridge"))
        .args(["check", "--config"])
        .arg(&bad)
        .env_remove("SITEWATCH_POSTGRES_URL")
        .env_remove("SITEWATCH_MQTT_URL")
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("batch.max_messages"), "{stderr}");
    assert!(stderr.contains("http.listen"), "{stderr}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/bridge.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitewatch-bridge"))
        .args(["check", "--config", example])
        .env_remove("SITEWATCH_POSTGRES_URL")
        .env_remove("SITEWATCH_MQTT_URL")
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: a fast stream of many small batches must not stall. The
/// writer once awaited `ack()` while the poll task waited for room in the
/// writer's channel (the broker had sent more than Receive Maximum), and
/// both waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_does_not_deadlock() {
    let env = Env::start();
    let bridge = start_bridge(env.config("bridge-load", "[batch]\nmax_messages = 50\n")).await;
    let msgs: Vec<Msg> = (1..=100)
        .flat_map(|seq| (0..50).map(move |s| heartbeat(&format!("l{s}"), "b1", seq)))
        .collect();
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "all 5000 stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(5000)
    })
    .await;
    eventually(WAIT, "all 5000 acked", || {
        metric(bridge.http_addr(), "sitewatch_bridge_acked_total") == Some(5000.0)
    })
    .await;
    assert_eq!(
        env.sql("SELECT sum(received), sum(max_seq) FROM boots"),
        "5000|5000"
    );
    bridge.stop().await.expect("graceful stop");
}

/// Rough throughput numbers (not a pass/fail test): run with
/// `cargo test -p sitewatch-bridge --release --test bridge throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn throughput_report() {
    use sitewatch_bridge::sink::batch::{InMessage, Prepared};
    use sitewatch_bridge::sink::postgres::PgSink;
    use std::time::{Instant, SystemTime};

    let env = Env::start();
    let n_sites = 100u64;
    let per_site = 200u64;
    let msgs: Vec<Msg> = (1..=per_site)
        .flat_map(|seq| (0..n_sites).map(move |s| heartbeat(&format!("s{s}"), "b1", seq)))
        .collect();

    // Sink alone, batches of 500.
    let config = env.config("bench", "");
    let mut sink = PgSink::new(config.postgres.clone());
    sink.connect().await.expect("connect");
    let now = SystemTime::now();
    let started = Instant::now();
    for chunk in msgs.chunks(500) {
        let ins: Vec<InMessage<'_>> = chunk
            .iter()
            .map(|m| InMessage {
                topic: &m.topic,
                payload: &m.payload,
                received_at: now,
                retained: false,
            })
            .collect();
        let prepared = Prepared::new(&ins);
        sink.write(&prepared).await.expect("write");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "sink only: {} heartbeats in {secs:.2} s = {:.0} rows/s",
        msgs.len(),
        msgs.len() as f64 / secs
    );
    // Same again: all duplicates.
    let started = Instant::now();
    for chunk in msgs.chunks(500) {
        let ins: Vec<InMessage<'_>> = chunk
            .iter()
            .map(|m| InMessage {
                topic: &m.topic,
                payload: &m.payload,
                received_at: now,
                retained: false,
            })
            .collect();
        sink.write(&Prepared::new(&ins)).await.expect("write");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "sink only, all duplicates: {:.0} msgs/s",
        msgs.len() as f64 / secs
    );
    env.sql("TRUNCATE heartbeats, boots, sites");

    // End to end through mosquitto (publisher included).
    let bridge = start_bridge(config).await;
    let started = Instant::now();
    publish_all(&env.broker.url(), &msgs).await;
    let published = started.elapsed().as_secs_f64();
    let total = msgs.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.try_count("SELECT count(*) FROM heartbeats") != Some(total) {
        if Instant::now() > deadline {
            let m = http_get(bridge.http_addr(), "/metrics").map(|r| r.1);
            panic!(
                "not all stored: {:?} rows\n{}",
                env.try_count("SELECT count(*) FROM heartbeats"),
                m.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "end to end: {total} heartbeats in {secs:.2} s = {:.0} msgs/s (publishing took {published:.2} s)",
        total as f64 / secs
    );
    bridge.stop().await.expect("stop");
}

/// A database that refuses for good (here: it does not exist) stops the
/// bridge with an error naming it, instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_database_is_fatal() {
    init_logs();
    let env = Env::start();
    let url = env.pg.database_url("no_such_db");
    let config = config_for(&env.broker.url(), &url, "bridge-fatal", "");
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        sitewatch_bridge::run(config, std::future::pending()),
    )
    .await
    .expect("run returns by itself");
    let err = format!("{:#}", result.expect_err("must fail"));
    assert!(err.contains("no_such_db"), "{err}");
}

/// The session lease of a share-group member (`src/takeover.rs`): while
/// another connection holds the lock on its session (a peer draining it),
/// the bridge does not connect to the broker; once the lock is free it
/// does. And a bridge whose lease connection dies and whose lock a peer
/// takes meanwhile stops, rather than drive a session the peer drives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lease_waits_for_a_drain_and_is_never_shared() {
    use sitewatch_bridge::takeover::LOCK_CLASS;
    let env = Env::start();
    let shared = "[consumer]\nshare_group = \"lease\"\ntakeover_after_secs = 2\n";
    // A first run registers the session in bridge_sessions.
    let b = start_bridge(env.config("bridge-l1", shared)).await;
    b.stop().await.expect("stop");
    let id: i32 = env
        .sql("SELECT id FROM bridge_sessions WHERE client_id = 'bridge-l1'")
        .parse()
        .expect("registered");

    let (holder, conn) = tokio_postgres::connect(&env.db_url, tokio_postgres::NoTls)
        .await
        .expect("connect holder");
    tokio::spawn(conn);
    holder
        .execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK_CLASS, &id])
        .await
        .expect("take the lock");

    let mut bridge = sitewatch_bridge::Bridge::start(env.config("bridge-l1", shared))
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, body) = blocking(|| http_get(bridge.http_addr(), "/healthz")).expect("healthz");
    assert_eq!(code, 503, "connected without the lease: {body}");
    assert!(body.contains("lease"), "{body}");
    assert_eq!(
        metric(bridge.http_addr(), "sitewatch_bridge_session_lease_held"),
        Some(0.0)
    );

    holder
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_CLASS, &id])
        .await
        .expect("release");
    eventually(WAIT, "healthy once the lease is free", || {
        blocking(|| http_get(bridge.http_addr(), "/healthz")).is_some_and(|(c, _)| c == 200)
    })
    .await;
    assert_eq!(
        metric(bridge.http_addr(), "sitewatch_bridge_session_lease_held"),
        Some(1.0)
    );

    // Cut the lease connection and take the lock before the bridge is
    // back: it must stop.
    let killed: i64 = holder
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND classid = $1::int4::oid \
               AND objid = $2::int4::oid AND objsubid = 2 AND granted",
            &[&LOCK_CLASS, &id],
        )
        .await
        .expect("terminate the lease backend")
        .get(0);
    assert_eq!(killed, 1, "the bridge held its lock on one connection");
    holder
        .execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK_CLASS, &id])
        .await
        .expect("take the lock");
    let why = tokio::time::timeout(Duration::from_secs(15), bridge.failed())
        .await
        .expect("the bridge noticed within 15 s");
    assert!(why.contains("another bridge took over"), "{why}");
    let _ = bridge.stop().await;
}

/// A share-group member with takeover off (`takeover_after_secs = 0`)
/// still holds its lease and beats, so a peer with a short takeover time
/// never drains its live session; both keep their share. (It ran once
/// with takeover on, so its `bridge_sessions` row exists: without the
/// lease the peer would find that row silent and its lock free.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_takeover_off_is_not_drained_while_alive() {
    let env = Env::start();
    let quiet = "[consumer]\nshare_group = \"mixed\"\ntakeover_after_secs = 0\n";
    let eager = "[consumer]\nshare_group = \"mixed\"\ntakeover_after_secs = 1\n";
    let first = start_bridge(env.config("bridge-m1", eager)).await;
    first.stop().await.expect("stop");
    let b1 = start_bridge(env.config("bridge-m1", quiet)).await;
    let b2 = start_bridge(env.config("bridge-m2", eager)).await;
    assert_eq!(
        metric(b1.http_addr(), "sitewatch_bridge_session_lease_held"),
        Some(1.0)
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let msgs: Vec<Msg> = (1..=100)
        .map(|seq| heartbeat("site-m", "b1", seq))
        .collect();
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "all 100 stored", || {
        env.try_count("SELECT count(*) FROM heartbeats") == Some(100)
    })
    .await;
    assert_eq!(
        metric(b2.http_addr(), "sitewatch_bridge_takeovers_total"),
        Some(0.0),
        "drained a live member"
    );
    let got = |b: &sitewatch_bridge::Bridge| {
        metric(
            b.http_addr(),
            "sitewatch_bridge_messages_received_total{kind=\"heartbeat\"}",
        )
        .expect("metric")
    };
    assert!(got(&b1) > 0.0 && got(&b2) > 0.0, "both kept their share");
    assert_eq!(
        env.sql("SELECT count(*) FROM bridge_sessions WHERE taken_over_at IS NOT NULL"),
        "0"
    );
    b1.stop().await.expect("stop 1");
    b2.stop().await.expect("stop 2");
}

/// `sitewatch-bridge forget` retires rows from the "now" tables (so a
/// pulled disk or removed camera stops alerting) and keeps history; it
/// says so when there is nothing to forget, refuses an online site without
/// --force, and names the fix when the account may not delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_retires_rows_and_keeps_history() {
    let env = Env::start();
    let loki = blocking(sitewatch_testkit::LokiReceiver::start).expect("loki receiver");
    let bridge = start_bridge(env.config("bridge-forget", &loki_section(&loki.url()))).await;
    let msgs = golden_valid();
    publish_all(&env.broker.url(), &msgs).await;
    eventually(WAIT, "all valid vectors stored", || {
        env.try_count("SELECT count(*) FROM boots WHERE received = 17") == Some(1)
    })
    .await;
    bridge.stop().await.expect("stop");
    let site = env.sql("SELECT site FROM sites");
    let camera = env.sql("SELECT camera FROM cameras ORDER BY camera LIMIT 1");
    let device = env.sql("SELECT device FROM disks ORDER BY device LIMIT 1");
    let probes = env.count("SELECT count(*) FROM camera_probes");
    let (cams, disks) = (
        env.count("SELECT count(*) FROM cameras"),
        env.count("SELECT count(*) FROM disks"),
    );
    assert!(cams >= 1 && disks >= 1, "vectors give cameras and disks");
    let target = env.sql("SELECT target FROM reach_targets ORDER BY target LIMIT 1");
    let (targets, readings) = (
        env.count("SELECT count(*) FROM reach_targets"),
        env.count("SELECT count(*) FROM reach_readings"),
    );
    assert!(targets >= 2, "vectors give reach targets");

    let dir = tempfile::tempdir().expect("tempdir");
    let write_cfg = |name: &str, db_url: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            config_text(&env.broker.url(), db_url, "bridge-forget", ""),
        )
        .expect("write config");
        p
    };
    let owner = write_cfg("owner.toml", &env.db_url);
    let run = |cfg: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitewatch-bridge"))
            .arg("--config")
            .arg(cfg)
            .arg("forget")
            .args(args)
            .env_remove("SITEWATCH_POSTGRES_URL")
            .env_remove("SITEWATCH_MQTT_URL")
            .output()
            .expect("run forget");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, out, err) = run(&owner, &["camera", &site, &camera]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "forgot 0 site(s), 1 camera(s), 0 disk(s), 0 reach target(s)"
    );
    assert_eq!(env.count("SELECT count(*) FROM cameras"), cams - 1);
    assert_eq!(
        env.count("SELECT count(*) FROM camera_probes"),
        probes,
        "history stays"
    );

    let (code, _, err) = run(&owner, &["camera", &site, "no-such-camera"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing to forget"), "{err}");

    let (code, _, err) = run(&owner, &["disk", &site, &device]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(env.count("SELECT count(*) FROM disks"), disks - 1);

    // A LAN device taken out of [reach]: its row goes, its rounds stay.
    let (code, out, err) = run(&owner, &["target", &site, &target]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "forgot 0 site(s), 0 camera(s), 0 disk(s), 1 reach target(s)"
    );
    assert_eq!(env.count("SELECT count(*) FROM reach_targets"), targets - 1);
    assert_eq!(
        env.count("SELECT count(*) FROM reach_readings"),
        readings,
        "history stays"
    );
    let (code, _, err) = run(&owner, &["target", &site, &target]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("nothing to forget: no such reach target"),
        "{err}"
    );

    // The least-privilege writer may not delete: the message says who may.
    env.sql("CREATE ROLE bridge_fw LOGIN IN ROLE sitewatch_writer");
    let user = env
        .db_url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .expect("user");
    let writer = write_cfg(
        "writer.toml",
        &env.db_url.replacen(&format!("{user}@"), "bridge_fw@", 1),
    );
    let (code, _, err) = run(&writer, &["site", &site, "--force"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("schema owner"), "{err}");
    assert_eq!(env.count("SELECT count(*) FROM sites"), 1);

    // An online site needs --force.
    env.sql(&format!(
        "UPDATE sites SET state = 'online' WHERE site = '{site}'"
    ));
    let (code, _, err) = run(&owner, &["site", &site]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--force"), "{err}");
    let (code, out, err) = run(&owner, &["site", &site, "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("forgot 1 site(s)"), "{out}");
    assert!(
        out.trim()
            .ends_with(&format!("{} reach target(s)", targets - 1)),
        "{out}"
    );
    assert_eq!(
        env.sql("SELECT (SELECT count(*) FROM sites) || ',' || (SELECT count(*) FROM cameras) || ',' || (SELECT count(*) FROM disks) || ',' || (SELECT count(*) FROM reach_targets)"),
        "0,0,0,0"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM heartbeats"),
        3,
        "history stays"
    );
}
