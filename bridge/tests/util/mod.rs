//! Helpers for the bridge integration tests: a private mosquitto and
//! PostgreSQL per test, an in-process bridge, a bulk MQTT publisher, a
//! minimal HTTP GET, and polling helpers.
//!
//! Testkit calls are blocking (processes, `psql`); from async tests they
//! go through `block_in_place`, so tests use the multi-thread runtime.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use sitewatch_bridge::{Bridge, Config};
use sitewatch_testkit::{Mosquitto, Postgres};

/// Runs blocking test-kit code from an async test.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// One private broker and database server.
pub struct Env {
    pub broker: Mosquitto,
    pub pg: Postgres,
    pub db: String,
    pub db_url: String,
}

impl Env {
    /// Starts mosquitto (with persistence, so restarts keep sessions) and
    /// PostgreSQL, and creates database `bridge`.
    pub fn start() -> Env {
        blocking(|| {
            let broker = Mosquitto::builder()
                .persistence(true)
                .start()
                .expect("start mosquitto");
            let pg = Postgres::start().expect("start postgres");
            let db_url = pg.create_database("bridge").expect("create database");
            Env {
                broker,
                pg,
                db: "bridge".to_owned(),
                db_url,
            }
        })
    }

    /// A bridge config for this environment; `extra` is appended TOML
    /// (tables after the defaults here).
    pub fn config(&self, client_id: &str, extra: &str) -> Config {
        config_for(&self.broker.url(), &self.db_url, client_id, extra)
    }

    /// Runs SQL in the test database; returns psql's unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        blocking(|| self.pg.psql_db(&self.db, sql)).expect("psql")
    }

    /// Runs a `SELECT count(*)`-like query returning one integer.
    pub fn count(&self, sql: &str) -> i64 {
        let out = self.sql(sql);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number from {sql}: {out:?}"))
    }

    /// Like [`Env::count`] but returns `None` while the database is down.
    pub fn try_count(&self, sql: &str) -> Option<i64> {
        blocking(|| self.pg.psql_db(&self.db, sql))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// A config as TOML text; `[batch]` is small-wait so tests run fast.
pub fn config_text(broker_url: &str, db_url: &str, client_id: &str, extra: &str) -> String {
    format!(
        r#"shutdown_timeout_secs = 10
[mqtt]
url = "{broker_url}"
client_id = "{client_id}"
keep_alive_secs = 5
[postgres]
url = "{db_url}"
[http]
listen = "127.0.0.1:0"
{extra}
"#
    )
}

pub fn config_for(broker_url: &str, db_url: &str, client_id: &str, extra: &str) -> Config {
    let text = config_text(broker_url, db_url, client_id, extra);
    Config::from_toml(&text, |_| None).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

/// Logs to the test's captured output (`RUST_LOG` to change the level).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("sitewatch_bridge=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Starts an in-process bridge and waits until `/healthz` says ok.
pub async fn start_bridge(config: Config) -> Bridge {
    init_logs();
    let bridge = Bridge::start(config).await.expect("start bridge");
    let addr = bridge.http_addr();
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = blocking(|| http_get(addr, "/healthz"));
        if r.as_ref().is_some_and(|(code, _)| *code == 200) {
            return bridge;
        }
        last = r.or(last);
        if Instant::now() > deadline {
            panic!("bridge not healthy after 20 s; last /healthz: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` every 50 ms until true; panics naming `what` on timeout.
pub async fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if blocking(&mut f) {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Minimal HTTP/1.1 GET: `(status, body)`, `None` if unreachable.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// Value of a metric line (exact name with labels) in `/metrics`.
pub fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics")?;
    metric_in(&body, series)
}

pub fn metric_in(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Msg {
        Msg {
            topic: topic.into(),
            payload: payload.into(),
            retain: false,
        }
    }
}

/// Publishes every message at QoS 1 on one connection, in order, and
/// returns once the broker acknowledged all of them.
pub async fn publish_all(broker_url: &str, msgs: &[Msg]) {
    let port: u16 = broker_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in broker url");
    let id = format!("test-pub-{}", fastrand::u64(..));
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(Some(2 * 1024 * 1024));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let to_send = msgs.to_vec();
    let sender = tokio::spawn(async move {
        for m in to_send {
            client
                .publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload)
                .await
                .expect("queue publish");
        }
        client
    });
    let mut acked = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked < msgs.len() {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher connection failed: {e}"),
            Err(_) => panic!("publisher: only {acked} of {} acked in 30 s", msgs.len()),
        }
    }
    let client = sender.await.expect("sender task");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                _ => {}
            }
        }
    })
    .await;
}

/// A `[loki]` section pushing to `url` with fast retries (tests).
pub fn loki_section(url: &str) -> String {
    format!("[loki]\nurl = \"{url}\"\nmin_backoff_ms = 20\nmax_backoff_secs = 1\n")
}

/// Current time, Unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One syslog record as JSON (see docs/wire.md, `log`).
pub fn log_record(
    ts: Option<u64>,
    rx: u64,
    host: &str,
    app: &str,
    severity: u8,
    msg: &str,
) -> serde_json::Value {
    let mut r = serde_json::json!({
        "rx": rx, "ip": "192.0.2.10", "host": host, "app": app,
        "facility": 16, "severity": severity, "format": "rfc3164", "msg": msg
    });
    if let Some(ts) = ts {
        r["ts"] = serde_json::Value::from(ts);
    }
    r
}

/// A `log` message carrying `records`.
pub fn log_msg(site: &str, boot: &str, seq: u64, records: Vec<serde_json::Value>) -> Msg {
    let payload = serde_json::json!({
        "v": 1, "site": site, "boot": boot, "seq": seq, "ts": now_ms(),
        "records": records
    });
    Msg::new(
        format!("sitewatch/v1/{site}/log"),
        serde_json::to_vec(&payload).expect("json"),
    )
}

/// A valid heartbeat payload.
pub fn heartbeat(site: &str, boot: &str, seq: u64) -> Msg {
    heartbeat_with(site, boot, seq, "0.1.0")
}

pub fn heartbeat_with(site: &str, boot: &str, seq: u64, agent_version: &str) -> Msg {
    let payload = serde_json::json!({
        "v": 1, "site": site, "boot": boot, "seq": seq,
        "ts": 1_764_284_430_000u64 + seq * 1000,
        "agent_version": agent_version, "interval_secs": 30,
        "uptime_secs": 86_400, "agent_uptime_secs": 30,
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

/// A status payload. `lost` = Last Will (seq must be 0).
pub fn status(site: &str, boot: &str, session: u32, seq: u64, ts: u64, state: &str) -> Msg {
    let mut payload = serde_json::json!({
        "v": 1, "site": site, "boot": boot, "seq": seq, "ts": ts,
        "state": if state == "online" { "online" } else { "offline" },
        "session": session, "agent_version": "0.1.0", "heartbeat_secs": 30
    });
    match state {
        "online" => {}
        "lost" | "shutdown" => payload["reason"] = serde_json::Value::from(state),
        other => panic!("unknown state {other}"),
    }
    let mut m = Msg::new(
        format!("sitewatch/v1/{site}/status"),
        serde_json::to_vec(&payload).expect("json"),
    );
    m.retain = true;
    m
}
