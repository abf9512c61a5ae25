//! The Loki stand-in refuses what Loki refuses and stores what Loki
//! stores, over real HTTP. Each case names the Loki rule it mirrors (see
//! the module documentation of `sitewatch_testkit::loki`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_testkit::loki::encode_push;
use sitewatch_testkit::loki::proto::{
    EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp,
};
use sitewatch_testkit::LokiReceiver;

const PROTOBUF: &str = "application/x-protobuf";

/// Minimal HTTP/1.1 POST; `(status, headers, body)`.
fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: loki\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.trim().to_owned())
}

fn push(rx: &LokiReceiver, req: &PushRequest) -> (u16, String) {
    let (status, _, body) = post(
        rx.addr(),
        "/loki/api/v1/push",
        &[("Content-Type", PROTOBUF)],
        &encode_push(req),
    );
    (status, body)
}

fn now_ts(offset_secs: i64) -> Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    Timestamp {
        seconds: i64::try_from(now).expect("fits") + offset_secs,
        nanos: 123,
    }
}

fn entry(line: &str, ts: Timestamp) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(ts),
        line: line.to_owned(),
        structured_metadata: vec![],
        parsed: vec![],
    }
}

fn stream(labels: &str, entries: Vec<EntryAdapter>) -> StreamAdapter {
    StreamAdapter {
        labels: labels.to_owned(),
        entries,
        hash: 0,
    }
}

fn request(streams: Vec<StreamAdapter>) -> PushRequest {
    PushRequest {
        streams,
        format: String::new(),
    }
}

fn one(labels: &str, e: EntryAdapter) -> PushRequest {
    request(vec![stream(labels, vec![e])])
}

#[test]
fn valid_push_is_stored_and_answered_204() {
    let rx = LokiReceiver::start().expect("start");
    let mut e = entry("hello", now_ts(0));
    e.structured_metadata.push(LabelPairAdapter {
        name: "ip".into(),
        value: "10.0.0.1".into(),
    });
    let (code, body) = push(&rx, &one(r#"{site="a", job="x", empty=""}"#, e));
    assert_eq!(code, 204, "{body}");
    let got = rx.entries();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].stream, r#"{job="x", site="a"}"#,
        "sorted, empty dropped"
    );
    assert_eq!(got[0].labels.get("site").map(String::as_str), Some("a"));
    assert_eq!(got[0].line, "hello");
    assert_eq!(got[0].metadata("ip"), Some("10.0.0.1"));
    assert_eq!(got[0].timestamp_ns % 1_000_000_000, 123);
    assert_eq!(rx.requests(), 1);
}

#[test]
fn body_must_be_raw_snappy_protobuf() {
    let rx = LokiReceiver::start().expect("start");
    let req = one(r#"{a="b"}"#, entry("x", now_ts(0)));
    let raw = prost::Message::encode_to_vec(&req);
    let addr = rx.addr();
    let path = "/loki/api/v1/push";
    // Uncompressed protobuf.
    let (code, _, body) = post(addr, path, &[("Content-Type", PROTOBUF)], &raw);
    assert_eq!((code, body.as_str()), (400, "snappy: corrupt input"));
    // Framed snappy stream.
    let mut framed = Vec::new();
    {
        let mut w = snap::write::FrameEncoder::new(&mut framed);
        w.write_all(&raw).expect("frame");
    }
    let (code, _, body) = post(addr, path, &[("Content-Type", PROTOBUF)], &framed);
    assert_eq!(code, 400);
    assert!(body.contains("framed"), "{body}");
    // Raw snappy of garbage protobuf.
    let junk = snap::raw::Encoder::new()
        .compress_vec(b"\xff\xff\xff")
        .expect("compress");
    let (code, _, body) = post(addr, path, &[("Content-Type", PROTOBUF)], &junk);
    assert_eq!(code, 400);
    assert!(body.starts_with("proto:"), "{body}");
    // Content type: missing, JSON; encoding: gzip, unknown.
    let good = encode_push(&req);
    let (code, _, body) = post(addr, path, &[], &good);
    assert_eq!((code, body.as_str()), (400, "mime: no media type"));
    let (code, _, _) = post(addr, path, &[("Content-Type", "application/json")], &good);
    assert_eq!(code, 400);
    let gz = [("Content-Type", PROTOBUF), ("Content-Encoding", "gzip")];
    assert_eq!(post(addr, path, &gz, &good).0, 400);
    let br = [("Content-Type", PROTOBUF), ("Content-Encoding", "br")];
    let (code, _, body) = post(addr, path, &br, &good);
    assert_eq!(
        (code, body.as_str()),
        (400, "Content-Encoding \"br\" not supported")
    );
    // Tolerated: Content-Encoding: snappy, and media type parameters.
    let sn = [
        ("Content-Type", "application/x-protobuf; charset=binary"),
        ("Content-Encoding", "snappy"),
    ];
    assert_eq!(post(addr, path, &sn, &good).0, 204);
    // Wrong path.
    assert_eq!(
        post(addr, "/api/v1/push", &[("Content-Type", PROTOBUF)], &good).0,
        404
    );
    assert_eq!(rx.entry_count(), 1);
}

#[test]
fn stream_rules() {
    let rx = LokiReceiver::start().expect("start");
    let e = || vec![entry("x", now_ts(0))];
    let refused = |labels: &str, needle: &str| {
        let (code, body) = push(&rx, &request(vec![stream(labels, e())]));
        assert_eq!(code, 400, "{labels}: {body}");
        assert!(body.contains(needle), "{labels}: {body:?} lacks {needle:?}");
    };
    refused("{a=b}", "Error parsing labels '{a=b}'");
    refused(r#"{1a="b"}"#, "Error parsing labels");
    refused(r#"{a.b="c"}"#, "Error parsing labels");
    refused("{}", "at least one label pair is required per stream");
    refused(
        r#"{a=""}"#,
        "at least one label pair is required per stream",
    );
    refused(r#"{a="1", a="2"}"#, "has duplicate label name: 'a'");
    let sixteen: Vec<String> = (0..16).map(|i| format!("l{i:02}=\"v\"")).collect();
    refused(
        &format!("{{{}}}", sixteen.join(", ")),
        "has 16 label names; limit 15",
    );
    refused(
        &format!("{{a=\"{}\"}}", "v".repeat(2049)),
        "has label value too long",
    );
    refused(
        &format!("{{{}=\"v\"}}", "n".repeat(1025)),
        "has label name too long",
    );
    assert_eq!(rx.entry_count(), 0);

    // At the limits: accepted. service_name does not count.
    let mut fifteen: Vec<String> = (0..15).map(|i| format!("l{i:02}=\"v\"")).collect();
    fifteen.push("service_name=\"s\"".into());
    for labels in [
        format!("{{{}}}", fifteen.join(", ")),
        format!("{{a=\"{}\"}}", "v".repeat(2048)),
        format!("{{{}=\"v\"}}", "n".repeat(1024)),
        r#"{a="q\"u\\o\nte\t"}"#.to_owned(),
    ] {
        let (code, body) = push(&rx, &request(vec![stream(&labels, e())]));
        assert_eq!(code, 204, "{labels}: {body}");
    }
    let got = rx.entries();
    assert_eq!(
        got[3].labels.get("a").map(String::as_str),
        Some("q\"u\\o\nte\t")
    );

    // No streams: 422. Streams without entries: skipped, 204.
    assert_eq!(push(&rx, &request(vec![])).0, 422);
    assert_eq!(push(&rx, &request(vec![stream("{a=b}", vec![])])).0, 204);
}

#[test]
fn entry_rules_and_partial_acceptance() {
    let rx = LokiReceiver::start().expect("start");
    let labels = r#"{site="s"}"#;
    let day = 24 * 3600;
    let cases: Vec<(EntryAdapter, Option<&str>)> = vec![
        (
            entry("old", now_ts(-8 * day)),
            Some("has timestamp too old"),
        ),
        (entry("new", now_ts(11 * 60)), Some("has timestamp too new")),
        (
            entry(&"x".repeat(262_145), now_ts(0)),
            Some("Max entry size '262144' bytes exceeded"),
        ),
        (
            EntryAdapter {
                timestamp: None,
                ..entry("no time", now_ts(0))
            },
            Some("has timestamp too old: 0001-01-01T00:00:00Z"),
        ),
        (entry("fine, 9 min ahead", now_ts(9 * 60)), None),
        (entry("fine, 6 days old", now_ts(-6 * day)), None),
        (entry(&"x".repeat(262_144), now_ts(0)), None),
    ];
    for (e, want) in &cases {
        let (code, body) = push(&rx, &one(labels, e.clone()));
        match want {
            Some(needle) => {
                assert_eq!(code, 400, "{body}");
                assert!(body.contains(needle), "{body:?} lacks {needle:?}");
            }
            None => assert_eq!(code, 204, "{body}"),
        }
    }
    assert_eq!(rx.entry_count(), 3);

    // Structured metadata: size and count.
    let md = |n: usize, len: usize| {
        let mut e = entry(&format!("md {n} {len}"), now_ts(0));
        e.structured_metadata = (0..n)
            .map(|i| LabelPairAdapter {
                name: format!("k{i:03}"),
                value: "v".repeat(len),
            })
            .collect();
        e
    };
    let (code, body) = push(&rx, &one(labels, md(129, 1)));
    assert_eq!(code, 400);
    assert!(
        body.contains("too many structured metadata labels: '129', limit: '128'"),
        "{body}"
    );
    // Name "k000" (4 bytes) plus the value.
    let (code, body) = push(&rx, &one(labels, md(1, 65_536 - 4)));
    assert_eq!(code, 204, "exactly 64 KiB: {body}");
    let (code, body) = push(&rx, &one(labels, md(1, 65_536 - 3)));
    assert_eq!(code, 400);
    assert!(
        body.contains("structured metadata too large: '65537' bytes"),
        "{body}"
    );
    assert_eq!(push(&rx, &one(labels, md(128, 1))).0, 204);

    // Out-of-range nanos: a decoding error, nothing stored.
    let before = rx.entry_count();
    let mut bad = entry("bad nanos", now_ts(0));
    bad.timestamp = Some(Timestamp {
        seconds: 1,
        nanos: 1_000_000_000,
    });
    let (code, body) = push(&rx, &one(labels, bad));
    assert_eq!(code, 400);
    assert!(body.contains("out of range"), "{body}");
    assert_eq!(rx.entry_count(), before);

    // One bad entry among good ones, in two streams: the good ones are
    // stored, the answer is 400 naming the bad one.
    let before = rx.entry_count();
    let req = request(vec![
        stream(
            labels,
            vec![
                entry("good 1", now_ts(0)),
                entry(&"y".repeat(300_000), now_ts(0)),
            ],
        ),
        stream(r#"{site="t"}"#, vec![entry("good 2", now_ts(0))]),
        stream("{bad", vec![entry("lost", now_ts(0))]),
    ]);
    let (code, body) = push(&rx, &req);
    assert_eq!(code, 400);
    assert!(
        body.contains("2 errors like") || body.contains("1 errors like"),
        "{body}"
    );
    assert!(body.contains("Max entry size"), "{body}");
    assert!(body.contains("Error parsing labels '{bad'"), "{body}");
    assert_eq!(rx.entry_count(), before + 2);
}

#[test]
fn identical_entries_in_a_stream_are_dropped_like_loki() {
    let rx = LokiReceiver::start().expect("start");
    let ts = now_ts(0);
    let req = request(vec![
        stream(r#"{a="1"}"#, vec![entry("same", ts), entry("same", ts)]),
        // Same line and time in another stream: kept.
        stream(r#"{a="2"}"#, vec![entry("same", ts)]),
    ]);
    assert_eq!(push(&rx, &req).0, 204);
    // Pushed again: all duplicates. A different time: kept.
    assert_eq!(push(&rx, &req).0, 204);
    let later = Timestamp {
        nanos: ts.nanos + 1,
        ..ts
    };
    assert_eq!(push(&rx, &one(r#"{a="1"}"#, entry("same", later))).0, 204);
    assert_eq!(rx.entry_count(), 3);
    assert_eq!(rx.duplicates(), 4);
}

#[test]
fn injected_failures_then_success() {
    let rx = LokiReceiver::builder()
        .retry_after("2")
        .start()
        .expect("start");
    rx.fail_next(1, 429);
    rx.fail_next(1, 500);
    let body = encode_push(&one(r#"{a="b"}"#, entry("x", now_ts(0))));
    let h = [("Content-Type", PROTOBUF)];
    let (code, headers, _) = post(rx.addr(), "/loki/api/v1/push", &h, &body);
    assert_eq!(code, 429);
    assert!(headers.contains(&("retry-after".to_owned(), "2".to_owned())));
    let (code, headers, _) = post(rx.addr(), "/loki/api/v1/push", &h, &body);
    assert_eq!(code, 500);
    assert!(!headers.iter().any(|(k, _)| k == "retry-after"));
    assert_eq!(rx.entry_count(), 0);
    assert_eq!(post(rx.addr(), "/loki/api/v1/push", &h, &body).0, 204);
    assert_eq!(rx.entry_count(), 1);
    let log: Vec<u16> = rx.request_log().iter().map(|r| r.status).collect();
    assert_eq!(log, [429, 500, 204]);
}

#[test]
fn tenant_and_credentials_when_required() {
    let rx = LokiReceiver::builder()
        .require_tenant("ops")
        .require_basic_auth("bridge", "s3cret")
        .start()
        .expect("start");
    let body = encode_push(&one(r#"{a="b"}"#, entry("x", now_ts(0))));
    let path = "/loki/api/v1/push";
    let ct = ("Content-Type", PROTOBUF);
    let auth = ("Authorization", "Basic YnJpZGdlOnMzY3JldA==");
    let (code, _, msg) = post(rx.addr(), path, &[ct, auth], &body);
    assert_eq!((code, msg.as_str()), (401, "no org id"));
    let (code, _, _) = post(rx.addr(), path, &[ct, ("X-Scope-OrgID", "ops")], &body);
    assert_eq!(code, 401);
    let (code, _, _) = post(
        rx.addr(),
        path,
        &[ct, auth, ("X-Scope-OrgID", "ops")],
        &body,
    );
    assert_eq!(code, 204);
    assert_eq!(rx.entries()[0].tenant.as_deref(), Some("ops"));

    let rx = LokiReceiver::builder()
        .require_bearer("tok")
        .start()
        .expect("start");
    let (code, _, _) = post(
        rx.addr(),
        path,
        &[ct, ("Authorization", "Bearer tok")],
        &body,
    );
    assert_eq!(code, 204);
    let (code, _, _) = post(
        rx.addr(),
        path,
        &[ct, ("Authorization", "Bearer no")],
        &body,
    );
    assert_eq!(code, 401);
}

#[test]
fn lowered_line_limit_like_an_operator_config() {
    let rx = LokiReceiver::builder()
        .max_line_size(10)
        .start()
        .expect("start");
    let (code, body) = push(&rx, &one(r#"{a="b"}"#, entry("0123456789A", now_ts(0))));
    assert_eq!(code, 400);
    assert!(
        body.contains("Max entry size '10' bytes exceeded"),
        "{body}"
    );
    assert_eq!(
        push(&rx, &one(r#"{a="b"}"#, entry("0123456789", now_ts(0)))).0,
        204
    );
}
