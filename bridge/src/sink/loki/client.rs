//! One HTTP request to Loki's push endpoint, and what its answer means.
//!
//! Client: hyper-util's pooled HTTP/1.1 client (keep-alive), with
//! hyper-rustls for `https://` (rustls with the *ring* provider, the same
//! TLS stack the MQTT side uses), trusting `loki.ca_file` or the system
//! store. Every request carries `Content-Type: application/x-protobuf`,
//! the optional `X-Scope-OrgID` tenant and the optional `Authorization`
//! (basic or bearer). The whole exchange (connect, send, read at most
//! [`MAX_RESPONSE_BYTES`] of the answer) is bounded by `loki.timeout_secs`.
//!
//! [`classify`] sorts answers: 2xx accepted; 429, 408, 425 and 5xx (and
//! transport errors) are worth retrying; 401, 403, 404, 405, 407 and 415
//! mean the bridge is set up wrong (retried too, so that nothing is
//! rejected because of a configuration mistake); any other status is
//! Loki refusing the data, which is never retried.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::config::{LokiAuth, LokiSettings};

/// Most bytes of an answer's body read (Loki's error text).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// What an answer status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx: stored.
    Accepted,
    /// Loki refuses the data (400 and most other 4xx): never retried.
    Refused,
    /// Temporary (429, 408, 425, 5xx): retried with backoff.
    Retry,
    /// The bridge's setup is wrong (credentials, URL, ...): retried with
    /// backoff while an operator fixes it.
    Misconfigured,
}

/// Classifies an HTTP status code of a push answer.
pub fn classify(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Accepted,
        408 | 425 | 429 | 500..=599 => StatusClass::Retry,
        401 | 403 | 404 | 405 | 407 | 415 => StatusClass::Misconfigured,
        400..=499 => StatusClass::Refused,
        // 1xx/3xx (redirects are not followed): a setup problem.
        _ => StatusClass::Misconfigured,
    }
}

/// A `Retry-After` value: delay seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How one request went.
#[derive(Debug)]
pub enum Answer {
    /// 2xx.
    Accepted,
    /// A status of class [`StatusClass::Refused`], with Loki's text.
    Refused {
        /// HTTP status.
        status: u16,
        /// Response body (capped), trimmed.
        text: String,
    },
    /// Worth trying again later.
    Retry {
        /// HTTP status, or `None` for a transport error or timeout.
        status: Option<u16>,
        /// Why, for logs and `/healthz`.
        why: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// A setup problem rather than a temporary one.
        misconfigured: bool,
    },
}

/// The push endpoint and a pooled connection to it.
pub struct LokiClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    push_uri: Uri,
    tenant: Option<HeaderValue>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    /// `scheme://host:port/path`, safe to log.
    display: String,
}

impl LokiClient {
    /// Builds the client (reads the CA file or the system trust store; no
    /// connection yet).
    pub fn new(s: &LokiSettings) -> anyhow::Result<LokiClient> {
        let push_uri: Uri = s
            .push_url
            .parse()
            .with_context(|| format!("loki.url: {} is not a valid URL", s.push_url))?;
        let tls = tls_config(s)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(s.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(2)
            .build(https);
        let tenant = s
            .tenant
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .context("loki.tenant: not a valid header value")?;
        let authorization = match &s.auth {
            LokiAuth::None => None,
            LokiAuth::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose());
                let mut v = HeaderValue::from_str(&format!("Basic {}", base64(raw.as_bytes())))
                    .context("loki credentials: not valid in a header")?;
                v.set_sensitive(true);
                Some(v)
            }
            LokiAuth::Bearer(token) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .context("loki.bearer_token: not valid in a header")?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(LokiClient {
            client,
            push_uri,
            tenant,
            authorization,
            timeout: s.timeout,
            display: s.push_url.clone(),
        })
    }

    /// The push URL, for logs.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Sends one push body (snappy-compressed protobuf).
    pub async fn push(&self, body: Bytes) -> Answer {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Answer::Retry {
                status: None,
                why: format!("pushing to {}: {e:#}", self.display),
                retry_after: None,
                misconfigured: false,
            },
            Err(_) => Answer::Retry {
                status: None,
                why: format!(
                    "pushing to {}: no answer within {:?}",
                    self.display, self.timeout
                ),
                retry_after: None,
                misconfigured: false,
            },
        }
    }

    async fn exchange(&self, body: Bytes) -> anyhow::Result<Answer> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.push_uri.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(
                USER_AGENT,
                concat!("sitewatch-bridge/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = &self.tenant {
            req = req.header("X-Scope-OrgID", t.clone());
        }
        if let Some(a) = &self.authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req.body(Full::new(body)).context("building the request")?;
        let resp = self.client.request(req).await.context("sending")?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = read_capped(resp.into_body()).await;
        Ok(match classify(status) {
            StatusClass::Accepted => Answer::Accepted,
            StatusClass::Refused => Answer::Refused { status, text },
            class => Answer::Retry {
                status: Some(status),
                why: format!("{} answered {status}: {text}", self.display),
                retry_after,
                misconfigured: class == StatusClass::Misconfigured,
            },
        })
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a body as (lossy) text; a body
/// that fails midway gives what was read.
async fn read_capped(mut body: hyper::body::Incoming) -> String {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < MAX_RESPONSE_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_RESPONSE_BYTES - buf.len();
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).trim().to_owned()
}

fn tls_config(s: &LokiSettings) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match &s.ca_file {
        Some(ca) => {
            let data =
                std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let certs = CertificateDer::pem_slice_iter(&data)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} is not a valid PEM file", ca.display()))?;
            if certs.is_empty() {
                anyhow::bail!("loki.ca_file: {} holds no PEM certificate", ca.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("adding a CA from {}", ca.display()))?;
            }
        }
        None if s.push_url.starts_with("https://") => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                anyhow::bail!(
                    "no loki.ca_file set and no usable CA certificate in the system trust \
                     store (install ca-certificates or set loki.ca_file)"
                );
            }
        }
        // Plain http: the TLS settings are never used.
        None => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Standard base64 with padding (RFC 4648), for basic auth.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET[idx]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        use StatusClass::*;
        for (code, want) in [
            (200, Accepted),
            (204, Accepted),
            (400, Refused),
            (413, Refused),
            (422, Refused),
            (429, Retry),
            (408, Retry),
            (500, Retry),
            (502, Retry),
            (503, Retry),
            (401, Misconfigured),
            (403, Misconfigured),
            (404, Misconfigured),
            (301, Misconfigured),
        ] {
            assert_eq!(classify(code), want, "{code}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // Wed, 21 Oct 2015 07:28:00 GMT = 1445412480.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    fn settings(url: &str) -> LokiSettings {
        LokiSettings {
            push_url: url.to_owned(),
            tenant: Some("ops".into()),
            auth: LokiAuth::Basic {
                username: "u".into(),
                password: sitewatch_mqtt::Secret::new("p"),
            },
            ca_file: None,
            timeout: Duration::from_secs(2),
            max_clock_skew: Duration::from_secs(600),
            max_age: Duration::from_secs(3600),
            max_push_bytes: 1 << 20,
            max_line_bytes: 1 << 18,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn https_client_builds_with_a_ca_file_and_refuses_a_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = sitewatch_testkit::TestCerts::generate(dir.path()).expect("certs");
        let mut s = settings("https://loki.example.com/loki/api/v1/push");
        s.ca_file = Some(certs.ca_cert.clone());
        let c = LokiClient::new(&s).expect("client");
        assert_eq!(c.display(), "https://loki.example.com/loki/api/v1/push");
        s.ca_file = Some(certs.server_key.clone());
        assert!(
            LokiClient::new(&s).is_err(),
            "a key is not a CA certificate"
        );
        s.ca_file = Some(dir.path().join("missing.pem"));
        let err = LokiClient::new(&s).err().expect("missing file");
        assert!(format!("{err:#}").contains("missing.pem"), "{err:#}");
    }

    /// Nothing listening: a transport error, to be retried.
    #[tokio::test]
    async fn unreachable_loki_is_retriable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let c = LokiClient::new(&settings(&format!(
            "http://127.0.0.1:{port}/loki/api/v1/push"
        )))
        .expect("client");
        match c.push(Bytes::from_static(b"x")).await {
            Answer::Retry {
                status: None,
                misconfigured: false,
                ..
            } => {}
            other => panic!("expected a retriable transport error, got {other:?}"),
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
