//! `sitewatch-agent discover` against a stand-in ONVIF camera
//! (`scripts/onvif-test-device.py`: WS-Discovery, device and media
//! service, WS-Security checked exactly; see its header for where each
//! message shape comes from) and the real GStreamer RTSP fixture
//! (`scripts/rtsp-test-server.py`) its stream URIs point at.
//!
//! Multicast stays in two network namespaces made here (`ip netns add`,
//! unique per process and test) joined by a veth pair: the agent and the
//! RTSP fixture in one (10.78.x.1), the camera in the other (10.78.x.2).
//! Without root (no namespaces) the tests print SKIPPED and pass, as the
//! `[reach]` tests do.
//!
//! Asserted: the printed `[[rtsp.camera]]` blocks pass the agent's own
//! `check --config`; `--probe` plays both streams (one needs the RTSP
//! credentials); a wrong password gives the plain-words auth message, as
//! does an answer with HTTP 401 instead of 400; HTTP Digest is answered;
//! no device gives the "none answered" message; the password is never
//! printed.

// The router builds leave the command out (the `discover` feature).
#![cfg(feature = "discover")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sitewatch_testkit::{ChildGuard, RtspFixture};

const PYTHON: &str = "/usr/bin/python3";
const SECRET: &str = "s3cret-Onvif-77";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces and the veth between them; removed on drop.
struct Netns {
    agent: String,
    camera: String,
    agent_ip: String,
    camera_ip: String,
}

impl Netns {
    /// `None` (with the reason printed) when namespaces cannot be made.
    fn create(tag: &str, subnet: u8) -> Option<Netns> {
        let id = format!("{}{tag}", std::process::id());
        let ns = Netns {
            agent: format!("swoa{id}"),
            camera: format!("swoc{id}"),
            agent_ip: format!("10.78.{subnet}.1"),
            camera_ip: format!("10.78.{subnet}.2"),
        };
        if let Err(e) = ip(&["netns", "add", &ns.agent]) {
            eprintln!("SKIPPED: cannot create a network namespace (needs root): {e}");
            return None;
        }
        ip(&["netns", "add", &ns.camera]).expect("camera namespace");
        let (a, c) = (format!("oa{id}"), format!("oc{id}"));
        ip(&[
            "link", "add", &a, "netns", &ns.agent, "type", "veth", "peer", "name", &c, "netns",
            &ns.camera,
        ])
        .expect("veth pair");
        for (n, d, addr) in [
            (&ns.agent, &a, &ns.agent_ip),
            (&ns.camera, &c, &ns.camera_ip),
        ] {
            ip(&["-n", n, "addr", "add", &format!("{addr}/30"), "dev", d]).expect("address");
            ip(&["-n", n, "link", "set", d, "up"]).expect("link up");
            ip(&["-n", n, "link", "set", "lo", "up"]).expect("lo up");
        }
        Some(ns)
    }

    fn exec(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth, and the pair.
        let _ = ip(&["netns", "del", &self.agent]);
        let _ = ip(&["netns", "del", &self.camera]);
    }
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// The GStreamer RTSP fixture in the agent's namespace.
fn rtsp_fixture(ns: &Netns) -> RtspFixture {
    RtspFixture::start_with(Netns::exec(&ns.agent, PYTHON), "digest", SECRET)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The stand-in camera in its namespace.
fn camera(ns: &Netns, rtsp_port: u16, extra: &[&str]) -> ChildGuard {
    let mut child = ChildGuard::spawn(
        Netns::exec(&ns.camera, PYTHON)
            .arg(scripts().join("onvif-test-device.py"))
            .args(["--bind", &ns.camera_ip, "--password", SECRET])
            .args(["--rtsp", &format!("rtsp://127.0.0.1:{rtsp_port}")])
            .args(["--name", "ACME%20Dome%20X1"])
            .args(extra),
    )
    .expect("start onvif-test-device.py");
    child
        .wait_for_log("READY http=", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", child.log_contents()));
    child
}

fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{password}\n")).expect("password file");
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    p
}

fn discover(ns: &Netns, args: &[&str]) -> (Output, String) {
    let out = Netns::exec(&ns.agent, env!("CARGO_BIN_EXE_sitewatch-agent"))
        .args(["discover", "--interface", &ns.agent_ip])
        .args(args)
        .output()
        .expect("run discover");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(SECRET), "the password was printed:\n{text}");
    (out, text)
}

#[test]
fn discovers_prints_checkable_blocks_and_plays_them() {
    let Some(ns) = Netns::create("a", 1) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rtsp = rtsp_fixture(&ns);
    let port = rtsp.port;
    let mut cam = camera(&ns, port, &[]);
    let pw = password_file(dir.path(), "cam.pass", SECRET);
    let pw_arg = pw.to_str().expect("path");

    let (out, text) = discover(
        &ns,
        &["--user", "admin", "--password-file", pw_arg, "--probe"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\ncamera:\n{}",
        cam.log_contents()
    );
    assert_eq!(text.matches("[[rtsp.camera]]").count(), 2, "{text}");
    let cam_ip = ns.camera_ip.replace('.', "-");
    for want in [
        "# 1 ONVIF device(s) answered within 3 s on 10.78.1.1.".to_owned(),
        format!("# {}: ACME Dome X1", ns.camera_ip),
        "# main stream: profile \"mainStream\" H264 1920x1080".to_owned(),
        format!("name = \"acme-dome-x1-{cam_ip}-main\""),
        format!("url = \"rtsp://127.0.0.1:{port}/secure\""),
        format!("name = \"acme-dome-x1-{cam_ip}-sub\""),
        format!("url = \"rtsp://127.0.0.1:{port}/cam1h265idr\""),
        "username = \"admin\"".to_owned(),
        format!("password_file = \"{pw_arg}\""),
    ] {
        assert!(text.contains(&want), "no {want:?} in:\n{text}");
    }
    // Both streams played, the /secure one with the RTSP credentials.
    assert_eq!(text.matches("#   verdict:   OK").count(), 2, "{text}");

    // The blocks, pasted under [rtsp], pass the agent's own check.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("site_id = \"s1\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[rtsp]\n{stdout}"),
    )
    .expect("config");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let check = Command::new(env!("CARGO_BIN_EXE_sitewatch-agent"))
        .args(["check", "--config", config.to_str().expect("path")])
        .output()
        .expect("check");
    let check_text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{check_text}\n{stdout}");
    assert!(check_text.contains("RTSP: 2 camera(s)"), "{check_text}");

    // A wrong password: the camera's ter:NotAuthorized, in plain words.
    let bad = password_file(dir.path(), "bad.pass", "Not-The-Pa55");
    let (out, text) = discover(
        &ns,
        &["-u", "admin", "--password-file", bad.to_str().expect("p")],
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("# auth failed for {}: wrong username/password, or the camera's clock is off by more than ~5 s (WS-Security is time-checked)", ns.camera_ip)),
        "{text}"
    );
    assert!(
        !text.contains("Not-The-Pa55") && !text.contains("[[rtsp.camera]]"),
        "{text}"
    );

    // No credentials: the camera wants some.
    let (out, text) = discover(&ns, &["--wait", "1"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("wants a user name and password"), "{text}");

    // Nobody answers.
    cam.kill().expect("stop the camera");
    let (out, text) = discover(
        &ns,
        &["--wait", "1", "-u", "admin", "--password-file", pw_arg],
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no ONVIF device answered within 1 s on 10.78.1.1: check that the cameras are on this LAN and ONVIF is enabled\n"
    );
}

#[test]
fn http_digest_and_401_faults() {
    let Some(ns) = Netns::create("b", 2) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = password_file(dir.path(), "cam.pass", SECRET);
    let bad = password_file(dir.path(), "bad.pass", "Not-The-Pa55");
    let run = |file: &Path| {
        discover(
            &ns,
            &[
                "-u",
                "admin",
                "--password-file",
                file.to_str().expect("p"),
                "--wait",
                "1",
            ],
        )
    };
    // No RTSP fixture needed: the URIs are printed, not played.
    // A camera that wants HTTP Digest on top of WS-Security.
    let mut cam = camera(&ns, 9, &["--http-digest", "--fault-status", "401"]);
    let (out, text) = run(&pw);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\ncamera:\n{}",
        cam.log_contents()
    );
    assert_eq!(text.matches("[[rtsp.camera]]").count(), 2, "{text}");
    // Wrong password: HTTP Digest fails with 401 again.
    let (out, text) = run(&bad);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("# auth failed for 10.78.2.2:"), "{text}");

    // ter:NotAuthorized with HTTP 401 and no challenge.
    cam.kill().expect("stop the camera");
    let _cam = camera(&ns, 9, &["--fault-status", "401"]);
    let (out, text) = run(&bad);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("# auth failed for 10.78.2.2:"), "{text}");
}
