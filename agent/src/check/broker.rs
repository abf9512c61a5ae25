//! The broker, step by step: DNS, TCP, TLS handshake, MQTT CONNECT
//! ([`connect`]), and the table rows made from its lines.
//!
//! Uses the same settings and TLS configuration as the daemon. Connects
//! with the client id suffixed `-check` and no Last Will, so a running
//! agent on the same site is not kicked off and no retained status is
//! touched. Publishing permissions are not tested.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::tokio_rustls::TlsConnector;
use rumqttc::{EventLoop, Outgoing};
use tokio::net::TcpStream;

use super::{row, Row, Verdict};
use crate::config::Config;
use crate::diagnose::{self, Diagnosis, Step};
use crate::uplink::mqtt;

/// Longest wait for any one step.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to listen after a TLS 1.3 handshake for the broker rejecting
/// our client certificate (it answers at once when it does).
const CLIENT_CERT_VERDICT: Duration = Duration::from_millis(500);

/// Reads at most one byte (without tokio's io-util feature).
async fn read_some<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<usize> {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_read(cx, &mut buf)).await?;
    Ok(buf.filled().len())
}

fn line(out: &mut impl Write, step: Step, ok: bool, words: &str) {
    let mark = if ok { "ok" } else { "FAILED" };
    let label = format!("{step}:");
    let _ = writeln!(out, "{label:<5} {mark}: {words}");
    let _ = out.flush();
}

fn fail(out: &mut impl Write, d: &Diagnosis) -> bool {
    line(out, d.step, false, &d.words);
    false
}

/// Runs every step, printing one line per step to `out`. Returns whether
/// the broker accepted the connection.
pub async fn connect(cfg: &Config, out: &mut impl Write) -> bool {
    let target = match mqtt::target(cfg) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(out, "FAILED: {e:#}");
            return false;
        }
    };
    let t = target.view();
    let client_id = format!("{}-check", cfg.client_id());
    let _ = writeln!(
        out,
        "Checking {} as client id {client_id} (timeout {} s per step)",
        cfg.mqtt.url,
        STEP_TIMEOUT.as_secs()
    );

    // DNS.
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((t.host, t.port))).await {
            Err(_) => {
                return fail(
                    out,
                    &Diagnosis {
                        step: Step::Dns,
                        words: format!("no answer when resolving {}", t.host),
                    },
                )
            }
            Ok(Err(e)) => {
                return fail(
                    out,
                    &Diagnosis {
                        step: Step::Dns,
                        words: format!("cannot resolve {}: {e}", t.host),
                    },
                )
            }
            Ok(Ok(a)) => a.collect(),
        };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    line(
        out,
        Step::Dns,
        true,
        &format!("{} is {}", t.host, shown.join(", ")),
    );

    // TCP: first address that answers.
    let mut tcp = None;
    let mut last = None;
    for addr in &addrs {
        match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                tcp = Some((s, *addr));
                break;
            }
            Ok(Err(e)) => last = Some(diagnose::io_error(&e, &t)),
            Err(_) => {
                last = Some(Diagnosis {
                    step: Step::Tcp,
                    words: format!(
                        "no answer from {addr} within {} s (firewall dropping packets?)",
                        STEP_TIMEOUT.as_secs()
                    ),
                })
            }
        }
    }
    let Some((stream, addr)) = tcp else {
        let d = last.unwrap_or(Diagnosis {
            step: Step::Tcp,
            words: format!("{} has no address", t.host),
        });
        return fail(out, &d);
    };
    line(out, Step::Tcp, true, &format!("connected to {addr}"));

    // TLS handshake with the daemon's rustls configuration.
    if t.tls {
        let tls_cfg = match cfg.mqtt.rustls_config() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                return fail(
                    out,
                    &Diagnosis {
                        step: Step::Tls,
                        words: format!("{e:#}"),
                    },
                )
            }
        };
        let name = match rustls::pki_types::ServerName::try_from(t.host.to_owned()) {
            Ok(n) => n,
            Err(e) => {
                return fail(
                    out,
                    &Diagnosis {
                        step: Step::Tls,
                        words: format!("`{}` is not a valid TLS server name: {e}", t.host),
                    },
                )
            }
        };
        let connector = TlsConnector::from(tls_cfg);
        match tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, stream)).await {
            Err(_) => {
                return fail(
                    out,
                    &Diagnosis {
                        step: Step::Tls,
                        words: "the TLS handshake did not finish in time".into(),
                    },
                )
            }
            Ok(Err(e)) => return fail(out, &diagnose::any_error(&e, &t)),
            Ok(Ok(mut s)) => {
                if t.client_cert.is_some() {
                    // With TLS 1.3 the broker judges our certificate after
                    // the handshake has completed on our side; a rejection
                    // arrives as an alert right away, acceptance as silence.
                    match tokio::time::timeout(CLIENT_CERT_VERDICT, read_some(&mut s)).await {
                        Err(_) => {}
                        Ok(Ok(0)) => {
                            return fail(
                                out,
                                &Diagnosis {
                                    step: Step::Tls,
                                    words: "the broker closed the connection right after the \
                                            handshake; it most likely rejected our client \
                                            certificate"
                                        .into(),
                                },
                            )
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return fail(out, &diagnose::any_error(&e, &t)),
                    }
                }
                let version = match s.get_ref().1.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
                    Some(v) => format!("{v:?}"),
                    None => String::new(),
                };
                let trust = match t.ca_file {
                    Some(ca) => format!("ca_file {}", ca.display()),
                    None => "the system trust store".into(),
                };
                let client = match t.client_cert {
                    Some(c) => format!("; client certificate {} accepted", c.display()),
                    None => String::new(),
                };
                line(
                    out,
                    Step::Tls,
                    true,
                    &format!(
                        "{version}, server certificate for {} trusted by {trust}{client}",
                        t.host
                    ),
                );
            }
        }
    }

    // MQTT CONNECT through rumqttc, exactly as the daemon connects (it
    // redoes DNS, TCP and TLS; a client certificate rejected after a TLS
    // 1.3 handshake shows up here).
    let options = match mqtt::options(cfg, &client_id) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(out, "FAILED: {e:#}");
            return false;
        }
    };
    let mut eventloop = EventLoop::new(options, 1);
    match tokio::time::timeout(STEP_TIMEOUT, eventloop.poll()).await {
        Err(_) => fail(
            out,
            &Diagnosis {
                step: Step::Mqtt,
                words: "no CONNACK from the broker in time".into(),
            },
        ),
        Ok(Err(e)) => fail(out, &diagnose::connection_error(&e, &t)),
        Ok(Ok(_)) => {
            let who = match t.username {
                Some(u) => format!(" as user `{u}`"),
                None => String::new(),
            };
            line(
                out,
                Step::Mqtt,
                true,
                &format!("broker accepted the connection{who}"),
            );
            // Polite goodbye; failures here do not matter.
            eventloop
                .pending
                .push_front(rumqttc::Request::Disconnect(rumqttc::Disconnect));
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(ev) = eventloop.poll().await {
                    if ev == rumqttc::Event::Outgoing(Outgoing::Disconnect) {
                        break;
                    }
                }
            })
            .await;
            true
        }
    }
}

/// The broker, step by step, from [`connect`]'s lines.
pub async fn rows(cfg: &Config) -> Vec<Row> {
    let mut buf = Vec::new();
    let ok = connect(cfg, &mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let mut rows = Vec::new();
    for l in text.lines() {
        let Some((step, rest)) = l.split_once(':') else {
            continue;
        };
        let step = step.trim();
        let rest = rest.trim_start();
        let (verdict, words) = if let Some(w) = rest.strip_prefix("ok: ") {
            (Verdict::Ok, w)
        } else if let Some(w) = rest.strip_prefix("FAILED: ") {
            (Verdict::Failed, w)
        } else if step == "FAILED" {
            (Verdict::Failed, rest)
        } else {
            continue;
        };
        let todo = if verdict == Verdict::Failed {
            match step {
                "DNS" => "check the host name in mqtt.url and the gateway's DNS server",
                "TCP" => "check the port in mqtt.url, the uplink, and firewalls on the way",
                "TLS" => "see the result; certificates come from operations",
                "MQTT" => "check mqtt.username and the password file with operations",
                _ => "fix the [mqtt] settings",
            }
        } else {
            ""
        };
        rows.push(row(format!("broker {step}"), verdict, words, todo));
    }
    if !ok && !rows.iter().any(|r| r.verdict == Verdict::Failed) {
        rows.push(row(
            "broker",
            Verdict::Failed,
            text.trim(),
            "fix the [mqtt] settings",
        ));
    }
    rows
}
