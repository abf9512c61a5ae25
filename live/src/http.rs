//! HTTP (axum): the page, live view, `/healthz` and `/metrics`.
//!
//! - `GET /healthz`, `GET /metrics`: open (no video, no credentials).
//! - Everything else needs a viewer (see [`authorized`]), else `401`:
//!   - `GET /`: sites → cameras, each camera's state from the bridge's
//!     `cameras` table and the centre's probe, and a player (hls.js);
//!   - `GET /hls.js`: hls.js, served by the binary (pinned, no CDN);
//!   - `GET /live/{site}/{camera}/index.m3u8`: starts or joins the
//!     camera's session (503 with the reason when a limit is hit),
//!     then the playlist; `init.mp4`, `seg-N.m4s`: its segments;
//!     `info`: codec, size and viewers as JSON. The playlist counts a
//!     viewer: `?viewer=ID` (the page sends a random one per player),
//!     else the client's address, User-Agent and proxy login.
//!
//! Site and camera names in URLs are checked with the wire rules before
//! anything else. No answer holds an RTSP URL's credentials (URLs have
//! none) or a password.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hls::Registry;
use crate::metrics::Metrics;

/// hls.js, pinned: npm `hls.js@1.6.15`, `dist/hls.light.min.js`,
/// Apache-2.0 (`live/assets/hls.js-LICENSE`).
const HLS_JS: &[u8] = include_bytes!("../assets/hls.light.min.js");
/// The cookie `/?token=` sets.
const COOKIE: &str = "sitewatch_live_token";
/// Longest a playlist request waits for the first segments.
const FIRST_SEGMENTS_WAIT: Duration = Duration::from_secs(12);

/// What the handlers share.
pub struct AppState {
    /// Configuration.
    pub config: Arc<Config>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Live sessions.
    pub registry: Arc<Registry>,
}

/// Serves until `shutdown` is cancelled; errors are logged.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) {
    let protected = Router::new()
        .route("/", get(page))
        .route("/hls.js", get(hls_js))
        .route("/live/{site}/{camera}/{file}", get(live_file))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render))
        .merge(protected)
        .with_state(state);
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(err = %e, "HTTP endpoint failed.");
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Constant-time comparison.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries: `Authorization: Bearer`, the cookie, or
/// `?token=` (bounded: headers are limited by hyper, values here by 512).
fn presented(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().chars().take(512).collect());
        }
    }
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';').take(64) {
            if let Some(t) = part
                .trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                return Some(t.chars().take(512).collect());
            }
        }
    }
    query.and_then(|q| {
        q.split('&')
            .take(16)
            .find_map(|kv| kv.strip_prefix("token="))
            .map(|t| t.chars().take(512).collect())
    })
}

/// Whether the request comes from a viewer: the token, or the trusted
/// reverse-proxy header.
fn authorized(config: &Config, headers: &HeaderMap, query: Option<&str>) -> bool {
    if let Some(h) = &config.trusted_header {
        if headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty())
        {
            return true;
        }
    }
    match (&config.token, presented(headers, query)) {
        (Some(want), Some(got)) => same(want.expose().as_bytes(), got.as_bytes()),
        _ => false,
    }
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let query = req.uri().query().map(str::to_owned);
    if !authorized(&st.config, req.headers(), query.as_deref()) {
        st.metrics.unauthorized.inc();
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "401: live view needs a viewer token (Authorization: Bearer, or /?token=) \
             or the reverse proxy's login\n"
                .to_owned(),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sitewatch-live\""),
        );
        return r;
    }
    let from_query = query.as_deref().is_some_and(|q| q.contains("token="));
    let mut resp = next.run(req).await;
    if from_query {
        if let Some(t) = &st.config.token {
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                t.expose()
            )) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
    }
    resp
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let m = &st.metrics;
    if m.db_up.get() == 0 && m.store_failures.get() > 0 {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "database: the last probe result could not be stored\n".to_owned(),
        )
    } else {
        text(StatusCode::OK, "ok\n".to_owned())
    }
}

async fn render(State(st): State<Arc<AppState>>) -> Response {
    st.metrics
        .sessions_open
        .set(st.registry.open_count() as i64);
    st.metrics.viewers.set(st.registry.viewers() as i64);
    st.metrics.sessions_started.inner().store(
        st.registry.started.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn hls_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        HLS_JS,
    )
        .into_response()
}

/// Who is watching, as a key: the page's `viewer=ID` (one per player,
/// so two tabs count twice), else the client's address, User-Agent and
/// proxy login (curl, ffprobe, Safari's native player).
fn viewer_key(
    query: Option<&str>,
    headers: &HeaderMap,
    peer: std::net::SocketAddr,
    trusted: Option<&str>,
) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    let id = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("viewer="))
            .filter(|v| !v.is_empty() && v.len() <= 64)
    });
    match id {
        Some(id) => ("page", id).hash(&mut h),
        None => {
            let header = |name: &str| headers.get(name).map(|v| v.as_bytes().to_vec());
            (
                "client",
                peer.ip(),
                header(header::USER_AGENT.as_str()),
                trusted.and_then(header),
            )
                .hash(&mut h)
        }
    }
    h.finish()
}

async fn live_file(
    State(st): State<Arc<AppState>>,
    Path((site, camera, file)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if sitewatch_wire::topic::validate_site(&site).is_err()
        || sitewatch_wire::topic::validate_name(&camera).is_err()
    {
        return text(
            StatusCode::BAD_REQUEST,
            "bad site or camera name\n".to_owned(),
        );
    }
    let Some((s, c)) = st.registry.find(&site, &camera) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no centre route for {site}/{camera} in the live config\n"),
        );
    };
    let session =
        if file == "index.m3u8" {
            match st.registry.open(s, c) {
                Ok(sess) => sess,
                Err(hit) => {
                    st.metrics.limit_refusals.inc();
                    return text(StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", hit.0));
                }
            }
        } else {
            match st.registry.get(&site, &camera) {
                Some(sess) => sess,
                None => return text(
                    StatusCode::NOT_FOUND,
                    "no live session for this camera (it closed when idle): reload the playlist\n"
                        .to_owned(),
                ),
            }
        };
    session.touch();
    let no_store = (header::CACHE_CONTROL, "no-store");
    match file.as_str() {
        "index.m3u8" => {
            let trusted = st.config.trusted_header.as_deref();
            session.seen(viewer_key(query.as_deref(), &headers, peer, trusted));
            session.wait_segments(1, FIRST_SEGMENTS_WAIT).await;
            match session.playlist() {
                Some(p) => (
                    [
                        (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                        no_store,
                    ],
                    p,
                )
                    .into_response(),
                None => {
                    let why = session
                        .state
                        .lock()
                        .ok()
                        .and_then(|st| st.error.clone())
                        .unwrap_or_else(|| "no video from the camera yet".to_owned());
                    text(StatusCode::BAD_GATEWAY, format!("{site}/{camera}: {why}\n"))
                }
            }
        }
        "init.mp4" => match session.state.lock().ok().and_then(|s| s.init.clone()) {
            Some(b) => ([(header::CONTENT_TYPE, "video/mp4"), no_store], b).into_response(),
            None => text(StatusCode::NOT_FOUND, "no init segment yet\n".to_owned()),
        },
        "info" => {
            let (codec, size, error) = session
                .state
                .lock()
                .map(|s| (s.codec.clone(), s.size, s.error.clone()))
                .unwrap_or_default();
            let body = format!(
                "{{\"codec\":{},\"width\":{},\"height\":{},\"error\":{},\"viewers\":{}}}",
                json_str(codec.as_deref()),
                size.map_or("null".to_owned(), |s| s.0.to_string()),
                size.map_or("null".to_owned(), |s| s.1.to_string()),
                json_str(error.as_deref()),
                session.viewers(),
            );
            ([(header::CONTENT_TYPE, "application/json"), no_store], body).into_response()
        }
        f => {
            let seq = f
                .strip_prefix("seg-")
                .and_then(|r| r.strip_suffix(".m4s"))
                .and_then(|n| n.parse::<u64>().ok());
            let seg = seq.and_then(|n| {
                session.state.lock().ok().and_then(|s| {
                    s.segments
                        .iter()
                        .find(|g| g.seq == n)
                        .map(|g| g.data.clone())
                })
            });
            match seg {
                Some(b) => {
                    st.metrics.bytes_out.inc_by(b.len() as u64);
                    session
                        .served_bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    ([(header::CONTENT_TYPE, "video/iso.segment"), no_store], b).into_response()
                }
                None => text(
                    StatusCode::NOT_FOUND,
                    "no such segment (too old?)\n".to_owned(),
                ),
            }
        }
    }
}

fn json_str(s: Option<&str>) -> String {
    match s {
        None => "null".to_owned(),
        Some(s) => {
            let mut o = String::from("\"");
            for ch in s.chars() {
                match ch {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The state the page shows per camera: (agent's class, fps, WxH,
/// centre's class). Missing when the database does not answer in 2 s.
async fn camera_states(
    config: &Config,
) -> Result<std::collections::HashMap<(String, String), [String; 3]>, String> {
    let work = async {
        let client = sitewatch_bridge::sink::postgres::connect(&config.postgres)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let rows = client
            .query(
                "SELECT c.site, c.camera, c.class,
                        coalesce(round(c.fps::numeric, 1)::text, '') AS fps,
                        coalesce(c.width || 'x' || c.height, '') AS size
                 FROM cameras c",
                &[],
            )
            .await
            .map_err(|e| format!("{e}"))?;
        let mut out = std::collections::HashMap::new();
        for r in rows {
            let site: String = r.get(0);
            let camera: String = r.get(1);
            out.insert(
                (site, camera),
                [
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                ],
            );
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .map_err(|_| "the database did not answer within 2 s".to_owned())?
}

async fn page(State(st): State<Arc<AppState>>) -> Response {
    let states = camera_states(&st.config).await;
    let mut body = String::from(PAGE_HEAD);
    if let Err(e) = &states {
        body.push_str(&format!(
            "<p class=warn>Camera states unknown: {}</p>\n",
            html_escape(e)
        ));
    }
    let states = states.unwrap_or_default();
    // Sites of the config, then cameras the bridge knows without a route.
    let mut listed = std::collections::HashSet::new();
    for s in &st.config.sites {
        body.push_str(&format!(
            "<h2>{}</h2>\n<table><tr><th>camera</th><th>agent's probe</th><th>fps</th><th>size</th><th></th></tr>\n",
            html_escape(&s.id)
        ));
        for c in &s.cameras {
            listed.insert((s.id.clone(), c.name.clone()));
            let [class, fps, size] = states
                .get(&(s.id.clone(), c.name.clone()))
                .cloned()
                .unwrap_or_else(|| ["–".to_owned(), String::new(), String::new()]);
            body.push_str(&format!(
                "<tr><td>{cam}</td><td>{class}</td><td>{fps}</td><td>{size}</td>\
                 <td><button data-site=\"{site}\" data-camera=\"{cam}\">Live</button></td></tr>\n",
                cam = html_escape(&c.name),
                site = html_escape(&s.id),
                class = html_escape(&class),
                fps = html_escape(&fps),
                size = html_escape(&size),
            ));
        }
        body.push_str("</table>\n");
    }
    let mut unrouted: Vec<_> = states.keys().filter(|k| !listed.contains(*k)).collect();
    unrouted.sort();
    if !unrouted.is_empty() {
        body.push_str("<h2>Cameras without a centre route</h2>\n<p>Known to the bridge, not in the live config (no live view):</p>\n<ul>\n");
        for (s, c) in unrouted.iter().take(1000) {
            body.push_str(&format!("<li>{}/{}</li>\n", html_escape(s), html_escape(c)));
        }
        body.push_str("</ul>\n");
    }
    body.push_str(PAGE_TAIL);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

const PAGE_HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sitewatch live</title>
<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}
#player{position:sticky;top:0;background:#fff}video{width:640px;max-width:100%;background:#000}.warn{color:#a00}</style>
<script src="hls.js"></script></head><body>
<h1>sitewatch live</h1>
<div id="player"><video id="video" muted autoplay playsinline controls></video><p id="msg">Pick a camera.</p></div>
"#;

const PAGE_TAIL: &str = r#"<script>
const video = document.getElementById('video'), msg = document.getElementById('msg');
let hls = null;
// One id per player: the service counts viewers by it (HLS has no
// connection per viewer). Relative URLs: the page may sit behind a
// reverse proxy's prefix (/live-view/).
const viewer = Math.random().toString(36).slice(2, 12);
async function play(site, camera) {
  if (hls) { hls.destroy(); hls = null; }
  const base = 'live/' + site + '/' + camera + '/';
  const playlist = base + 'index.m3u8?viewer=' + viewer;
  msg.textContent = 'Starting ' + site + '/' + camera + '…';
  const r = await fetch(playlist, {credentials: 'same-origin'});
  if (!r.ok) { msg.textContent = await r.text(); msg.className = 'warn'; return; }
  const info = await (await fetch(base + 'info', {credentials: 'same-origin'})).json();
  const type = 'video/mp4; codecs="' + info.codec + '"';
  if (window.MediaSource && !MediaSource.isTypeSupported(type) && !video.canPlayType('application/vnd.apple.mpegurl')) {
    msg.textContent = 'This browser cannot decode ' + info.codec + ' (H.265 needs a browser and hardware that support it); try another browser.';
    msg.className = 'warn'; return;
  }
  msg.className = '';
  msg.textContent = site + '/' + camera + ': ' + info.codec + ' ' + info.width + 'x' + info.height;
  if (window.Hls && Hls.isSupported()) {
    hls = new Hls({liveSyncDurationCount: 2, xhrSetup: x => { x.withCredentials = true; }});
    hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) { msg.textContent = 'Playback stopped: ' + d.details; msg.className = 'warn'; } });
    hls.loadSource(playlist);
    hls.attachMedia(video);
  } else {
    video.src = playlist;
  }
  video.play().catch(() => {});
}
document.querySelectorAll('button[data-site]').forEach(b =>
  b.addEventListener('click', () => play(b.dataset.site, b.dataset.camera)));
const q = new URLSearchParams(location.search);
if (q.get('site') && q.get('camera')) play(q.get('site'), q.get('camera'));
</script></body></html>
"#;
