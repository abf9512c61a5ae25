//! Build facts compiled into the agent:
//! - `SITEWATCH_BUILD_UNIX`, the build time for the clock plausibility
//!   check (`src/clock.rs`): `SOURCE_DATE_EPOCH` when set (reproducible
//!   builds), else now;
//! - `SITEWATCH_BUILD_COMMIT`, the commit `--version` prints: the
//!   environment variable of that name when set (package builds from a
//!   tarball have no `.git`), else `git rev-parse`, else `unknown`;
//! - `SITEWATCH_BUILD_TARGET`, the target triple, so a binary copied onto
//!   the wrong gateway says what it was built for.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=SITEWATCH_BUILD_COMMIT");
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=SITEWATCH_BUILD_UNIX={secs}");
    println!("cargo:rustc-env=SITEWATCH_BUILD_COMMIT={}", commit());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SITEWATCH_BUILD_TARGET={target}");
}

/// The commit being built, short form.
fn commit() -> String {
    if let Ok(c) = std::env::var("SITEWATCH_BUILD_COMMIT") {
        if !c.trim().is_empty() {
            return c.trim().to_owned();
        }
    }
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it
    // points to (a commit). Both paths are relative to this crate.
    let git_dir = Path::new("../.git");
    if git_dir.is_dir() {
        println!("cargo:rerun-if-changed=../.git/HEAD");
        if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
            if let Some(r) = head.trim().strip_prefix("ref: ") {
                // A missing watched file would rebuild every time, and a
                // ref may live in packed-refs instead.
                for f in [r, "packed-refs"] {
                    if git_dir.join(f).is_file() {
                        println!("cargo:rerun-if-changed=../.git/{f}");
                    }
                }
            }
        }
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
