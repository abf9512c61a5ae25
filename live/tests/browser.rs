//! A real browser: Debian's Chromium, headless, opens the live page with
//! the viewer token, plays the fixture's H.264 camera through hls.js
//! (served by the binary), and reads a decoded frame back from a canvas:
//! the fixture's white ball must be there (not a black or empty player).
//! A screenshot is written next to the test's temporary files. Driven by
//! `tests/browser/play.mjs` (Node, DevTools protocol over a pipe).

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sitewatch_testkit::{free_port, wait_until, ChildGuard};

mod util;
use util::{get, live_bin, rtsp_server, write, SECRET};

const TOKEN: &str = "browser-token-0123456789";

#[test]
fn chromium_plays_h264_through_hls_js() {
    util::ensure_package("chromium", "chromium");
    util::ensure_package("node", "nodejs");
    let server = rtsp_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = write(dir.path(), "pw", &format!("{SECRET}\n"));
    let tok = write(dir.path(), "token", &format!("{TOKEN}\n"));
    let port = free_port();
    let cfg = write(
        dir.path(),
        "live.toml",
        &format!(
            r#"
[http]
listen = "127.0.0.1:{port}"
[postgres]
url = "postgresql://nobody@127.0.0.1:1/none"
[probe]
interval_secs = 0
[auth]
token_file = "{tok}"
[[sites]]
site = "s1"
host = "127.0.0.1"
port = {rtsp}
username = "admin"
password_file = "{pw}"
[[sites.cameras]]
camera = "cam"
path = "/secure"
"#,
            tok = tok.display(),
            pw = pw.display(),
            rtsp = server.port,
        ),
    );
    let mut live = ChildGuard::spawn(Command::new(live_bin()).arg("--config").arg(&cfg))
        .expect("spawn sitewatch-live");
    wait_until(Duration::from_secs(15), "sitewatch-live /healthz", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/healthz", None).0 == 200
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", live.log_contents()));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.mjs");
    let shot = dir.path().join("live-page.png");
    let url = format!("http://127.0.0.1:{port}/?token={TOKEN}&site=s1&camera=cam");
    let t0 = Instant::now();
    let out = Command::new("node")
        .arg(&script)
        .arg("chromium")
        .arg(&url)
        .arg(&shot)
        .arg("30")
        .output()
        .expect("run node play.mjs");
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    println!("first decoded frame read back after {took:?} (browser start included)");
    assert!(
        out.status.success(),
        "Chromium did not show a decoded frame: {stdout}\n{}\nlive log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        live.log_contents()
    );
    let line: &str = stdout.lines().last().unwrap_or("");
    assert!(
        line.contains("\"w\":640") && line.contains("\"h\":360"),
        "{line}"
    );
    let png = std::fs::metadata(&shot).expect("screenshot written");
    assert!(png.len() > 1000);
    println!("screenshot {} ({} B)", shot.display(), png.len());
    if let Ok(keep) = std::env::var("SITEWATCH_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
    let _ = live.terminate();
    assert!(!live.log_contents().contains(SECRET));
}
