//! The docs say what the code does today: no promises of future work, every
//! subcommand the binaries offer is documented, the OpenWrt paths named in
//! the docs are the ones the package installs, and `--version` names the
//! build.
//!
//! Reads the files shipped to users (READMEs, `docs/`, the unit files, the
//! OpenWrt package, the sample configs) and runs the real binaries' `--help`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sitewatch_e2e::{agent_bin, bridge_bin};

/// The repository root (this crate lives in `e2e/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// Every file a user reads: top-level and crate READMEs, `docs/`, and the
/// shipped `openwrt/`, `systemd/`, `deploy/` and `examples/` trees (the
/// OpenWrt test stand-ins are not shipped and are left out).
fn user_facing_files() -> Vec<PathBuf> {
    let root = repo();
    let mut out = Vec::new();
    for f in ["README.md", "bridge/README.md", "scripts/bench/README.md"] {
        out.push(root.join(f));
    }
    for dir in ["docs", "openwrt", "systemd", "deploy", "examples"] {
        walk(&root.join(dir), &mut out);
    }
    out.retain(|p| !p.starts_with(root.join("openwrt/tests")));
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lines (as `file:line: text`) in user-facing files where `bad` matches
/// the lowercased line.
fn lines_where(bad: impl Fn(&str) -> bool) -> Vec<String> {
    let root = repo();
    let mut hits = Vec::new();
    for path in user_facing_files() {
        for (n, line) in read(&path).lines().enumerate() {
            if bad(&line.to_lowercase()) {
                let rel = path.strip_prefix(&root).unwrap_or(&path);
                hits.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    hits
}

/// Words that promise work instead of describing it. Each was found in a
/// shipped doc describing a feature that had since landed (or never
/// would): say what the code does today, or file an issue.
const PROMISES: [&str; 6] = [
    "planned",
    "not in this version",
    "(soon)",
    "coming soon",
    "not implemented yet",
    "does not exist yet",
];

#[test]
fn docs_promise_no_future_work() {
    let hits = lines_where(|l| PROMISES.iter().any(|p| l.contains(p)));
    assert!(
        hits.is_empty(),
        "docs promise future work ({PROMISES:?}); say what the code does today:\n{}",
        hits.join("\n")
    );
}

/// The subcommands a binary's `--help` lists (the `Commands:` block).
fn subcommands(bin: &Path) -> Vec<String> {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{} --help failed", bin.display());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut cmds = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            inside = true;
        } else if inside && !line.starts_with("  ") {
            break;
        } else if inside {
            // "  name   Description"; continuation lines are indented deeper.
            let name = line.trim_start();
            if line.len() - name.len() == 2 {
                if let Some(word) = name.split_whitespace().next() {
                    if word != "help" {
                        cmds.push(word.to_owned());
                    }
                }
            }
        }
    }
    assert!(!cmds.is_empty(), "no Commands: block in:\n{text}");
    cmds
}

/// Every subcommand of both binaries is shown in use somewhere a user
/// reads (`sitewatch-agent status`, `sitewatch-bridge migrate` ...).
#[test]
fn every_subcommand_is_documented() {
    let docs: String = user_facing_files().iter().map(|p| read(p)).collect();
    let mut missing = Vec::new();
    for (name, bin) in [
        ("sitewatch-agent", agent_bin()),
        ("sitewatch-bridge", bridge_bin()),
    ] {
        for cmd in subcommands(&bin) {
            let used = format!("{name} {cmd}");
            let documented = docs.contains(&used);
            if !documented {
                missing.push(used);
            }
        }
    }
    assert!(missing.is_empty(), "subcommands no doc shows: {missing:?}");
}

/// The OpenWrt package installs `/etc/init.d/sitewatch` and generates
/// `/var/etc/sitewatch/agent.toml`; a doc that names another init script
/// sends an installer to a file that is not there.
#[test]
fn docs_name_the_init_script_the_openwrt_package_installs() {
    let makefile = read(&repo().join("openwrt/Makefile"));
    assert!(
        makefile.contains("/etc/init.d/sitewatch"),
        "openwrt/Makefile no longer installs /etc/init.d/sitewatch; update this test and the docs"
    );
    let hits = lines_where(|l| {
        l.match_indices("/etc/init.d/").any(|(i, m)| {
            let name: String = l[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            name.starts_with("sitewatch") && name != "sitewatch"
        })
    });
    assert!(
        hits.is_empty(),
        "the init script is /etc/init.d/sitewatch:\n{}",
        hits.join("\n")
    );
}

/// `--version` names the commit and the target, so a field report pins
/// the exact build.
#[test]
fn agent_version_names_commit_and_target() {
    let out = Command::new(agent_bin())
        .arg("--version")
        .output()
        .expect("run --version");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.starts_with(&format!("sitewatch-agent {version} (commit ")),
        "{text}"
    );
    // The build's own target: x86_64 here, aarch64 under qemu, ...
    let arch = std::env::consts::ARCH;
    assert!(
        text.contains(&format!(", {arch}-")),
        "target triple for {arch}: {text}"
    );
    assert!(!text.contains("commit unknown"), "built from git: {text}");
}
