//! The I/O of `discover`: the multicast Probe and the SOAP POSTs. Message
//! building and reading live in [`super::proto`] and [`super::http`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout, timeout_at, Instant};

use super::http::{self, HttpError, Response};
use super::proto::{self, ProbeMatch};

/// Bound on one SOAP exchange (connect, send, whole answer).
pub const SOAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Most devices kept from one discovery (a large site has a few dozen).
pub const MAX_DEVICES: usize = 256;

/// A device that answered the Probe, with the address it answered from.
#[derive(Debug, Clone)]
pub struct Found {
    /// The datagram's source.
    pub from: SocketAddr,
    /// What it said.
    pub probe_match: ProbeMatch,
}

/// Sends the Probe from `interface` (or wherever the kernel routes
/// multicast) and collects ProbeMatches for `wait`. Devices are keyed by
/// their endpoint reference (one device answers once per Probe, but we
/// send the Probe twice: UDP, and SOAP-over-UDP advises a repeat).
///
/// Returns the devices, in address order, and how many datagrams could not be read.
pub async fn discover(
    interface: Option<Ipv4Addr>,
    wait: Duration,
    message_id: &str,
) -> anyhow::Result<(Vec<Found>, usize)> {
    let bind = SocketAddrV4::new(interface.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    let std_sock = std::net::UdpSocket::bind(bind)
        .with_context(|| format!("cannot bind a UDP socket to {bind}"))?;
    if let Some(ip) = interface {
        // Binding picks the source address; IP_MULTICAST_IF picks the
        // interface the Probe leaves by (not implied on every kernel).
        rustix::net::sockopt::set_ip_multicast_if(&std_sock, &ip)
            .with_context(|| format!("cannot send multicast from {ip}"))?;
    }
    std_sock
        .set_multicast_ttl_v4(1)
        .context("cannot set the multicast TTL")?;
    std_sock.set_nonblocking(true).context("set_nonblocking")?;
    let sock = UdpSocket::from_std(std_sock).context("cannot register the UDP socket")?;
    let probe = proto::probe_message(message_id);
    let deadline = Instant::now() + wait;
    sock.send_to(probe.as_bytes(), proto::MULTICAST)
        .await
        .with_context(|| {
            format!(
                "cannot send the Probe to {}{}",
                proto::MULTICAST,
                if interface.is_none() {
                    " (no multicast route: give --interface with this gateway's LAN address)"
                } else {
                    ""
                }
            )
        })?;
    let mut repeated = false;
    let repeat_at = Instant::now() + Duration::from_millis(200);
    let mut found: Vec<Found> = Vec::new();
    let mut unreadable = 0;
    let mut buf = vec![0u8; super::xml::MAX_INPUT + 1];
    loop {
        let until = if repeated {
            deadline
        } else {
            repeat_at.min(deadline)
        };
        match timeout_at(until, sock.recv_from(&mut buf)).await {
            Err(_) if !repeated && until < deadline => {
                repeated = true;
                // A lost repeat costs nothing: the first one went out.
                let _ = sock.send_to(probe.as_bytes(), proto::MULTICAST).await;
            }
            Err(_) => break,
            Ok(Err(e)) => return Err(anyhow!(e).context("receiving ProbeMatches")),
            Ok(Ok((n, from))) => {
                let Some(data) = buf.get(..n).filter(|d| d.len() <= super::xml::MAX_INPUT) else {
                    unreadable += 1;
                    continue;
                };
                match proto::parse_probe_matches(data) {
                    Ok(matches) => {
                        for m in matches {
                            if m.xaddrs.is_empty()
                                || found.len() >= MAX_DEVICES
                                || found.iter().any(|f| {
                                    f.probe_match.endpoint == m.endpoint && !m.endpoint.is_empty()
                                        || f.probe_match.xaddrs == m.xaddrs
                                })
                            {
                                continue;
                            }
                            // In address order, for the printout (no sort:
                            // its instantiation costs kilobytes).
                            let at = found
                                .iter()
                                .position(|f| f.from.ip() > from.ip())
                                .unwrap_or(found.len());
                            found.insert(
                                at,
                                Found {
                                    from,
                                    probe_match: m,
                                },
                            );
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%from, err = %e, "Unreadable WS-Discovery datagram");
                        unreadable += 1;
                    }
                }
            }
        }
    }
    Ok((found, unreadable))
}

/// One SOAP POST to an `http://` service address. `auth` is an HTTP
/// `Authorization` value (Digest after a 401).
pub async fn post(
    url: &url::Url,
    action: &str,
    body: &str,
    auth: Option<&str>,
) -> anyhow::Result<Response> {
    if url.scheme() != "http" {
        bail!(
            "{}: only http:// service addresses are supported",
            url.scheme()
        );
    }
    let host = url.host_str().context("the service address has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let req = http::post(&host_header, &path, action, body, auth);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let exchange = async move {
        let mut s = TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("cannot connect to {host}:{port}"))?;
        s.write_all(&req).await.context("sending the request")?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.context("reading the answer")?;
            buf.extend_from_slice(&chunk[..n]);
            match http::parse(&buf, n == 0) {
                Err(HttpError::Incomplete) if n > 0 => {
                    if buf.len() > http::MAX_HEAD + http::MAX_BODY + 64 * 1024 {
                        bail!("the answer is too large");
                    }
                }
                Err(HttpError::Incomplete) => bail!("the answer ended early"),
                other => return other.map_err(anyhow::Error::from),
            }
        }
    };
    timeout(SOAP_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {} s", SOAP_TIMEOUT.as_secs()))?
}
