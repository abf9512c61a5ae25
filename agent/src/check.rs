//! `sitewatch-agent check --online` (alias `--connect`): the installer's
//! commissioning check. [`online`] prints one table — check | result |
//! what to do — covering the clock against the certificates, the broker
//! step by step ([`connect`]: DNS, TCP, TLS handshake, MQTT CONNECT), every
//! configured disk and every syslog port, and rows for features not in
//! this version. Plain words, for the installer standing next to the
//! router.
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

use crate::config::Config;
use crate::diagnose::{self, Diagnosis, Step};
use crate::mqtt;

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

/// A row's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Works.
    Ok,
    /// Broken: the agent will not do its job until fixed.
    Failed,
    /// Works, but worth a look.
    Warning,
}

/// One row of the commissioning table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What was checked.
    pub check: String,
    /// Verdict.
    pub verdict: Verdict,
    /// What was found, plain words.
    pub result: String,
    /// What to do (empty when nothing).
    pub todo: String,
}

fn row(
    check: impl Into<String>,
    verdict: Verdict,
    result: impl Into<String>,
    todo: impl Into<String>,
) -> Row {
    Row {
        check: check.into(),
        verdict,
        result: result.into(),
        todo: todo.into(),
    }
}

/// One row per configured camera: a real probe of each (the configured
/// concurrency limit holds), its class and what to do about it.
async fn camera_rows(cfg: &Config) -> Vec<Row> {
    let Some(rtsp) = &cfg.rtsp else {
        return vec![row(
            "cameras",
            Verdict::Warning,
            "no [rtsp] table: camera streams are not watched",
            "add the cameras as [[rtsp.camera]] (try one with `sitewatch-agent probe URL`)",
        )];
    };
    crate::rtsp::cli::probe_all(rtsp.clone())
        .await
        .iter()
        .map(|r| {
            let (verdict, todo) = match r.class {
                crate::rtsp::Class::Ok if r.warnings.is_empty() => (Verdict::Ok, String::new()),
                crate::rtsp::Class::Ok
                | crate::rtsp::Class::LowFps
                | crate::rtsp::Class::Frozen => (Verdict::Warning, r.class.advice().to_owned()),
                _ => (Verdict::Failed, r.class.advice().to_owned()),
            };
            row(
                format!("camera {}", r.camera),
                verdict,
                format!("{}: {}", r.class.as_str(), r.detail),
                todo,
            )
        })
        .collect()
}

/// One row per disk SMART will read: a native read now (standby disks are
/// not woken) and the rules' verdict.
async fn smart_rows(cfg: &Config) -> Vec<Row> {
    let Some(sm) = cfg.smart.clone() else {
        return vec![row(
            "SMART disk health",
            Verdict::Warning,
            "no [smart] table: disk health is not watched",
            "add a [smart] table (try `sitewatch-agent smart` first)",
        )];
    };
    let found = tokio::task::spawn_blocking(move || {
        let discovered = crate::smart::io::discover::paths();
        sm.device_list(&discovered)
            .into_iter()
            .map(|d| {
                let read = crate::smart::io::read(&d.path, d.kind);
                let verdict = read
                    .as_ref()
                    .map(|r| crate::smart::judge(r, None, &sm.limits))
                    .map_err(|_| ());
                (d.path, read, verdict)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    if found.is_empty() {
        return vec![row(
            "SMART disk health",
            Verdict::Warning,
            "no disk found in /sys/block",
            "list the disks in [smart] devices",
        )];
    }
    found
        .into_iter()
        .map(|(path, read, verdict)| {
            let name = format!("SMART {}", path.display());
            match (read, verdict) {
                (Err(e), _) => row(
                    name,
                    Verdict::Failed,
                    format!("cannot read: {e}"),
                    "run the agent as root (CAP_SYS_RAWIO, CAP_SYS_ADMIN for NVMe) or set the device type",
                ),
                (Ok(r), Ok(v)) => {
                    let who = format!(
                        "{} {}",
                        r.model().unwrap_or("disk"),
                        r.serial().unwrap_or("")
                    );
                    let why = v
                        .reasons
                        .first()
                        .map(|x| x.detail.clone())
                        .unwrap_or_default();
                    let (verdict, todo) = match v.level {
                        crate::smart::Level::Ok => (Verdict::Ok, ""),
                        crate::smart::Level::Unknown => (Verdict::Warning, "see the reason; a USB bridge may need `type = \"sat12\"`"),
                        crate::smart::Level::Warning => (Verdict::Warning, "plan a replacement or check the cable"),
                        crate::smart::Level::Critical => (Verdict::Failed, "copy the footage and replace this disk"),
                    };
                    row(name, verdict, format!("{}: {who} {why}", v.level.as_str()), todo)
                }
                (Ok(_), Err(_)) => row(name, Verdict::Warning, "read but not judged", ""),
            }
        })
        .collect()
}

/// One row per cleanup root: a dry-run pass (nothing is deleted) says
/// whether the root is usable and what the daemon would delete now.
async fn cleanup_rows(cfg: &Config) -> Vec<Row> {
    let Some(c) = cfg.cleanup.clone() else {
        return vec![row(
            "recording clean-up",
            Verdict::Ok,
            "no [cleanup] table: the agent deletes nothing",
            "",
        )];
    };
    let outcomes = tokio::task::spawn_blocking(move || crate::cleanup::pass(&c, true, &|| false))
        .await
        .unwrap_or_default();
    outcomes
        .iter()
        .map(|o| {
            let writable = rustix::fs::access(o.root.as_str(), rustix::fs::Access::WRITE_OK).is_ok();
            let (verdict, todo) = match &o.result {
                Err(_) => (
                    Verdict::Failed,
                    "create the folder (or mount the disk) and give the real path, without symlinks",
                ),
                Ok(_) if !writable => (
                    Verdict::Failed,
                    "the agent cannot delete here: give its user write access (systemd: ReadWritePaths=)",
                ),
                Ok(Some(r)) if !r.target_reached => (
                    Verdict::Warning,
                    "the rules keep too much to get below the low watermark: check min_age, keep_newest and the patterns",
                ),
                Ok(_) => (Verdict::Ok, ""),
            };
            row(format!("clean-up {}", o.root), verdict, o.describe(), todo)
        })
        .collect()
}

/// Runs every check and prints the table to `out`. Returns `false` when
/// any row failed.
pub async fn online(cfg: &Config, out: &mut impl Write) -> bool {
    let mut rows = clock_rows(cfg, std::time::SystemTime::now());
    rows.extend(broker_rows(cfg).await);
    rows.extend(disk_rows(cfg).await);
    rows.extend(syslog_rows(cfg));
    rows.extend(camera_rows(cfg).await);
    rows.extend(smart_rows(cfg).await);
    rows.extend(cleanup_rows(cfg).await);
    print_table(out, &rows);
    let failed = rows.iter().filter(|r| r.verdict == Verdict::Failed).count();
    let _ = if failed == 0 {
        writeln!(out, "\nAll checks passed: this site is ready.")
    } else {
        writeln!(
            out,
            "\n{failed} check(s) FAILED: fix them (see \"what to do\"), then run this again."
        )
    };
    failed == 0
}

/// Prints `rows` as a plain text table.
pub fn print_table(out: &mut impl Write, rows: &[Row]) {
    let verdict = |v: Verdict| match v {
        Verdict::Ok => "ok",
        Verdict::Failed => "FAILED",
        Verdict::Warning => "warning",
    };
    let w0 = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(out, "{:<w0$} | {:<7} | result | what to do", "check", "");
    let _ = writeln!(out, "{}", "-".repeat(w0 + 40));
    for r in rows {
        let todo = if r.todo.is_empty() { "-" } else { &r.todo };
        let _ = writeln!(
            out,
            "{:<w0$} | {:<7} | {} | {}",
            r.check,
            verdict(r.verdict),
            r.result,
            todo
        );
    }
    let _ = out.flush();
}

/// The broker, step by step, from [`connect`]'s lines.
async fn broker_rows(cfg: &Config) -> Vec<Row> {
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

/// Unix seconds of `t` (0 before 1970).
fn unix(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM UTC` for messages.
fn date(secs: i64) -> String {
    crate::syslog::time::utc_minutes(secs)
}

/// Clock sanity: the local clock against this binary's date and against
/// the validity of the configured CA and client certificates.
pub fn clock_rows(cfg: &Config, now: std::time::SystemTime) -> Vec<Row> {
    let now_s = unix(now);
    let mut rows = Vec::new();
    // The binary cannot be older than its own file: a clock before that is
    // wrong (boards without a battery start in 1970 or at the image date).
    let built = std::fs::metadata("/proc/self/exe")
        .and_then(|m| m.modified())
        .map(unix)
        .ok();
    match built {
        Some(b) if now_s + 86_400 < b => rows.push(row(
            "clock",
            Verdict::Failed,
            format!(
                "local clock says {}, before this agent was installed ({})",
                date(now_s),
                date(b)
            ),
            "set the time (enable NTP: timedatectl set-ntp true, or on OpenWrt \
             System > System > Time synchronization); TLS certificates are judged by this clock",
        )),
        _ => rows.push(row(
            "clock",
            Verdict::Ok,
            format!("local clock says {}", date(now_s)),
            "",
        )),
    }
    let files = [
        ("CA certificate", cfg.mqtt.ca_file.as_ref()),
        ("client certificate", cfg.mqtt.client_cert_file.as_ref()),
    ];
    for (what, path) in files {
        let Some(path) = path else { continue };
        let certs = match std::fs::read(path) {
            Ok(pem) => {
                use rustls::pki_types::pem::PemObject as _;
                rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .collect::<Vec<_>>()
            }
            Err(e) => {
                rows.push(row(
                    what,
                    Verdict::Failed,
                    format!("cannot read {}: {e}", path.display()),
                    "check the path and that the agent's user may read it",
                ));
                continue;
            }
        };
        for cert in &certs {
            let Some((nb, na)) = validity(cert.as_ref()) else {
                continue;
            };
            let name = format!("{what} {}", path.display());
            if now_s < nb {
                rows.push(row(
                    name,
                    Verdict::Failed,
                    format!(
                        "the local clock ({}) is before the certificate's start (notBefore {})",
                        date(now_s),
                        date(nb)
                    ),
                    "the clock is wrong: set the time (NTP), then check again",
                ));
            } else if now_s > na {
                rows.push(row(
                    name,
                    Verdict::Failed,
                    format!(
                        "the certificate expired on {} (local clock {})",
                        date(na),
                        date(now_s)
                    ),
                    "ask operations for a new certificate (or fix the clock if it is wrong)",
                ));
            } else if na - now_s < 30 * 86_400 {
                rows.push(row(
                    name,
                    Verdict::Warning,
                    format!("valid, but expires on {}", date(na)),
                    "ask operations for a renewed certificate soon",
                ));
            } else {
                rows.push(row(
                    name,
                    Verdict::Ok,
                    format!("valid until {}", date(na)),
                    "",
                ));
            }
        }
    }
    rows
}

/// Reads one DER TLV at `d`: (tag, content, rest).
fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *d.first()?;
    let first = *d.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*d.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    Some((tag, d.get(hdr..end)?, d.get(end..)?))
}

/// `(notBefore, notAfter)` in Unix seconds from an X.509 certificate.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer.
    let (tag, _, r) = tlv(rest)?;
    rest = if tag == 0xa0 { tlv(r)?.2 } else { r };
    rest = tlv(rest)?.2; // signature algorithm
    rest = tlv(rest)?.2; // issuer
    let (_, val, _) = tlv(rest)?;
    let (t1, nb, r) = tlv(val)?;
    let (t2, na, _) = tlv(r)?;
    Some((der_time(t1, nb)?, der_time(t2, na)?))
}

/// UTCTime (0x17) or GeneralizedTime (0x18), `Z` form, to Unix seconds.
fn der_time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let y: i64 = s.get(0..2)?.parse().ok()?;
            (if y >= 50 { 1900 + y } else { 2000 + y }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |r: std::ops::Range<usize>| -> Option<u32> { rest.get(r)?.parse().ok() };
    let (mo, d, h, mi) = (n(0..2)?, n(2..4)?, n(4..6)?, n(6..8)?);
    let sec = n(8..10).unwrap_or(0);
    if sec > 60 {
        return None;
    }
    // A leap second (60) counts as the next minute's first.
    Some(crate::syslog::time::unix_secs(year, mo, d, h, mi, 0)? + i64::from(sec))
}

/// Every configured disk, probed like the daemon does (blocking thread,
/// `statvfs_timeout_ms`).
async fn disk_rows(cfg: &Config) -> Vec<Row> {
    use crate::disk::mountinfo;
    use crate::disk::probe::{self, ProbeError};
    if cfg.disk.mounts.is_empty() {
        return vec![row(
            "disks",
            Verdict::Warning,
            "no [disk] mounts configured",
            "list the recording disk in [disk] mounts",
        )];
    }
    let table: Arc<[mountinfo::MountEntry]> = match std::fs::read_to_string("/proc/self/mountinfo")
    {
        Ok(t) => mountinfo::parse(&t).into(),
        Err(e) => {
            return vec![row(
                "disks",
                Verdict::Failed,
                format!("cannot read /proc/self/mountinfo: {e}"),
                "",
            )]
        }
    };
    let mut rows = Vec::new();
    for path in &cfg.disk.mounts {
        let p = path.clone();
        let t = Arc::clone(&table);
        let res = tokio::time::timeout(
            cfg.disk.statvfs_timeout,
            tokio::task::spawn_blocking(move || probe::probe(&p, &t)),
        )
        .await;
        let name = format!("disk {path}");
        let r = match res {
            Err(_) => Err(ProbeError::Timeout),
            Ok(Err(e)) => Err(ProbeError::Failed(e.to_string())),
            Ok(Ok(r)) => r,
        };
        rows.push(match r {
            Ok(m) => {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                let words = format!(
                    "{}, {:.1} GiB of {:.1} GiB free ({:.0} % used){}",
                    m.fs_type,
                    gib(m.usage.avail_bytes),
                    gib(m.usage.total_bytes),
                    m.usage.used_pct,
                    if m.read_only { ", READ-ONLY" } else { "" }
                );
                if m.read_only {
                    row(name, Verdict::Failed, words, "the filesystem is read-only (the kernel does this after disk errors): check the disk (dmesg), repair it (fsck), remount")
                } else if m.usage.used_pct >= 95.0 {
                    row(name, Verdict::Warning, words, "nearly full: check the NVR's overwrite setting")
                } else {
                    row(name, Verdict::Ok, words, "")
                }
            }
            Err(ProbeError::Missing) => row(name, Verdict::Failed, "the folder does not exist", "create the mount point and mount the disk, or fix [disk] mounts"),
            Err(ProbeError::NotMounted) => row(name, Verdict::Failed, "nothing is mounted there (a plain folder on the parent disk)", "mount the recording disk there (check /etc/fstab, the cable, the NAS share), or fix [disk] mounts"),
            Err(ProbeError::Timeout) => row(name, Verdict::Failed, "no answer in time (hung network share?)", "check the NAS/NFS server and the network to it"),
            Err(ProbeError::Failed(e)) => {
                let todo = if e.contains("ermission") {
                    "let the agent's user read the folder (or its parents)"
                } else {
                    "see the result"
                };
                row(name, Verdict::Failed, e, todo)
            }
        });
    }
    rows
}

/// Tries to bind every configured syslog address (then closes it again).
pub fn syslog_rows(cfg: &Config) -> Vec<Row> {
    let Some(sys) = &cfg.syslog else {
        return vec![row(
            "syslog",
            Verdict::Ok,
            "receiver off (no [syslog] table)",
            "",
        )];
    };
    let mut rows = Vec::new();
    let addrs = sys
        .udp
        .iter()
        .map(|a| ("UDP", *a))
        .chain(sys.tcp.iter().map(|a| ("TCP", *a)));
    for (proto, addr) in addrs {
        let res = if proto == "UDP" {
            std::net::UdpSocket::bind(addr).map(drop)
        } else {
            std::net::TcpListener::bind(addr).map(drop)
        };
        let name = format!("syslog {proto} {addr}");
        rows.push(match res {
            Ok(()) => row(name, Verdict::Ok, "port can be bound", ""),
            Err(e) => {
                let todo = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => format!(
                        "ports below 1024 need CAP_NET_BIND_SERVICE (or systemd socket \
                         activation, sitewatch-agent-syslog.socket); or use port {}",
                        crate::syslog::config::UNPRIVILEGED_PORT
                    ),
                    std::io::ErrorKind::AddrInUse => format!(
                        "another program listens there{}: stop it or choose another port \
                         (is the agent itself already running? then this is expected)",
                        port_owner_hint(addr.port())
                    ),
                    std::io::ErrorKind::AddrNotAvailable => {
                        "this machine has no such address: fix [syslog] udp/tcp".to_owned()
                    }
                    _ => "see the result".to_owned(),
                };
                row(name, Verdict::Failed, format!("cannot listen: {e}"), todo)
            }
        });
    }
    rows
}

/// A guess at who holds a syslog port, from the usual suspects' names.
fn port_owner_hint(port: u16) -> String {
    if port != 514 {
        return String::new();
    }
    for name in ["rsyslogd", "syslog-ng", "logd", "syslogd"] {
        let running = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name)
            });
        if running {
            return format!(" (probably {name}, which is running)");
        }
    }
    String::new()
}

#[cfg(test)]
mod online_tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(der_time(0x17, b"250101000000Z"), Some(1_735_689_600));
        assert_eq!(der_time(0x18, b"20250101000000Z"), Some(1_735_689_600));
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(date(1_735_689_600), "2025-01-01 00:00 UTC");
        assert_eq!(der_time(0x17, b"junk"), None);
        // RFC 5280's "no well-defined expiration date".
        assert_eq!(der_time(0x18, b"99991231235959Z"), Some(253_402_300_799));
        assert_eq!(date(253_402_300_799), "9999-12-31 23:59 UTC");
        // Impossible dates are not read as some other day.
        assert_eq!(der_time(0x17, b"250231000000Z"), None);
        assert_eq!(der_time(0x17, b"251301000000Z"), None);
        assert_eq!(der_time(0x17, b"25-101000000Z"), None);
        // A leap second is the next minute's first.
        assert_eq!(der_time(0x17, b"161231235960Z"), Some(1_483_228_800));
    }

    #[test]
    fn table_has_header_and_rows() {
        let mut out = Vec::new();
        print_table(
            &mut out,
            &[
                row("disk /", Verdict::Ok, "ext4", ""),
                row(
                    "SMART",
                    Verdict::Warning,
                    "/dev/sda: 8 reallocated",
                    "watch it",
                ),
            ],
        );
        let t = String::from_utf8(out).expect("utf8");
        assert!(t.starts_with("check"), "{t}");
        assert!(t.contains("disk / | ok      | ext4 | -"), "{t}");
        assert!(
            t.contains("SMART  | warning | /dev/sda: 8 reallocated | watch it"),
            "{t}"
        );
    }
}
