//! [`super::Mode::Drain`]: the loop that drives a dead share-group peer's session
//! for [`crate::takeover`], kept apart from the bridge's own session loop
//! (`Source::run_member`) because it ends differently: it connects once,
//! never subscribes, unsubscribes the session from the group, and stops
//! once everything received is acknowledged and the session has been
//! quiet; a connection failure ends it ([`Ended::Failed`]) rather than
//! being retried (the next takeover round tries again).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::Event;
use rumqttc::Outgoing;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{forward, Ended, Received, Source};

/// Progress of a drained session.
#[derive(Debug, Default)]
struct Progress {
    unsubscribed: bool,
    received: u64,
    acked: u64,
    last_activity: Option<Instant>,
    disconnecting: bool,
}

impl Progress {
    /// Unsubscribed, every message acknowledged, and quiet for `idle`.
    fn done(&self, idle: Duration) -> bool {
        self.unsubscribed
            && self.acked >= self.received
            && self.last_activity.is_some_and(|t| t.elapsed() >= idle)
    }
}

impl Source {
    /// Drains the session: unsubscribe it, forward what the broker had
    /// queued, and DISCONNECT once [`Progress::done`].
    pub(super) async fn run_drain(
        mut self,
        tx: mpsc::Sender<Received>,
        idle: Duration,
        stop: CancellationToken,
    ) -> Ended {
        let mut drain = Progress::default();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ended::Stopped,
                ev = self.eventloop.poll() => ev,
                _ = tick.tick() => {
                    if drain.done(idle) && !drain.disconnecting {
                        drain.disconnecting = true;
                        let client = self.client.clone();
                        tokio::spawn(async move {
                            let _ = client.disconnect().await;
                        });
                    }
                    continue;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    if !ack.session_present {
                        // Nothing queued: the session had expired or was
                        // drained already. Leave it to expire again.
                        tracing::info!("No session left to take over.");
                        drain.unsubscribed = true;
                        drain.last_activity = Some(Instant::now());
                    } else {
                        tracing::info!("Took over the session; unsubscribing it from the group.");
                        let client = self.client.clone();
                        let filter = self.filter.clone();
                        tokio::spawn(async move {
                            if let Err(e) = client.unsubscribe(filter).await {
                                tracing::warn!(err = %e, "Could not queue UNSUBSCRIBE.");
                            }
                        });
                    }
                }
                Ok(Event::Incoming(Packet::UnsubAck(_))) => {
                    drain.unsubscribed = true;
                    drain.last_activity = Some(Instant::now());
                }
                Ok(Event::Outgoing(Outgoing::PubAck(_))) => {
                    drain.acked += 1;
                    drain.last_activity = Some(Instant::now());
                }
                // Not expected (a drain never subscribes); handled as the
                // member loop does.
                Ok(Event::Incoming(Packet::SubAck(ack))) => self.on_suback(&ack),
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    drain.received += 1;
                    drain.last_activity = Some(Instant::now());
                    if !forward(self.received(publish), &tx, &stop).await {
                        return Ended::Stopped;
                    }
                }
                Ok(Event::Incoming(Packet::Disconnect(d))) => {
                    tracing::warn!(reason = ?d.reason_code, "The broker closed the session.");
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    tracing::info!("Disconnected from the broker.");
                    if drain.disconnecting {
                        return Ended::Drained {
                            messages: drain.received,
                        };
                    }
                    return Ended::Stopped;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(err = %e, "Lost the taken-over session's connection.");
                    return Ended::Failed;
                }
            }
        }
    }
}
