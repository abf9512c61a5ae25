//! Camera rows (rtsp): a real probe of each configured camera.

use super::RtspConfig;
use crate::check::{row, Row, Verdict};

/// One row per configured camera: a real probe of each (the configured
/// concurrency limit holds), its class and what to do about it.
pub async fn rows(cfg: Option<&RtspConfig>) -> Vec<Row> {
    let Some(rtsp) = cfg else {
        return vec![row(
            "cameras",
            Verdict::Warning,
            "no [rtsp] table: camera streams are not watched",
            "add the cameras as [[rtsp.camera]] (try one with `sitewatch-agent probe URL`)",
        )];
    };
    crate::sources::rtsp::cli::probe_all(rtsp.clone())
        .await
        .iter()
        .map(|r| {
            let (verdict, todo) = match r.class {
                crate::sources::rtsp::Class::Ok if r.warnings.is_empty() => {
                    (Verdict::Ok, String::new())
                }
                crate::sources::rtsp::Class::Ok
                | crate::sources::rtsp::Class::LowFps
                | crate::sources::rtsp::Class::Frozen => {
                    (Verdict::Warning, r.class.advice().to_owned())
                }
                _ => (Verdict::Failed, r.class.advice().to_owned()),
            };
            row(
                format!("camera {}", r.camera),
                verdict,
                format!("{}: {}", r.class.as_str(), r.detail),
                todo,
            )
        })
        .collect()
}
