//! The real `sitewatch-bridge` binary's exit statuses, which
//! systemd/sitewatch-bridge.service relies on (`RestartPreventExitStatus=78`):
//! an invalid configuration exits 78 (`EX_CONFIG`) so the unit stops
//! restarting it; `check` exits 1 on problems and 0 on a valid file; bad
//! arguments exit 2. Needs no broker and no database: nothing here gets past
//! the configuration, except the valid `check`, which opens no socket.

use std::path::Path;
use std::process::{Command, Output};

const EX_CONFIG: i32 = 78;

fn bridge(args: &[&str], config: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitewatch-bridge"));
    cmd.args(args);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    // Environment overrides would make a bad file valid (or a good one bad).
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SITEWATCH_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run sitewatch-bridge")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A valid configuration pointing at nothing that listens: only `check`
/// may use it here.
fn valid_config(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("valid.toml");
    std::fs::write(
        &p,
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\
         [postgres]\nurl = \"postgresql://sitewatch@127.0.0.1:1/sitewatch\"\n",
    )
    .expect("write valid config");
    p
}

/// Invalid in three ways: a value out of range, a bad listen address and
/// (on its own) TOML that does not parse; plus a file that does not exist.
fn bad_configs(dir: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    let invalid = dir.join("invalid.toml");
    std::fs::write(
        &invalid,
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\
         [postgres]\nurl = \"postgresql://sitewatch@127.0.0.1:1/sitewatch\"\n\
         [batch]\nmax_messages = 0\n[http]\nlisten = \"here\"\n",
    )
    .expect("write invalid config");
    let unparsable = dir.join("unparsable.toml");
    std::fs::write(&unparsable, "[mqtt\nurl = \n").expect("write unparsable config");
    vec![
        ("invalid values", invalid),
        ("not TOML", unparsable),
        ("missing file", dir.join("does-not-exist.toml")),
    ]
}

#[test]
fn invalid_config_exits_78_for_every_command_but_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (what, cfg) in bad_configs(dir.path()) {
        // The service itself (what systemd runs), migrate and forget.
        for args in [
            &[][..],
            &["migrate"][..],
            &["forget", "site", "no-such-site"][..],
        ] {
            let out = bridge(args, Some(&cfg));
            assert_eq!(
                out.status.code(),
                Some(EX_CONFIG),
                "{what}, sitewatch-bridge {args:?}: {}",
                describe(&out)
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("problem(s) in the configuration"),
                "{what}, {args:?}: {}",
                describe(&out)
            );
        }
        // `check` reports problems with 1, like the agent's `check`.
        let out = bridge(&["check"], Some(&cfg));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}, check: {}",
            describe(&out)
        );
    }
}

#[test]
fn valid_check_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = valid_config(dir.path());
    let out = bridge(&["check"], Some(&cfg));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": ok"),
        "{}",
        describe(&out)
    );
    // The shipped example too (what docs/install-systemd.md starts from).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bridge.toml");
    let out = bridge(&["check"], Some(&example));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn bad_arguments_exit_2() {
    for args in [&["--no-such-option"][..], &["no-such-command"][..], &[][..]] {
        // The last one: no --config at all.
        let out = bridge(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
}

/// `--help` names both stores and documents the exit statuses.
#[test]
fn help_names_loki_and_exit_statuses() {
    let out = bridge(&["--help"], None);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["PostgreSQL", "Loki", "Exit status:", "78", "EX_CONFIG"] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}
