//! The fault-injecting TCP proxy: forwarding, blackhole, reset, refuse,
//! heal, against a raw TCP peer (exact socket semantics) and a real
//! mosquitto with mosquitto_pub/mosquitto_sub.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use sitewatch_testkit::{wait_until, ChildGuard, Mosquitto, TcpProxy};

/// An echo server on a fresh port.
fn echo_server() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let Ok(mut reader) = stream.try_clone() else {
                return;
            };
            std::thread::spawn(move || {
                let mut writer = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 || writer.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A target that only accepts: the test reads and writes the accepted
/// sockets itself.
fn plain_target() -> (u16, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind target");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if tx.send(stream).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to proxy");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    s
}

/// Reads exactly `n` bytes or fails on timeout.
fn read_n(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn silent(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[test]
fn forwards_and_counts() {
    let port = echo_server();
    let proxy = TcpProxy::start(port).expect("proxy");
    assert_ne!(proxy.port(), port);
    assert_eq!(proxy.url(), format!("mqtt://127.0.0.1:{}", proxy.port()));
    let mut c = connect(proxy.port());
    c.write_all(b"hello").expect("write");
    assert_eq!(read_n(&mut c, 5).expect("echo"), b"hello");
    // The counter moves just after the write the client already read.
    wait_until(Duration::from_secs(5), "bytes to be counted", || {
        proxy.stats().bytes_down == 5
    })
    .expect("counted");
    let s = proxy.stats();
    assert_eq!(
        (s.accepted, s.active, s.bytes_up, s.bytes_down),
        (1, 1, 5, 5)
    );
    drop(c);
    wait_until(Duration::from_secs(5), "the connection to end", || {
        proxy.stats().active == 0
    })
    .expect("closed");
}

#[test]
fn blackhole_holds_traffic_silently_until_heal() {
    let port = echo_server();
    let proxy = TcpProxy::start(port).expect("proxy");
    let mut c = connect(proxy.port());
    c.write_all(b"one").expect("write");
    assert_eq!(read_n(&mut c, 3).expect("echo"), b"one");

    proxy.blackhole();
    c.write_all(b"two")
        .expect("writes still succeed, like a dead link");
    assert!(silent(&mut c), "nothing may come back while blackholed");
    // New connections are accepted and held, not refused.
    let mut held = connect(proxy.port());
    held.write_all(b"three").expect("write");
    assert!(silent(&mut held));
    assert_eq!(proxy.stats().bytes_up, 3);

    proxy.heal().expect("heal");
    assert_eq!(read_n(&mut c, 3).expect("delivered after heal"), b"two");
    assert_eq!(
        read_n(&mut held, 5).expect("held connection now forwarded"),
        b"three"
    );
}

#[test]
fn reset_all_sends_rst_to_client_and_target() {
    let (port, targets) = plain_target();
    let proxy = TcpProxy::start(port).expect("proxy");
    let mut c = connect(proxy.port());
    c.write_all(b"x").expect("write");
    let mut target_side = targets
        .recv_timeout(Duration::from_secs(5))
        .expect("target saw it");
    target_side
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(read_n(&mut target_side, 1).expect("forwarded"), b"x");
    target_side.write_all(b"y").expect("write back");
    assert_eq!(read_n(&mut c, 1).expect("forwarded back"), b"y");

    assert_eq!(proxy.reset_all(), 1);
    let mut b = [0u8; 1];
    let err = c.read(&mut b).expect_err("client sees a reset, not EOF");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let err = target_side
        .read(&mut b)
        .expect_err("target sees a reset, not EOF");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(proxy.stats().resets, 1);
    assert_eq!(proxy.stats().active, 0);

    // The proxy still accepts and forwards new connections.
    let mut c = connect(proxy.port());
    c.write_all(b"z").expect("write");
    let mut t = targets
        .recv_timeout(Duration::from_secs(5))
        .expect("target saw it");
    t.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(read_n(&mut t, 1).expect("forwarded"), b"z");
}

#[test]
fn refuse_then_heal_on_the_same_port() {
    let port = echo_server();
    let proxy = TcpProxy::start(port).expect("proxy");
    let mut open = connect(proxy.port());
    // Accepted (not just queued in the kernel's backlog) before refusing.
    open.write_all(b"up").expect("write");
    assert_eq!(read_n(&mut open, 2).expect("echo"), b"up");
    proxy.refuse();
    let err = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port())).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // Open connections are not touched.
    open.write_all(b"still").expect("write");
    assert_eq!(read_n(&mut open, 5).expect("echo"), b"still");
    proxy.heal().expect("heal");
    let mut c = connect(proxy.port());
    c.write_all(b"back").expect("write");
    assert_eq!(read_n(&mut c, 4).expect("echo"), b"back");
}

#[test]
fn target_down_closes_the_client_and_drop_closes_everything() {
    let port = echo_server();
    let dead = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let proxy = TcpProxy::start(dead_port).expect("proxy");
    let mut c = connect(proxy.port());
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut b = [0u8; 1];
    assert_eq!(c.read(&mut b).expect("EOF"), 0);

    let proxy = TcpProxy::start(port).expect("proxy");
    let mut c = connect(proxy.port());
    c.write_all(b"z").expect("write");
    assert_eq!(read_n(&mut c, 1).expect("echo"), b"z");
    drop(proxy);
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(matches!(c.read(&mut b), Ok(0) | Err(_)), "closed on drop");
}

// ------------------------------------------------------------ mosquitto

fn pub_retained(port: u16, topic: &str, msg: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
        .args(["-t", topic, "-m", msg])
        .output()
        .expect("run mosquitto_pub (apt-get install mosquitto-clients)")
}

fn sub_one(port: u16, topic: &str) -> Output {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-C", "1", "-W", "5"])
        .output()
        .expect("run mosquitto_sub (apt-get install mosquitto-clients)")
}

#[test]
fn mqtt_through_the_proxy_and_refused_while_refusing() {
    let broker = Mosquitto::start().expect("broker");
    let proxy = TcpProxy::start(broker.port()).expect("proxy");
    let out = pub_retained(proxy.port(), "t/proxy", "hello");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sub_one(broker.port(), "t/proxy");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    let s = proxy.stats();
    assert!(
        s.accepted >= 1 && s.bytes_up > 0 && s.bytes_down > 0,
        "{s:?}"
    );

    proxy.refuse();
    let out = pub_retained(proxy.port(), "t/proxy", "refused");
    assert!(!out.status.success(), "publish through a refusing proxy");
    proxy.heal().expect("heal");
    let out = pub_retained(proxy.port(), "t/proxy", "again");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A blackholed link is only noticed by keep-alive: the broker drops the
/// silent client after 1.5 × its keep-alive (5 s, libmosquitto's minimum).
#[test]
fn blackholed_mqtt_client_is_timed_out_by_keepalive() {
    let broker = Mosquitto::start().expect("broker");
    let proxy = TcpProxy::start(broker.port()).expect("proxy");
    let _sub = ChildGuard::spawn(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &proxy.port().to_string()])
            .args(["-k", "5", "-i", "blackholed", "-t", "t/#"]),
    )
    .expect("spawn mosquitto_sub");
    wait_until(Duration::from_secs(10), "the subscriber to connect", || {
        broker.log_contents().contains("blackholed")
    })
    .expect("connected");
    proxy.blackhole();
    wait_until(
        Duration::from_secs(20),
        "the broker to time the client out",
        || {
            broker
                .log_contents()
                .contains("Client blackholed has exceeded timeout")
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\nbroker log:\n{}", broker.log_contents()));
    // No RST or FIN reached the broker: it decided by itself.
    assert!(!broker
        .log_contents()
        .contains("Client blackholed closed its connection"));
    assert_eq!(proxy.stats().resets, 0);
}
