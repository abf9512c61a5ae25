//! `sitewatch-agent once`: every configured source runs one round and the
//! messages it would publish are printed, one per line as `TOPIC PAYLOAD`
//! (in the spirit of `telegraf --test`).
//!
//! It goes through the daemon's own code: each source's one round
//! ([`Source::once`](crate::sources::Source::once), in registry order)
//! publishes through a real [`Publisher`] and the source's forwarder, so
//! the payloads are exactly
//! what the broker would get. That publisher sits on a private memory
//! outbox and an MQTT client that is never polled: nothing connects to the
//! broker, the configured outbox (and its directory) is not opened, and
//! the SMART state file is neither read nor written. Cleanup is always a
//! dry run. Syslog is a receiver, not a round: it is skipped, and a note
//! says so.
//!
//! Camera probes do connect to the cameras, as `sitewatch-agent probe`
//! does.

use std::io::Write;

use crate::config::Config;
use crate::uplink::outbox::{Next, Outbox, OutboxConfig};
use crate::uplink::pkid::PkidTracker;
use crate::uplink::publish::Publisher;
use crate::uplink::{link, publish};

/// Memory for the private outbox: far more than one round makes.
const CAPTURE_BYTES: u64 = 64 * 1024 * 1024;

/// One message the agent would publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// MQTT topic.
    pub topic: String,
    /// Retained on the broker.
    pub retain: bool,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// A publisher over a private memory outbox whose MQTT client is never
/// polled (it never connects). Keep the event loop alive with it.
fn capture_publisher(cfg: &Config) -> anyhow::Result<(Publisher, rumqttc::EventLoop)> {
    let (client, eventloop) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new(cfg.client_id(), "localhost", 1883),
        8,
    );
    let ob = OutboxConfig {
        memory_max_bytes: CAPTURE_BYTES,
        dir: None,
        drain_bytes_per_sec: 0,
        ..OutboxConfig::default()
    };
    let (outbox, _) = Outbox::open(&ob)?;
    let shared = link::Shared::new(link::Link {
        outbox,
        tracker: PkidTracker::new(),
        connected: false,
        client,
    });
    let hb = u32::try_from(cfg.sources.heartbeat.interval.as_secs()).unwrap_or(u32::MAX);
    let p = Publisher::new(&cfg.site_id, publish::new_boot_id(), hb, shared)?;
    Ok((p, eventloop))
}

/// Takes every message out of `p`'s outbox, in sequence order.
fn drain(p: &Publisher) -> Vec<Captured> {
    // Sequence numbers of this private publisher run 1, 2, 3…: a slot
    // per number orders them without a sort.
    let mut out: Vec<Option<Captured>> = Vec::new();
    let mut l = p.shared().lock();
    loop {
        let now = std::time::Instant::now();
        let (id, c, seq) = match l.outbox.next_to_send(now) {
            Next::Send(id, rec) => (
                id,
                Captured {
                    topic: rec.topic().to_owned(),
                    retain: rec.retain(),
                    payload: rec.payload().to_vec(),
                },
                rec.seq(),
            ),
            // No rate limit and each record is acknowledged at once, so
            // anything else means the outbox is empty.
            _ => break,
        };
        l.outbox.mark_sent(id, now);
        l.outbox.ack(id);
        let i = usize::try_from(seq.saturating_sub(1)).unwrap_or(usize::MAX);
        if i < (1 << 20) {
            if out.len() <= i {
                out.resize(i + 1, None);
            }
            out[i] = Some(c);
        }
    }
    out.into_iter().flatten().collect()
}

/// Runs every configured source one round and returns what they would
/// publish. `note` gets one plain-words line per source that published
/// nothing or was skipped, and why.
pub async fn run(cfg: &Config, note: &mut dyn FnMut(String)) -> anyhow::Result<Vec<Captured>> {
    let (p, _eventloop) = capture_publisher(cfg)?;

    cfg.sources.once(&p, note).await;

    Ok(drain(&p))
}

/// `sitewatch-agent once`: runs [`run`] and prints each message as
/// `TOPIC PAYLOAD` on `out`, notes on stderr. Exit status 0 when the round
/// ran (a failing camera or disk is a result, not an error), 1 when it
/// could not run.
pub fn main(cfg: &Config, out: &mut dyn Write) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(24)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut notes = Vec::new();
    let res = crate::spawn::block_on(&rt, run(cfg, &mut |n| notes.push(n)));
    // A disk probe may still hang on a dead NFS server: do not wait.
    rt.shutdown_background();
    for n in &notes {
        eprintln!("note: {n}");
    }
    let msgs = match res {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let mut text = Vec::new();
    for m in &msgs {
        text.extend_from_slice(m.topic.as_bytes());
        text.push(b' ');
        text.extend_from_slice(&m.payload);
        text.push(b'\n');
    }
    if let Err(e) = out.write_all(&text).and_then(|()| out.flush()) {
        eprintln!("error: cannot write the messages: {e}");
        return 1;
    }
    eprintln!(
        "{} message(s) printed; nothing was sent to the broker, the outbox was not touched \
         and nothing was deleted.",
        msgs.len()
    );
    0
}
