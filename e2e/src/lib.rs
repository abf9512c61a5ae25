//! Helpers shared by the end-to-end tests in `tests/`.
//!
//! The tests run the real `sitewatch-agent` and `sitewatch-bridge`
//! binaries, the ones `cargo test --workspace` builds into the same target
//! directory as the test executables.
//!
//! [`grafana`] holds the pure helpers of `tests/grafana.rs` (macro
//! expansion, LogQL check, CSV, alert thresholds), unit-tested here.

use std::path::{Path, PathBuf};

pub mod grafana;

/// The `sitewatch-agent` binary (`SITEWATCH_AGENT_BIN` overrides).
pub fn agent_bin() -> PathBuf {
    let p = built_binary("sitewatch-agent", "SITEWATCH_AGENT_BIN");
    if std::env::var_os("SITEWATCH_AGENT_BIN").is_none() {
        refuse_stale(&p, &["agent/src", "wire/src"]);
    }
    p
}

/// The `sitewatch-bridge` binary (`SITEWATCH_BRIDGE_BIN` overrides).
pub fn bridge_bin() -> PathBuf {
    let p = built_binary("sitewatch-bridge", "SITEWATCH_BRIDGE_BIN");
    if std::env::var_os("SITEWATCH_BRIDGE_BIN").is_none() {
        refuse_stale(&p, &["bridge/src", "bridge/migrations", "wire/src"]);
    }
    p
}

/// Panics when a source file under `dirs` (relative to the workspace) is
/// newer than the built binary `bin`: `cargo test -p sitewatch-e2e` does
/// not rebuild the other crates' binaries, and a test against an old one
/// passes or fails for the wrong reason.
fn refuse_stale(bin: &Path, dirs: &[&str]) {
    fn newest(dir: &Path) -> Option<std::time::SystemTime> {
        let mut best = None;
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let m = e.metadata().ok()?;
            let t = if m.is_dir() {
                newest(&e.path())
            } else {
                m.modified().ok()
            };
            best = best.max(t);
        }
        best
    }
    let Some(built) = std::fs::metadata(bin).and_then(|m| m.modified()).ok() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for d in dirs {
        if let Some(t) = newest(&root.join(d)) {
            assert!(
                t <= built,
                "{} is older than {d}/: run `cargo build --workspace` (or \
                 `cargo test --workspace`) so the tests run what the sources say",
                bin.display()
            );
        }
    }
}

/// A binary cargo built next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`), or the
/// path in the environment variable `env`. Panics with the fix when absent.
pub fn built_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found; run `cargo test --workspace` (which builds it) or set {env}",
        p.display()
    );
    p
}
