//! Shared parts of the integration tests: the GStreamer RTSP fixture
//! (`sitewatch_testkit::RtspFixture`),
//! the bridge's schema, files.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sitewatch_testkit::RtspFixture;

/// The binary under test.
pub fn live_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sitewatch-live"))
}

pub const SECRET: &str = "s3cret-Pa55-live";

/// The fixture RTSP server with user `admin` and [`SECRET`] (Digest).
pub fn rtsp_server() -> RtspFixture {
    RtspFixture::start("digest", SECRET).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The bridge's schema in a fresh database, through the bridge's own
/// migrations (the schema owner).
pub fn migrate(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        sitewatch_bridge::sink::migrations::migrate(&mut client)
            .await
            .expect("migrate");
    });
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// A minimal HTTP/1.1 GET: (status, headers, body).
pub fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\r\n"
    )
    .expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head, body)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Installs Debian packages through the scripts' helper when `binary` is
/// missing (the tests need ffprobe and chromium).
pub fn ensure_package(binary: &str, package: &str) {
    if Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return;
    }
    let common = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/common.sh");
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". '{}' && ensure_debian_packages {package}",
            common.display()
        ))
        .status()
        .expect("run ensure_debian_packages");
    assert!(st.success(), "cannot install {package} (for {binary})");
}
