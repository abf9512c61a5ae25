//! Real-broker tests: listeners, TLS, mTLS, restart, cleanup.

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sitewatch_testkit::{sig, wait_until, ChildGuard, Mosquitto, TestCerts};

/// TLS options for mosquitto_pub/mosquitto_sub.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Plain,
    Tls {
        ca: &'a Path,
    },
    Mtls {
        ca: &'a Path,
        cert: &'a Path,
        key: &'a Path,
    },
}

fn client(bin: &str, host: &str, port: u16, auth: Auth<'_>) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["-h", host, "-p", &port.to_string(), "-q", "1"]);
    match auth {
        Auth::Plain => {}
        Auth::Tls { ca } => {
            cmd.arg("--cafile").arg(ca);
        }
        Auth::Mtls { ca, cert, key } => {
            cmd.arg("--cafile")
                .arg(ca)
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
    }
    cmd
}

fn publish_retained(host: &str, port: u16, auth: Auth<'_>, topic: &str, msg: &str) -> Output {
    client("mosquitto_pub", host, port, auth)
        .args(["-r", "-t", topic, "-m", msg])
        .output()
        .expect("run mosquitto_pub (apt-get install mosquitto-clients)")
}

/// Reads one (retained) message, giving up after 5 s.
fn read_one(host: &str, port: u16, auth: Auth<'_>, topic: &str) -> Output {
    client("mosquitto_sub", host, port, auth)
        .args(["-t", topic, "-C", "1", "-W", "5"])
        .output()
        .expect("run mosquitto_sub (apt-get install mosquitto-clients)")
}

fn assert_roundtrip(broker: &Mosquitto, host: &str, port: u16, auth: Auth<'_>, topic: &str) {
    let out = publish_retained(host, port, auth, topic, "hello");
    assert!(
        out.status.success(),
        "publish to {host}:{port} failed: {}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log_contents()
    );
    let out = read_one(host, port, auth, topic);
    assert!(
        out.status.success(),
        "subscribe on {host}:{port} failed: {}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log_contents()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
}

#[test]
fn plain_tls_and_mtls_listeners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::generate(dir.path()).expect("certs");
    let broker = Mosquitto::builder()
        .tls(&certs)
        .mtls(&certs)
        .start()
        .expect("start broker");
    let tls_port = broker.tls_port().expect("tls port");
    let mtls_port = broker.mtls_port().expect("mtls port");
    let ports = [broker.port(), tls_port, mtls_port];
    for port in ports {
        assert!(![1883, 8883, 5432].contains(&port));
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("listener accepts TCP");
    }
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
    assert_eq!(
        broker.tls_url().as_deref(),
        Some(format!("mqtts://localhost:{tls_port}").as_str())
    );
    assert_eq!(
        broker.mtls_url().as_deref(),
        Some(format!("mqtts://localhost:{mtls_port}").as_str())
    );

    let ca = certs.ca_cert.as_path();
    let good = Auth::Mtls {
        ca,
        cert: &certs.client_cert,
        key: &certs.client_key,
    };
    assert_roundtrip(&broker, "127.0.0.1", broker.port(), Auth::Plain, "t/plain");
    assert_roundtrip(&broker, "localhost", tls_port, Auth::Tls { ca }, "t/tls");
    // The server certificate also carries the IP SAN.
    assert_roundtrip(&broker, "127.0.0.1", tls_port, Auth::Tls { ca }, "t/tls-ip");
    assert_roundtrip(&broker, "localhost", mtls_port, good, "t/mtls");

    // Negative cases must fail, not hang.
    let rogue = Auth::Mtls {
        ca,
        cert: &certs.rogue_client_cert,
        key: &certs.rogue_client_key,
    };
    let refused = |what: &str, out: Output| {
        assert!(
            !out.status.success(),
            "{what} was accepted; broker log:\n{}",
            broker.log_contents()
        );
    };
    refused(
        "rogue client certificate on the mTLS port",
        publish_retained("localhost", mtls_port, rogue, "t/rogue", "x"),
    );
    refused(
        "no client certificate on the mTLS port",
        publish_retained("localhost", mtls_port, Auth::Tls { ca }, "t/anon", "x"),
    );
    refused(
        "server certificate checked against the rogue CA",
        publish_retained(
            "localhost",
            tls_port,
            Auth::Tls {
                ca: &certs.rogue_ca_cert,
            },
            "t/wrong-ca",
            "x",
        ),
    );
    refused(
        "plain MQTT on the TLS port",
        publish_retained("127.0.0.1", tls_port, Auth::Plain, "t/plain-on-tls", "x"),
    );
}

#[test]
fn live_subscription_with_child_guard() {
    let broker = Mosquitto::start().expect("start broker");
    assert!(broker.tls_port().is_none() && broker.tls_url().is_none());
    let port = broker.port().to_string();
    let mut sub = ChildGuard::spawn(Command::new("mosquitto_sub").args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "live/#",
        "-v",
        "-C",
        "2",
    ]))
    .expect("spawn mosquitto_sub");
    wait_until(
        Duration::from_secs(10),
        "the SUBSCRIBE in the broker log",
        || broker.log_contents().contains("Received SUBSCRIBE"),
    )
    .expect("subscribed");
    for msg in ["one", "two"] {
        let status = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-t",
                "live/a",
                "-m",
                msg,
            ])
            .status()
            .expect("run mosquitto_pub");
        assert!(status.success());
    }
    let status = sub
        .wait_timeout(Duration::from_secs(10))
        .expect("mosquitto_sub exits after 2 messages");
    assert!(status.success(), "{}", sub.log_contents());
    assert_eq!(sub.log_contents(), "live/a one\nlive/a two\n");
}

#[test]
fn restart_keeps_ports_and_persistence() {
    let mut broker = Mosquitto::builder()
        .persistence(true)
        .extra_config("autosave_interval 1800\nmessage_size_limit 10000")
        .start()
        .expect("start broker");
    let port = broker.port();
    let conf = std::fs::read_to_string(broker.config_path()).expect("config");
    assert!(conf.contains("message_size_limit 10000\n"), "{conf}");
    let out = publish_retained("127.0.0.1", port, Auth::Plain, "keep/me", "persisted");
    assert!(out.status.success());

    // Graceful stop saves the database; restart must load it.
    broker.restart().expect("restart");
    assert_eq!(broker.port(), port);
    let out = read_one("127.0.0.1", port, Auth::Plain, "keep/me");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "persisted");

    // A crash loses nothing that was saved, and the broker comes back on
    // the same port.
    let old_pid = broker.pid().expect("running");
    broker.kill().expect("kill");
    assert!(broker.pid().is_none());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    broker.restart().expect("restart after kill");
    assert_ne!(broker.pid(), Some(old_pid));
    let out = read_one("127.0.0.1", port, Auth::Plain, "keep/me");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "persisted");

    // Frozen broker: TCP connects are still accepted by the kernel, but
    // MQTT gets no answer.
    broker.signal(sig::STOP).expect("SIGSTOP");
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "keep/me"])
        .args(["-C", "1", "-W", "1"])
        .output()
        .expect("run mosquitto_sub");
    assert!(!out.status.success(), "a stopped broker answered");
    broker.signal(sig::CONT).expect("SIGCONT");

    broker.stop().expect("stop");
    assert!(broker.log_contents().contains("Saving in-memory database"));
    let broker_dir = broker.dir().to_path_buf();
    drop(broker);
    assert!(!broker_dir.exists());
}

#[test]
fn drop_kills_broker_and_removes_directory() {
    let broker = Mosquitto::start().expect("start broker");
    let pid = broker.pid().expect("running");
    let port = broker.port();
    let dir = broker.dir().to_path_buf();
    assert!(broker.log_contents().contains(" running"));
    drop(broker);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists"
    );
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn many_brokers_in_parallel() {
    let brokers: Vec<Mosquitto> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| Mosquitto::start().expect("start broker")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut ports: Vec<u16> = brokers.iter().map(Mosquitto::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), brokers.len());
}

#[test]
fn bad_config_error_includes_log() {
    let err = Mosquitto::builder()
        .extra_config("no_such_option 1")
        .start()
        .expect_err("invalid config must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no_such_option") && msg.contains("mosquitto.conf"),
        "{msg}"
    );
}
