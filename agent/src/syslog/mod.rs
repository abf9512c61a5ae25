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
//! [`run`] binds the listeners at once (receiving starts before the first
//! broker connection: batches wait in bounded memory), and on `stop`
//! closes the listeners and publishes what is pending before returning,
//! so the agent's `offline` status stays the last message of a boot.

pub mod batch;
pub mod config;
pub mod framing;
pub mod parse;
pub mod source;
pub mod time;

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::SyslogConfig;

use crate::publish::Publisher;

/// Runs the syslog source until `stop` is cancelled, then flushes.
pub async fn run(publisher: Publisher, cfg: SyslogConfig, stop: CancellationToken) {
    let cfg = Arc::new(cfg);
    let shared: source::Shared = Arc::new(Mutex::new(source::Receiver::new(
        Arc::clone(&cfg),
        publisher,
    )));
    // Listeners get their own token so that the final flush happens after
    // every listener (and connection) has stopped.
    let stop_listeners = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for &addr in &cfg.udp {
        // First bind attempt right here, so failures are logged at start.
        let first = Some(source::bind_udp(addr));
        tasks.spawn(source::udp(
            addr,
            first,
            Arc::clone(&shared),
            cfg.max_line_bytes,
            stop_listeners.clone(),
        ));
    }
    let open = Arc::new(AtomicUsize::new(0));
    for &addr in &cfg.tcp {
        let first = Some(source::bind_tcp(addr));
        tasks.spawn(source::tcp(
            addr,
            first,
            Arc::clone(&shared),
            Arc::clone(&cfg),
            Arc::clone(&open),
            stop_listeners.clone(),
        ));
    }
    let tick =
        (cfg.batch_max_wait / 10).clamp(Duration::from_millis(10), Duration::from_millis(200));
    tasks.spawn(source::timer(
        Arc::clone(&shared),
        tick,
        stop_listeners.clone(),
    ));

    stop.cancelled().await;
    stop_listeners.cancel();
    while tasks.join_next().await.is_some() {}
    source::flush_on_shutdown(&shared).await;
}
