//! MQTT source: one persistent MQTT 5 session, messages into a bounded
//! channel.
//!
//! Session: clean start off, a session expiry > 0, a stable client id, and
//! manual acknowledgements, so that a message is acknowledged only after
//! the writer has committed it, and the broker keeps (and redelivers)
//! whatever was not acknowledged while the bridge was away.
//!
//! Flow control: the MQTT Receive Maximum is one batch more than the
//! writer writes at once (`[batch] in_flight`, default 2: three batches,
//! at most 65,535 messages), so that the broker sends the next batch
//! while the writer commits the current ones (with one batch, receiving
//! and writing took turns: the database sat idle while a batch crossed
//! the network, the network while it committed). A broker that keeps to
//! it never has more unacknowledged messages in flight to us than that,
//! and the channel to the writer (the same size) never fills: the poll loop never waits, and keep-alives flow while the
//! writer waits for the database. mosquitto 2.0.11 does not keep to it
//! strictly (seen: 100 in flight with a maximum of 50); if the channel
//! does fill, the poll loop waits for room and the broker holds the rest.
//! Nothing is dropped and no queue is unbounded. The cost of waiting: a
//! database outage longer than 1.5 keep-alives can then make the broker
//! drop the connection; the unacknowledged messages are redelivered on the
//! next connection and stored once.
//!
//! Two loops drive the event loop, by [`Mode`]: the bridge's own session
//! (`run_member`, here: subscribe, reconnect with backoff, until stopped)
//! and a dead peer's session during a takeover (`run_drain`, in
//! `source/drain.rs`: connect once, unsubscribe, forward what was queued,
//! end). They share only how a message is counted and handed to the
//! writer.
//!
//! rumqttc pitfalls handled here:
//! * the event loop is polled in its own task which never awaits a client
//!   request (ack/subscribe) itself (rumqtt#1025 freeze): subscriptions are
//!   sent from a short-lived task;
//! * subscriptions are sent again on every ConnAck (rumqtt#250);
//! * `set_max_packet_size(Some(..))` well above the wire limit, so that an
//!   oversize payload arrives and is rejected as `too_large` rather than
//!   breaking the connection (rumqtt#1018: `None` is ignored);
//! * every message carries the generation of the connection it arrived
//!   on ([`Received`]), and the writer does not ack messages from an
//!   earlier connection: a packet id is only meaningful on its own
//!   connection (after a lost session the same id may name a different
//!   message), and the broker redelivers those messages on the new
//!   connection anyway, where they are stored as duplicates and acked.

mod drain;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rumqttc::v5::mqttbytes::v5::{
    Filter, Packet, Publish, RetainForwardRule, SubAck, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use sitewatch_mqtt::Backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::Health;
use crate::metrics::{KindLabel, Metrics};

/// Largest MQTT packet we accept: well above
/// [`sitewatch_wire::MAX_PAYLOAD_BYTES`], so oversize payloads up to this
/// size are received and rejected as `too_large`. The broker silently
/// drops larger ones for us (MQTT 5 Maximum Packet Size).
pub const MAX_PACKET_BYTES: u32 = 1024 * 1024;

/// One message handed to the writer.
#[derive(Debug)]
pub struct Received {
    /// The publish, needed to acknowledge it.
    pub publish: Publish,
    /// Connection generation it arrived on (see [`Source::generation`]).
    pub generation: u64,
    /// Bridge clock at receipt.
    pub received_at: SystemTime,
}

/// What a [`Source`] does with its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The bridge's own session: subscribe on every connection, run until
    /// stopped.
    Member,
    /// A dead share-group peer's session ([`crate::takeover`]): connect
    /// once, unsubscribe so the broker stops giving it a share, take what
    /// it had queued, and end once everything received is acknowledged and
    /// nothing has arrived for `idle`.
    Drain {
        /// Quiet time after which the queue counts as empty.
        idle: Duration,
    },
}

/// How [`Source::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Stopped (shutdown, or the graceful DISCONNECT went out).
    Stopped,
    /// [`Mode::Drain`]: unsubscribed, and every message received was
    /// stored and acknowledged.
    Drained {
        /// Messages received on the drained session.
        messages: u64,
    },
    /// [`Mode::Drain`]: the connection failed or the session was gone.
    Failed,
}

/// The MQTT side of the bridge.
pub struct Source {
    client: AsyncClient,
    eventloop: EventLoop,
    filter: String,
    generation: Arc<AtomicU64>,
    health: Arc<Health>,
    metrics: Metrics,
    mode: Mode,
    /// Resolves once the bridge may use its session (see
    /// [`crate::takeover::Lease`]); `None`: at once.
    may_connect: Option<CancellationToken>,
}

impl Source {
    /// Builds the client (no I/O yet).
    pub fn new(config: &Config, health: Arc<Health>, metrics: Metrics) -> anyhow::Result<Source> {
        Self::with_mode(config, health, metrics, Mode::Member)
    }

    /// [`Source::new`] for a given [`Mode`].
    pub fn with_mode(
        config: &Config,
        health: Arc<Health>,
        metrics: Metrics,
        mode: Mode,
    ) -> anyhow::Result<Source> {
        let url = config.mqtt.url().context("reading the broker URL")?;
        let mut opts = MqttOptions::new(config.client_id.clone(), url.host.clone(), url.port);
        opts.set_transport(
            config
                .mqtt
                .transport()
                .context("setting up the broker transport")?,
        );
        if let Some((user, pass)) = config
            .mqtt
            .credentials()
            .context("reading broker credentials")?
        {
            opts.set_credentials(user, pass);
        }
        // rumqttc asserts a keep-alive of at least 5 s.
        opts.set_keep_alive(Duration::from_secs(u64::from(
            config.mqtt.keep_alive_secs.max(5),
        )));
        opts.set_clean_start(false);
        opts.set_session_expiry_interval(Some(
            u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX),
        ));
        opts.set_manual_acks(true);
        // One batch more than are written at once: the next one arrives
        // while those commit (see "Flow control" above).
        opts.set_receive_maximum(Some(
            u16::try_from(config.receive_maximum()).unwrap_or(u16::MAX),
        ));
        opts.set_max_packet_size(Some(MAX_PACKET_BYTES));
        opts.set_connection_timeout(10);
        // Requests are acks (one per message), SUBSCRIBE and DISCONNECT.
        // The writer never waits for room (it uses `try_ack`), so this
        // only sets how many acks can be handed over at once.
        let cap = config.receive_maximum() + 16;
        let (client, eventloop) = AsyncClient::new(opts, cap);
        Ok(Source {
            client,
            eventloop,
            filter: config.filter.clone(),
            generation: Arc::new(AtomicU64::new(0)),
            health,
            metrics,
            mode,
            may_connect: None,
        })
    }

    /// Waits for `token` to be cancelled before the first connection: the
    /// bridge's lease on its session ([`crate::takeover`]).
    pub fn connect_when(mut self, token: CancellationToken) -> Source {
        self.may_connect = Some(token);
        self
    }

    /// A handle for acks and for disconnecting.
    pub fn client(&self) -> AsyncClient {
        self.client.clone()
    }

    /// Connection counter, incremented on every ConnAck. The writer acks a
    /// message only if it is still equal to [`Received::generation`].
    pub fn generation(&self) -> Arc<AtomicU64> {
        self.generation.clone()
    }

    /// Polls the event loop until `stop` is cancelled, the graceful
    /// DISCONNECT has been sent, or (once `draining` is cancelled) the
    /// connection fails. Messages go into `tx`; once the writer closes
    /// the channel they are no longer forwarded (and, unacknowledged, are
    /// redelivered to the next session).
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Received>,
        draining: CancellationToken,
        stop: CancellationToken,
    ) -> Ended {
        if let Some(token) = self.may_connect.take() {
            if !token.is_cancelled() {
                tracing::info!("Waiting for the session lease before connecting to the broker.");
                self.health.set_mqtt_down("waiting for the session lease");
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ended::Stopped,
                _ = token.cancelled() => {}
            }
        }
        match self.mode {
            Mode::Member => self.run_member(tx, draining, stop).await,
            Mode::Drain { idle } => self.run_drain(tx, idle, stop).await,
        }
    }

    /// The bridge's own session: subscribe on every ConnAck, reconnect
    /// with backoff, until stopped (or, once `draining` is cancelled, the
    /// connection fails).
    async fn run_member(
        mut self,
        tx: mpsc::Sender<Received>,
        draining: CancellationToken,
        stop: CancellationToken,
    ) -> Ended {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let ended = loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => break Ended::Stopped,
                ev = self.eventloop.poll() => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                    backoff.reset();
                    if ack.session_present {
                        tracing::info!(generation, "Connected to the broker; session resumed.");
                    } else {
                        tracing::info!(
                            generation,
                            "Connected to the broker with a new session (first start, or the \
                             old session expired: messages published meanwhile were not kept)."
                        );
                    }
                    self.health.set_mqtt_down("connected, waiting for SUBACK");
                    self.subscribe();
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => self.on_suback(&ack),
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if !forward(self.received(publish), &tx, &stop).await {
                        break Ended::Stopped;
                    }
                }
                Ok(Event::Incoming(Packet::Disconnect(d))) => {
                    tracing::warn!(reason = ?d.reason_code, "The broker closed the session.");
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    tracing::info!("Disconnected from the broker.");
                    break Ended::Stopped;
                }
                Ok(_) => {}
                Err(e) => {
                    self.health.set_mqtt_down(format!("broker connection: {e}"));
                    self.metrics.mqtt_connected.set(0);
                    if draining.is_cancelled() {
                        break Ended::Stopped;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(err = %e, retry_in = ?delay, "Broker connection failed.");
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break Ended::Stopped,
                        _ = draining.cancelled() => break Ended::Stopped,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        self.health.set_mqtt_down("stopped");
        self.metrics.mqtt_connected.set(0);
        ended
    }

    /// Counts a received message and stamps it for the writer.
    fn received(&self, publish: Publish) -> Received {
        let topic = String::from_utf8_lossy(&publish.topic);
        let kind = Metrics::kind_of(&topic);
        self.metrics
            .messages_received
            .get_or_create(&KindLabel { kind })
            .inc();
        Received {
            publish,
            generation: self.generation.load(Ordering::Acquire),
            received_at: SystemTime::now(),
        }
    }

    /// The broker's answer to SUBSCRIBE: ready, or why not.
    fn on_suback(&self, ack: &SubAck) {
        let refused: Vec<_> = ack
            .return_codes
            .iter()
            .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
            .collect();
        if refused.is_empty() {
            tracing::info!(filter = %self.filter, "Subscribed.");
            self.health.set_mqtt_ready();
            self.metrics.mqtt_connected.set(1);
        } else {
            let why = format!(
                "broker refused subscription to {}: {refused:?}",
                self.filter
            );
            tracing::error!(filter = %self.filter, codes = ?refused, "Broker refused the subscription.");
            self.health.set_mqtt_down(why);
            self.metrics.mqtt_connected.set(0);
        }
    }

    /// Sends SUBSCRIBE from a separate task, so the poll loop never waits
    /// on the request channel it is the only one to drain.
    fn subscribe(&self) {
        let client = self.client.clone();
        let filter = Filter {
            path: self.filter.clone(),
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            // A resumed session keeps its subscription: do not replay
            // every retained status on each reconnect.
            retain_forward_rule: RetainForwardRule::OnNewSubscribe,
        };
        tokio::spawn(async move {
            if let Err(e) = client.subscribe_many([filter]).await {
                tracing::warn!(err = %e, "Could not queue SUBSCRIBE.");
            }
        });
    }
}

/// Hands a message to the writer (unless the writer has closed the
/// channel: it is then left for redelivery). Returns `false` if `stop` was
/// cancelled while waiting for room.
async fn forward(item: Received, tx: &mpsc::Sender<Received>, stop: &CancellationToken) -> bool {
    if !tx.is_closed() {
        let sent = tokio::select! {
            biased;
            _ = stop.cancelled() => return false,
            r = tx.send(item) => r.is_ok(),
        };
        if !sent {
            tracing::debug!("Writer closed; message left for redelivery.");
        }
    }
    true
}
