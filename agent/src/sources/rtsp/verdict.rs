//! One verdict per probe: pure classification from what the probe saw,
//! unit tested without a server.
//!
//! | class          | meaning                                                   | kind     |
//! |----------------|-----------------------------------------------------------|----------|
//! | `ok`           | frames arrive at the expected rate with advancing time    | up       |
//! | `dns`          | the camera's host name does not resolve                   | down     |
//! | `tcp_refused`  | the host answers but nothing listens on the RTSP port     | down     |
//! | `tcp_timeout`  | no answer to the TCP connect (host off, no route, firewall)| down    |
//! | `rtsp_timeout` | TCP accepted, but no RTSP reply within the step timeout   | down     |
//! | `auth`         | 401: wrong user name or password (or none given)          | down     |
//! | `not_found`    | 404: wrong stream path or channel                         | down     |
//! | `rtsp_status`  | any other error status (`status` keeps it: 453/503 = NVR at its session limit) | down |
//! | `rtsp_error`   | the reply is not valid RTSP, or the connection broke      | down     |
//! | `no_video`     | the stream description has no video track                 | down     |
//! | `no_frames`    | PLAY accepted, but no frame within the step timeout       | down     |
//! | `stalled`      | frames came, then stopped (or the server ended the stream)| down     |
//! | `frozen`       | frames arrive but their RTP time hardly moves             | degraded |
//! | `low_fps`      | frame rate below `min_fps` (or ¾ of the declared rate)    | degraded |
//!
//! Warnings ride along with any class: `loss` (RTP packets lost),
//! `codec_changed` and `resolution_changed` (against the previous probe).

use super::measure::Measurements;

/// A frozen stream's RTP time advances at less than this share of wall
/// time.
pub const FROZEN_RATIO: f32 = 0.5;
/// Without `min_fps`, below this share of the declared rate is `low_fps`.
pub const DECLARED_FPS_SHARE: f32 = 0.75;
/// A trailing gap without frames of at least this long is `stalled` …
pub const STALL_GAP_MIN_MS: u64 = 2_000;
/// … or of this many frame intervals, whichever is longer.
pub const STALL_GAP_FRAMES: f32 = 4.0;

/// The verdict of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Healthy.
    Ok,
    /// Name resolution failed.
    Dns,
    /// TCP connection refused.
    TcpRefused,
    /// TCP connect timed out or the host is unreachable.
    TcpTimeout,
    /// No RTSP reply in time.
    RtspTimeout,
    /// 401 Unauthorized.
    Auth,
    /// 404 Not Found.
    NotFound,
    /// Another RTSP error status.
    RtspStatus(u16),
    /// Not RTSP, or the connection broke during set-up.
    RtspError,
    /// No video track.
    NoVideo,
    /// No frame after PLAY.
    NoFrames,
    /// Frames stopped.
    Stalled,
    /// RTP time stands (nearly) still.
    Frozen,
    /// Too few frames per second.
    LowFps,
}

/// How a class change is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The camera delivers no usable video.
    Down,
    /// The camera is healthy again.
    Up,
    /// Video arrives but is poor.
    Degraded,
}

impl ChangeKind {
    /// `down`, `up`, `degraded`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Down => "down",
            ChangeKind::Up => "up",
            ChangeKind::Degraded => "degraded",
        }
    }
}

impl Class {
    /// The wire name (`ok`, `tcp_refused`, `rtsp_status`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Dns => "dns",
            Class::TcpRefused => "tcp_refused",
            Class::TcpTimeout => "tcp_timeout",
            Class::RtspTimeout => "rtsp_timeout",
            Class::Auth => "auth",
            Class::NotFound => "not_found",
            Class::RtspStatus(_) => "rtsp_status",
            Class::RtspError => "rtsp_error",
            Class::NoVideo => "no_video",
            Class::NoFrames => "no_frames",
            Class::Stalled => "stalled",
            Class::Frozen => "frozen",
            Class::LowFps => "low_fps",
        }
    }

    /// The RTSP status code, for `rtsp_status` (and 401/404 classes).
    pub fn status(self) -> Option<u16> {
        match self {
            Class::Auth => Some(401),
            Class::NotFound => Some(404),
            Class::RtspStatus(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this class means the camera is healthy.
    pub fn is_ok(self) -> bool {
        self == Class::Ok
    }

    /// Down, up or degraded.
    pub fn kind(self) -> ChangeKind {
        match self {
            Class::Ok => ChangeKind::Up,
            Class::Frozen | Class::LowFps => ChangeKind::Degraded,
            _ => ChangeKind::Down,
        }
    }

    /// What is wrong and what to check, in plain words for installers.
    pub fn advice(self) -> &'static str {
        match self {
            Class::Ok => "the stream plays normally",
            Class::Dns => "the host name does not resolve: check the name in the URL and the DNS server",
            Class::TcpRefused => {
                "nothing accepts connections on that port: check the RTSP port (554 by default) \
                 and that RTSP is enabled on the camera/NVR"
            }
            Class::TcpTimeout => {
                "the host does not answer: check the IP address, cabling/PoE, VLAN and firewall"
            }
            Class::RtspTimeout => {
                "the port accepts connections but does not answer RTSP: check that it is the \
                 RTSP port, or restart the camera"
            }
            Class::Auth => "wrong user/password (or none given): check the credentials on the camera/NVR",
            Class::NotFound => {
                "the stream path does not exist: check the path and channel number \
                 (e.g. /Streaming/Channels/101)"
            }
            Class::RtspStatus(453 | 503) => {
                "the camera/NVR refuses more sessions (connection limit): close other viewers \
                 or lower the probe concurrency"
            }
            Class::RtspStatus(_) => "the camera refused the request: see the status code",
            Class::RtspError => {
                "the answer is not valid RTSP or the connection broke: check that the port is \
                 an RTSP port"
            }
            Class::NoVideo => "the stream has no video track: check the stream/channel settings",
            Class::NoFrames => {
                "the stream starts but sends no video: check the camera's encoder, or try \
                 transport tcp/udp"
            }
            Class::Stalled => "video stopped arriving: check the camera's network link and power",
            Class::Frozen => "frames arrive but the picture time stands still: the encoder is hung; reboot the camera",
            Class::LowFps => "the frame rate is below the minimum: check the camera's frame rate and bitrate settings and the network",
        }
    }
}

/// A warning attached to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Warning {
    /// RTP packets were lost.
    Loss,
    /// The codec string differs from the previous probe's.
    CodecChanged,
    /// The resolution differs from the previous probe's.
    ResolutionChanged,
}

impl Warning {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Warning::Loss => "loss",
            Warning::CodecChanged => "codec_changed",
            Warning::ResolutionChanged => "resolution_changed",
        }
    }
}

/// The class for an RTSP error status.
pub fn class_for_status(status: u16) -> Class {
    match status {
        401 => Class::Auth,
        404 => Class::NotFound,
        s => Class::RtspStatus(s),
    }
}

/// The class for a failed TCP connect.
pub fn class_for_connect(kind: std::io::ErrorKind) -> Class {
    match kind {
        std::io::ErrorKind::ConnectionRefused => Class::TcpRefused,
        _ => Class::TcpTimeout,
    }
}

/// How the reading of frames ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The window ran out (normal).
    Window,
    /// No frame for a step timeout.
    Timeout,
    /// The server ended the stream (BYE / EOF).
    Ended,
    /// retina reported an error (the text).
    Error(String),
}

/// What the classification of a played stream needs besides the
/// measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayOutcome {
    /// How reading ended.
    pub end: StreamEnd,
    /// The configured minimum frame rate, if any.
    pub min_fps: Option<f32>,
}

/// Classifies a stream that reached PLAY. Returns the class and a short
/// detail sentence (never credentials).
pub fn classify_play(m: &Measurements, o: &PlayOutcome) -> (Class, String) {
    let frames = m.frames.unwrap_or(0);
    let why_end = match &o.end {
        StreamEnd::Window => String::new(),
        StreamEnd::Timeout => " (no frame within the step timeout)".to_owned(),
        StreamEnd::Ended => " (the server ended the stream)".to_owned(),
        StreamEnd::Error(e) => format!(" ({e})"),
    };
    if frames == 0 {
        return (
            Class::NoFrames,
            format!("PLAY accepted but no video frame arrived{why_end}"),
        );
    }
    let fps = m.fps_rtp.or(m.fps_wall);
    let interval_ms = fps.filter(|f| *f > 0.0).map(|f| 1000.0 / f).unwrap_or(0.0);
    let stall_gap = STALL_GAP_MIN_MS.max((interval_ms * STALL_GAP_FRAMES) as u64);
    let gap = m.last_gap_ms.unwrap_or(0);
    if o.end != StreamEnd::Window || gap >= stall_gap {
        return (
            Class::Stalled,
            format!(
                "{frames} frame(s), then nothing for {:.1} s{why_end}",
                gap as f64 / 1000.0
            ),
        );
    }
    if let Some(r) = m.rtp_wall_ratio.filter(|r| *r < FROZEN_RATIO) {
        return (
            Class::Frozen,
            format!("{frames} frames arrived but RTP time advanced at {r:.2}x wall time"),
        );
    }
    let (limit, source) = match (o.min_fps, m.declared_fps) {
        (Some(min), _) => (Some(min), "min_fps"),
        (None, Some(d)) => (Some(d * DECLARED_FPS_SHARE), "3/4 of the declared rate"),
        (None, None) => (None, ""),
    };
    if let (Some(limit), Some(fps)) = (limit, fps) {
        if fps < limit {
            return (
                Class::LowFps,
                format!("{fps:.1} fps is below {limit:.1} ({source})"),
            );
        }
    }
    let mut detail = format!("{frames} frames");
    if let Some(f) = fps {
        detail.push_str(&format!(" at {f:.1} fps"));
    }
    (Class::Ok, detail)
}

/// Warnings for this probe given the previous one's measurements.
pub fn warnings(prev: Option<&Measurements>, cur: &Measurements) -> Vec<Warning> {
    let mut w = Vec::new();
    if cur.loss.is_some_and(|l| l > 0) {
        w.push(Warning::Loss);
    }
    if let Some(p) = prev {
        if let (Some(a), Some(b)) = (&p.codec, &cur.codec) {
            if a != b {
                w.push(Warning::CodecChanged);
            }
        }
        if let (Some(pw), Some(ph), Some(cw), Some(ch)) = (p.width, p.height, cur.width, cur.height)
        {
            if (pw, ph) != (cw, ch) {
                w.push(Warning::ResolutionChanged);
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Measurements {
        Measurements {
            frames: Some(200),
            fps_rtp: Some(25.0),
            fps_wall: Some(25.0),
            declared_fps: Some(25.0),
            rtp_wall_ratio: Some(0.995),
            last_gap_ms: Some(40),
            loss: Some(0),
            codec: Some("avc1.42C01E".into()),
            width: Some(640),
            height: Some(360),
            ..Measurements::default()
        }
    }

    fn window(min_fps: Option<f32>) -> PlayOutcome {
        PlayOutcome {
            end: StreamEnd::Window,
            min_fps,
        }
    }

    #[test]
    fn healthy_is_ok() {
        assert_eq!(classify_play(&healthy(), &window(None)).0, Class::Ok);
        assert_eq!(classify_play(&healthy(), &window(Some(20.0))).0, Class::Ok);
    }

    #[test]
    fn no_frames_and_stalls() {
        let none = Measurements {
            frames: Some(0),
            ..Measurements::default()
        };
        let to = PlayOutcome {
            end: StreamEnd::Timeout,
            min_fps: None,
        };
        assert_eq!(classify_play(&none, &to).0, Class::NoFrames);
        // Frames for 3 s, then 5 s of nothing.
        let stall = Measurements {
            last_gap_ms: Some(5_000),
            rtp_wall_ratio: Some(0.37),
            ..healthy()
        };
        let (c, d) = classify_play(&stall, &window(None));
        assert_eq!(c, Class::Stalled, "{d}");
        assert!(d.contains("nothing for 5.0 s"), "{d}");
        // The server ending the stream is a stall even with a short gap.
        let ended = PlayOutcome {
            end: StreamEnd::Ended,
            min_fps: None,
        };
        assert_eq!(classify_play(&healthy(), &ended).0, Class::Stalled);
        // A 2 fps stream has 500 ms gaps: not a stall.
        let slow = Measurements {
            fps_rtp: Some(2.0),
            declared_fps: Some(2.0),
            last_gap_ms: Some(900),
            ..healthy()
        };
        assert_eq!(classify_play(&slow, &window(None)).0, Class::Ok);
        // At 0.5 fps, 2 s gaps are normal; 8 s is not.
        let very_slow = Measurements {
            fps_rtp: Some(0.5),
            declared_fps: None,
            last_gap_ms: Some(7_000),
            ..healthy()
        };
        assert_eq!(classify_play(&very_slow, &window(None)).0, Class::Ok);
        let very_slow = Measurements {
            last_gap_ms: Some(8_000),
            ..very_slow
        };
        assert_eq!(classify_play(&very_slow, &window(None)).0, Class::Stalled);
    }

    #[test]
    fn frozen_and_low_fps() {
        let frozen = Measurements {
            rtp_wall_ratio: Some(0.0),
            fps_rtp: None,
            ..healthy()
        };
        assert_eq!(classify_play(&frozen, &window(None)).0, Class::Frozen);
        let slow = Measurements {
            fps_rtp: Some(2.0),
            declared_fps: Some(2.0),
            ..healthy()
        };
        let (c, d) = classify_play(&slow, &window(Some(5.0)));
        assert_eq!(c, Class::LowFps);
        assert!(d.contains("2.0 fps is below 5.0 (min_fps)"), "{d}");
        let dropping = Measurements {
            fps_rtp: Some(15.0),
            ..healthy()
        };
        assert_eq!(classify_play(&dropping, &window(None)).0, Class::LowFps);
        assert_eq!(classify_play(&dropping, &window(Some(10.0))).0, Class::Ok);
    }

    #[test]
    fn status_and_connect_mapping() {
        assert_eq!(class_for_status(401), Class::Auth);
        assert_eq!(class_for_status(404), Class::NotFound);
        assert_eq!(class_for_status(453), Class::RtspStatus(453));
        assert_eq!(Class::RtspStatus(503).status(), Some(503));
        assert!(Class::RtspStatus(453).advice().contains("connection limit"));
        assert_eq!(
            class_for_connect(std::io::ErrorKind::ConnectionRefused),
            Class::TcpRefused
        );
        assert_eq!(
            class_for_connect(std::io::ErrorKind::TimedOut),
            Class::TcpTimeout
        );
        assert_eq!(Class::LowFps.kind(), ChangeKind::Degraded);
        assert_eq!(Class::Stalled.kind(), ChangeKind::Down);
        assert_eq!(Class::Ok.kind(), ChangeKind::Up);
        assert!(Class::Auth.advice().contains("wrong user/password"));
    }

    #[test]
    fn warnings_against_previous() {
        let a = healthy();
        assert!(warnings(None, &a).is_empty());
        let b = Measurements {
            codec: Some("hvc1.1.6.L93.90".into()),
            width: Some(1920),
            height: Some(1080),
            loss: Some(3),
            ..healthy()
        };
        assert_eq!(
            warnings(Some(&a), &b),
            vec![
                Warning::Loss,
                Warning::CodecChanged,
                Warning::ResolutionChanged
            ]
        );
        // Unknown values never warn.
        let c = Measurements {
            codec: None,
            width: None,
            ..healthy()
        };
        assert!(warnings(Some(&a), &c).is_empty());
    }
}
