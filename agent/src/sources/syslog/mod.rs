//! Syslog source: receives syslog from NVRs, routers and the gateway
//! itself over UDP and TCP and relays it as `log` batches
//! (`sitewatch/v1/{site}/log`, QoS 1).
//!
//! One file per role:
//! - [`config`]: the `[syslog]` table and per-sender policy;
//! - [`framing`]: TCP framing (octet counting / newline), pure;
//! - [`parse`]: line → record (RFC 5424, RFC 3164, vendor rules, raw), pure;
//! - [`time`]: date arithmetic and fixed zones, pure;
//! - [`batch`]: batches by encoded size, count and age; bounded pending
//!   memory (oldest dropped at the bound);
//! - [`source`]: listeners, allow list, rate limits, hand-off to the
//!   [`Publisher`].
//!
//! [`Syslog::start`] binds the listeners at once (receiving starts before
//! the first broker connection: batches wait in bounded memory), and
//! [`Syslog::stop`] closes the listeners and publishes what is pending
//! before returning, so the agent's `offline` status stays the last
//! message of a boot. [`Syslog::update`] applies a reloaded `[syslog]`
//! table: only listeners whose address changed are closed or bound.
//!
//! **Socket activation.** When systemd passes sockets named `syslog`
//! (`LISTEN_FDS`/`LISTEN_FDNAMES`, see `systemd/sitewatch-agent-syslog.socket`)
//! they are used instead of the configured `udp`/`tcp` addresses (UDP or
//! TCP by `SO_TYPE`): port 514 without any capability. [`Inherited`] keeps
//! the originals open for the whole process; listeners get duplicates, so
//! a reload or restart of the receiver never closes them.

pub mod batch;
pub mod check;
pub mod config;
pub mod framing;
pub mod parse;
pub mod source;
pub mod time;

use crate::config::Doc;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::SyslogConfig;

use super::{BoxFuture, Context, Running, Sections, Source};
use crate::check::Row;
use crate::uplink::publish::Publisher;

/// The `FileDescriptorName=` of the socket unit.
pub const FD_NAME: &str = "syslog";

/// Set once the process took its `LISTEN_FDS`.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Syslog sockets received from systemd (socket activation).
#[derive(Debug, Default)]
pub struct Inherited {
    /// Datagram sockets.
    pub udp: Vec<std::net::UdpSocket>,
    /// Listening stream sockets.
    pub tcp: Vec<std::net::TcpListener>,
}

impl Inherited {
    /// Takes the sockets named [`FD_NAME`] passed by systemd
    /// (`LISTEN_PID` must be this process). Other passed descriptors are
    /// left alone. Only the first call in a process takes anything.
    pub fn from_env() -> io::Result<Inherited> {
        let mut out = Inherited::default();
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(out);
        }
        for (fd, name) in sd_notify::listen_fds_with_names()? {
            if name != FD_NAME {
                tracing::debug!(fd, name = %name, "Ignoring a passed socket with another name");
                continue;
            }
            // SAFETY: sd_listen_fds(3): descriptors from 3 to 3+LISTEN_FDS
            // are open and handed to this process (LISTEN_PID checked by
            // sd_notify), and the TAKEN flag makes sure only one owner is
            // ever created for each.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let kind = rustix::net::sockopt::socket_type(owned.as_fd())
                .map_err(|e| io::Error::other(format!("socket {fd} from systemd: SO_TYPE: {e}")))?;
            if kind == rustix::net::SocketType::DGRAM {
                let s = std::net::UdpSocket::from(owned);
                s.set_nonblocking(true)?;
                tracing::info!(fd, addr = ?s.local_addr().ok(), "Syslog UDP socket from systemd");
                out.udp.push(s);
            } else if kind == rustix::net::SocketType::STREAM {
                let s = std::net::TcpListener::from(owned);
                s.set_nonblocking(true)?;
                tracing::info!(fd, addr = ?s.local_addr().ok(), "Syslog TCP socket from systemd");
                out.tcp.push(s);
            } else {
                tracing::warn!(fd, "Socket from systemd is neither UDP nor TCP; ignored");
            }
        }
        Ok(out)
    }

    /// Whether systemd passed any syslog socket.
    pub fn is_empty(&self) -> bool {
        self.udp.is_empty() && self.tcp.is_empty()
    }
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}

/// One running listener task.
struct Listener {
    proto: Proto,
    addr: SocketAddr,
    /// Bound from the config (`false`: a socket from systemd).
    configured: bool,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A running syslog receiver.
pub struct Syslog {
    shared: source::Shared,
    listeners: Vec<Listener>,
    open: Arc<AtomicUsize>,
    timer: JoinHandle<()>,
    stop_all: CancellationToken,
    inherited: Arc<Mutex<Inherited>>,
}

impl Syslog {
    /// Starts the receiver: binds (or takes from `inherited`) the
    /// listeners and the batch timer.
    pub fn start(
        publisher: Publisher,
        cfg: SyslogConfig,
        inherited: Arc<Mutex<Inherited>>,
    ) -> Syslog {
        let cfg = Arc::new(cfg);
        let shared: source::Shared = Arc::new(Mutex::new(source::Receiver::new(
            Arc::clone(&cfg),
            publisher,
        )));
        let stop_all = CancellationToken::new();
        let tick =
            (cfg.batch_max_wait / 10).clamp(Duration::from_millis(10), Duration::from_millis(200));
        let timer = crate::spawn::spawn(source::timer(Arc::clone(&shared), tick, stop_all.clone()));
        let mut me = Syslog {
            shared,
            listeners: Vec::new(),
            open: Arc::new(AtomicUsize::new(0)),
            timer,
            stop_all,
            inherited,
        };
        me.start_inherited();
        me.start_configured(&cfg);
        me
    }

    fn uses_systemd_sockets(&self) -> bool {
        !self
            .inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Listeners on duplicates of the sockets from systemd.
    fn start_inherited(&mut self) {
        let inh = self
            .inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut started = Vec::new();
        for s in &inh.udp {
            let addr = s
                .local_addr()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            let sock = s.try_clone().and_then(tokio::net::UdpSocket::from_std);
            started.push((Proto::Udp, addr, Some(sock.map(Bound::Udp))));
        }
        for s in &inh.tcp {
            let addr = s
                .local_addr()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            let sock = s.try_clone().and_then(tokio::net::TcpListener::from_std);
            started.push((Proto::Tcp, addr, Some(sock.map(Bound::Tcp))));
        }
        drop(inh);
        for (proto, addr, first) in started {
            self.spawn(proto, addr, false, first);
        }
    }

    /// Listeners for the configured addresses, unless systemd passed
    /// sockets (then the configured addresses are not bound at all).
    fn start_configured(&mut self, cfg: &SyslogConfig) {
        if self.uses_systemd_sockets() {
            if !cfg.udp.is_empty() || !cfg.tcp.is_empty() {
                tracing::info!(
                    "Using the syslog sockets from systemd; [syslog] udp/tcp addresses are not bound"
                );
            }
            return;
        }
        for &addr in &cfg.udp {
            self.spawn(Proto::Udp, addr, true, None);
        }
        for &addr in &cfg.tcp {
            self.spawn(Proto::Tcp, addr, true, None);
        }
    }

    fn spawn(
        &mut self,
        proto: Proto,
        addr: SocketAddr,
        configured: bool,
        first: Option<io::Result<Bound>>,
    ) {
        let stop = self.stop_all.child_token();
        let shared = Arc::clone(&self.shared);
        let task = match proto {
            Proto::Udp => {
                // First bind attempt right here, so failures are logged at start.
                let first = match first {
                    Some(r) => r.and_then(Bound::udp),
                    None => source::bind_udp(addr),
                };
                crate::spawn::spawn(source::udp(addr, Some(first), shared, stop.clone()))
            }
            Proto::Tcp => {
                let first = match first {
                    Some(r) => r.and_then(Bound::tcp),
                    None => source::bind_tcp(addr),
                };
                crate::spawn::spawn(source::tcp(
                    addr,
                    Some(first),
                    shared,
                    Arc::clone(&self.open),
                    stop.clone(),
                ))
            }
        };
        self.listeners.push(Listener {
            proto,
            addr,
            configured,
            stop,
            task,
        });
    }

    /// Applies a reloaded `[syslog]` table: new settings for every line
    /// from now on; listeners for removed addresses are closed and new
    /// addresses bound; unchanged ones (and sockets from systemd) stay.
    pub async fn update(&mut self, cfg: SyslogConfig) {
        let cfg = Arc::new(cfg);
        source::lock(&self.shared).set_config(Arc::clone(&cfg));
        if self.uses_systemd_sockets() {
            return;
        }
        let wanted: Vec<(Proto, SocketAddr)> = cfg
            .udp
            .iter()
            .map(|a| (Proto::Udp, *a))
            .chain(cfg.tcp.iter().map(|a| (Proto::Tcp, *a)))
            .collect();
        // Close first, so a port moving to another address can be bound.
        let (keep, gone): (Vec<Listener>, Vec<Listener>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|l| !l.configured || wanted.contains(&(l.proto, l.addr)));
        self.listeners = keep;
        for l in gone {
            tracing::info!(addr = %l.addr, proto = ?l.proto, "Closing syslog listener (removed from the config)");
            l.stop.cancel();
            let _ = l.task.await;
        }
        for (proto, addr) in wanted {
            let running = self
                .listeners
                .iter()
                .any(|l| l.configured && l.proto == proto && l.addr == addr);
            if !running {
                self.spawn(proto, addr, true, None);
            }
        }
    }

    /// The `(protocol, address)` of every listener, for tests and logs.
    pub fn listening(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|l| format!("{:?} {}", l.proto, l.addr).to_lowercase())
            .collect()
    }

    /// Closes every listener (sockets from systemd stay open in
    /// [`Inherited`]) and publishes what is pending.
    pub async fn stop(self) {
        self.stop_all.cancel();
        for l in self.listeners {
            let _ = l.task.await;
        }
        let _ = self.timer.await;
        source::flush_on_shutdown(&self.shared).await;
    }
}

/// A socket already bound (from systemd).
enum Bound {
    Udp(tokio::net::UdpSocket),
    Tcp(tokio::net::TcpListener),
}

impl Bound {
    fn udp(self) -> io::Result<tokio::net::UdpSocket> {
        match self {
            Bound::Udp(s) => Ok(s),
            Bound::Tcp(_) => Err(io::Error::other("not a UDP socket")),
        }
    }
    fn tcp(self) -> io::Result<tokio::net::TcpListener> {
        match self {
            Bound::Tcp(s) => Ok(s),
            Bound::Udp(_) => Err(io::Error::other("not a TCP socket")),
        }
    }
}

/// Runs the syslog source until `stop` is cancelled, then flushes (no
/// reload, no sockets from systemd).
pub async fn run(publisher: Publisher, cfg: SyslogConfig, stop: CancellationToken) {
    let s = Syslog::start(publisher, cfg, Arc::default());
    stop.cancelled().await;
    s.stop().await;
}

impl Running for Syslog {
    fn update<'a>(&'a mut self, new: &'a Sections) -> Option<BoxFuture<'a, ()>> {
        // Turned off (`None`): the supervisor stops it.
        let cfg = new.syslog.clone()?;
        Some(Box::pin(Syslog::update(self, cfg)))
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(Syslog::stop(*self))
    }
}

/// The syslog receiver in the registry (off without a `[syslog]` table).
/// A reload keeps it running: new policy for the next line, and only
/// listeners whose address changed are closed or bound.
pub struct SyslogSource;

impl Source for SyslogSource {
    const NAME: &'static str = "syslog";
    type Raw = Option<config::SyslogRaw>;
    type Config = Option<SyslogConfig>;

    fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        super::read_optional(doc, Self::NAME, problems, config::read)
    }

    fn validate(raw: Self::Raw, problems: &mut Vec<String>) -> Option<Self::Config> {
        match raw {
            None => Some(None),
            Some(raw) => config::validate(raw, problems).map(Some),
        }
    }

    fn summary(cfg: &Self::Config) -> Option<String> {
        Some(match cfg {
            Some(sys) => sys.summary(),
            None => "syslog receiver off (no [syslog] table)".to_owned(),
        })
    }

    fn start(cx: &Context, cfg: &Self::Config) -> Option<Box<dyn Running>> {
        let cfg = cfg.clone()?;
        Some(Box::new(Syslog::start(
            cx.publisher.clone(),
            cfg,
            Arc::clone(&cx.inherited),
        )))
    }

    async fn check(cfg: &Self::Config) -> Vec<Row> {
        check::rows(cfg.as_ref())
    }

    async fn once(_p: &Publisher, cfg: &Self::Config, note: &mut dyn FnMut(String)) {
        if cfg.is_some() {
            note(
                "syslog: a receiver has no round, so it is not run here (the running agent \
                     counts what it receives: `sitewatch-agent status`)"
                    .into(),
            );
        } else {
            note("syslog: off (no [syslog] table)".into());
        }
    }
}
