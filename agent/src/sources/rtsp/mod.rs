//! RTSP camera probes: play each stream briefly and judge it like a person
//! looking at the picture would.
//!
//! - [`config`]: the `[rtsp]` table → [`RtspConfig`]; camera URL
//!   splitting and redaction (credentials never stay in a URL).
//! - [`probe`]: one probe (DNS, TCP, DESCRIBE/SETUP/PLAY with retina,
//!   frames for a window, TEARDOWN), every step under its own timeout.
//! - [`measure`] and [`verdict`]: pure figures and classification (the
//!   class table is in [`verdict`]); unit tested without a server.
//! - [`schedule`]: [`run`], the daemon's scheduler (jitter, concurrency
//!   limit, backoff) producing [`Output`]s for the publisher.
//! - [`cli`]: `sitewatch-agent probe` for installers.

mod check;
pub mod cli;
pub mod config;
pub mod forward;
pub mod measure;
pub mod probe;
pub mod schedule;
pub mod verdict;

pub use config::{CameraConfig, Credentials, ProbeTiming, RtspConfig, Target, TransportKind};
pub use measure::Measurements;
pub use probe::{probe, ProbeReport};
pub use schedule::{run, Output};
pub use verdict::{ChangeKind, Class, Warning};

use super::{Context, Running, Source};
use crate::check::Row;
use crate::config::Doc;
use crate::uplink::publish::Publisher;
use std::future::Future;

/// Camera probes in the registry (off without an `[rtsp]` table); the
/// scheduler reports to [`forward_rtsp`](forward::forward_rtsp).
pub struct RtspSource;

impl Source for RtspSource {
    const NAME: &'static str = "rtsp";
    type Raw = Option<config::RtspRaw>;
    type Config = Option<RtspConfig>;

    fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        super::read_optional(doc, Self::NAME, problems, config::read)
    }

    fn validate(raw: Self::Raw, problems: &mut Vec<String>) -> Option<Self::Config> {
        match raw {
            None => Some(None),
            Some(raw) => config::validate(raw, problems).map(Some),
        }
    }

    fn summary(cfg: &Self::Config) -> Option<String> {
        Some(match cfg {
            Some(r) => format!("RTSP: {}", r.summary()),
            None => "RTSP probes off (no [rtsp] table)".to_owned(),
        })
    }

    fn start(cx: &Context, cfg: &Self::Config) -> Option<Box<dyn Running>> {
        let cfg = cfg.clone()?;
        Some(cx.spawn_reporting(move |tx, stop| run(cfg, tx, stop), forward::forward_rtsp))
    }

    fn check(cfg: &Self::Config) -> impl Future<Output = Vec<Row>> {
        check::rows(cfg.as_ref())
    }

    async fn once(p: &Publisher, cfg: &Self::Config, note: &mut dyn FnMut(String)) {
        let Some(r) = cfg.as_ref().filter(|r| !r.cameras.is_empty()) else {
            note("rtsp: no cameras configured".into());
            return;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let fwd = crate::spawn::spawn(forward::forward_rtsp(p.clone(), rx));
        for report in cli::probe_all(r.clone()).await {
            let report = Box::new(report);
            // As the scheduler's first probe of each camera.
            let changed = schedule::change(None, report.class).map(|kind| Output::Changed {
                camera: report.camera.clone(),
                from: None,
                to: report.class,
                kind,
                report: report.clone(),
            });
            for o in std::iter::once(Output::Probed(report)).chain(changed) {
                let _ = tx.send(o).await;
            }
        }
        drop(tx);
        let _ = fwd.await;
    }
}
