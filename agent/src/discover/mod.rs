//! `sitewatch-agent discover`: finds ONVIF cameras on the LAN and prints
//! ready-to-paste `[[rtsp.camera]]` blocks for them.
//!
//! 1. A WS-Discovery Probe for `dn:NetworkVideoTransmitter` goes to
//!    239.255.255.250:3702; ProbeMatches are collected for `--wait` s.
//! 2. For each device: GetCapabilities(Media) on its device service gives
//!    the media service address (the device address when it has none),
//!    then GetProfiles and GetStreamUri (RTP-Unicast over RTSP) for the
//!    two largest profiles (main and sub stream).
//! 3. Every request carries a WS-Security UsernameToken with a
//!    PasswordDigest; a device that answers HTTP 401 with a challenge
//!    gets HTTP Digest (or Basic) on top, through the `http-auth` crate
//!    retina already links (about 1 KB of aarch64 code, measured).
//! 4. `--probe` plays each stream once with the `probe` command's code.
//!
//! - [`xml`], [`proto`] and [`http`]: pure, bounded, fuzzed
//!   (`fuzz/fuzz_targets/onvif_answers.rs`).
//! - [`client`]: the sockets.
//!
//! Everything printed that is not TOML starts with `#`, so the whole
//! output can be pasted. Credentials are never printed.
//!
//! Exit status 0 when at least one camera block was printed, 1 when no
//! device answered or none gave a stream, 2 for unusable arguments.

// Without the feature only `main`'s stub is reachable; the rest stays
// compiled (and unit-tested, fuzzed) so both builds share one source.
#![cfg_attr(not(feature = "discover"), allow(dead_code, unused_imports))]

pub mod client;
pub mod http;
pub mod proto;
pub mod xml;

use std::fmt::Write as _;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use crate::sources::rtsp::config::{split_url, Credentials, ProbeTiming, Target, TransportKind};
use proto::{ProbeMatch, Profile};

/// Default `--wait`: most cameras answer within a second.
pub const DEFAULT_WAIT_SECS: u32 = 3;
/// Longest `--wait`.
pub const MAX_WAIT_SECS: u32 = 60;
/// How long `--probe` watches each stream.
const PROBE_TIMING: ProbeTiming = ProbeTiming {
    duration: Duration::from_secs(4),
    step_timeout: Duration::from_secs(5),
};

/// Arguments of `sitewatch-agent discover`.
#[derive(Debug, Clone, Default)]
pub struct DiscoverArgs {
    /// ONVIF user name (the same user usually works for RTSP).
    pub user: Option<String>,
    /// Password. Visible to other users in `ps`: prefer `password_file`.
    pub password: Option<String>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// Seconds to collect ProbeMatches.
    pub wait_secs: u32,
    /// Source IPv4 address (and so interface) of the multicast Probe.
    pub interface: Option<Ipv4Addr>,
    /// Play each found stream once and print the verdict.
    pub probe: bool,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A password that never shows in `Debug`.
#[derive(Clone)]
struct Secret(String);

#[derive(Debug, Clone)]
struct Login {
    user: String,
    password: Secret,
}

/// Why asking a device failed.
enum CallError {
    /// The device refused the credentials (or wants some).
    Auth,
    /// Anything else, in words.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for CallError {
    fn from(e: anyhow::Error) -> Self {
        CallError::Other(e)
    }
}

fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; N];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // getrandom failing is not expected on Linux; a predictable nonce
        // only weakens replay protection of one request, so carry on.
        b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    }
    b
}

/// `YYYY-MM-DDThh:mm:ssZ`, now.
fn created_now() -> String {
    format!("{:.0}", jiff::Timestamp::now())
}

/// One SOAP call: the envelope with a fresh UsernameToken, HTTP Digest
/// after a 401 with a challenge, and the answer's body for a 2xx.
async fn call(
    url: &url::Url,
    action: &str,
    body: &str,
    login: Option<&Login>,
) -> Result<Vec<u8>, CallError> {
    let envelope = || {
        let token = login.map(|l| {
            proto::username_token(&l.user, &l.password.0, &random::<16>(), &created_now())
        });
        proto::envelope(token.as_ref(), body)
    };
    let mut resp = client::post(url, action, &envelope(), None).await?;
    // A 401 without a challenge is a WS-Security refusal (many devices
    // send ter:NotAuthorized with 401 rather than 400): handled below.
    if resp.status == 401 && !resp.challenges.is_empty() {
        let Some(l) = login else {
            return Err(CallError::Auth);
        };
        let challenges = resp.challenges.join(", ");
        let mut pc = http_auth::PasswordClient::try_from(challenges.as_str())
            .map_err(|e| anyhow!("HTTP 401 with a challenge we cannot answer: {e}"))?;
        let env = envelope();
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let auth = pc
            .respond(&http_auth::PasswordParams {
                username: &l.user,
                password: &l.password.0,
                uri: &path,
                method: "POST",
                body: Some(env.as_bytes()),
            })
            .map_err(|e| anyhow!("cannot answer the HTTP challenge: {e}"))?;
        resp = client::post(url, action, &env, Some(&auth)).await?;
    }
    // Faults come with 400 or 500 (ONVIF Core §5.11.2); read them.
    if let Ok(doc) = xml::Doc::parse(&resp.body) {
        if let Some(f) = proto::fault(&doc) {
            if f.is_auth() {
                return Err(CallError::Auth);
            }
            return Err(CallError::Other(anyhow!("HTTP {}: {f}", resp.status)));
        }
    }
    if resp.status == 401 {
        return Err(CallError::Auth);
    }
    if !(200..300).contains(&resp.status) {
        return Err(CallError::Other(anyhow!("HTTP {}", resp.status)));
    }
    Ok(resp.body)
}

/// A stream found on a device.
struct Stream {
    role: &'static str,
    profile: Profile,
    uri: Result<url::Url, String>,
}

/// Asks one device for its main and sub stream.
async fn streams(device: &url::Url, login: Option<&Login>) -> Result<Vec<Stream>, CallError> {
    let caps = call(
        device,
        proto::ACTION_GET_CAPABILITIES,
        &proto::get_capabilities_body(),
        login,
    )
    .await;
    let media = match caps {
        Err(CallError::Auth) => return Err(CallError::Auth),
        Ok(body) => match proto::parse_media_xaddr(&body) {
            Ok(Some(x)) => url::Url::parse(&x).unwrap_or_else(|_| device.clone()),
            _ => device.clone(),
        },
        // Some devices serve media on the device address and skip
        // GetCapabilities; try it there.
        Err(CallError::Other(e)) => {
            tracing::debug!(err = %format!("{e:#}"), "GetCapabilities failed; using the device address");
            device.clone()
        }
    };
    let body = call(
        &media,
        proto::ACTION_GET_PROFILES,
        &proto::get_profiles_body(),
        login,
    )
    .await?;
    let profiles = proto::parse_profiles(&body).map_err(|e| anyhow!("GetProfiles: {e}"))?;
    let mut out = Vec::new();
    for (p, role) in proto::main_and_sub(&profiles)
        .into_iter()
        .zip(["main", "sub"])
    {
        let uri = match call(
            &media,
            proto::ACTION_GET_STREAM_URI,
            &proto::get_stream_uri_body(&p.token),
            login,
        )
        .await
        {
            Ok(body) => match proto::parse_stream_uri(&body) {
                Ok(u) => split_url(&u)
                    .map(|(u, _)| u)
                    .map_err(|e| format!("the stream URI {e}")),
                Err(e) => Err(format!("GetStreamUri: {e}")),
            },
            Err(CallError::Other(e)) => Err(format!("GetStreamUri: {e:#}")),
            Err(e) => return Err(e),
        };
        out.push(Stream {
            role,
            profile: p.clone(),
            uri,
        });
    }
    if out.is_empty() {
        return Err(CallError::Other(anyhow!(
            "GetProfiles lists no media profile with a token"
        )));
    }
    Ok(out)
}

/// The device service address to use: one on the host that answered, if
/// the device lists several (link-local ones first is common).
fn device_url(m: &ProbeMatch, from: std::net::IpAddr) -> Option<url::Url> {
    let parsed: Vec<url::Url> = m
        .xaddrs
        .iter()
        .filter_map(|x| url::Url::parse(x).ok())
        .collect();
    let from = from.to_string();
    parsed
        .iter()
        .find(|u| u.scheme() == "http" && u.host_str() == Some(from.as_str()))
        .or_else(|| parsed.iter().find(|u| u.scheme() == "http"))
        .or_else(|| parsed.first())
        .cloned()
}

fn read_password(args: &DiscoverArgs) -> Result<Option<String>, String> {
    crate::sources::rtsp::cli::cli_password(args.password.as_deref(), args.password_file.as_deref())
}

/// Runs the command; returns the process exit status.
///
/// Without the `discover` cargo feature (the size-budgeted router builds
/// of `scripts/build-release.sh` leave it out: it costs about 42 KB on
/// aarch64) the command exists, so its help and arguments are the same,
/// but says where to find a build that has it.
#[cfg(not(feature = "discover"))]
pub fn main(_args: &DiscoverArgs, out: &mut dyn Write) -> u8 {
    let _ = writeln!(
        out,
        "error: this build of sitewatch-agent has no `discover` (router builds leave it out to fit \
         their flash budget).\n\
         Run `sitewatch-agent discover` from the x86_64 build (dist/sitewatch-agent-x86_64-unknown-linux-musl) \
         on a laptop on the site's LAN, or from a build made with \
         SITEWATCH_AGENT_FEATURES=discover, then paste its blocks into this gateway's config."
    );
    1
}

/// Runs the command; returns the process exit status.
#[cfg(feature = "discover")]
pub fn main(args: &DiscoverArgs, out: &mut dyn Write) -> u8 {
    if !(1..=MAX_WAIT_SECS).contains(&args.wait_secs) {
        let _ = writeln!(out, "error: --wait must be 1 to {MAX_WAIT_SECS} seconds");
        return 2;
    }
    let password = match read_password(args) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return 2;
        }
    };
    let login = match (&args.user, password) {
        (Some(u), p) => Some(Login {
            user: u.clone(),
            password: Secret(p.unwrap_or_default()),
        }),
        (None, Some(_)) => {
            let _ = writeln!(out, "error: --password needs --user");
            return 2;
        }
        (None, None) => None,
    };
    // The block names the file as given, made absolute: the agent reads
    // it from its own working directory.
    let password_file = args.password_file.as_ref().map(|f| {
        std::fs::canonicalize(f)
            .unwrap_or_else(|_| f.clone())
            .display()
            .to_string()
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(out, "error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let code = crate::spawn::block_on(
        &rt,
        run(args, login.as_ref(), password_file.as_deref(), out),
    );
    // A TEARDOWN retry of --probe may still be pending: do not wait.
    rt.shutdown_background();
    code
}

async fn run(
    args: &DiscoverArgs,
    login: Option<&Login>,
    password_file: Option<&str>,
    out: &mut dyn Write,
) -> u8 {
    let wait = Duration::from_secs(args.wait_secs.into());
    let on = match args.interface {
        Some(ip) => ip.to_string(),
        None => "the default multicast route".to_owned(),
    };
    let id = proto::message_id(random::<16>());
    let (found, unreadable) = match client::discover(args.interface, wait, &id).await {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(out, "error: {e:#}");
            return 1;
        }
    };
    if found.is_empty() {
        let _ = writeln!(
            out,
            "no ONVIF device answered within {} s on {on}: check that the cameras are on this LAN and ONVIF is enabled",
            args.wait_secs
        );
        if unreadable > 0 {
            let _ = writeln!(
                out,
                "({unreadable} unreadable WS-Discovery answer(s) ignored)"
            );
        }
        return 1;
    }
    let _ = writeln!(
        out,
        "# {} ONVIF device(s) answered within {} s on {on}.",
        found.len(),
        args.wait_secs
    );
    let mut names: Vec<String> = Vec::new();
    let mut blocks = 0usize;
    for f in &found {
        let m = &f.probe_match;
        let host = f.from.ip().to_string();
        let label = m.name.as_deref().or(m.hardware.as_deref());
        let _ = writeln!(out, "\n# {host}: {}", label.unwrap_or("(no name scope)"));
        let Some(device) = device_url(m, f.from.ip()) else {
            let _ = writeln!(
                out,
                "# {host}: no usable device service address in its answer"
            );
            continue;
        };
        let streams = match streams(&device, login).await {
            Ok(s) => s,
            Err(e) => {
                let _ = out.write_all(device_error(&host, &device, e, login.is_some()).as_bytes());
                continue;
            }
        };
        for s in streams {
            let (text, target) = stream_text(s, &host, label, login, password_file, &mut names);
            let _ = out.write_all(text.as_bytes());
            let Some(target) = target else {
                continue;
            };
            blocks += 1;
            if args.probe {
                let r = crate::sources::rtsp::probe(
                    &target,
                    PROBE_TIMING,
                    None,
                    &CancellationToken::new(),
                )
                .await;
                let _ = out.write_all(probe_text(&r).as_bytes());
            }
            let _ = writeln!(out);
        }
    }
    if blocks == 0 {
        let _ = writeln!(out, "# no camera block: see the lines above for why");
        return 1;
    }
    0
}

// The text is built in plain functions, not in `run`: every line
// written inside an async fn grows its state machine (measured: `run`
// was 10.7 KB of aarch64 code with it all inline).

/// Why a device gave nothing, in plain words.
fn device_error(host: &str, device: &url::Url, e: CallError, login_given: bool) -> String {
    match e {
        CallError::Auth if !login_given => format!(
            "# {host} wants a user name and password: run again with --user and --password-file\n"
        ),
        CallError::Auth => format!(
            "# auth failed for {host}: wrong username/password, or the camera's clock is off by more than ~5 s (WS-Security is time-checked)\n"
        ),
        CallError::Other(e) => format!("# {host}: ONVIF request to {device} failed: {e:#}\n"),
    }
}

/// One stream's comment line and block, and what to probe when a block
/// was printed.
fn stream_text(
    s: Stream,
    host: &str,
    label: Option<&str>,
    login: Option<&Login>,
    password_file: Option<&str>,
    names: &mut Vec<String>,
) -> (String, Option<Target>) {
    let p = &s.profile;
    let mut o = format!("# {} stream: profile {:?}", s.role, p.name);
    if let Some(e) = &p.encoding {
        let _ = write!(o, " {e}");
    }
    if let Some((w, h)) = p.resolution {
        let _ = write!(o, " {w}x{h}");
    }
    o.push('\n');
    let url = match s.uri {
        Ok(u) => u,
        Err(e) => {
            let _ = writeln!(o, "# {host}: {e}");
            return (o, None);
        }
    };
    if let Some(l) = login.filter(|l| !l.password.0.is_empty()) {
        if url.as_str().contains(&l.password.0) {
            let _ = writeln!(
                o,
                "# {host}: the camera's stream URI carries the password; not printed"
            );
            return (o, None);
        }
    }
    let mut name = proto::camera_name(label, host, s.role);
    let base = name.clone();
    let mut n = 2;
    while names.contains(&name) {
        name = format!("{}-{n}", &base[..base.len().min(59)]);
        n += 1;
    }
    names.push(name.clone());
    let user = login.map(|l| l.user.as_str());
    o.push_str(&proto::camera_block(
        &name,
        url.as_str(),
        user,
        password_file,
    ));
    if login.is_some() && password_file.is_none() {
        let _ = writeln!(
            o,
            "# password_file = \"/etc/sitewatch/{name}.pass\"  (put the password there, chmod 600)"
        );
    }
    let target = Target {
        name,
        url,
        creds: login.map(|l| Credentials {
            username: l.user.clone(),
            password: l.password.0.clone(),
        }),
        transport: TransportKind::Tcp,
        min_fps: None,
    };
    (o, Some(target))
}

/// `probe`'s plain-words report as comment lines.
fn probe_text(r: &crate::sources::rtsp::ProbeReport) -> String {
    let mut o = String::from("# probe:\n");
    for line in crate::sources::rtsp::cli::human(r).lines() {
        let _ = writeln!(o, "#   {line}");
    }
    o
}
