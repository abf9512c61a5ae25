//! `sitewatch-agent probe`: the installer's command. Probes one URL (or
//! every configured camera) with the same [`probe`] the daemon uses, and
//! prints a plain-words verdict, one JSON object, or a table.
//!
//! Exit status 0 only when every probed stream is `ok`; 1 otherwise; 2
//! for unusable arguments or config.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::{
    split_url, Credentials, ProbeTiming, Target, TransportKind, MAX_DURATION_SECS,
};
use super::probe::{probe, ProbeReport};

/// Default step timeout of the command (as the daemon's default).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `sitewatch-agent probe`.
#[derive(Debug, Clone)]
pub struct ProbeArgs {
    /// rtsp://host[:port]/path. Without it, every camera in the config
    /// file (-c/--config) is probed and a table is printed.
    pub url: Option<String>,
    /// User name (or put user:password@ in the URL).
    pub user: Option<String>,
    /// Password. Visible to other users in `ps`: prefer --password-file.
    pub password: Option<String>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// RTP transport: tcp (default) or udp.
    pub transport: String,
    /// Seconds to watch the stream.
    pub duration: u32,
    /// Minimum acceptable frame rate (default: 3/4 of what the stream declares).
    pub min_fps: Option<f32>,
    /// Print one JSON object (one per line with --config).
    pub json: bool,
}

fn password(args: &ProbeArgs) -> Result<Option<String>, String> {
    cli_password(args.password.as_deref(), args.password_file.as_deref())
}

/// The password of a command (`probe`, `discover`): `--password` or the
/// first line of `--password-file`, not both.
pub(crate) fn cli_password(
    password: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    match (password, file) {
        (Some(_), Some(_)) => Err("give --password or --password-file, not both".into()),
        (Some(p), None) => Ok(Some(p.to_owned())),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let line = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end_matches('\r');
            Ok(Some(line.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// The probe target for a command-line URL.
pub fn target_from_args(args: &ProbeArgs, url: &str) -> Result<Target, String> {
    let (url, url_creds) = split_url(url).map_err(|e| format!("the URL {e}"))?;
    let pw = password(args)?;
    let creds = match (&args.user, pw, url_creds) {
        (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => {
            return Err(
                "the URL carries user:password@ and --user/--password are given too; keep one"
                    .into(),
            )
        }
        (Some(u), p, None) => Some(Credentials {
            username: u.clone(),
            password: p.unwrap_or_default(),
        }),
        (None, Some(_), None) => return Err("--password needs --user".into()),
        (None, None, c) => c,
    };
    let transport = TransportKind::parse(&args.transport)
        .ok_or_else(|| format!("--transport {}: use tcp or udp", args.transport))?;
    if let Some(f) = args.min_fps {
        if !(f.is_finite() && f > 0.0) {
            return Err(format!("--min-fps {f}: must be above 0"));
        }
    }
    Ok(Target {
        name: "cli".into(),
        url,
        creds,
        transport,
        min_fps: args.min_fps,
    })
}

/// Runs the command; returns the process exit status.
pub fn main(args: &ProbeArgs, config: &Path, out: &mut dyn Write) -> u8 {
    if !(1..=MAX_DURATION_SECS).contains(&args.duration) {
        let _ = writeln!(
            out,
            "error: --duration must be 1 to {MAX_DURATION_SECS} seconds"
        );
        return 2;
    }
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
    let timing = ProbeTiming {
        duration: Duration::from_secs(args.duration.into()),
        step_timeout: STEP_TIMEOUT,
    };
    let code = match &args.url {
        Some(url) => {
            let target = match target_from_args(args, url) {
                Ok(t) => t,
                Err(e) => {
                    let _ = writeln!(out, "error: {e}");
                    return 2;
                }
            };
            let r = crate::spawn::block_on(
                &rt,
                probe(&target, timing, None, &CancellationToken::new()),
            );
            let _ = if args.json {
                writeln!(out, "{}", to_json(&r))
            } else {
                write!(out, "{}", human(&r))
            };
            u8::from(!r.class.is_ok())
        }
        None => {
            let cfg = match crate::config::Config::load(config) {
                Ok(c) => c,
                Err(p) => {
                    let _ = write!(out, "{p}");
                    return 2;
                }
            };
            let Some(rtsp) = cfg.sources.rtsp else {
                let _ = writeln!(
                    out,
                    "error: {} has no [rtsp] table with cameras; give a URL instead",
                    cfg.origin
                );
                return 2;
            };
            let reports = crate::spawn::block_on(&rt, probe_all(rtsp));
            if args.json {
                for r in &reports {
                    let _ = writeln!(out, "{}", to_json(r));
                }
            } else {
                let _ = write!(out, "{}", table(&reports));
            }
            u8::from(!reports.iter().all(|r| r.class.is_ok()))
        }
    };
    // A TEARDOWN retry may still be pending: do not wait for it.
    rt.shutdown_background();
    code
}

/// Probes every configured camera, at most `max_concurrent` at a time;
/// reports in config order.
pub async fn probe_all(cfg: super::RtspConfig) -> Vec<ProbeReport> {
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let n = cfg.cameras.len();
    for (i, cam) in cfg.cameras.into_iter().enumerate() {
        let sem = Arc::clone(&sem);
        crate::spawn::spawn_in(&mut set, async move {
            // Never closed, so acquire cannot fail; without a permit the
            // probe would still be correct, only less polite to the NVR.
            let _permit = sem.acquire_owned().await.ok();
            (
                i,
                probe(&cam.target, cam.timing, None, &CancellationToken::new()).await,
            )
        });
    }
    let mut out: Vec<Option<ProbeReport>> = vec![None; n];
    while let Some(r) = set.join_next().await {
        if let Ok((i, rep)) = r {
            out[i] = Some(rep);
        }
    }
    out.into_iter().flatten().collect()
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The plain-words report of one probe.
pub fn human(r: &ProbeReport) -> String {
    let m = &r.measurements;
    let mut s = String::new();
    let verdict = match r.class.status() {
        Some(code) if !matches!(r.class, super::Class::Auth | super::Class::NotFound) => {
            format!("{} {code}", r.class.as_str())
        }
        _ => r.class.as_str().to_owned(),
    };
    let _ = writeln!(s, "stream:    {} ({})", r.url, r.transport.as_str());
    let _ = writeln!(
        s,
        "verdict:   {} — {}",
        verdict.to_uppercase(),
        r.class.advice()
    );
    let _ = writeln!(s, "detail:    {}", r.detail);
    if !r.warnings.is_empty() {
        let w: Vec<&str> = r.warnings.iter().map(|w| w.as_str()).collect();
        let _ = writeln!(s, "warnings:  {}", w.join(", "));
    }
    if m.codec.is_some() || m.frames.is_some() {
        let size = match (m.width, m.height) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => "-".into(),
        };
        let _ = writeln!(s, "video:     {} {size}", opt(m.codec.as_deref()));
        let f = |v: Option<f32>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "fps:       {} (RTP time), {} (arrivals), declared {}",
            f(m.fps_rtp),
            f(m.fps_wall),
            f(m.declared_fps)
        );
        let _ = writeln!(s, "bitrate:   {} kbit/s", opt(m.bitrate_kbps));
        let _ = writeln!(
            s,
            "keyframes: {} every {} s",
            opt(m.keyframes),
            f(m.keyframe_interval_s)
        );
        let _ = writeln!(
            s,
            "timing:    first frame {} ms, first keyframe {} ms",
            opt(m.ttff_ms),
            opt(m.ttfk_ms)
        );
        let _ = writeln!(
            s,
            "frames:    {} received, {} RTP packets lost, RTP/wall time {}",
            opt(m.frames),
            opt(m.loss),
            f(m.rtp_wall_ratio)
        );
    }
    let _ = writeln!(s, "probe took {} ms", r.duration_ms);
    s
}

/// One line per camera.
pub fn table(reports: &[ProbeReport]) -> String {
    let mut s = format!(
        "{:<20} {:<16} {:>6} {:<18} {:>10} {:>8} {:>7}  {}\n",
        "camera", "class", "fps", "codec", "size", "kbit/s", "ttff", "detail"
    );
    for r in reports {
        let m = &r.measurements;
        let size = match (m.width, m.height) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => "-".into(),
        };
        let class = match r.class {
            super::Class::RtspStatus(c) => format!("rtsp_status {c}"),
            c => c.as_str().to_owned(),
        };
        let _ = writeln!(
            s,
            "{:<20} {:<16} {:>6} {:<18} {:>10} {:>8} {:>7}  {}",
            r.camera,
            class,
            m.fps_rtp
                .or(m.fps_wall)
                .map(|f| format!("{f:.1}"))
                .unwrap_or_else(|| "-".into()),
            opt(m.codec.as_deref()),
            size,
            opt(m.bitrate_kbps),
            m.ttff_ms
                .map(|t| format!("{t}ms"))
                .unwrap_or_else(|| "-".into()),
            r.detail
        );
    }
    s
}

/// Appends `v` as a JSON string (quoted, escaped).
pub fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a JSON number, or `null` for `None` or a non-finite float.
fn json_num<T: std::fmt::Display>(out: &mut String, v: Option<T>) {
    match v {
        Some(v) => {
            let s = v.to_string();
            if s.parse::<f64>().is_ok_and(f64::is_finite) {
                out.push_str(&s);
            } else {
                out.push_str("null");
            }
        }
        None => out.push_str("null"),
    }
}

/// A float rounded to `places` decimals (JSON output stays short).
fn round(v: Option<f32>, places: i32) -> Option<f64> {
    let p = 10f64.powi(places);
    v.map(|v| (f64::from(v) * p).round() / p)
}

/// One probe as a JSON object (hand-written: the agent has no
/// serde_json). `fps` is the RTP-time rate, else the arrival rate.
pub fn to_json(r: &ProbeReport) -> String {
    let m = &r.measurements;
    let mut o = String::with_capacity(512);
    o.push_str("{\"camera\":");
    json_str(&mut o, &r.camera);
    o.push_str(",\"url\":");
    json_str(&mut o, &r.url);
    o.push_str(",\"transport\":");
    json_str(&mut o, r.transport.as_str());
    o.push_str(",\"class\":");
    json_str(&mut o, r.class.as_str());
    o.push_str(",\"status\":");
    json_num(&mut o, r.class.status());
    o.push_str(",\"warnings\":[");
    for (i, w) in r.warnings.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        json_str(&mut o, w.as_str());
    }
    o.push_str("],\"detail\":");
    json_str(&mut o, &r.detail);
    o.push_str(",\"advice\":");
    json_str(&mut o, r.class.advice());
    let _ = write!(
        o,
        ",\"started_at_ms\":{},\"duration_ms\":{}",
        r.started_at_ms, r.duration_ms
    );
    o.push_str(",\"codec\":");
    match &m.codec {
        Some(c) => json_str(&mut o, c),
        None => o.push_str("null"),
    }
    let nums: [(&str, Option<f64>); 15] = [
        ("width", m.width.map(f64::from)),
        ("height", m.height.map(f64::from)),
        ("fps", round(m.fps_rtp.or(m.fps_wall), 2)),
        ("fps_rtp", round(m.fps_rtp, 2)),
        ("fps_wall", round(m.fps_wall, 2)),
        ("declared_fps", round(m.declared_fps, 2)),
        ("bitrate_kbps", m.bitrate_kbps.map(f64::from)),
        ("keyframe_interval_s", round(m.keyframe_interval_s, 3)),
        ("ttff_ms", m.ttff_ms.map(|v| v as f64)),
        ("ttfk_ms", m.ttfk_ms.map(|v| v as f64)),
        ("loss", m.loss.map(|v| v as f64)),
        ("rtp_wall_ratio", round(m.rtp_wall_ratio, 3)),
        ("frames", m.frames.map(f64::from)),
        ("keyframes", m.keyframes.map(f64::from)),
        ("last_gap_ms", m.last_gap_ms.map(|v| v as f64)),
    ];
    for (k, v) in nums {
        let _ = write!(o, ",\"{k}\":");
        json_num(&mut o, v);
    }
    o.push('}');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#);
        let mut s = String::new();
        json_num(&mut s, Some(f64::NAN));
        json_num(&mut s, Some(2.5f64));
        json_num(&mut s, None::<u8>);
        assert_eq!(s, "null2.5null");
    }

    #[test]
    fn cli_credentials_rules() {
        let args = ProbeArgs {
            url: None,
            user: Some("admin".into()),
            password: Some("pw".into()),
            password_file: None,
            transport: "tcp".into(),
            duration: 8,
            min_fps: None,
            json: false,
        };
        let t = target_from_args(&args, "rtsp://h/x").expect("ok");
        assert_eq!(t.creds.map(|c| c.password), Some("pw".into()));
        assert!(target_from_args(&args, "rtsp://a:b@h/x").is_err());
        let no_user = ProbeArgs {
            user: None,
            ..args.clone()
        };
        assert!(target_from_args(&no_user, "rtsp://h/x").is_err());
        let bad = ProbeArgs {
            transport: "sctp".into(),
            ..args
        };
        assert!(target_from_args(&bad, "rtsp://h/x").is_err());
    }
}
