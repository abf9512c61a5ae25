//! The `[rtsp]` table: raw TOML form, validation into [`RtspConfig`], and
//! the camera URL handling shared with the `probe` command
//! ([`split_url`], [`redact_url`]).
//!
//! Validation only reads the password files it names (like `[mqtt]`); it
//! never opens a socket. Problems go to the config's shared list in plain
//! words, all of them at once.
//!
//! ```toml
//! [rtsp]
//! interval_secs = 300        # one probe per camera per interval (spread, with jitter)
//! duration_secs = 8          # how long each probe watches the stream
//! max_concurrent = 2         # NVRs refuse too many sessions at once
//! step_timeout_secs = 5      # connect, DESCRIBE, SETUP, PLAY, first frame: each
//!
//! [[rtsp.camera]]
//! name = "gate"                                  # topic-safe: a-z 0-9 - _ .
//! url = "rtsp://192.168.1.64:554/Streaming/Channels/101"
//! username = "admin"
//! password_file = "/etc/sitewatch/gate.pass"     # or password = "..."
//! transport = "tcp"                              # or "udp"
//! min_fps = 10                                   # below this: low_fps
//! interval_secs = 120                            # optional overrides
//! duration_secs = 5
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::fields::{self, Absent, Res, Value};

/// Most cameras one agent probes (a 64-channel NVR plus spare).
pub const MAX_CAMERAS: usize = 128;
/// Longest accepted camera URL, in bytes.
pub const MAX_URL_LEN: usize = 1024;
/// Longest accepted user name or password, in bytes.
pub const MAX_CREDENTIAL_LEN: usize = 256;
/// Longest probe window: long windows hold NVR sessions and memory.
pub const MAX_DURATION_SECS: u32 = 60;

fn default_interval() -> u32 {
    300
}
fn default_duration() -> u32 {
    8
}
fn default_concurrent() -> u32 {
    2
}
fn default_step() -> u32 {
    5
}

/// `[rtsp]` as written in the file.
#[derive(Debug, Clone)]
pub struct RtspRaw {
    interval_secs: u32,
    duration_secs: u32,
    max_concurrent: u32,
    step_timeout_secs: u32,
    camera: Vec<CameraRaw>,
}

/// `[[rtsp.camera]]` as written in the file.
#[derive(Clone, Default)]
struct CameraRaw {
    name: String,
    url: String,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    transport: Option<String>,
    min_fps: Option<f32>,
    interval_secs: Option<u32>,
    duration_secs: Option<u32>,
}

/// Reads `[rtsp]` (serde's words: `crate::config::fields`).
pub fn read(v: &Value<'_>) -> Res<RtspRaw> {
    use fields::u32;
    const FIELDS: &[(&str, Absent)] = &[
        ("interval_secs", Absent::Default),
        ("duration_secs", Absent::Default),
        ("max_concurrent", Absent::Default),
        ("step_timeout_secs", Absent::Default),
        ("camera", Absent::Default),
    ];
    let mut r = RtspRaw {
        interval_secs: default_interval(),
        duration_secs: default_duration(),
        max_concurrent: default_concurrent(),
        step_timeout_secs: default_step(),
        camera: Vec::new(),
    };
    fields::fields(v, "struct RtspRaw", FIELDS, &mut |i, v| {
        match i {
            0 => r.interval_secs = u32(v)?,
            1 => r.duration_secs = u32(v)?,
            2 => r.max_concurrent = u32(v)?,
            3 => r.step_timeout_secs = u32(v)?,
            _ => r.camera = fields::list(v, read_camera)?,
        }
        Ok(())
    })?;
    Ok(r)
}

fn read_camera(v: &Value<'_>) -> Res<CameraRaw> {
    use fields::{string, u32};
    const FIELDS: &[(&str, Absent)] = &[
        ("name", Absent::Required),
        ("url", Absent::Required),
        ("username", Absent::Default),
        ("password", Absent::Default),
        ("password_file", Absent::Default),
        ("transport", Absent::Default),
        ("min_fps", Absent::Default),
        ("interval_secs", Absent::Default),
        ("duration_secs", Absent::Default),
    ];
    let mut c = CameraRaw::default();
    fields::fields(v, "struct CameraRaw", FIELDS, &mut |i, v| {
        match i {
            0 => c.name = string(v)?,
            1 => c.url = string(v)?,
            2 => c.username = Some(string(v)?),
            3 => c.password = Some(string(v)?),
            4 => c.password_file = Some(fields::path(v)?),
            5 => c.transport = Some(string(v)?),
            6 => c.min_fps = Some(fields::f32(v)?),
            7 => c.interval_secs = Some(u32(v)?),
            _ => c.duration_secs = Some(u32(v)?),
        }
        Ok(())
    })?;
    Ok(c)
}

impl fmt::Debug for CameraRaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CameraRaw")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// How RTP travels from the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// Interleaved on the RTSP TCP connection (default: works through NAT
    /// and firewalls, no reordering).
    #[default]
    Tcp,
    /// Separate UDP ports (retina: experimental, no reorder buffer, so
    /// reordering shows up as loss).
    Udp,
}

impl TransportKind {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Udp => "udp",
        }
    }

    /// Parses `tcp` / `udp`.
    pub fn parse(s: &str) -> Option<TransportKind> {
        match s {
            "tcp" => Some(TransportKind::Tcp),
            "udp" => Some(TransportKind::Udp),
            _ => None,
        }
    }
}

/// A user name and password for a camera. `Debug` never shows the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password (may be empty).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// One stream to probe: what the probe needs, from config or the command
/// line.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Topic-safe camera name (`probe` uses `cli`).
    pub name: String,
    /// The URL without user info (credentials live in `creds` only).
    pub url: url::Url,
    /// Credentials, if any.
    pub creds: Option<Credentials>,
    /// RTP transport.
    pub transport: TransportKind,
    /// Below this observed frame rate the verdict is `low_fps`; `None`
    /// compares with the rate the stream declares (SPS/SDP).
    pub min_fps: Option<f32>,
}

/// Timing of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// How long to watch frames after PLAY.
    pub duration: Duration,
    /// Bound on each step: DNS, TCP connect, DESCRIBE, SETUP, PLAY, the
    /// first frame, and any later gap between frames.
    pub step_timeout: Duration,
}

/// A configured camera.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    /// What to probe.
    pub target: Target,
    /// Period between probes of this camera.
    pub interval: Duration,
    /// Timing of each probe.
    pub timing: ProbeTiming,
}

/// Validated `[rtsp]` settings. Present in [`crate::config::Config`] only when the
/// file has an `[rtsp]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RtspConfig {
    /// Default period between probes of one camera.
    pub interval: Duration,
    /// At most this many probes run at once.
    pub max_concurrent: usize,
    /// The cameras, in file order; names are unique.
    pub cameras: Vec<CameraConfig>,
}

impl RtspConfig {
    /// One line for `check`'s summary (no credentials).
    pub fn summary(&self) -> String {
        format!(
            "{} camera(s) probed every {} s, {} at a time",
            self.cameras.len(),
            self.interval.as_secs(),
            self.max_concurrent
        )
    }
}

/// Why a camera URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`].
    TooLong,
    /// Not a URL at all.
    Invalid(String),
    /// Not `rtsp://`.
    Scheme(String),
    /// No host name or address.
    NoHost,
    /// User name or password longer than [`MAX_CREDENTIAL_LEN`].
    CredentialTooLong,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::TooLong => write!(f, "is longer than {MAX_URL_LEN} bytes"),
            UrlError::Invalid(e) => write!(f, "is not a URL ({e})"),
            UrlError::Scheme(s) => write!(
                f,
                "uses `{s}://`; only rtsp:// is supported (RTSPS is not, in the RTSP library we use)"
            ),
            UrlError::NoHost => write!(f, "has no host"),
            UrlError::CredentialTooLong => write!(
                f,
                "carries a user name or password longer than {MAX_CREDENTIAL_LEN} bytes"
            ),
        }
    }
}

impl std::error::Error for UrlError {}

/// Parses an `rtsp://` URL and moves any `user:pass@` into credentials
/// (percent-decoded), so the URL kept and shown never carries them.
///
/// Pure and bounded ([`MAX_URL_LEN`], [`MAX_CREDENTIAL_LEN`]); fuzzed.
pub fn split_url(raw: &str) -> Result<(url::Url, Option<Credentials>), UrlError> {
    if raw.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    let mut url = url::Url::parse(raw.trim()).map_err(|e| UrlError::Invalid(e.to_string()))?;
    if url.scheme() != "rtsp" {
        return Err(UrlError::Scheme(url.scheme().chars().take(16).collect()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let creds = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let c = Credentials {
            username: decode(url.username()),
            password: url.password().map(decode).unwrap_or_default(),
        };
        if c.username.len() > MAX_CREDENTIAL_LEN || c.password.len() > MAX_CREDENTIAL_LEN {
            return Err(UrlError::CredentialTooLong);
        }
        Some(c)
    };
    // Cannot fail for an rtsp:// URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, creds))
}

/// Query keys whose values are credentials on some cameras
/// (`?user=admin&password=…`).
const SECRET_KEYS: [&str; 7] = [
    "user", "username", "password", "pass", "passwd", "pwd", "token",
];

/// The URL as it may be logged, printed and published: no user info, and
/// the values of credential-like query keys replaced by `***`. Works on
/// any string (unparseable ones are cut at the last `@`).
pub fn redact_url(raw: &str) -> String {
    let raw = raw.get(..MAX_URL_LEN.min(raw.len())).unwrap_or("");
    let Ok(mut url) = url::Url::parse(raw) else {
        // Not parseable: keep only what follows the last `@`, if any.
        return match raw.rfind('@') {
            Some(i) => format!("***@{}", &raw[i + 1..]),
            None => raw.to_owned(),
        };
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if let Some(q) = url.query() {
        let redacted: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) => {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        url.set_query(Some(&redacted.join("&")));
    }
    url.to_string()
}

fn read_password_file(path: &Path) -> Result<String, String> {
    crate::config::read_password_file(path, MAX_CREDENTIAL_LEN)
}

fn range(key: &str, v: u32, lo: u32, hi: u32, unit: &str, problems: &mut Vec<String>) {
    if !(lo..=hi).contains(&v) {
        problems.push(format!("{key} = {v}: must be between {lo} and {hi}{unit}"));
    }
}

/// Validates `[rtsp]`, appending every problem to `problems`.
pub(crate) fn validate(raw: RtspRaw, problems: &mut Vec<String>) -> Option<RtspConfig> {
    let before = problems.len();
    range(
        "rtsp.interval_secs",
        raw.interval_secs,
        10,
        86_400,
        " seconds",
        problems,
    );
    range(
        "rtsp.duration_secs",
        raw.duration_secs,
        1,
        MAX_DURATION_SECS,
        " seconds",
        problems,
    );
    range(
        "rtsp.max_concurrent",
        raw.max_concurrent,
        1,
        64,
        "",
        problems,
    );
    range(
        "rtsp.step_timeout_secs",
        raw.step_timeout_secs,
        1,
        60,
        " seconds",
        problems,
    );
    if raw.camera.len() > MAX_CAMERAS {
        problems.push(format!(
            "rtsp.camera lists {} cameras; at most {MAX_CAMERAS}",
            raw.camera.len()
        ));
    }
    let step = Duration::from_secs(raw.step_timeout_secs.into());
    let mut cameras: Vec<CameraConfig> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, c) in raw.camera.iter().enumerate().take(MAX_CAMERAS) {
        let dup = names.contains(&c.name.as_str());
        names.push(&c.name);
        if let Some(cam) = validate_camera(i, c, &raw, step, dup, problems) {
            cameras.push(cam);
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(RtspConfig {
        interval: Duration::from_secs(raw.interval_secs.into()),
        max_concurrent: raw.max_concurrent as usize,
        cameras,
    })
}

fn validate_camera(
    i: usize,
    c: &CameraRaw,
    raw: &RtspRaw,
    step: Duration,
    duplicate: bool,
    problems: &mut Vec<String>,
) -> Option<CameraConfig> {
    let before = problems.len();
    let key = format!("rtsp.camera[{}] ({})", i + 1, c.name);
    if let Err(e) = sitewatch_wire::topic::validate_name(&c.name) {
        problems.push(format!("{key}: name `{}`: {e}", c.name));
    } else if duplicate {
        problems.push(format!("{key}: the name `{}` is used twice", c.name));
    }
    let split = match split_url(&c.url) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{key}: url `{}` {e}", redact_url(&c.url)));
            None
        }
    };
    let transport = match c.transport.as_deref() {
        None => TransportKind::Tcp,
        Some(t) => TransportKind::parse(t).unwrap_or_else(|| {
            problems.push(format!("{key}: transport `{t}`: use \"tcp\" or \"udp\""));
            TransportKind::Tcp
        }),
    };
    if let Some(f) = c.min_fps {
        if !(f.is_finite() && f > 0.0 && f <= 240.0) {
            problems.push(format!(
                "{key}: min_fps = {f}: must be above 0 and at most 240"
            ));
        }
    }
    if let Some(v) = c.interval_secs {
        range(
            &format!("{key}: interval_secs"),
            v,
            10,
            86_400,
            " seconds",
            problems,
        );
    }
    if let Some(v) = c.duration_secs {
        range(
            &format!("{key}: duration_secs"),
            v,
            1,
            MAX_DURATION_SECS,
            " seconds",
            problems,
        );
    }
    if c.password.is_some() && c.password_file.is_some() {
        problems.push(format!(
            "{key}: password and password_file are both set; keep one"
        ));
    }
    let password = match (&c.password, &c.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => match read_password_file(f) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("{key}: password_file: {e}"));
                None
            }
        },
        (None, None) => None,
    };
    let (url, url_creds) = split?;
    let creds = match (&c.username, password, url_creds) {
        (Some(u), p, None) => Some(Credentials {
            username: u.clone(),
            password: p.unwrap_or_default(),
        }),
        (None, Some(_), None) => {
            problems.push(format!("{key}: a password is set but no username"));
            None
        }
        (None, None, from_url) => from_url,
        (_, _, Some(_))
            if c.username.is_some() || c.password.is_some() || c.password_file.is_some() =>
        {
            problems.push(format!(
                "{key}: the url carries user:password@ and username/password are set too; keep one"
            ));
            None
        }
        (_, _, from_url) => from_url,
    };
    if creds.as_ref().is_some_and(|c| {
        c.username.len() > MAX_CREDENTIAL_LEN || c.password.len() > MAX_CREDENTIAL_LEN
    }) {
        problems.push(format!(
            "{key}: username or password longer than {MAX_CREDENTIAL_LEN} bytes"
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(CameraConfig {
        target: Target {
            name: c.name.clone(),
            url,
            creds,
            transport,
            min_fps: c.min_fps,
        },
        interval: Duration::from_secs(c.interval_secs.unwrap_or(raw.interval_secs).into()),
        timing: ProbeTiming {
            duration: Duration::from_secs(c.duration_secs.unwrap_or(raw.duration_secs).into()),
            step_timeout: step,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RtspConfig, Vec<String>> {
        let raw = crate::config::read_root_for_test(text, read).map_err(|e| vec![e])?;
        let mut problems = Vec::new();
        validate(raw, &mut problems).ok_or(problems)
    }

    #[test]
    fn defaults_and_url_credentials_move_out() {
        let c = parse(
            r#"
[[camera]]
name = "gate"
url = "rtsp://admin:p%40ss@192.168.1.64/Streaming/Channels/101"
"#,
        )
        .expect("valid");
        assert_eq!(c.interval, Duration::from_secs(300));
        assert_eq!(c.max_concurrent, 2);
        let cam = &c.cameras[0];
        assert_eq!(cam.timing.duration, Duration::from_secs(8));
        assert_eq!(cam.timing.step_timeout, Duration::from_secs(5));
        assert_eq!(
            cam.target.url.as_str(),
            "rtsp://192.168.1.64/Streaming/Channels/101"
        );
        let creds = cam.target.creds.as_ref().expect("creds");
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("admin", "p@ss")
        );
        assert!(!format!("{c:?}").contains("p@ss"));
        assert_eq!(cam.target.transport, TransportKind::Tcp);
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pass");
        let text = format!(
            r#"
interval_secs = 1
max_concurrent = 0
[[camera]]
name = "Gate 1"
url = "http://x/"
transport = "sctp"
min_fps = -1
[[camera]]
name = "b"
url = "rtsp://h/"
password_file = {missing:?}
username = "u"
[[camera]]
name = "b"
url = "rtsp://u:p@h/"
username = "v"
"#
        );
        let e = parse(&text).expect_err("invalid");
        let all = e.join("\n");
        for needle in [
            "rtsp.interval_secs = 1",
            "rtsp.max_concurrent = 0",
            "name `Gate 1`",
            "only rtsp://",
            "transport `sctp`",
            "min_fps = -1",
            "cannot read",
            "used twice",
            "keep one",
        ] {
            assert!(all.contains(needle), "missing {needle}:\n{all}");
        }
        assert_eq!(e.len(), 9, "{all}");
        assert!(!all.contains("u:p@"), "{all}");
    }

    #[test]
    fn password_file_and_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cam.pass");
        std::fs::write(&f, "s3cret\n").expect("write");
        let text = format!(
            "interval_secs = 60\n[[camera]]\nname = \"a\"\nurl = \"rtsp://h:8554/x?channel=1&subtype=0\"\n\
             username = \"admin\"\npassword_file = {f:?}\ntransport = \"udp\"\nmin_fps = 12.5\n\
             interval_secs = 30\nduration_secs = 3\n"
        );
        let c = parse(&text).expect("valid");
        let cam = &c.cameras[0];
        assert_eq!(
            cam.target.creds.as_ref().map(|c| c.password.as_str()),
            Some("s3cret")
        );
        assert_eq!(cam.interval, Duration::from_secs(30));
        assert_eq!(cam.timing.duration, Duration::from_secs(3));
        assert_eq!(cam.target.transport, TransportKind::Udp);
        assert_eq!(cam.target.min_fps, Some(12.5));
    }

    #[test]
    fn too_many_cameras() {
        let mut text = String::new();
        for i in 0..=MAX_CAMERAS {
            text.push_str(&format!(
                "[[camera]]\nname = \"c{i}\"\nurl = \"rtsp://h/{i}\"\n"
            ));
        }
        let e = parse(&text).expect_err("too many");
        assert!(e[0].contains("at most 128"), "{e:?}");
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("rtsp://admin:secret@10.0.0.1:554/cam/realmonitor?channel=1&subtype=0"),
            "rtsp://10.0.0.1:554/cam/realmonitor?channel=1&subtype=0"
        );
        assert_eq!(
            redact_url("rtsp://10.0.0.1/live?user=admin&Password=secret&ch=2"),
            "rtsp://10.0.0.1/live?user=***&Password=***&ch=2"
        );
        assert_eq!(redact_url("not a url:secret@host"), "***@host");
        assert!(matches!(
            split_url("rtsp:///x"),
            Err(UrlError::NoHost) | Err(UrlError::Invalid(_))
        ));
        assert!(matches!(split_url("rtsps://h/x"), Err(UrlError::Scheme(_))));
        let long = format!("rtsp://h/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(split_url(&long), Err(UrlError::TooLong));
        // rtsp:// is not a "special" scheme to the url crate: hosts are
        // opaque (percent-encoded, no IDNA), so the idna_adapter 1.0 pin
        // in Cargo.lock (no Unicode tables) changes nothing here.
        let (u, _) = split_url("rtsp://kamera-ü.local/x").expect("opaque host");
        assert_eq!(u.host_str(), Some("kamera-%C3%BC.local"));
        let (u, c) = split_url("rtsp://user@h/x").expect("ok");
        assert_eq!(u.as_str(), "rtsp://h/x");
        assert_eq!(
            c.map(|c| (c.username, c.password)),
            Some(("user".into(), String::new()))
        );
    }
}
