//! TLS to PostgreSQL against a real server started with `ssl = on`, its
//! certificate issued by the project's own CA script
//! (`scripts/issue-cert.sh`), and `pg_hba.conf` accepting TCP clients only
//! over TLS, as a managed database does. Each libpq `sslmode` is checked
//! for what it must accept and what it must refuse; the server itself
//! reports whether the session is encrypted (`pg_stat_ssl`).

use std::path::{Path, PathBuf};
use std::process::Command;

use sitewatch_bridge::config::{Config, ConfigProblems};
use sitewatch_testkit::Postgres;

struct Pki {
    _dir: tempfile::TempDir,
    /// The CA that signed the server certificates.
    ca: PathBuf,
    /// Another CA, which signed nothing the server presents.
    wrong_ca: PathBuf,
    /// Server certificate naming `localhost` and 127.0.0.1.
    by_ip: (PathBuf, PathBuf),
    /// Server certificate naming only `db.invalid`.
    other_name: (PathBuf, PathBuf),
}

fn issue(dir: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/issue-cert.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run issue-cert.sh");
    assert!(
        out.status.success(),
        "issue-cert.sh {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    issue(&a, &["ca"]);
    issue(&a, &["server", "localhost", "127.0.0.1"]);
    issue(&a, &["server", "db.invalid"]);
    issue(&b, &["ca"]);
    let pair = |host: &str| {
        let d = a.join("server").join(host);
        (d.join("server.pem"), d.join("server.key"))
    };
    Pki {
        ca: a.join("ca.pem"),
        wrong_ca: b.join("ca.pem"),
        by_ip: pair("localhost"),
        other_name: pair("db.invalid"),
        _dir: dir,
    }
}

fn config(port: u16, host: &str, extra: &str) -> Result<Config, ConfigProblems> {
    let text = format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[postgres]\n\
         url = \"postgresql://postgres@{host}:{port}/postgres\"\n{extra}\n"
    );
    Config::from_toml(&text, |_| None)
}

/// Connects with the bridge's own `connect` and asks the server whether
/// this session is encrypted.
fn connect(pg: &Postgres, host: &str, extra: &str) -> anyhow::Result<bool> {
    let config = config(pg.port(), host, extra).map_err(|p| anyhow::anyhow!("{p}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = sitewatch_bridge::sink::postgres::connect(&config.postgres).await?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(row.get::<_, bool>(0))
    })
}

fn root(path: &Path) -> String {
    format!("sslrootcert = {:?}\n", path.display().to_string())
}

#[test]
fn each_sslmode_accepts_and_refuses_what_libpq_does() {
    let pki = pki();
    let mut pg = Postgres::start().expect("start postgres");
    pg.enable_tls(&pki.by_ip.0, &pki.by_ip.1, true)
        .expect("enable TLS");

    // The server takes TCP clients only over TLS: without it, refused.
    let err = connect(&pg, "127.0.0.1", "sslmode = \"disable\"").expect_err("disable refused");
    assert!(
        format!("{err:#}").contains("no encryption"),
        "the refusal names the missing TLS: {err:#}"
    );
    // prefer and require encrypt without checking the certificate.
    assert!(connect(&pg, "127.0.0.1", "").expect("default (prefer)"));
    assert!(connect(&pg, "127.0.0.1", "sslmode = \"require\"").expect("require"));
    // verify-full: the CA and the name (IP SAN here, DNS SAN next).
    let full = format!("sslmode = \"verify-full\"\n{}", root(&pki.ca));
    assert!(connect(&pg, "127.0.0.1", &full).expect("verify-full by IP"));
    assert!(connect(&pg, "localhost", &full).expect("verify-full by name"));
    // The same in the URL, as a managed service's connection string has it.
    let in_url = format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[postgres]\n\
         url = \"postgresql://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}\"\n",
        pg.port(),
        pki.ca.display()
    );
    let c = Config::from_toml(&in_url, |_| None).expect("URL with sslmode=verify-full");
    assert_eq!(
        c.postgres.tls.mode,
        sitewatch_bridge::sink::postgres::tls::SslMode::VerifyFull
    );

    // A CA that did not sign the server's certificate is refused, also by
    // require (libpq: with sslrootcert, require checks like verify-ca).
    for mode in ["verify-full", "verify-ca", "require"] {
        let extra = format!("sslmode = \"{mode}\"\n{}", root(&pki.wrong_ca));
        let err = connect(&pg, "127.0.0.1", &extra).expect_err("wrong CA refused");
        let text = format!("{err:#}");
        // Both CAs carry the script's subject name, so WebPKI finds an
        // issuer by name and then rejects its signature.
        assert!(
            text.contains("invalid peer certificate"),
            "{mode} with the wrong CA: {text}"
        );
    }

    // A certificate for another name: verify-ca takes it, verify-full not.
    pg.enable_tls(&pki.other_name.0, &pki.other_name.1, true)
        .expect("switch certificate");
    let ca = format!("sslmode = \"verify-ca\"\n{}", root(&pki.ca));
    assert!(connect(&pg, "127.0.0.1", &ca).expect("verify-ca ignores the name"));
    let err = connect(&pg, "127.0.0.1", &full).expect_err("verify-full checks the name");
    assert!(
        format!("{err:#}").contains("not valid for name"),
        "verify-full with a certificate for db.invalid: {err:#}"
    );
}

#[test]
fn a_server_without_tls_takes_prefer_and_refuses_require() {
    let pg = Postgres::start().expect("start postgres");
    assert!(!connect(&pg, "127.0.0.1", "").expect("prefer falls back to plain"));
    assert!(!connect(&pg, "127.0.0.1", "sslmode = \"disable\"").expect("disable"));
    let err = connect(&pg, "127.0.0.1", "sslmode = \"require\"").expect_err("require refused");
    assert!(
        format!("{err:#}").to_lowercase().contains("tls")
            || format!("{err:#}").to_lowercase().contains("ssl"),
        "{err:#}"
    );
}

#[test]
fn tls_problems_are_config_problems_in_plain_words() {
    let problems = |extra: &str| match config(5432, "127.0.0.1", extra) {
        Ok(_) => panic!("{extra:?} accepted"),
        Err(ConfigProblems(p)) => p.join("\n"),
    };
    let p = problems("sslmode = \"verify-full\"\nsslrootcert = \"/nonexistent/ca.pem\"");
    assert!(p.contains("/nonexistent/ca.pem"), "{p}");
    let p = problems("sslmode = \"verify_full\"");
    assert!(p.contains("verify-full"), "names the valid values: {p}");
    let p = problems("sslmode = \"allow\"");
    assert!(p.contains("not supported"), "{p}");
    let p = problems("sslcert = \"/c.pem\"");
    assert!(p.contains("set both or neither"), "{p}");

    // A remote server without a certificate check is allowed, with a
    // warning; a loopback one or a verifying mode gives none.
    let remote = Config::from_toml(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[postgres]\n\
         url = \"postgresql://u@db.example.net/app?sslmode=require\"\n",
        |_| None,
    )
    .expect("valid");
    let w = remote
        .postgres
        .tls_warning()
        .expect("warning for remote require");
    assert!(
        w.contains("verify-full") && w.contains("db.example.net"),
        "{w}"
    );
    assert!(config(5432, "127.0.0.1", "")
        .expect("valid")
        .postgres
        .tls_warning()
        .is_none());
}
