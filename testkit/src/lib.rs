//! Throwaway real services and TLS material for sitewatch tests, a
//! stand-in for Grafana Loki's push API ([`LokiReceiver`]), and the
//! GStreamer RTSP camera fixture ([`RtspFixture`]).
//!
//! The agent and the bridge talk to real mosquitto and real PostgreSQL in
//! production, so their tests do too: mocks would not catch TLS, QoS,
//! persistence or SQL mistakes. Every service started here is private to
//! the test that started it:
//!
//! * it listens on `127.0.0.1` on a port picked at run time (never the
//!   machine's standing services on 1883/5432, never a fixed port), so
//!   tests can run in parallel;
//! * its configuration, data and log live in a fresh temporary directory;
//! * dropping the handle kills the process, waits for it and removes the
//!   directory.
//!
//! Everything is synchronous and uses only `std` threads and processes, so
//! it works the same from `#[test]` and `#[tokio::test]` functions.
//!
//! ```no_run
//! use sitewatch_testkit::{Mosquitto, Postgres, TestCerts};
//!
//! let dir = tempfile::tempdir()?;
//! let certs = TestCerts::generate(dir.path())?;
//! let broker = Mosquitto::builder().tls(&certs).mtls(&certs).start()?;
//! let db = Postgres::start()?;
//! let url = db.create_database("bridge_test")?;
//! # let _ = (broker, url);
//! # Ok::<(), anyhow::Error>(())
//! ```

#![deny(missing_docs)]

mod certs;
pub mod loki;
mod mosquitto;
mod postgres;
mod process;
mod proxy;
mod rtsp;

use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use certs::TestCerts;
pub use loki::{LokiLimits, LokiReceiver, LokiReceiverBuilder, ReceivedEntry, RequestRecord};
pub use mosquitto::{Mosquitto, MosquittoBuilder};
pub use postgres::Postgres;
pub use process::{mosquitto_binary, pg_bindir, require_binaries, ChildGuard};
pub use proxy::{ProxyStats, TcpProxy};
pub use rtsp::RtspFixture;

/// Linux signal numbers for [`ChildGuard::signal`] and
/// [`Mosquitto::signal`], so tests need not depend on `libc`.
pub mod sig {
    use rustix::process::Signal;

    /// `SIGHUP`: reload configuration / reopen logs.
    pub const HUP: i32 = Signal::HUP.as_raw();
    /// `SIGINT`: what Ctrl-C sends.
    pub const INT: i32 = Signal::INT.as_raw();
    /// `SIGQUIT`.
    pub const QUIT: i32 = Signal::QUIT.as_raw();
    /// `SIGKILL`: cannot be caught; simulates a crash or power loss.
    pub const KILL: i32 = Signal::KILL.as_raw();
    /// `SIGTERM`: the polite shutdown request (systemd's default).
    pub const TERM: i32 = Signal::TERM.as_raw();
    /// `SIGSTOP`: freezes a process, e.g. to simulate a hung broker.
    pub const STOP: i32 = Signal::STOP.as_raw();
    /// `SIGCONT`: resumes a process frozen with [`STOP`].
    pub const CONT: i32 = Signal::CONT.as_raw();
}

/// How many recently handed-out ports [`free_port`] remembers, so that two
/// services started concurrently in one test process never get the same
/// port just because the kernel handed it out twice.
const RECENT_PORTS: usize = 4096;

static RECENT: Mutex<VecDeque<u16>> = Mutex::new(VecDeque::new());

/// Returns a TCP port on `127.0.0.1` that was free a moment ago.
///
/// It binds port 0, reads the port the kernel chose and closes the socket,
/// so another process may grab it before the caller binds it; the service
/// starters in this crate therefore retry with a new port when that
/// happens. Ports handed out recently by this process are skipped.
///
/// # Panics
///
/// Panics if nothing can be bound on the loopback interface at all, in
/// which case no test using this crate could run anyway.
pub fn free_port() -> u16 {
    match free_ports(1) {
        Ok(ports) if !ports.is_empty() => ports[0],
        Ok(_) => panic!("free_ports(1) returned no port"),
        Err(err) => panic!("cannot find a free TCP port on 127.0.0.1: {err:#}"),
    }
}

/// Returns `n` distinct ports that were free a moment ago (see
/// [`free_port`]). All sockets are held open until every port is chosen so
/// the kernel cannot hand out the same port twice within one call.
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    let recent_set: HashSet<u16> = recent.iter().copied().collect();
    // Listeners stay open until we return, so a rejected (recently used)
    // port is not offered again in this call.
    let mut held = Vec::new();
    let mut ports = Vec::with_capacity(n);
    let mut attempts = 0;
    while ports.len() < n {
        attempts += 1;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener
            .local_addr()
            .context("reading the port of a 127.0.0.1:0 socket")?
            .port();
        held.push(listener);
        // After many rejections accept reused ports rather than fail: the
        // retry-on-conflict logic of the services still protects us.
        if !recent_set.contains(&port) || attempts > n + 256 {
            ports.push(port);
        }
    }
    for &port in &ports {
        if recent.len() >= RECENT_PORTS {
            recent.pop_front();
        }
        recent.push_back(port);
    }
    Ok(ports)
}

/// Polls `f` until it returns `true`, sleeping 50 ms between tries.
///
/// Tests against real processes must wait for effects (a row appearing, a
/// log line, a port opening) instead of sleeping a fixed time; this keeps
/// them both fast and robust. The error names `what` so a timeout says
/// what was being waited for.
pub fn wait_until<F: FnMut() -> bool>(
    timeout: Duration,
    what: &str,
    mut f: F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = free_ports(8).expect("free ports");
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            assert_ne!(port, 0);
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port should be free");
        }
    }

    #[test]
    fn free_port_does_not_repeat_recent_ports() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
    }

    #[test]
    fn wait_until_reports_what() {
        let err = wait_until(Duration::from_millis(120), "the moon", || false)
            .expect_err("must time out");
        assert!(err.to_string().contains("the moon"), "{err}");
        let mut n = 0;
        wait_until(Duration::from_secs(5), "third try", || {
            n += 1;
            n == 3
        })
        .expect("succeeds on third try");
        assert_eq!(n, 3);
    }
}
