//! Reachability of one camera from the centre: DNS, TCP, RTSP DESCRIBE.
//!
//! Each step is done by hand before retina is asked for the DESCRIBE,
//! because retina's error type hides `io::ErrorKind`: resolving and
//! connecting first is the only reliable way to tell a stale DDNS name
//! from a missing port forward from a site behind carrier-grade NAT.
//! The verdict is a [`Class`] plus one sentence in plain words.
//!
//! The RTSP credentials go to retina only; nothing here formats them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::{Camera, ProbeSettings, Site};

/// What is wrong, if anything, between the centre and a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// DESCRIBE answered 200: the camera is reachable and the account works.
    Ok,
    /// The public host name does not resolve (DDNS name not updated, typo).
    Dns,
    /// Connection refused: no port forward, or it points to nothing.
    TcpRefused,
    /// No answer to the connection: forward missing on a firewalled
    /// router, the router is off, or the site is behind carrier-grade NAT.
    TcpTimeout,
    /// 401: the user name or password is wrong.
    Auth,
    /// 404: the path or channel does not exist on that NVR.
    NotFound,
    /// Anything else RTSP: another status, no answer, not an RTSP server.
    RtspError,
    /// The optional short PLAY (`probe.play_secs`): the session came up
    /// but no video frame arrived. Stored as `rtsp_error` on a schema
    /// older than 11 (see [`Class::stored`]).
    NoFrames,
}

impl Class {
    /// Every class, in a fixed order.
    pub const ALL: [Class; 8] = [
        Class::Ok,
        Class::Dns,
        Class::TcpRefused,
        Class::TcpTimeout,
        Class::Auth,
        Class::NotFound,
        Class::RtspError,
        Class::NoFrames,
    ];

    /// The name stored in PostgreSQL and shown on dashboards.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Dns => "dns",
            Class::TcpRefused => "tcp_refused",
            Class::TcpTimeout => "tcp_timeout",
            Class::Auth => "auth",
            Class::NotFound => "not_found",
            Class::RtspError => "rtsp_error",
            Class::NoFrames => "no_frames",
        }
    }

    /// The name written to a schema older than bridge migration 11, whose
    /// CHECK on `camera_reachability.class` knows only the seven DESCRIBE
    /// classes: `no_frames` becomes `rtsp_error` there (its detail starts
    /// with "no frames"); `store` writes `no_frames` from version 11 on.
    pub fn stored(self) -> &'static str {
        match self {
            Class::NoFrames => Class::RtspError.as_str(),
            c => c.as_str(),
        }
    }

    /// What to do about it, in plain words.
    pub fn advice(self) -> &'static str {
        match self {
            Class::Ok => "reachable from the centre",
            Class::Dns => {
                "the site's public name does not resolve: check the router's DDNS \
                 (MikroTik: /ip cloud) and the name in the live config"
            }
            Class::TcpRefused => {
                "the router refused the connection: the port forward (dstnat) to the \
                 NVR is missing or points to the wrong port"
            }
            Class::TcpTimeout => {
                "no answer from the site's address: the router is off, its firewall drops \
                 the port, or the ISP puts the site behind carrier-grade NAT (then use a \
                 VPN or relay, a router fix will not help)"
            }
            Class::Auth => {
                "the NVR refused the user name or password: check the viewer account and \
                 the live config's password"
            }
            Class::NotFound => {
                "the NVR has no stream at that path or channel: check the camera's path \
                 or channel number"
            }
            Class::RtspError => {
                "something answered but not as a working RTSP server (another device on \
                 the forwarded port, the NVR at its stream limit, or it hangs)"
            }
            Class::NoFrames => {
                "the NVR started the stream but sent no picture: the camera behind this \
                 channel is off or unplugged from the NVR, or the NVR is overloaded"
            }
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Verdict.
    pub class: Class,
    /// One line: what was seen (never a password).
    pub detail: String,
    /// The address the name resolved to and was connected to (the first
    /// one when none accepted), when it resolved. Every address the name
    /// resolved to is in `detail` when there were several.
    pub addr: Option<IpAddr>,
    /// How long the probe took.
    pub duration: Duration,
    /// Every address the name resolved to (at most 8; the address itself
    /// when the host is one), for [`crate::ddns::compare`]; empty when
    /// it did not resolve.
    pub resolved: Vec<IpAddr>,
}

/// Longest detail kept (retina's messages can be long).
const MAX_DETAIL: usize = 400;

fn outcome(class: Class, detail: String, addr: Option<IpAddr>, started: Instant) -> Outcome {
    let mut detail = detail.replace(['\n', '\r'], " ");
    if detail.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push('…');
    }
    Outcome {
        class,
        detail,
        addr,
        duration: started.elapsed(),
        resolved: Vec::new(),
    }
}

/// Probes one camera: DNS, TCP connect, then RTSP DESCRIBE with the
/// site's credentials.
#[tracing::instrument(skip_all, fields(site = %site.id, camera = %camera.name))]
pub async fn probe(site: &Site, camera: &Camera, settings: &ProbeSettings) -> Outcome {
    let mut resolved = Vec::new();
    let mut o = steps(site, camera, settings, &mut resolved).await;
    o.resolved = resolved;
    o
}

/// [`probe`]'s steps; what the name resolved to goes to `resolved`.
async fn steps(
    site: &Site,
    camera: &Camera,
    settings: &ProbeSettings,
    resolved_to: &mut Vec<IpAddr>,
) -> Outcome {
    let started = Instant::now();
    // 1. DNS.
    let addrs: Vec<SocketAddr> = match camera.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, camera.port)],
        Err(_) => {
            match timeout(
                settings.dns_timeout,
                tokio::net::lookup_host((camera.host.as_str(), camera.port)),
            )
            .await
            {
                Err(_) => {
                    return outcome(
                        Class::Dns,
                        format!(
                            "{}: no DNS answer within {} ms",
                            camera.host,
                            settings.dns_timeout.as_millis()
                        ),
                        None,
                        started,
                    )
                }
                Ok(Err(e)) => {
                    return outcome(
                        Class::Dns,
                        format!("{} does not resolve: {e}", camera.host),
                        None,
                        started,
                    )
                }
                Ok(Ok(a)) => a.take(8).collect(),
            }
        }
    };
    let Some(first) = addrs.first().copied() else {
        return outcome(
            Class::Dns,
            format!("{} resolves to no address", camera.host),
            None,
            started,
        );
    };
    resolved_to.extend(addrs.iter().map(SocketAddr::ip));
    // Several A/AAAA records (a stale and a fresh one, IPv4 and IPv6):
    // the detail names them all, since which one answered matters.
    let resolved = if addrs.len() > 1 {
        let all: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        format!(" ({} resolves to {})", camera.host, all.join(", "))
    } else {
        String::new()
    };
    // 2. TCP, to each address until one accepts.
    let mut last: Option<(Class, String)> = None;
    let mut connected = None;
    for a in &addrs {
        match timeout(settings.connect_timeout, TcpStream::connect(a)).await {
            Ok(Ok(_stream)) => {
                connected = Some(*a);
                break;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some((Class::TcpRefused, format!("{a}: connection refused")));
            }
            Ok(Err(e)) => {
                last = Some((Class::TcpTimeout, format!("{a}: cannot connect: {e}")));
            }
            Err(_) => {
                last = Some((
                    Class::TcpTimeout,
                    format!(
                        "{a}: no answer to the connection within {} ms",
                        settings.connect_timeout.as_millis()
                    ),
                ));
            }
        }
    }
    let Some(addr) = connected else {
        let (class, detail) = last.unwrap_or((Class::TcpTimeout, "no address".to_owned()));
        return outcome(class, detail + &resolved, Some(first.ip()), started);
    };
    // 3. RTSP DESCRIBE (retina answers the Digest/Basic challenge).
    let creds = site
        .credentials
        .as_ref()
        .map(|c| retina::client::Credentials {
            username: c.username.clone(),
            password: c.password.expose().to_owned(),
        });
    let opts = retina::client::SessionOptions::default()
        .creds(creds)
        .user_agent(format!("sitewatch-live/{}", env!("CARGO_PKG_VERSION")));
    let url = camera.url.clone();
    match timeout(
        settings.rtsp_timeout,
        retina::client::Session::describe(url, opts),
    )
    .await
    {
        Err(_) => outcome(
            Class::RtspError,
            format!(
                "{addr}: connected, but no RTSP answer within {} ms (not an RTSP server, or it hangs)",
                settings.rtsp_timeout.as_millis()
            ),
            Some(addr.ip()),
            started,
        ),
        Ok(Ok(session)) => {
            let streams: Vec<String> = session
                .streams()
                .iter()
                .map(|s| format!("{} {}", s.media(), s.encoding_name()))
                .collect();
            let video = session.streams().iter().position(|s| s.media() == "video");
            if let Some(vi) = video {
                let described = format!("{addr}: DESCRIBE ok ({}){resolved}", streams.join(", "));
                match settings.play {
                    None => outcome(Class::Ok, described, Some(addr.ip()), started),
                    Some(play) => {
                        let (class, what) = short_play(session, vi, play, settings).await;
                        outcome(class, format!("{described}; {what}"), Some(addr.ip()), started)
                    }
                }
            } else {
                outcome(
                    Class::RtspError,
                    format!(
                        "{addr}: DESCRIBE ok but no video stream ({})",
                        streams.join(", ")
                    ),
                    Some(addr.ip()),
                    started,
                )
            }
        }
        Ok(Err(e)) => {
            let (class, what) = match e.status_code() {
                Some(401) => (Class::Auth, "401 Unauthorized".to_owned()),
                Some(404) => (Class::NotFound, "404 Not Found".to_owned()),
                Some(code) => (Class::RtspError, format!("RTSP status {code}")),
                None => (Class::RtspError, e.to_string()),
            };
            outcome(
                class,
                format!("{addr}: DESCRIBE {}: {what}", camera.url.path()),
                Some(addr.ip()),
                started,
            )
        }
    }
}

/// The optional short PLAY after a good DESCRIBE: SETUP the video
/// stream (TCP interleaved, as the live view does), PLAY, and wait up to
/// `play` for the first video frame. Some NVRs answer DESCRIBE for a
/// channel whose camera is unplugged; only a frame proves video flows.
async fn short_play(
    mut session: retina::client::Session<retina::client::Described>,
    vi: usize,
    play: Duration,
    settings: &ProbeSettings,
) -> (Class, String) {
    use futures_util::StreamExt as _;
    use retina::client::{PlayOptions, SetupOptions, Transport};
    use retina::codec::CodecItem;
    let setup = SetupOptions::default().transport(Transport::Tcp(Default::default()));
    match timeout(settings.rtsp_timeout, session.setup(vi, setup)).await {
        Err(_) => return (Class::RtspError, "SETUP: no answer".to_owned()),
        Ok(Err(e)) => return (Class::RtspError, format!("SETUP: {}", rtsp_words(&e))),
        Ok(Ok(_)) => {}
    }
    let playing = match timeout(settings.rtsp_timeout, session.play(PlayOptions::default())).await {
        Err(_) => return (Class::RtspError, "PLAY: no answer".to_owned()),
        Ok(Err(e)) => return (Class::RtspError, format!("PLAY: {}", rtsp_words(&e))),
        Ok(Ok(p)) => p,
    };
    let mut demuxed = match playing.demuxed() {
        Ok(d) => d,
        Err(e) => return (Class::RtspError, format!("PLAY: {}", rtsp_words(&e))),
    };
    let start = Instant::now();
    let no_frames = |why: &str| {
        (
            Class::NoFrames,
            format!(
                "no frames: PLAY accepted but {why} within {} s",
                play.as_secs()
            ),
        )
    };
    loop {
        let left = play.saturating_sub(start.elapsed());
        match timeout(left, demuxed.next()).await {
            Err(_) => return no_frames("no frame arrived"),
            Ok(None) => return no_frames("the stream ended without a frame"),
            Ok(Some(Err(e))) => {
                return (
                    Class::RtspError,
                    format!("PLAY: the stream failed before a frame: {}", rtsp_words(&e)),
                )
            }
            Ok(Some(Ok(CodecItem::VideoFrame(_)))) => {
                return (
                    Class::Ok,
                    format!(
                        "PLAY ok, first frame after {} ms",
                        start.elapsed().as_millis()
                    ),
                )
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// retina's error in words (it never prints credentials; URLs hold none).
fn rtsp_words(e: &retina::Error) -> String {
    match e.status_code() {
        Some(code) => format!("RTSP status {code}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_distinct_and_advised() {
        let names: std::collections::HashSet<_> = Class::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Class::ALL.len());
        for c in Class::ALL {
            assert!(!c.advice().is_empty());
        }
    }

    #[test]
    fn detail_is_one_bounded_line() {
        let o = outcome(
            Class::RtspError,
            "é".repeat(1000) + "\nx",
            None,
            Instant::now(),
        );
        assert!(o.detail.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(!o.detail.contains('\n'));
    }
}
