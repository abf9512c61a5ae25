//! A TCP proxy with fault injection, to put between a client (the agent)
//! and a service (the broker) and break the link on purpose.
//!
//! [`TcpProxy`] listens on a port of `127.0.0.1` picked by the kernel and
//! forwards each connection to the target port. Faults:
//!
//! * [`TcpProxy::blackhole`]: like a dead uplink (a cut cable, an LTE modem
//!   that lost its carrier). Connections stay open but nothing is
//!   forwarded either way, and new connections are accepted and held, so
//!   neither side sees an error: the client's MQTT keep-alive and the
//!   broker's timeout have to notice. Bytes already read are delivered on
//!   [`TcpProxy::heal`] (like a link that comes back before TCP gives up).
//! * [`TcpProxy::reset_all`]: every open connection is aborted with a TCP
//!   RST on both sides (`SO_LINGER` 0, then close), like a NAT gateway or
//!   firewall dropping its state.
//! * [`TcpProxy::refuse`]: the listening socket is closed, so new
//!   connections are refused (`ECONNREFUSED`), like a broker host that is
//!   up with the broker down. Open connections are not touched (combine
//!   with `reset_all`).
//! * [`TcpProxy::heal`]: back to forwarding (re-opening the listener on the
//!   same port if it was closed).
//!
//! Thread-based and synchronous like the rest of this crate: one accept
//! thread, and per connection one holder thread and two pump threads that
//! poll their sockets every [`POLL`] so faults take effect within
//! milliseconds. Dropping the proxy closes everything and joins every
//! thread. It must not be used outside tests: it trusts its peers and
//! allocates a 64 KiB buffer per direction.

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How often threads look at the fault switches.
pub const POLL: Duration = Duration::from_millis(10);

/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`TcpProxy::heal`] retries to re-bind the port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters of a [`TcpProxy`], for assertions and failure messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections open now (held or forwarding).
    pub active: u64,
    /// Bytes forwarded client → target.
    pub bytes_up: u64,
    /// Bytes forwarded target → client.
    pub bytes_down: u64,
    /// Connections aborted by [`TcpProxy::reset_all`].
    pub resets: u64,
}

/// One proxied connection.
#[derive(Debug)]
struct Conn {
    client: TcpStream,
    /// Set once connected to the target.
    upstream: Mutex<Option<TcpStream>>,
    /// Set to end the connection (reset, stop, or one side failed).
    closed: AtomicBool,
    /// Set by [`Conn::abort`]: the sockets must be closed without a FIN.
    aborted: AtomicBool,
}

impl Conn {
    /// Arms RST-on-close on both sockets and ends the pumps; the RST goes
    /// out when the last handle is dropped.
    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        let _ = set_linger_zero(&self.client);
        if let Some(up) = lock(&self.upstream).as_ref() {
            let _ = set_linger_zero(up);
        }
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Ends the connection politely (FIN both ways) unless it was aborted,
    /// so the peers notice even while this `Conn` is still listed.
    fn finish(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if self.aborted.load(Ordering::SeqCst) {
            return;
        }
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(up) = lock(&self.upstream).as_ref() {
            let _ = up.shutdown(Shutdown::Both);
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    blackhole: AtomicBool,
    stop: AtomicBool,
    /// `None` while refusing.
    listener: Mutex<Option<TcpListener>>,
    conns: Mutex<Vec<(Arc<Conn>, JoinHandle<()>)>>,
    accepted: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    resets: AtomicU64,
}

impl Shared {
    fn halted(&self, conn: &Conn) -> bool {
        self.stop.load(Ordering::SeqCst) || conn.closed.load(Ordering::SeqCst)
    }
}

/// A fault-injecting TCP proxy on `127.0.0.1` (see the module docs).
///
/// ```no_run
/// use sitewatch_testkit::{Mosquitto, TcpProxy};
///
/// let broker = Mosquitto::start()?;
/// let proxy = TcpProxy::start(broker.port())?;
/// // point the agent at proxy.url() …
/// proxy.blackhole();            // the uplink dies silently
/// proxy.heal()?;                // and comes back
/// proxy.reset_all();            // NAT state lost: RST both ways
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding a fresh `127.0.0.1` port to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 for the TCP proxy")?;
        let port = listener
            .local_addr()
            .context("reading the TCP proxy's port")?
            .port();
        listener
            .set_nonblocking(true)
            .context("making the TCP proxy's listener non-blocking")?;
        let shared = Arc::new(Shared::default());
        *lock(&shared.listener) = Some(listener);
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, target_port));
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("proxy-{port}-accept"))
            .spawn(move || accept_loop(&s, target))
            .context("spawning the TCP proxy's accept thread")?;
        Ok(TcpProxy {
            port,
            target,
            shared,
            accept: Some(accept),
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`, for an MQTT client config.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The target this proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Stops forwarding in both directions and holds new connections; no
    /// error is visible to either side.
    pub fn blackhole(&self) {
        self.shared.blackhole.store(true, Ordering::SeqCst);
    }

    /// Closes the listening socket: new connections are refused. Open
    /// connections are left alone.
    pub fn refuse(&self) {
        *lock(&self.shared.listener) = None;
    }

    /// Aborts every open connection with a TCP RST to both the client and
    /// the target. Returns how many were aborted; they are gone when this
    /// returns.
    pub fn reset_all(&self) -> usize {
        let conns: Vec<(Arc<Conn>, JoinHandle<()>)> = lock(&self.shared.conns).drain(..).collect();
        let n = conns.len();
        for (conn, _) in &conns {
            conn.abort();
        }
        for (_, handle) in conns {
            let _ = handle.join();
        }
        self.shared.resets.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Ends every fault: forwards again (held connections are connected to
    /// the target now) and accepts new connections on the same port.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.shared.blackhole.store(false, Ordering::SeqCst);
        let mut listener = lock(&self.shared.listener);
        if listener.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + REBIND_TIMEOUT;
        // std sets SO_REUSEADDR, so TIME_WAIT connections do not block us;
        // another process grabbing the port meanwhile does.
        let l = loop {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| {
                        format!("re-binding the TCP proxy on 127.0.0.1:{}", self.port)
                    })
                }
                Err(_) => std::thread::sleep(POLL),
            }
        };
        l.set_nonblocking(true)
            .context("making the TCP proxy's listener non-blocking")?;
        *listener = Some(l);
        Ok(())
    }

    /// Current counters.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        let mut conns = lock(&s.conns);
        conns.retain(|(c, h)| !(c.closed.load(Ordering::SeqCst) && h.is_finished()));
        ProxyStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            active: conns.iter().filter(|(_, h)| !h.is_finished()).count() as u64,
            bytes_up: s.bytes_up.load(Ordering::Relaxed),
            bytes_down: s.bytes_down.load(Ordering::Relaxed),
            resets: s.resets.load(Ordering::Relaxed),
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        *lock(&self.shared.listener) = None;
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let conns: Vec<(Arc<Conn>, JoinHandle<()>)> = lock(&self.shared.conns).drain(..).collect();
        for (conn, handle) in conns {
            conn.closed.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, target: SocketAddr) {
    while !shared.stop.load(Ordering::SeqCst) {
        // Forget finished connections (closing their sockets).
        lock(&shared.conns).retain(|(_, h)| !h.is_finished());
        let accepted = match lock(&shared.listener).as_ref() {
            Some(l) => l.accept(),
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(_) => {
                std::thread::sleep(POLL / 2);
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        // Accepted sockets do not inherit non-blocking mode on Linux, but
        // be explicit: pumps rely on read timeouts.
        if client.set_nonblocking(false).is_err() || client.set_nodelay(true).is_err() {
            continue;
        }
        let conn = Arc::new(Conn {
            client,
            upstream: Mutex::new(None),
            closed: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
        });
        let (s, c) = (Arc::clone(shared), Arc::clone(&conn));
        let spawned = std::thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || serve(&s, &c, target));
        match spawned {
            Ok(handle) => lock(&shared.conns).push((conn, handle)),
            Err(_) => conn.closed.store(true, Ordering::SeqCst),
        }
    }
}

/// Holds a connection while blackholed, connects it to the target, then
/// pumps both directions until either side closes or a fault ends it.
fn serve(shared: &Arc<Shared>, conn: &Arc<Conn>, target: SocketAddr) {
    connect_and_pump(shared, conn, target);
    conn.finish();
}

fn connect_and_pump(shared: &Arc<Shared>, conn: &Arc<Conn>, target: SocketAddr) {
    while shared.blackhole.load(Ordering::SeqCst) {
        if shared.halted(conn) {
            return;
        }
        std::thread::sleep(POLL);
    }
    if shared.halted(conn) {
        return;
    }
    // Target down: the client is closed like a dead service would.
    let Ok(up) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        return;
    };
    let _ = up.set_nodelay(true);
    let (Ok(up_r), Ok(up_w), Ok(cl_r), Ok(cl_w)) = (
        up.try_clone(),
        up.try_clone(),
        conn.client.try_clone(),
        conn.client.try_clone(),
    ) else {
        return;
    };
    *lock(&conn.upstream) = Some(up);
    if shared.halted(conn) {
        // reset_all raced with the connect: abort the new socket too.
        conn.abort();
        return;
    }
    let (s1, c1) = (Arc::clone(shared), Arc::clone(conn));
    let up_pump = std::thread::Builder::new()
        .name("proxy-up".into())
        .spawn(move || pump(&s1, &c1, cl_r, up_w, |s| &s.bytes_up));
    let (s2, c2) = (Arc::clone(shared), Arc::clone(conn));
    let down_pump = std::thread::Builder::new()
        .name("proxy-down".into())
        .spawn(move || pump(&s2, &c2, up_r, cl_w, |s| &s.bytes_down));
    for h in [up_pump, down_pump].into_iter().flatten() {
        let _ = h.join();
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Copies `from` → `to` until EOF (then half-closes `to`), an error (then
/// ends the whole connection), or a fault.
fn pump(
    shared: &Shared,
    conn: &Conn,
    mut from: TcpStream,
    mut to: TcpStream,
    counter: impl Fn(&Shared) -> &AtomicU64,
) {
    if from.set_read_timeout(Some(POLL)).is_err() || to.set_write_timeout(Some(POLL)).is_err() {
        conn.closed.store(true, Ordering::SeqCst);
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    'outer: while !shared.halted(conn) {
        if shared.blackhole.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if timed_out(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // Read just as the blackhole began: hold it like the rest.
        while shared.blackhole.load(Ordering::SeqCst) {
            if shared.halted(conn) {
                break 'outer;
            }
            std::thread::sleep(POLL);
        }
        let mut off = 0;
        while off < n {
            if shared.halted(conn) {
                break 'outer;
            }
            match to.write(&buf[off..n]) {
                Ok(0) => break 'outer,
                Ok(k) => off += k,
                Err(e) if timed_out(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break 'outer,
            }
        }
        counter(shared).fetch_add(n as u64, Ordering::Relaxed);
    }
    // One side failed or a fault ended the connection: end both sides.
    conn.closed.store(true, Ordering::SeqCst);
}

/// Sets `SO_LINGER` to {on, 0 s}, so closing the socket sends RST instead
/// of FIN. `TcpStream::set_linger` is unstable (rust-lang/rust#88494) and
/// this crate has no libc binding, so the call is declared here.
#[cfg(target_os = "linux")]
fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    use std::ffi::{c_int, c_void};
    use std::os::fd::AsRawFd as _;

    #[repr(C)]
    struct Linger {
        l_onoff: c_int,
        l_linger: c_int,
    }
    extern "C" {
        fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: u32,
        ) -> c_int;
    }
    #[cfg(any(target_arch = "mips", target_arch = "mips64"))]
    const LEVEL_NAME: (c_int, c_int) = (0xffff, 0x0080);
    #[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
    const LEVEL_NAME: (c_int, c_int) = (1, 13); // SOL_SOCKET, SO_LINGER
    let value = Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is an open socket owned by `s`, alive for the
    // whole call; `value` is an initialised `struct linger` and the length
    // passed is exactly its size; setsockopt does not keep the pointer.
    let rc = unsafe {
        setsockopt(
            s.as_raw_fd(),
            LEVEL_NAME.0,
            LEVEL_NAME.1,
            std::ptr::from_ref(&value).cast::<c_void>(),
            std::mem::size_of::<Linger>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the connection is only shut down (FIN, not RST).
#[cfg(not(target_os = "linux"))]
fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    s.shutdown(Shutdown::Both)
}
