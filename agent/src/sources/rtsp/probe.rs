//! One probe of one stream: DNS, TCP connect, then retina's DESCRIBE,
//! SETUP and PLAY, frames for the window, and a clean TEARDOWN. Every
//! step runs under its own timeout (retina has none).
//!
//! DNS and the TCP connect are done here first because retina's error
//! type hides `io::ErrorKind`: only this way are `dns`, `tcp_refused` and
//! `tcp_timeout` told apart. The extra TCP connection is closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use retina::client::{PlayOptions, SessionGroup, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::config::{redact_url, ProbeTiming, Target, TransportKind};
use super::measure::{h265_has_irap, FrameSample, Measurements, Meter};
use super::verdict::{
    class_for_connect, class_for_status, classify_play, warnings, Class, PlayOutcome, StreamEnd,
    Warning,
};

/// Sent as `User-Agent`, so NVR logs show who is asking.
const USER_AGENT: &str = concat!("sitewatch-agent/", env!("CARGO_PKG_VERSION"));

/// Longest `detail` sentence kept (retina's messages can be long).
const MAX_DETAIL: usize = 300;

/// Longest wait for the TEARDOWN to be answered.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The result of one probe. Holds no credentials: `url` is redacted and
/// `detail` is built from our own words and retina's messages about the
/// credential-free URL.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// Camera name (topic-safe).
    pub camera: String,
    /// The URL with credentials removed ([`redact_url`]).
    pub url: String,
    /// RTP transport used.
    pub transport: TransportKind,
    /// When the probe started, Unix milliseconds.
    pub started_at_ms: u64,
    /// How long the probe took, teardown excluded.
    pub duration_ms: u64,
    /// The verdict.
    pub class: Class,
    /// Warnings (loss, changes since the previous probe).
    pub warnings: Vec<Warning>,
    /// What was measured (`None` where the probe did not get that far).
    pub measurements: Measurements,
    /// One short sentence: what happened, in plain words.
    pub detail: String,
}

impl ProbeReport {
    /// The RTSP status code, when the class carries one.
    pub fn status(&self) -> Option<u16> {
        self.class.status()
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Why a probe stopped before PLAY.
struct Early {
    class: Class,
    detail: String,
}

fn early(class: Class, detail: impl Into<String>) -> Early {
    Early {
        class,
        detail: detail.into(),
    }
}

/// The first line of a retina error: the rest is connection bookkeeping
/// (addresses, timestamps) that only makes `detail` long.
fn first_line(e: &retina::Error) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().trim().to_owned()
}

fn retina_failure(step: &str, e: &retina::Error) -> Early {
    let line = first_line(e);
    match e.status_code() {
        Some(s) => early(class_for_status(s), format!("{step}: {line}")),
        None => early(Class::RtspError, format!("{step}: {line}")),
    }
}

/// Probes one stream and always returns a report (failures are verdicts,
/// not errors). `prev` is the previous probe's measurements, for the
/// change warnings. `cancel` cuts the frame window short (shutdown).
pub async fn probe(
    target: &Target,
    timing: ProbeTiming,
    prev: Option<&Measurements>,
    cancel: &CancellationToken,
) -> ProbeReport {
    let t0 = Instant::now();
    let started_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let group = Arc::new(SessionGroup::default());
    let mut m = Measurements::default();
    let (class, detail) = match run(target, timing, &group, &mut m, t0, cancel).await {
        Ok(v) => v,
        Err(e) => (e.class, e.detail),
    };
    let duration_ms = t0.elapsed().as_millis() as u64;
    // The session was dropped inside `run`, which started the TEARDOWN in
    // the background; wait for it (bounded) so the camera frees the slot
    // before the next probe.
    match timeout(TEARDOWN_TIMEOUT, group.await_teardown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(camera = %target.name, err = %e, "TEARDOWN failed"),
        Err(_) => tracing::debug!(camera = %target.name, "TEARDOWN not answered in time"),
    }
    let warnings = warnings(prev, &m);
    ProbeReport {
        camera: target.name.clone(),
        url: redact_url(target.url.as_str()),
        transport: target.transport,
        started_at_ms,
        duration_ms,
        class,
        warnings,
        measurements: m,
        detail: cut(detail),
    }
}

/// Resolves and connects; returns the address that accepted.
async fn connect(target: &Target, step: Duration) -> Result<SocketAddr, Early> {
    let port = target.url.port().unwrap_or(554);
    let addrs: Vec<SocketAddr> = match target.url.host() {
        Some(url::Host::Ipv4(a)) => vec![(a, port).into()],
        Some(url::Host::Ipv6(a)) => vec![(a, port).into()],
        Some(url::Host::Domain(name)) => {
            match timeout(step, tokio::net::lookup_host((name, port))).await {
                Err(_) => return Err(early(Class::Dns, format!("DNS lookup of {name} timed out"))),
                Ok(Err(e)) => return Err(early(Class::Dns, format!("cannot resolve {name}: {e}"))),
                Ok(Ok(it)) => it.take(8).collect(),
            }
        }
        None => return Err(early(Class::Dns, "the URL has no host")),
    };
    if addrs.is_empty() {
        return Err(early(Class::Dns, "the host name resolves to no address"));
    }
    let mut last = early(Class::TcpTimeout, "no address to connect to");
    for addr in addrs {
        match timeout(step, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_stream)) => return Ok(addr),
            Ok(Err(e)) => {
                last = early(
                    class_for_connect(e.kind()),
                    format!("TCP connect to {addr}: {e}"),
                )
            }
            Err(_) => {
                last = early(
                    Class::TcpTimeout,
                    format!(
                        "TCP connect to {addr}: no answer in {} s",
                        step.as_secs_f32()
                    ),
                )
            }
        }
    }
    Err(last)
}

fn fill_params(m: &mut Measurements, p: Option<ParametersRef<'_>>) {
    if let Some(ParametersRef::Video(v)) = p {
        m.codec = Some(v.rfc6381_codec().to_owned());
        let (w, h) = v.pixel_dimensions();
        m.width = Some(w);
        m.height = Some(h);
        // retina gives seconds per frame as (num, den).
        if let Some((num, den)) = v.frame_rate().filter(|(n, d)| *n > 0 && *d > 0) {
            m.declared_fps = Some(den as f32 / num as f32);
        }
    }
}

async fn run(
    target: &Target,
    timing: ProbeTiming,
    group: &Arc<SessionGroup>,
    m: &mut Measurements,
    t0: Instant,
    cancel: &CancellationToken,
) -> Result<(Class, String), Early> {
    let step = timing.step_timeout;
    let addr = connect(target, step).await?;
    let step_s = step.as_secs_f32();

    let creds = target.creds.as_ref().map(|c| retina::client::Credentials {
        username: c.username.clone(),
        password: c.password.clone(),
    });
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent(USER_AGENT.to_owned())
        .session_group(Arc::clone(group));
    let mut session = match timeout(
        step,
        retina::client::Session::describe(target.url.clone(), opts),
    )
    .await
    {
        Err(_) => {
            return Err(early(
                Class::RtspTimeout,
                format!("{addr} accepted the connection but did not answer DESCRIBE in {step_s} s"),
            ))
        }
        Ok(Err(e)) => return Err(retina_failure("DESCRIBE", &e)),
        Ok(Ok(s)) => s,
    };
    let Some(vi) = session.streams().iter().position(|s| s.media() == "video") else {
        let media: Vec<&str> = session.streams().iter().map(|s| s.media()).collect();
        return Err(early(
            Class::NoVideo,
            format!(
                "the stream has no video track (tracks: {})",
                media.join(", ")
            ),
        ));
    };
    let (clock_rate, is_h265, sdp_fps) = {
        let s = &session.streams()[vi];
        (
            s.clock_rate_hz(),
            s.encoding_name() == "h265",
            s.framerate(),
        )
    };
    m.declared_fps = sdp_fps.filter(|f| f.is_finite() && *f > 0.0);
    fill_params(m, session.streams()[vi].parameters());
    let transport = match target.transport {
        TransportKind::Tcp => retina::client::Transport::Tcp(Default::default()),
        TransportKind::Udp => retina::client::Transport::Udp(Default::default()),
    };
    let setup = SetupOptions::default()
        .transport(transport)
        .frame_format(FrameFormat::MP4);
    match timeout(step, session.setup(vi, setup)).await {
        Err(_) => {
            return Err(early(
                Class::RtspTimeout,
                format!("no answer to SETUP in {step_s} s"),
            ))
        }
        Ok(Err(e)) => return Err(retina_failure("SETUP", &e)),
        Ok(Ok(())) => {}
    }
    let playing = match timeout(step, session.play(PlayOptions::default())).await {
        Err(_) => {
            return Err(early(
                Class::RtspTimeout,
                format!("no answer to PLAY in {step_s} s"),
            ))
        }
        Ok(Err(e)) => return Err(retina_failure("PLAY", &e)),
        Ok(Ok(p)) => p,
    };
    let mut demuxed = playing.demuxed().map_err(|e| retina_failure("PLAY", &e))?;

    let ms = |at: Instant| at.saturating_duration_since(t0).as_millis() as u64;
    let deadline = Instant::now() + timing.duration;
    let mut meter = Meter::new(clock_rate);
    let mut bad_nals = 0u32;
    let end = loop {
        let now = Instant::now();
        let Some(left) = deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            break StreamEnd::Window;
        };
        let item = tokio::select! {
            biased;
            () = cancel.cancelled() => break StreamEnd::Error("cancelled".into()),
            r = timeout(step.min(left), demuxed.next()) => r,
        };
        match item {
            Err(_) if Instant::now() >= deadline => break StreamEnd::Window,
            Err(_) => break StreamEnd::Timeout,
            Ok(None) => break StreamEnd::Ended,
            Ok(Some(Err(e))) => break StreamEnd::Error(first_line(&e)),
            Ok(Some(Ok(CodecItem::VideoFrame(f)))) if f.stream_id() == vi => {
                if meter.frames() == 0 || f.has_new_parameters() {
                    fill_params(m, demuxed.streams()[vi].parameters());
                }
                let mut keyframe = f.is_random_access_point();
                if is_h265 && !keyframe {
                    keyframe = h265_has_irap(f.data()).unwrap_or_else(|_| {
                        bad_nals = bad_nals.saturating_add(1);
                        false
                    });
                }
                meter.push(FrameSample {
                    rtp_ticks: f.timestamp().elapsed(),
                    arrival_ms: ms(f.end_ctx().received()),
                    bytes: f.data().len(),
                    keyframe,
                    loss: f.loss(),
                });
            }
            Ok(Some(Ok(_))) => {}
        }
    };
    // Dropping the session starts the TEARDOWN (awaited by the caller).
    drop(demuxed);
    let measured = meter.finish(ms(Instant::now()));
    let (codec, width, height, declared) = (m.codec.take(), m.width, m.height, m.declared_fps);
    *m = Measurements {
        codec,
        width,
        height,
        declared_fps: declared,
        ..measured
    };
    let (class, mut detail) = classify_play(
        m,
        &PlayOutcome {
            end,
            min_fps: target.min_fps,
        },
    );
    if bad_nals > 0 {
        detail.push_str(&format!("; {bad_nals} frame(s) with malformed NAL lengths"));
    }
    Ok((class, detail))
}
