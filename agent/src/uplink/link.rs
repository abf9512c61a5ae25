//! What the publish path and the MQTT uplink share: the outbox, the packet
//! id tracker and the client's request channel ([`Link`]), plus the pump
//! that moves records from the outbox into rumqttc and the task that
//! flushes the disk outbox.
//!
//! Lock rules: [`Shared::lock`] is a `std::sync::Mutex`, held only for
//! short synchronous work, never across `.await`. The publisher takes its
//! sequence lock first and then this one; the uplink never stamps a
//! message while holding it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::uplink::outbox::{Id, Next, Outbox};
use crate::uplink::pkid::PkidTracker;

/// A message handed to rumqttc, as the [`PkidTracker`] knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// An outbox record.
    Outbox(Id),
    /// The birth (`online`) of connection number `.0`.
    Birth(u32),
    /// The `offline`/`shutdown` status.
    Shutdown,
}

/// The state behind [`Shared::lock`].
#[derive(Debug)]
pub struct Link {
    /// Every message of the sources, until its PUBACK.
    pub outbox: Outbox,
    /// rumqttc packet ids → messages.
    pub tracker: PkidTracker<Tracked>,
    /// Whether the uplink has a connection (set on CONNACK, cleared on a
    /// connection error); the pump hands over nothing while false.
    pub connected: bool,
    /// The current event loop's request channel (replaced with it).
    pub client: AsyncClient,
}

/// [`Link`] plus the wake-ups of the pump (`work`) and the sync task
/// (`dirty`).
#[derive(Debug)]
pub struct Shared {
    link: Mutex<Link>,
    /// Something may be sendable: a push, a PUBACK, a (re)connection.
    pub work: Notify,
    /// A record was written: the disk outbox may need a flush.
    pub dirty: Notify,
}

impl Shared {
    /// Wraps a link.
    pub fn new(link: Link) -> Arc<Shared> {
        Arc::new(Shared {
            link: Mutex::new(link),
            work: Notify::new(),
            dirty: Notify::new(),
        })
    }

    /// Locks the link (a poisoned lock is taken over: the outbox's own
    /// invariants hold between calls).
    pub fn lock(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Capacity of the client's request channel for an outbox window of
/// `max_in_flight`: the pump never has more than that many records in it,
/// plus room for the uplink's own requests.
pub fn channel_capacity(max_in_flight: u16) -> usize {
    usize::from(max_in_flight) + 8
}

/// Hands every record the window and the rate limit allow to rumqttc.
/// Returns when the rate limit lets the next one go, if it holds one.
pub fn pump_once(shared: &Shared) -> Option<Instant> {
    let mut guard = shared.lock();
    let link = &mut *guard;
    if !link.connected {
        return None;
    }
    loop {
        let now = std::time::Instant::now();
        match link.outbox.next_to_send(now) {
            Next::Send(id, rec) => {
                let (topic, payload, retain) =
                    (rec.topic().to_owned(), rec.payload().to_vec(), rec.retain());
                match link
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                {
                    Ok(()) => {
                        link.outbox.mark_sent(id, now);
                        link.tracker.handed_over(Tracked::Outbox(id));
                    }
                    Err(e) => {
                        // Cannot happen with channel_capacity; retry soon.
                        tracing::debug!(err = %e, "MQTT request channel refused a record");
                        return Some(Instant::now() + Duration::from_millis(100));
                    }
                }
            }
            Next::WindowFull | Next::Empty => return None,
            Next::RateLimited(at) => return Some(Instant::from_std(at)),
        }
    }
}

/// The pump task: runs [`pump_once`] whenever `work` is notified or the
/// rate limit expires, until `stop`.
pub async fn pump(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let at = pump_once(&shared);
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = shared.work.notified() => {}
            () = tokio::time::sleep_until(at.unwrap_or(far)) => {}
        }
    }
}

/// The sync task: flushes the disk outbox when due (a no-op in memory
/// mode), on a blocking thread, until `stop`.
pub async fn sync(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let due = shared.lock().outbox.sync_due();
        let now = Instant::now();
        match due.map(Instant::from_std) {
            Some(at) if at <= now => {
                let job = shared.lock().outbox.begin_sync();
                if let Some(job) = job {
                    match crate::spawn::spawn_blocking(move || job.run()).await {
                        Ok(done) => {
                            if let Err(e) = shared.lock().outbox.finish_sync(done) {
                                tracing::warn!(err = %e, "Flushing the outbox to disk failed");
                            }
                        }
                        Err(e) => tracing::warn!(err = %e, "Outbox flush task failed"),
                    }
                }
                if stop.is_cancelled() {
                    return;
                }
            }
            other => {
                let far = now + Duration::from_secs(3600);
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = shared.dirty.notified() => {}
                    () = tokio::time::sleep_until(other.unwrap_or(far)) => {}
                }
            }
        }
    }
}
