//! The probes' I/O: one round of ICMP echoes or TCP connects to one
//! target. ICMP goes through a datagram ICMP socket when the kernel
//! allows it for the process's group (`net.ipv4.ping_group_range`), else
//! through a raw socket (root or `CAP_NET_RAW`). Both are wrapped as a
//! tokio `UdpSocket` (a datagram ICMP socket behaves like one), so no
//! other async machinery is linked in.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use rustix::net::{ipproto, AddressFamily, SocketFlags, SocketType};
use tokio::net::UdpSocket;
use tokio::time::{timeout, timeout_at, Instant};

use super::config::{Probe, Target, PROBE_SPACING};
use super::proto::{self, Outcome, Round};

/// Which ICMP socket a round used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpMode {
    /// `SOCK_DGRAM`/`IPPROTO_ICMP`: unprivileged; the kernel sets the
    /// identifier and delivers only this socket's replies, without the IP
    /// header.
    Datagram,
    /// `SOCK_RAW`: needs `CAP_NET_RAW`; sees every ICMP packet, IP header
    /// first.
    Raw,
}

impl IcmpMode {
    /// In words, for `check`.
    pub fn describe(self) -> &'static str {
        match self {
            IcmpMode::Datagram => {
                "datagram ICMP socket (unprivileged: net.ipv4.ping_group_range allows the agent's group)"
            }
            IcmpMode::Raw => "raw ICMP socket (the agent has CAP_NET_RAW)",
        }
    }
}

/// What to do when no ICMP socket can be opened.
pub const ICMP_TODO: &str = "run as root, give the agent CAP_NET_RAW \
     (AmbientCapabilities=CAP_NET_RAW), or add its group to net.ipv4.ping_group_range (sysctl)";

/// Opens an ICMP socket: datagram first, raw if the kernel refuses that.
pub fn open_icmp() -> Result<(UdpSocket, IcmpMode), String> {
    let open = |kind| {
        rustix::net::socket_with(
            AddressFamily::INET,
            kind,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(ipproto::ICMP),
        )
    };
    let (fd, mode) = match open(SocketType::DGRAM) {
        Ok(fd) => (fd, IcmpMode::Datagram),
        Err(dgram) => match open(SocketType::RAW) {
            Ok(fd) => (fd, IcmpMode::Raw),
            Err(raw) => {
                let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
                    .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                    .unwrap_or_else(|_| "unreadable".into());
                // /proc/self belongs to the process's effective uid and gid.
                let gid = std::fs::metadata("/proc/self")
                    .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(format!(
                    "cannot send ICMP: datagram socket: {dgram} (group {gid} not in \
                     net.ipv4.ping_group_range = {range}); raw socket: {raw}"
                ));
            }
        },
    };
    let sock = std::net::UdpSocket::from(fd);
    UdpSocket::from_std(sock)
        .map(|s| (s, mode))
        .map_err(|e| format!("cannot send ICMP: {e}"))
}

/// The target's address: as written, or the first one its name resolves
/// to (IPv4 for ICMP).
async fn resolve(t: &Target, wait: Duration) -> Result<IpAddr, String> {
    if let Ok(ip) = t.address.parse::<IpAddr>() {
        return Ok(ip);
    }
    let port = t.port().unwrap_or(0);
    let found = timeout(wait, tokio::net::lookup_host((t.address.as_str(), port)))
        .await
        .map_err(|_| format!("cannot resolve {}: no answer in time", t.address))?
        .map_err(|e| format!("cannot resolve {}: {e}", t.address))?
        .map(|a| a.ip())
        .find(|ip| t.probe != Probe::Icmp || ip.is_ipv4());
    found.ok_or_else(|| format!("cannot resolve {}: no IPv4 address", t.address))
}

/// One round of `count` probes to `t`, 200 ms apart, each waiting up to
/// `wait` for its answer.
pub async fn round(t: &Target, count: u32, wait: Duration) -> Round {
    let ip = match resolve(t, wait).await {
        Ok(ip) => ip,
        Err(e) => return Round::failed(e),
    };
    match (t.probe, ip) {
        (Probe::Icmp, IpAddr::V4(a)) => icmp_round(a, count, wait).await,
        (Probe::Icmp, IpAddr::V6(_)) => Round::failed("ICMP probes are IPv4 only".into()),
        (Probe::Tcp(port), ip) => tcp_round(SocketAddr::new(ip, port), count, wait).await,
    }
}

/// Echo requests to `addr` over a fresh socket (so replies to an earlier
/// round are not read as this one's).
pub async fn icmp_round(addr: Ipv4Addr, count: u32, wait: Duration) -> Round {
    let (sock, mode) = match open_icmp() {
        Ok(s) => s,
        Err(e) => return Round::failed(e),
    };
    let count = count.min(super::config::MAX_COUNT) as usize;
    let (id, token) = (fastrand::u16(..), fastrand::u64(..));
    let raw = mode == IcmpMode::Raw;
    let dest = SocketAddr::new(IpAddr::V4(addr), 0);
    let mut sent_at: [Option<Instant>; super::config::MAX_COUNT as usize] = Default::default();
    let mut outcome = [Outcome::Lost; super::config::MAX_COUNT as usize];
    let start = Instant::now();
    let mut end = start + wait;
    let mut next = 0;
    let mut buf = [0u8; 512];
    loop {
        let now = Instant::now();
        let send_at = start + PROBE_SPACING * next as u32;
        if next < count && now >= send_at {
            let pkt = proto::echo_request(id, next as u16, token);
            // A send that fails (no route, a full buffer) is a lost probe.
            let _ = sock.try_send_to(&pkt, dest);
            sent_at[next] = Some(Instant::now());
            end = Instant::now() + wait;
            next += 1;
            continue;
        }
        if next >= count && now >= end {
            break;
        }
        let wake = if next < count { send_at } else { end };
        let n = match timeout_at(wake, sock.recv_from(&mut buf)).await {
            Err(_) => continue,
            // An ICMP error for a probe (host unreachable): it is lost.
            Ok(Err(_)) => continue,
            Ok(Ok((n, from))) if from.ip() == IpAddr::V4(addr) => n,
            Ok(Ok(_)) => continue,
        };
        let Some(e) = proto::parse_reply(&buf[..n], raw) else {
            continue;
        };
        let Some(seq) = proto::answers(&e, raw.then_some(id), token, count) else {
            continue;
        };
        if let (Some(at), Outcome::Lost) = (sent_at[seq], outcome[seq]) {
            outcome[seq] = Outcome::Answer(at.elapsed());
        }
    }
    let mut r = Round::default();
    outcome[..count].iter().for_each(|o| r.add(*o));
    r
}

/// TCP connects to `addr`, one after the other; a refusal is an answer
/// from the device (reported as such), a timeout or an unreachable
/// network a loss.
pub async fn tcp_round(addr: SocketAddr, count: u32, wait: Duration) -> Round {
    let mut r = Round::default();
    for i in 0..count.min(super::config::MAX_COUNT) {
        if i > 0 {
            tokio::time::sleep(PROBE_SPACING).await;
        }
        let at = Instant::now();
        r.add(
            match timeout(wait, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Outcome::Answer(at.elapsed()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    Outcome::Refused(at.elapsed())
                }
                Ok(Err(_)) | Err(_) => Outcome::Lost,
            },
        );
    }
    r
}

/// One round of every target at once, in the config's order. The rounds
/// are polled together here rather than spawned as tasks: one boxed
/// future type instead of a task per target type keeps the binary small.
pub async fn all(targets: &[Target], count: u32, wait: Duration) -> Vec<Round> {
    type Fut<'a> = Pin<Box<dyn Future<Output = Round> + Send + 'a>>;
    let mut pending: Vec<Fut<'_>> = targets
        .iter()
        .map(|t| Box::pin(round(t, count, wait)) as Fut<'_>)
        .collect();
    let mut done: Vec<Option<Round>> = vec![None; targets.len()];
    std::future::poll_fn(|cx| {
        let mut left = false;
        for (f, d) in pending.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(r) => *d = Some(r),
                    Poll::Pending => left = true,
                }
            }
        }
        if left {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().map(Option::unwrap_or_default).collect()
}
