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
    built_binary("sitewatch-agent", "SITEWATCH_AGENT_BIN")
}

/// The `sitewatch-bridge` binary (`SITEWATCH_BRIDGE_BIN` overrides).
pub fn bridge_bin() -> PathBuf {
    built_binary("sitewatch-bridge", "SITEWATCH_BRIDGE_BIN")
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
