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

pub mod cli;
pub mod config;
pub mod measure;
pub mod probe;
pub mod schedule;
pub mod verdict;

pub use config::{CameraConfig, Credentials, ProbeTiming, RtspConfig, Target, TransportKind};
pub use measure::Measurements;
pub use probe::{probe, ProbeReport};
pub use schedule::{run, Output};
pub use verdict::{ChangeKind, Class, Warning};
