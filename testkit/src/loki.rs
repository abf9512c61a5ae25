//! A stand-in for Grafana Loki's push endpoint, for tests.
//!
//! Loki cannot be installed on the test machines, so tests push to this
//! receiver instead. It decodes exactly what Loki decodes and refuses
//! what Loki refuses, with Loki's status codes and (close to) Loki's
//! messages, so that an encoder mistake in the bridge fails a test. It
//! has its own copy of the protobuf messages (it does not share the
//! bridge's), written from `pkg/push/push.proto`.
//!
//! `POST /loki/api/v1/push`, answered `204` when every entry is stored.
//! Rules, with the Loki source they come from (grafana/loki, v3):
//!
//! * body: snappy *block* format (`util.ParseProtoReader(...,
//!   util.RawSnappy)` = `snappy.Decode`, `pkg/util/http.go`), then a
//!   `logproto.PushRequest`; a framed snappy stream, an uncompressed body
//!   or bad protobuf is `400`; more than 100 MiB decompressed is `400`
//!   (`distributor.max-recv-msg-size`). `Content-Encoding` may be empty
//!   or `snappy` (`pkg/loghttp/push/push.go`);
//! * `Content-Type` must be `application/x-protobuf`. Stricter than Loki,
//!   which also takes `application/json` and decodes any other media type
//!   as protobuf; a missing one is `400` in both (`mime.ParseMediaType`);
//! * a request without streams: `422` "error at least one valid stream is
//!   required for ingestion"; streams without entries are skipped
//!   (`pkg/distributor/distributor.go`);
//! * stream labels: must parse as a Prometheus label set
//!   (`syntax.ParseLabels` → `promql_parser.ParseMetric`: `{name="value",
//!   ...}`, names `[a-zA-Z_][a-zA-Z0-9_]*`, Go string escapes, `"`, `'` or
//!   backtick quotes); empty values dropped; then `validator.ValidateLabels`
//!   (`pkg/distributor/validator.go`): at least one label; at most 15
//!   label names (`service_name` not counted); names ≤ 1024 bytes, values
//!   ≤ 2048 bytes; no duplicate names. A failing stream is refused whole;
//! * entries (`validator.ValidateEntry`): not older than 7 days
//!   (`reject_old_samples_max_age`), not more than 10 minutes ahead
//!   (`creation_grace_period`), line ≤ 256 KiB (`max_line_size`, "256KB"
//!   parsed by `datasize`: 262144 bytes), structured metadata ≤ 64 KiB
//!   (names plus values) and ≤ 128 pairs; a timestamp with out-of-range
//!   nanos is a decoding error (gogoproto `StdTimeUnmarshal`);
//! * partial acceptance: valid entries are stored even when others are
//!   refused; the answer is then `400` with every refusal, grouped as
//!   Loki's `util.GroupedErrors` prints them (messages from
//!   `pkg/validation/validate.go`);
//! * duplicates: an entry with the same timestamp and line as one already
//!   stored in the same stream is dropped silently, as Loki's ingester does
//!   while the chunk is in memory (counted in [`LokiReceiver::duplicates`]);
//! * optional: a required tenant (`X-Scope-OrgID`, else `401` "no org
//!   id", as with `auth_enabled: true`) and a required `Authorization`
//!   header (basic or bearer, else `401`), as a gateway in front of Loki
//!   would check.
//!
//! Not emulated: rate limits (use [`LokiReceiver::fail_next`] with 429),
//! stream limits, `service_name` discovery and `detected_level`, the
//! out-of-order window, JSON and gzip bodies.
//!
//! The server is axum on a current-thread tokio runtime on its own
//! thread; the handle is synchronous like the rest of the test kit, and
//! dropping it stops the server.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use prost::Message as _;

/// The protobuf messages of Loki's `pkg/push/push.proto`, written anew for
/// the receiver (independent of the bridge's copy on purpose).
pub mod proto {
    /// `logproto.PushRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        /// `repeated StreamAdapter streams = 1`.
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
        /// `string format = 2`.
        #[prost(string, tag = "2")]
        pub format: String,
    }

    /// `logproto.StreamAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        /// `string labels = 1`.
        #[prost(string, tag = "1")]
        pub labels: String,
        /// `repeated EntryAdapter entries = 2`.
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        /// `uint64 hash = 3`.
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    /// `logproto.EntryAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        /// `google.protobuf.Timestamp timestamp = 1`.
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        /// `string line = 2`.
        #[prost(string, tag = "2")]
        pub line: String,
        /// `repeated LabelPairAdapter structuredMetadata = 3`.
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
        /// `repeated LabelPairAdapter parsed = 4`.
        #[prost(message, repeated, tag = "4")]
        pub parsed: Vec<LabelPairAdapter>,
    }

    /// `logproto.LabelPairAdapter`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        /// `string name = 1`.
        #[prost(string, tag = "1")]
        pub name: String,
        /// `string value = 2`.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        /// `int64 seconds = 1`.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// `int32 nanos = 2`.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// Loki's default per-tenant limits (`pkg/validation/limits.go`); tests
/// may lower them to provoke refusals an operator's Loki would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiLimits {
    /// `max_line_size`: 256 KiB.
    pub max_line_size: usize,
    /// `max_label_names_per_series`: 15.
    pub max_label_names: usize,
    /// `max_label_name_length`: 1024.
    pub max_label_name_length: usize,
    /// `max_label_value_length`: 2048.
    pub max_label_value_length: usize,
    /// `reject_old_samples_max_age`: 7 days.
    pub reject_old_samples_max_age: Duration,
    /// `creation_grace_period`: 10 minutes.
    pub creation_grace_period: Duration,
    /// `max_structured_metadata_size`: 64 KiB.
    pub max_structured_metadata_size: usize,
    /// `max_structured_metadata_entries_count`: 128.
    pub max_structured_metadata_entries: usize,
    /// Largest decompressed body (`distributor.max-recv-msg-size`, 100 MiB).
    pub max_decompressed_bytes: usize,
}

impl Default for LokiLimits {
    fn default() -> Self {
        LokiLimits {
            max_line_size: 256 * 1024,
            max_label_names: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            reject_old_samples_max_age: Duration::from_secs(7 * 24 * 3600),
            creation_grace_period: Duration::from_secs(10 * 60),
            max_structured_metadata_size: 64 * 1024,
            max_structured_metadata_entries: 128,
            max_decompressed_bytes: 100 << 20,
        }
    }
}

/// Most entries the receiver keeps; beyond, pushes get `500`.
pub const MAX_STORED_ENTRIES: usize = 2_000_000;

/// Most requests remembered by [`LokiReceiver::request_log`].
pub const MAX_REQUEST_LOG: usize = 100_000;

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEntry {
    /// Stream labels (empty values dropped, as Loki does).
    pub labels: BTreeMap<String, String>,
    /// The stream as Loki prints it (`{a="b", c="d"}`).
    pub stream: String,
    /// Entry time, nanoseconds since the Unix epoch.
    pub timestamp_ns: i128,
    /// The line.
    pub line: String,
    /// Structured metadata, in the order sent.
    pub structured_metadata: Vec<(String, String)>,
    /// `X-Scope-OrgID` of the request that stored it.
    pub tenant: Option<String>,
}

impl ReceivedEntry {
    /// A metadata value by name.
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.structured_metadata
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When it was answered.
    pub at: Instant,
    /// HTTP status sent.
    pub status: u16,
    /// Answer body.
    pub body: String,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// Request body size (compressed).
    pub body_bytes: usize,
    /// Entries in the request (0 if it did not decode).
    pub entries: usize,
    /// Entries stored by it.
    pub stored: usize,
}

#[derive(Default)]
struct Store {
    entries: Vec<ReceivedEntry>,
    seen: HashSet<(String, i128, String)>,
    duplicates: usize,
    requests: Vec<RequestRecord>,
    faults: VecDeque<u16>,
    failing: Option<u16>,
}

struct Shared {
    limits: LokiLimits,
    tenant: Option<String>,
    authorization: Option<String>,
    retry_after: String,
    store: Mutex<Store>,
}

impl Shared {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Builder for a [`LokiReceiver`] with non-default rules.
#[derive(Debug, Clone)]
pub struct LokiReceiverBuilder {
    limits: LokiLimits,
    tenant: Option<String>,
    authorization: Option<String>,
    retry_after: String,
}

impl LokiReceiverBuilder {
    /// Replaces the limits.
    pub fn limits(mut self, limits: LokiLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Lowers (or raises) `max_line_size`.
    pub fn max_line_size(mut self, bytes: usize) -> Self {
        self.limits.max_line_size = bytes;
        self
    }

    /// Requires this `X-Scope-OrgID` (as Loki with `auth_enabled: true`
    /// requires one); other tenants are stored as given.
    pub fn require_tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.to_owned());
        self
    }

    /// Requires `Authorization: Basic base64(user:password)`.
    pub fn require_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.authorization = Some(format!(
            "Basic {}",
            base64(format!("{user}:{password}").as_bytes())
        ));
        self
    }

    /// Requires `Authorization: Bearer <token>`.
    pub fn require_bearer(mut self, token: &str) -> Self {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    /// `Retry-After` value sent with injected 429 and 503 answers
    /// (default `1`; seconds or an HTTP date).
    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = value.to_owned();
        self
    }

    /// Starts the receiver on a free port on 127.0.0.1.
    pub fn start(self) -> anyhow::Result<LokiReceiver> {
        let shared = Arc::new(Shared {
            limits: self.limits,
            tenant: self.tenant,
            authorization: self.authorization,
            retry_after: self.retry_after,
            store: Mutex::new(Store::default()),
        });
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the Loki receiver on 127.0.0.1")?;
        let addr = listener
            .local_addr()
            .context("reading the Loki receiver's address")?;
        listener
            .set_nonblocking(true)
            .context("making the Loki receiver's socket non-blocking")?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let app = axum::Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name("loki-receiver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e).context("runtime")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::Error::new(e).context("listener")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .context("spawning the Loki receiver thread")?;
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the Loki receiver did not start")??;
        Ok(LokiReceiver {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// A running Loki stand-in; see the module documentation.
pub struct LokiReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LokiReceiver {
    /// Starts a receiver with Loki's default limits, no tenant and no
    /// authentication required.
    pub fn start() -> anyhow::Result<LokiReceiver> {
        LokiReceiver::builder().start()
    }

    /// A builder to change the rules.
    pub fn builder() -> LokiReceiverBuilder {
        LokiReceiverBuilder {
            limits: LokiLimits::default(),
            tenant: None,
            authorization: None,
            retry_after: "1".into(),
        }
    }

    /// Base URL, `http://127.0.0.1:<port>` (the push path is
    /// `/loki/api/v1/push` under it).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every stored entry, in arrival order.
    pub fn entries(&self) -> Vec<ReceivedEntry> {
        self.shared.store().entries.clone()
    }

    /// Number of stored entries.
    pub fn entry_count(&self) -> usize {
        self.shared.store().entries.len()
    }

    /// Requests answered so far (any status, injected faults included).
    pub fn requests(&self) -> usize {
        self.shared.store().requests.len()
    }

    /// Every request answered so far (at most [`MAX_REQUEST_LOG`]).
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.store().requests.clone()
    }

    /// Entries dropped because an identical one (same stream, timestamp
    /// and line) was already stored: what a real Loki silently drops.
    pub fn duplicates(&self) -> usize {
        self.shared.store().duplicates
    }

    /// Answers the next `n` push requests with `status` before looking at
    /// them (429 and 503 carry `Retry-After`).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut s = self.shared.store();
        s.faults.extend(std::iter::repeat_n(status, n));
    }

    /// Answers every push request with `status` until called with `None`
    /// (after any [`LokiReceiver::fail_next`] failures are used up).
    pub fn fail_all(&self, status: Option<u16>) {
        self.shared.store().failing = status;
    }

    /// Injected failures not yet used.
    pub fn pending_faults(&self) -> usize {
        self.shared.store().faults.len()
    }
}

impl Drop for LokiReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for LokiReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LokiReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut rec = RequestRecord {
        at: Instant::now(),
        status: 0,
        body: String::new(),
        tenant: header("x-scope-orgid"),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body_bytes: body.len(),
        entries: 0,
        stored: 0,
    };
    let (status, text, retry_after) = if uri.path() != "/loki/api/v1/push" {
        (404, "404 page not found".to_owned(), false)
    } else if method != Method::POST {
        (405, "405 method not allowed".to_owned(), false)
    } else {
        let fault = {
            let mut s = shared.store();
            s.faults.pop_front().or(s.failing)
        };
        match fault {
            Some(code) => (
                code,
                format!("injected failure {code}"),
                code == 429 || code == 503,
            ),
            None => {
                let (code, text) = push(&shared, &headers, &body, &mut rec);
                (code, text, false)
            }
        }
    };
    rec.status = status;
    rec.body = text.clone();
    {
        let mut s = shared.store();
        if s.requests.len() < MAX_REQUEST_LOG {
            s.requests.push(rec);
        }
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::NO_CONTENT {
        return code.into_response();
    }
    let mut resp = (code, format!("{text}\n")).into_response();
    if retry_after {
        if let Ok(v) = shared.retry_after.parse() {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    resp
}

/// Checks and decodes one push; stores what is valid.
fn push(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    rec: &mut RequestRecord,
) -> (u16, String) {
    let limits = &shared.limits;
    if let Some(want) = &shared.tenant {
        match &rec.tenant {
            None => return (401, "no org id".into()),
            Some(t) if t != want => return (401, format!("unknown tenant {t:?}")),
            Some(_) => {}
        }
    }
    if let Some(want) = &shared.authorization {
        if rec.authorization.as_ref() != Some(want) {
            return (401, "unauthorized".into());
        }
    }
    match headers
        .get("content-encoding")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .as_deref()
    {
        None | Some("") | Some("snappy") => {}
        Some(e @ ("gzip" | "deflate")) => {
            return (
                400,
                format!("the receiver does not decode Content-Encoding {e:?} (Loki does; the bridge never sends it)"),
            )
        }
        Some(e) => return (400, format!("Content-Encoding {e:?} not supported")),
    }
    let media = rec.content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        None | Some("") => return (400, "mime: no media type".into()),
        Some("application/x-protobuf") => {}
        Some(other) => {
            return (
                400,
                format!("unsupported Content-Type {other:?}: the receiver takes only application/x-protobuf"),
            )
        }
    }
    if body.starts_with(&[0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y']) {
        return (
            400,
            "snappy: corrupt input (a framed snappy stream; Loki reads the raw block format)"
                .into(),
        );
    }
    match snap::raw::decompress_len(body) {
        Ok(n) if n > limits.max_decompressed_bytes => {
            return (
                400,
                format!(
                    "message size too large than max ({n} vs {})",
                    limits.max_decompressed_bytes
                ),
            )
        }
        Ok(_) => {}
        Err(_) => return (400, "snappy: corrupt input".into()),
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(body) {
        Ok(r) => r,
        Err(_) => return (400, "snappy: corrupt input".into()),
    };
    let req = match proto::PushRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => return (400, format!("proto: {e}")),
    };
    rec.entries = req.streams.iter().map(|s| s.entries.len()).sum();
    // Timestamps are decoded by gogoproto before any validation.
    for s in &req.streams {
        for e in &s.entries {
            if let Some(t) = e.timestamp {
                if !(0..1_000_000_000).contains(&t.nanos)
                    || !(MIN_TS_SECONDS..=MAX_TS_SECONDS).contains(&t.seconds)
                {
                    return (
                        400,
                        format!(
                            "proto: timestamp: seconds:{} nanos:{} is out of range",
                            t.seconds, t.nanos
                        ),
                    );
                }
            }
        }
    }
    if req.streams.is_empty() {
        return (
            422,
            "error at least one valid stream is required for ingestion".into(),
        );
    }

    let now_ns = unix_nanos(SystemTime::now());
    let oldest = now_ns - i128::try_from(limits.reject_old_samples_max_age.as_nanos()).unwrap_or(0);
    let newest = now_ns + i128::try_from(limits.creation_grace_period.as_nanos()).unwrap_or(0);
    let mut errors: Vec<String> = Vec::new();
    let mut accepted: Vec<ReceivedEntry> = Vec::new();
    for s in &req.streams {
        if s.entries.is_empty() {
            continue;
        }
        let labels = match parse_labels(&s.labels) {
            Ok(l) => l,
            Err(e) => {
                errors.push(format!(
                    "Error parsing labels '{}' with error: {e}",
                    s.labels
                ));
                continue;
            }
        };
        if let Err(e) = validate_labels(&labels, &s.labels, limits) {
            errors.push(e);
            continue;
        }
        let stream = format_labels(&labels);
        let map: BTreeMap<String, String> = labels.into_iter().collect();
        for e in &s.entries {
            let ts = e
                .timestamp
                .map(|t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
                .unwrap_or(i128::from(MIN_TS_SECONDS) * 1_000_000_000);
            if ts < oldest {
                errors.push(format!(
                    "entry for stream '{stream}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                    rfc3339(ts),
                    rfc3339(oldest)
                ));
                continue;
            }
            if ts > newest {
                errors.push(format!(
                    "entry for stream '{stream}' has timestamp too new: {}",
                    rfc3339(ts)
                ));
                continue;
            }
            if limits.max_line_size != 0 && e.line.len() > limits.max_line_size {
                errors.push(format!(
                    "Max entry size '{}' bytes exceeded for stream '{stream}' while adding an entry with length '{}' bytes",
                    limits.max_line_size,
                    e.line.len()
                ));
                continue;
            }
            let md_count = e.structured_metadata.len();
            let md_size: usize = e
                .structured_metadata
                .iter()
                .map(|p| p.name.len() + p.value.len())
                .sum();
            if md_count > 0 {
                if limits.max_structured_metadata_size != 0
                    && md_size > limits.max_structured_metadata_size
                {
                    errors.push(format!(
                        "stream '{stream}' has structured metadata too large: '{md_size}' bytes, limit: '{}' bytes. Please see `limits_config.max_structured_metadata_size` or contact your Loki administrator to increase it.",
                        limits.max_structured_metadata_size
                    ));
                    continue;
                }
                if limits.max_structured_metadata_entries != 0
                    && md_count > limits.max_structured_metadata_entries
                {
                    errors.push(format!(
                        "stream '{stream}' has too many structured metadata labels: '{md_count}', limit: '{}'. Please see `limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to increase it.",
                        limits.max_structured_metadata_entries
                    ));
                    continue;
                }
            }
            accepted.push(ReceivedEntry {
                labels: map.clone(),
                stream: stream.clone(),
                timestamp_ns: ts,
                line: e.line.clone(),
                structured_metadata: e
                    .structured_metadata
                    .iter()
                    .map(|p| (p.name.clone(), p.value.clone()))
                    .collect(),
                tenant: rec.tenant.clone(),
            });
        }
    }
    {
        let mut store = shared.store();
        if store.entries.len() + accepted.len() > MAX_STORED_ENTRIES {
            return (500, "receiver full".into());
        }
        for e in accepted {
            let key = (e.stream.clone(), e.timestamp_ns, e.line.clone());
            if store.seen.insert(key) {
                store.entries.push(e);
                rec.stored += 1;
            } else {
                store.duplicates += 1;
            }
        }
    }
    if errors.is_empty() {
        (204, String::new())
    } else {
        (400, grouped_errors(&errors))
    }
}

/// `0001-01-01T00:00:00Z` and `9999-12-31T23:59:59Z` in Unix seconds: the
/// range gogoproto accepts for a Timestamp.
const MIN_TS_SECONDS: i64 = -62_135_596_800;
const MAX_TS_SECONDS: i64 = 253_402_300_799;

/// Loki's `util.GroupedErrors.Error()`: distinct messages joined by `; `,
/// each prefixed by its count when there is more than one message or it
/// repeats (first-seen order here; Go's map order is random).
fn grouped_errors(errors: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for e in errors {
        match counts.iter_mut().find(|(m, _)| *m == e.as_str()) {
            Some((_, n)) => *n += 1,
            None => counts.push((e.as_str(), 1)),
        }
    }
    let unique = counts.len();
    counts
        .iter()
        .map(|(m, n)| {
            if unique > 1 || *n > 1 {
                format!("{n} errors like: {m}")
            } else {
                (*m).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `validator.ValidateLabels` on a parsed, sorted label set.
fn validate_labels(
    labels: &[(String, String)],
    raw: &str,
    limits: &LokiLimits,
) -> Result<(), String> {
    if labels.is_empty() {
        return Err("error at least one label pair is required per stream".into());
    }
    let mut n = labels.len();
    if labels.iter().any(|(k, _)| k == "service_name") {
        n -= 1;
    }
    if n > limits.max_label_names {
        return Err(format!(
            "entry for stream '{raw}' has {n} label names; limit {}",
            limits.max_label_names
        ));
    }
    let mut last = "";
    for (name, value) in labels {
        if name.len() > limits.max_label_name_length {
            return Err(format!("stream '{raw}' has label name too long: '{name}'"));
        }
        if value.len() > limits.max_label_value_length {
            return Err(format!(
                "stream '{raw}' has label value too long: '{value}'"
            ));
        }
        if name == last {
            return Err(format!("stream '{raw}' has duplicate label name: '{name}'"));
        }
        last = name;
    }
    Ok(())
}

/// Parses a Prometheus label set as `promql_parser.ParseMetric` does
/// (an optional metric name before the braces becomes `__name__`), drops
/// empty values and sorts by name (duplicates kept for the validator).
pub fn parse_labels(input: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = Parser {
        s: input.as_bytes(),
        pos: 0,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    p.ws();
    if p.peek().is_some_and(is_name_start) {
        let name = p.name()?;
        out.push(("__name__".into(), name));
        p.ws();
    }
    p.expect(b'{')?;
    loop {
        p.ws();
        if p.peek() == Some(b'}') {
            p.pos += 1;
            break;
        }
        let name = p.name()?;
        p.ws();
        p.expect(b'=')?;
        if p.peek() == Some(b'~') {
            return Err(p.err("unexpected \"=~\" in label set, expected \"=\""));
        }
        p.ws();
        let value = p.string()?;
        out.push((name, value));
        p.ws();
        match p.peek() {
            Some(b',') => p.pos += 1,
            Some(b'}') => {
                p.pos += 1;
                break;
            }
            _ => return Err(p.err("unexpected character in label set, expected \",\" or \"}\"")),
        }
    }
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected input after the label set"));
    }
    out.retain(|(_, v)| !v.is_empty());
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("1:{}: parse error: {what}", self.pos + 1)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while self
            .peek()
            .is_some_and(|b| b == b' ' || b == b'\t' || b == b'\n' || b == b'\r')
        {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected {:?}", char::from(c))))
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.pos;
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.err("expected a label name"));
        }
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.pos += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    /// A Go/PromQL string literal: `"..."` or `'...'` with escapes, or a
    /// raw `` `...` ``.
    fn string(&mut self) -> Result<String, String> {
        let Some(quote) = self.peek().filter(|q| matches!(q, b'"' | b'\'' | b'`')) else {
            return Err(self.err("expected a quoted string"));
        };
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated quoted string"));
            };
            self.pos += 1;
            if c == quote {
                break;
            }
            if quote == b'`' {
                out.push(c);
                continue;
            }
            match c {
                b'\n' => return Err(self.err("unterminated quoted string")),
                b'\\' => self.escape(quote, &mut out)?,
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8 in string"))
    }

    fn escape(&mut self, quote: u8, out: &mut Vec<u8>) -> Result<(), String> {
        let Some(c) = self.peek() else {
            return Err(self.err("escape sequence not terminated"));
        };
        self.pos += 1;
        let simple = match c {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            c if c == quote => Some(c),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        let (digits, radix) = match c {
            b'0'..=b'7' => {
                self.pos -= 1;
                (3, 8)
            }
            b'x' => (2, 16),
            b'u' => (4, 16),
            b'U' => (8, 16),
            _ => return Err(self.err(&format!("unknown escape sequence {:?}", char::from(c)))),
        };
        let end = self.pos + digits;
        let text = self
            .s
            .get(self.pos..end)
            .and_then(|d| std::str::from_utf8(d).ok())
            .ok_or_else(|| self.err("escape sequence not terminated"))?;
        let v = u32::from_str_radix(text, radix).map_err(|_| self.err("invalid escape"))?;
        self.pos = end;
        match c {
            b'x' | b'0'..=b'7' => {
                let b = u8::try_from(v).map_err(|_| self.err("octal escape value > 255"))?;
                out.push(b);
            }
            _ => {
                let ch = char::from_u32(v)
                    .ok_or_else(|| self.err("escape sequence is an invalid Unicode code point"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
        }
        Ok(())
    }
}

/// A sorted label set as Loki prints it (`labels.String()`).
pub fn format_labels(labels: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

/// Nanoseconds since the epoch as RFC 3339 in UTC, to the second (Go's
/// `time.RFC3339`), by jiff like the agent's dates. Civil arithmetic, not
/// `jiff::Timestamp`, so that gogoproto's last second
/// 9999-12-31T23:59:59Z prints too (jiff's `Timestamp` ends a day
/// earlier); past the year 9999 `<secs> s since 1970`.
pub fn rfc3339(ns: i128) -> String {
    const EPOCH: jiff::civil::DateTime = jiff::civil::DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
    let secs = i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
    match EPOCH.checked_add(jiff::SignedDuration::from_secs(secs)) {
        Ok(t) => format!("{t}Z"),
        Err(_) => format!("{secs} s since 1970"),
    }
}

/// Standard base64 with padding.
fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4usize {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Encodes a request the way a correct client does (protobuf, then raw
/// snappy); for the receiver's own tests and for tests that push directly.
pub fn encode_push(req: &proto::PushRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_label_sets_like_promql() {
        let l = parse_labels(r#"{b="2", a="x\"y\\z\n\u00e9\x41", c=''}"#).expect("valid");
        assert_eq!(
            l,
            vec![
                ("a".to_owned(), "x\"y\\z\né\u{41}".to_owned()),
                ("b".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(
            parse_labels("up{job=`raw\\n`,}").expect("valid"),
            vec![
                ("__name__".to_owned(), "up".to_owned()),
                ("job".to_owned(), "raw\\n".to_owned())
            ]
        );
        assert_eq!(parse_labels("{}").expect("valid"), vec![]);
        for bad in [
            "{a=b}",
            "{1a=\"b\"}",
            "{a.b=\"c\"}",
            "{a=\"b\"",
            "{a=\"b\nc\"}",
            "{a=~\"b\"}",
            "{a!=\"b\"}",
            "{a=\"b\"} x",
            "a=\"b\"",
            "{a=\"\\q\"}",
        ] {
            assert!(parse_labels(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn formats_like_labels_string() {
        let l = parse_labels(r#"{site="a", host="n\"1"}"#).expect("valid");
        assert_eq!(format_labels(&l), r#"{host="n\"1", site="a"}"#);
    }

    #[test]
    fn grouped_errors_like_loki() {
        assert_eq!(grouped_errors(&["a".into()]), "a");
        assert_eq!(
            grouped_errors(&["a".into(), "a".into()]),
            "2 errors like: a"
        );
        assert_eq!(
            grouped_errors(&["a".into(), "b".into(), "a".into()]),
            "2 errors like: a; 1 errors like: b"
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_284_441_250_000_000), "2025-11-27T23:00:41Z");
        assert_eq!(
            rfc3339(i128::from(MIN_TS_SECONDS) * 1_000_000_000),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(rfc3339(951_782_400 * 1_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(i128::from(MAX_TS_SECONDS) * 1_000_000_000 + 999_999_999),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            rfc3339(i128::from(MAX_TS_SECONDS + 1) * 1_000_000_000),
            "253402300800 s since 1970"
        );
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"user:pw"), "dXNlcjpwdw==");
    }
}
