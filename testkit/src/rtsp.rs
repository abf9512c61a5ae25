//! The RTSP camera fixture: `scripts/rtsp-test-server.py`, GStreamer's
//! gst-rtsp-server from Debian's packages serving H.264 and H.265 test
//! streams, with user `admin` behind the chosen authentication.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::ChildGuard;

/// The interpreter the fixture runs under (Debian's, which has `gi`).
pub const PYTHON: &str = "/usr/bin/python3";

/// A running fixture server on ports it picked itself (`--port 0`).
/// Dropping it stops the server.
pub struct RtspFixture {
    /// The server process (its log, or to kill it mid-test).
    pub child: ChildGuard,
    /// The RTSP port.
    pub port: u16,
    /// A port that accepts TCP connections and never answers (a camera
    /// whose RTSP server hangs).
    pub blackhole: u16,
}

impl RtspFixture {
    /// Starts the fixture on 127.0.0.1 with `auth` (`none`, `basic` or
    /// `digest`) for user `admin` and `password`.
    pub fn start(auth: &str, password: &str) -> anyhow::Result<RtspFixture> {
        RtspFixture::start_with(Command::new(PYTHON), auth, password)
    }

    /// As [`RtspFixture::start`], with the interpreter run by `python`
    /// (e.g. `ip netns exec NS /usr/bin/python3`, to serve inside a
    /// network namespace).
    pub fn start_with(
        mut python: Command,
        auth: &str,
        password: &str,
    ) -> anyhow::Result<RtspFixture> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rtsp-test-server.py");
        let mut child = ChildGuard::spawn(python.arg(script).args([
            "--port",
            "0",
            "--auth",
            auth,
            "--user",
            "admin",
            "--password",
            password,
        ]))
        .context("starting rtsp-test-server.py (needs python3-gi gir1.2-gst-rtsp-server-1.0)")?;
        // GStreamer's first start on a cold machine loads its plugin
        // registry: seconds, not milliseconds.
        if let Err(e) = child.wait_for_log("READY port=", Duration::from_secs(20)) {
            return Err(e.context(format!(
                "rtsp-test-server.py did not get ready; its log:\n{}",
                child.log_contents()
            )));
        }
        let log = child.log_contents();
        let line = log
            .lines()
            .find(|l| l.starts_with("READY "))
            .context("no READY line in rtsp-test-server.py's log")?;
        let field = |k: &str| -> anyhow::Result<u16> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {k} in {line:?}"))
        };
        Ok(RtspFixture {
            port: field("port=")?,
            blackhole: field("blackhole=")?,
            child,
        })
    }

    /// The URL of stream `path` (e.g. `h264`) without credentials.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.port)
    }
}
