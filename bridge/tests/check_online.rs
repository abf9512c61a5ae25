//! `sitewatch-bridge check --online` against real services: a private
//! mosquitto, a PostgreSQL and the Loki stand-in (which checks bearer
//! tokens as Loki's gateway would). Everything reachable: exit 0 and one
//! `ok` line per service. Then each service broken in its own way: the
//! check names the service and what is wrong, and exits 1.

use std::process::Command;

use sitewatch_testkit::{LokiReceiver, Mosquitto, Postgres};

fn check_online(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitewatch-bridge"));
    cmd.args(["check", "--online", "--config"]).arg(&path);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SITEWATCH_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run sitewatch-bridge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn config(mqtt: &str, pg_port: u16, loki: &str, token: &str) -> String {
    format!(
        "[mqtt]\nurl = \"{mqtt}\"\nclient_id = \"check-test\"\n\
         [postgres]\nurl = \"postgresql://postgres@127.0.0.1:{pg_port}/postgres\"\n\
         connect_timeout_secs = 2\n\
         [loki]\nurl = \"{loki}\"\nallow_plaintext = true\nbearer_token = \"{token}\"\n"
    )
}

#[test]
fn every_service_is_reached_and_each_failure_is_named() {
    let mosquitto = Mosquitto::start().expect("start mosquitto");
    let mut pg = Postgres::start().expect("start postgres");
    let loki = LokiReceiver::builder()
        .require_bearer("s3cret-token")
        .start()
        .expect("start Loki stand-in");
    let push = format!("{}/loki/api/v1/push", loki.url());

    let (code, text) = check_online(&config(&mosquitto.url(), pg.port(), &push, "s3cret-token"));
    assert_eq!(code, 0, "{text}");
    for service in ["broker", "postgres", "loki"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(service)),
            "no ok line for {service}:\n{text}"
        );
    }
    assert!(
        text.contains("the bridge migrates it"),
        "a fresh database: the schema step says the bridge will migrate it:\n{text}"
    );
    assert_eq!(loki.entry_count(), 0, "the Loki check stored nothing");
    assert!(
        !text.contains("s3cret-token"),
        "a secret was printed:\n{text}"
    );

    // Broken: no broker on that port, database down, wrong Loki token and
    // then a wrong Loki path.
    let dead_port = sitewatch_testkit::free_port();
    pg.stop().expect("stop postgres");
    let (code, text) = check_online(&config(
        &format!("mqtt://127.0.0.1:{dead_port}"),
        pg.port(),
        &push,
        "wrong-token",
    ));
    assert_eq!(code, 1, "{text}");
    let line = |service: &str| {
        text.lines()
            .find(|l| l.starts_with("FAILED") && l.contains(service))
            .unwrap_or_else(|| panic!("no FAILED line for {service}:\n{text}"))
            .to_owned()
    };
    assert!(line("broker").contains("nothing listens there"), "{text}");
    assert!(line("postgres").contains("nothing listens there"), "{text}");
    assert!(line("loki").contains("refused the credentials"), "{text}");
    assert!(text.contains("3 of 3 step(s) failed"), "{text}");

    let (_, text) = check_online(&config(
        &mosquitto.url(),
        pg.port(),
        &format!("{}/wrong/path", loki.url()),
        "s3cret-token",
    ));
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAILED") && l.contains("not Loki's push endpoint")),
        "{text}"
    );
}
