//! The command line prints what clap printed: every case in
//! `fixtures/cli/clap-4.6.json` was recorded from the clap 4.6 build
//! (stdout, stderr and exit status, program name `sitewatch-agent`),
//! before the parser became lexopt plus fixed help text.
//! Cases added since (the `discover` subcommand, and the top-level
//! command list padded to the longer name as clap pads) were recorded
//! from the lexopt build after checking them against clap's rules.

use std::process::Command;

#[test]
fn help_errors_and_statuses_are_claps() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cli/clap-4.6.json"
    ))
    .expect("fixture");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).expect("json");
    assert!(cases.len() > 50);
    let mut wrong = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg"))
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_sitewatch-agent"))
            .args(&args)
            .env_remove("SITEWATCH_ALLOW_INSECURE_PERMISSIONS")
            .output()
            .expect("run the agent");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want_out = case["stdout"].as_str().expect("stdout");
        // `--version` names this build's commit and target.
        let same_out = match want_out.split_once("(commit ") {
            Some((head, _)) => stdout.starts_with(head),
            None => stdout == want_out,
        };
        let status = out.status.code();
        if !same_out
            || stderr != case["stderr"].as_str().expect("stderr")
            || status != case["status"].as_i64().map(|s| s as i32)
        {
            wrong.push(format!(
                "sitewatch-agent {args:?}: status {status:?}\n--- stdout\n{stdout}--- stderr\n{stderr}--- want\n{case:#}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
