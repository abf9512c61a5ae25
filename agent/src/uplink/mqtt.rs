//! The MQTT uplink: owns rumqttc's `EventLoop`, the site's birth and death.
//!
//! One task polls the event loop; sources never touch it (they go through
//! [`Publisher`]). Per connection, in this order:
//!
//! 1. Before each connect attempt the Last Will is set: retained
//!    `offline`/`lost`, seq 0, `session` = the number this connection will
//!    get. The broker publishes it if the link dies.
//! 2. On `CONNACK` the session counter goes up and the retained `online`
//!    birth (same `session`) is put at the *front* of the outgoing queue,
//!    so it is always the first message of a connection.
//! 3. On errors: count, log once per state change, wait a jittered backoff
//!    (1 s → 60 s; back to 1 s after a connection that held 30 s), retry.
//!    rumqttc reconnects on the next poll.
//!
//! On shutdown (sources already stopped) the queue is flushed (bounded),
//! then the retained `offline`/`shutdown` status (next seq, same session)
//! is sent, its PUBACK awaited (bounded), then `DISCONNECT`, which tells the
//! broker to discard the Will.
//!
//! Sequence numbers give creation order. On the wire they rise by one
//! within a connection; after a reconnect the birth goes first and is
//! followed by messages queued during the outage, which carry lower
//! numbers.
//!
//! The session is clean (`clean_session = true`). Sources' messages wait
//! in the outbox ([`crate::uplink::outbox`]) until their PUBACK: the pump
//! ([`link::pump`]) hands them to rumqttc while connected, a
//! [`PkidTracker`](crate::uplink::pkid::PkidTracker) matches packet ids to
//! records, and what rumqttc discards on a clean reconnect (or when the
//! event loop is rebuilt) is requeued and sent again. The birth and the
//! shutdown status go straight to rumqttc's queue, outside the outbox.
//!
//! The loop also feeds the systemd watchdog ([`notify::Watchdog`]) —
//! while polling and while waiting in reconnect backoff — so a hung loop
//! gets the agent restarted, and keeps `STATUS=` current.
//!
//! A config reload with changed broker settings arrives as a
//! [`Reconfigure`]: when connected, the loop waits (bounded) for in-flight
//! messages to be acknowledged, then drops the event loop (closing the
//! connection *without* `DISCONNECT`, so the broker publishes the old
//! session's Will (`offline`/`lost`) and a new setting that fails to
//! connect never leaves a stale retained `online`) and builds a new one
//! with the new settings: a new session and birth, same boot and sequence
//! numbers; records in flight go back to the outbox and are sent again.

use std::time::Duration;

use anyhow::Context as _;
use std::sync::Arc;

use rumqttc::{
    AsyncClient, ConnectionError, Disconnect, Event, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, QoS, Request, StateError,
};
use sitewatch_wire::payload::{OfflineReason, State};
use sitewatch_wire::topic::Kind;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::diagnose::{self, Target};
use crate::notify::{self, Watchdog};
use crate::uplink::link::{self, Shared, Tracked};
use crate::uplink::pkid;
use crate::uplink::publish::{Counters, Publisher};

/// Most QoS 1 messages in flight (unacknowledged) at once: the outbox's
/// bound ([`outbox::config::MAX_IN_FLIGHT`](crate::uplink::outbox::config::MAX_IN_FLIGHT)),
/// so the outbox never hands rumqttc more than its window.
pub const INFLIGHT: u16 = crate::uplink::outbox::config::MAX_IN_FLIGHT;

/// Largest MQTT packet we accept from the broker. We subscribe to nothing,
/// so only acks and pings arrive.
const MAX_INCOMING_PACKET: usize = 4 * 1024;

/// Largest packet we send: the largest payload (a `log` batch) plus topic
/// and header.
const MAX_OUTGOING_PACKET: usize = sitewatch_wire::payload::LOG_BUF_LEN + 1024;

/// Shortest and longest reconnect delay (jittered in between).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A connection that lasted this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// Shutdown first sends what is still queued, for at most this long…
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// …and considers the queue empty when nothing moves for this long.
const FLUSH_IDLE: Duration = Duration::from_millis(50);

/// How long shutdown waits for the broker to acknowledge the
/// `offline`/`shutdown` status.
const SHUTDOWN_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for `DISCONNECT` to be written.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// rumqttc options for the configured broker: transport, credentials,
/// keep-alive, clean session, packet limits. No Will yet (set per
/// connection). Errors name the file or URL at fault.
pub fn options(cfg: &Config, client_id: &str) -> anyhow::Result<MqttOptions> {
    let m = &cfg.mqtt;
    let url = m.url().with_context(|| format!("mqtt.url `{}`", m.url))?;
    let mut o = MqttOptions::new(client_id, url.host.clone(), url.port);
    o.set_transport(
        m.transport()
            .with_context(|| format!("setting up the connection to {url}"))?,
    );
    o.set_keep_alive(Duration::from_secs(m.keep_alive_secs.into()));
    o.set_clean_session(true);
    // The outbox's window bounds what is in flight; rumqttc's matches it.
    o.set_inflight(cfg.outbox.max_in_flight.max(1));
    o.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    if let Some((user, pass)) = m
        .credentials()
        .context("reading the MQTT password (mqtt.password_file)")?
    {
        o.set_credentials(user, pass);
    }
    Ok(o)
}

/// Names for error messages.
pub fn target(cfg: &Config) -> anyhow::Result<TargetOwned> {
    let url = cfg
        .mqtt
        .url()
        .with_context(|| format!("mqtt.url `{}`", cfg.mqtt.url))?;
    Ok(TargetOwned {
        host: url.host,
        port: url.port,
        tls: url.tls,
        ca_file: cfg.mqtt.ca_file.clone(),
        client_cert: cfg.mqtt.client_cert_file.clone(),
        username: cfg.mqtt.username.clone(),
        client_id: cfg.client_id().to_owned(),
    })
}

/// A fingerprint of everything that shapes the broker connection: the
/// `[mqtt]` settings and the *contents* of the password, CA, certificate
/// and key files, read afresh (rotating a file under the same path is the
/// main reason to reload). Equal fingerprints mean no reconnect is needed.
pub fn fingerprint(cfg: &Config) -> anyhow::Result<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let m = &cfg.mqtt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Every field by name, so a new one cannot be forgotten; the password
    // itself is hashed with the credentials below.
    let sitewatch_mqtt::BrokerConfig {
        url,
        client_id,
        username,
        password,
        password_file,
        ca_file,
        client_cert_file,
        client_key_file,
        allow_plaintext,
        keep_alive_secs,
    } = m;
    (url, client_id, username, password.is_some(), password_file).hash(&mut h);
    (ca_file, client_cert_file, client_key_file).hash(&mut h);
    (allow_plaintext, keep_alive_secs).hash(&mut h);
    cfg.client_id().hash(&mut h);
    m.credentials()
        .context("reading the MQTT password (mqtt.password_file)")?
        .hash(&mut h);
    for (key, file) in [
        ("mqtt.ca_file", &m.ca_file),
        ("mqtt.client_cert_file", &m.client_cert_file),
        ("mqtt.client_key_file", &m.client_key_file),
    ] {
        if let Some(path) = file {
            std::fs::read(path)
                .with_context(|| format!("reading {key} {}", path.display()))?
                .hash(&mut h);
        }
    }
    Ok(h.finish())
}

/// Owned form of [`Target`], kept by long-lived tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOwned {
    host: String,
    port: u16,
    tls: bool,
    ca_file: Option<std::path::PathBuf>,
    client_cert: Option<std::path::PathBuf>,
    username: Option<String>,
    client_id: String,
}

impl TargetOwned {
    /// The broker URL (`mqtts://host:port`; it never holds credentials).
    pub fn url(&self) -> String {
        sitewatch_mqtt::BrokerUrl {
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
        }
        .to_string()
    }

    /// Borrowed view for [`diagnose`].
    pub fn view(&self) -> Target<'_> {
        Target {
            host: &self.host,
            port: self.port,
            tls: self.tls,
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
            username: self.username.as_deref(),
            client_id: &self.client_id,
        }
    }
}

/// Creates the client and event loop for the configured broker.
pub fn connect(cfg: &Config) -> anyhow::Result<(AsyncClient, EventLoop)> {
    Ok(AsyncClient::new(
        options(cfg, cfg.client_id())?,
        link::channel_capacity(cfg.outbox.max_in_flight),
    ))
}

/// New broker settings for a running uplink (config reload).
pub struct Reconfigure {
    /// Options made by [`options`] from the new config.
    pub options: MqttOptions,
    /// Names for messages, from the new config.
    pub target: TargetOwned,
}

/// How long a reconnect for new settings waits for in-flight messages.
const RECONFIGURE_DRAIN: Duration = Duration::from_secs(2);

/// Waits for the next [`Reconfigure`]; never completes without a channel
/// or once it is closed.
async fn next_reconfigure(
    rx: &mut Option<tokio::sync::mpsc::Receiver<Reconfigure>>,
) -> Reconfigure {
    if let Some(r) = rx {
        if let Some(v) = r.recv().await {
            return v;
        }
    }
    std::future::pending().await
}

/// What woke the loop.
enum Step {
    Stop,
    Event(Result<Event, ConnectionError>),
    Reconfigure(Box<Reconfigure>),
}

/// The uplink task's state.
pub struct Uplink {
    eventloop: EventLoop,
    publisher: Publisher,
    /// The outbox and tracker, shared with the publisher and the pump.
    shared: Arc<Shared>,
    /// Request channel capacity, for rebuilding the event loop.
    capacity: usize,
    target: TargetOwned,
    /// Connections made so far in this boot; the current one's number
    /// while connected.
    session: u32,
    connected: bool,
    /// Last error logged, so a retry loop logs a change once.
    last_error: Option<String>,
    /// Tells sources the current session (0 until the first connection).
    session_tx: watch::Sender<u32>,
    /// systemd watchdog, fed from this loop.
    watchdog: Watchdog,
    /// New broker settings from config reloads.
    reconfigure: Option<tokio::sync::mpsc::Receiver<Reconfigure>>,
}

impl Uplink {
    /// Wraps an event loop made by [`connect`].
    pub fn new(
        eventloop: EventLoop,
        publisher: Publisher,
        target: TargetOwned,
        session_tx: watch::Sender<u32>,
    ) -> Uplink {
        let capacity = link::channel_capacity(eventloop.mqtt_options.inflight());
        publisher.board().broker(target.url());
        Uplink {
            shared: Arc::clone(publisher.shared()),
            capacity,
            eventloop,
            publisher,
            target,
            session: 0,
            connected: false,
            last_error: None,
            session_tx,
            watchdog: Watchdog::every(None),
            reconfigure: None,
        }
    }

    /// Feeds `watchdog` from this loop.
    pub fn with_watchdog(mut self, watchdog: Watchdog) -> Uplink {
        self.watchdog = watchdog;
        self
    }

    /// Applies new broker settings received on `rx` (config reloads).
    pub fn with_reconfigure(mut self, rx: tokio::sync::mpsc::Receiver<Reconfigure>) -> Uplink {
        self.reconfigure = Some(rx);
        self
    }

    fn counters(&self) -> &Counters {
        self.publisher.counters()
    }

    /// Sets the Will for the next connection attempt.
    fn set_will(&mut self) {
        let next = self.session.saturating_add(1);
        let payload = self.publisher.will_payload(next);
        self.eventloop.mqtt_options.set_last_will(LastWill::new(
            self.publisher.status_topic(),
            payload,
            QoS::AtLeastOnce,
            true,
        ));
    }

    /// Requeues what a clean session discarded, puts the retained
    /// `online` birth first in line and wakes the pump.
    fn on_connack(&mut self, session_present: bool) {
        self.session = self.session.saturating_add(1);
        self.connected = true;
        self.last_error = None;
        if self.session > 1 {
            Counters::inc(&self.counters().reconnects);
        }
        let session = self.session;
        let p = &self.publisher;
        // Stamped before locking the link (lock order: seq, then link).
        let birth = p.stamp_for_uplink(Kind::Status, |h| p.status(h, State::Online, None, session));
        {
            let mut guard = self.shared.lock();
            let l = &mut *guard;
            let lost = l.tracker.connected(session_present);
            if !session_present {
                // rumqttc's clean() keeps a parked publish (rumqttc #1056).
                self.eventloop.state.collision = None;
            }
            let mut requeued = 0usize;
            for t in lost {
                if let Tracked::Outbox(id) = t {
                    if l.outbox.requeue(id) {
                        requeued += 1;
                    }
                }
            }
            if requeued > 0 {
                tracing::info!(
                    requeued,
                    "Messages the broker never acknowledged are sent again"
                );
            }
            l.connected = true;
            match birth {
                Some(birth) => {
                    self.eventloop.pending.push_front(Request::Publish(birth));
                    l.tracker.handed_over_front(Tracked::Birth(session));
                }
                None => tracing::error!("Cannot encode the birth message"),
            }
        }
        self.shared.work.notify_one();
        let broker = format!("{}:{}", self.target.host, self.target.port);
        tracing::info!(session, broker = %broker, "Connected to broker");
        notify::status(&format!("Connected to {broker} (session {session})"));
        self.publisher.board().connected(session);
        self.session_tx.send_replace(session);
    }

    /// Right after `poll()` failed, before any `.await`: tells the tracker
    /// which handed-over messages rumqttc now holds in `pending`, and stops
    /// the pump.
    fn note_connection_lost(&mut self) {
        let k = self
            .eventloop
            .pending
            .iter()
            .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
            .count();
        let mut l = self.shared.lock();
        l.connected = false;
        l.tracker.connection_lost(k);
    }

    /// Replaces the event loop (and the pump's client) with a new one for
    /// `options`: nothing handed to the old one will be sent, so every
    /// record in flight goes back to the outbox.
    fn rebuild(&mut self, options: MqttOptions) {
        let (client, eventloop) = AsyncClient::new(options, self.capacity);
        // Dropping the old loop closes its connection without DISCONNECT.
        self.eventloop = eventloop;
        self.connected = false;
        let requeued = {
            let mut l = self.shared.lock();
            l.client = client;
            l.connected = false;
            l.tracker.reset();
            l.outbox.requeue_unacked()
        };
        if requeued > 0 {
            tracing::info!(
                requeued,
                "Messages in flight will be sent again on the new connection"
            );
        }
    }

    /// Handles one event of a working connection. True when it is the
    /// PUBACK of the shutdown status.
    fn on_event(&mut self, ev: &Event) -> bool {
        match ev {
            Event::Incoming(Packet::ConnAck(ack)) => self.on_connack(ack.session_present),
            Event::Incoming(Packet::PubAck(ack)) => {
                self.publisher.board().puback();
                let t = self.shared.lock().tracker.on_puback(ack.pkid);
                match t {
                    Some(Tracked::Outbox(id)) => {
                        self.shared.lock().outbox.ack(id);
                        self.shared.work.notify_one();
                    }
                    Some(Tracked::Birth(_)) => Counters::inc(&self.counters().acked),
                    Some(Tracked::Shutdown) => {
                        Counters::inc(&self.counters().acked);
                        return true;
                    }
                    None => tracing::debug!(pkid = ack.pkid, "PUBACK for an unknown packet id"),
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let o = self.shared.lock().tracker.on_outgoing_publish(*pkid);
                if o == pkid::Outgoing::Unexpected {
                    tracing::warn!(pkid, "A publish left that the outbox did not hand over");
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                let mut l = self.shared.lock();
                if let Some(Tracked::Outbox(id)) = l.tracker.on_await_ack(*pkid) {
                    l.outbox.requeue(id);
                    drop(l);
                    self.shared.work.notify_one();
                }
            }
            _ => {}
        }
        false
    }

    fn on_error(&mut self, e: &ConnectionError) {
        if self.connected {
            self.connected = false;
            let words = diagnose::lost_connection(e);
            tracing::warn!(session = self.session, err = %e, "Connection to broker lost: {words}");
            notify::status(&format!("Connection to broker lost: {words}; reconnecting"));
            self.publisher.board().lost(&words);
            self.last_error = Some(words);
        } else {
            let words = diagnose::connection_error(e, &self.target.view()).to_string();
            Counters::inc(&self.counters().connect_errors);
            if self.last_error.as_deref() != Some(words.as_str()) {
                tracing::warn!(err = %e, "Cannot connect to broker: {words}; retrying with backoff");
                notify::status(&format!("Cannot connect to broker: {words}; retrying"));
                self.publisher.board().attempt_failed(&words);
            } else {
                tracing::debug!(err = %e, "Connect attempt failed again");
            }
            self.last_error = Some(words);
        }
    }

    /// Polls until `stop` is cancelled, then shuts the connection down
    /// gracefully. Never returns an error: a broker problem is retried.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = sitewatch_mqtt::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut connected_at = Instant::now();
        let mut reconf = self.reconfigure.take();
        'run: loop {
            if !self.connected {
                self.set_will();
            }
            // The poll future is kept across watchdog kicks (never
            // cancelled for them: that would abort a connect attempt).
            let step = {
                let poll = self.eventloop.poll();
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break Step::Stop,
                        () = self.watchdog.tick() => self.watchdog.kick(),
                        r = next_reconfigure(&mut reconf) => break Step::Reconfigure(Box::new(r)),
                        ev = &mut poll => break Step::Event(ev),
                    }
                }
            };
            let event = match step {
                Step::Stop => break,
                Step::Reconfigure(r) => {
                    self.apply(*r).await;
                    backoff.reset();
                    continue;
                }
                Step::Event(ev) => ev,
            };
            match event {
                Ok(ev) => {
                    if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                        connected_at = Instant::now();
                    }
                    self.on_event(&ev);
                }
                Err(e) => {
                    // Before any .await: what rumqttc holds now is known.
                    self.note_connection_lost();
                    if matches!(e, ConnectionError::MqttState(StateError::CollisionTimeout)) {
                        tracing::warn!(
                            "Packet-id collision did not clear; rebuilding the MQTT client"
                        );
                        let options = self.eventloop.mqtt_options.clone();
                        self.rebuild(options);
                    }
                    // Back to the shortest delay only after a connection
                    // that held; a broker that accepts and then drops us
                    // at once (duplicate client id, ACL) gets backoff.
                    if self.connected && connected_at.elapsed() >= STABLE_CONNECTION {
                        backoff.reset();
                    }
                    self.on_error(&e);
                    let sleep = tokio::time::sleep(backoff.next_delay());
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            biased;
                            () = stop.cancelled() => break 'run,
                            () = self.watchdog.tick() => self.watchdog.kick(),
                            r = next_reconfigure(&mut reconf) => {
                                // New settings: try them at once.
                                self.apply(r).await;
                                backoff.reset();
                                break;
                            }
                            () = &mut sleep => break,
                        }
                    }
                }
            }
        }
        self.shutdown().await;
    }

    /// Switches to new broker settings; see the module docs.
    async fn apply(&mut self, r: Reconfigure) {
        self.target = r.target;
        self.publisher.board().broker(self.target.url());
        self.last_error = None;
        if !self.connected {
            tracing::info!("New MQTT settings apply from the next connect attempt");
            self.rebuild(r.options);
            return;
        }
        tracing::info!(
            session = self.session,
            "MQTT settings changed; reconnecting to apply them"
        );
        notify::status("Reconnecting to apply new MQTT settings");
        self.publisher
            .board()
            .lost("reconnecting to apply new MQTT settings");
        // No new hand-overs; let in-flight messages be acknowledged
        // (bounded).
        self.shared.lock().connected = false;
        let deadline = Instant::now() + RECONFIGURE_DRAIN;
        while self.eventloop.state.inflight() > 0 && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                Err(_) => break,
                Ok(Ok(ev)) => {
                    self.on_event(&ev);
                }
                Ok(Err(e)) => {
                    tracing::debug!(err = %e, "Connection ended while draining for reconnect");
                    break;
                }
            }
        }
        // A new event loop: the old connection closes without DISCONNECT
        // (the broker publishes the old session's Will); what it had not
        // got acknowledged is requeued.
        self.rebuild(r.options);
    }

    /// Sends `offline`/`shutdown`, waits for its PUBACK, disconnects.
    async fn shutdown(&mut self) {
        if !self.connected {
            tracing::info!("Not connected; the broker publishes the Last Will (offline) for us");
            return;
        }
        // Flush what the outbox can send (the pump task is stopped: this
        // loop hands records over itself), so the status is the last
        // message of the boot. A poll that stays quiet for FLUSH_IDLE
        // means nothing more moves.
        let flush_deadline = Instant::now() + FLUSH_TIMEOUT;
        while Instant::now() < flush_deadline {
            link::pump_once(&self.shared);
            match tokio::time::timeout(FLUSH_IDLE, self.eventloop.poll()).await {
                Err(_) => break,
                Ok(Ok(ev)) => {
                    self.on_event(&ev);
                }
                Ok(Err(e)) => {
                    tracing::warn!(err = %e, "Connection failed while flushing before shutdown");
                    self.note_connection_lost();
                    return;
                }
            }
        }
        let session = self.session;
        let p = &self.publisher;
        let Some(status) = p.stamp_for_uplink(Kind::Status, |h| {
            p.status(h, State::Offline, Some(OfflineReason::Shutdown), session)
        }) else {
            tracing::error!("Cannot encode the shutdown status");
            return;
        };
        {
            let mut l = self.shared.lock();
            // Nothing more from the outbox after this.
            l.connected = false;
            self.eventloop.pending.push_front(Request::Publish(status));
            l.tracker.handed_over_front(Tracked::Shutdown);
        }

        let deadline = Instant::now() + SHUTDOWN_ACK_TIMEOUT;
        let acked = loop {
            match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                Err(_) => break false,
                Ok(Err(e)) => {
                    tracing::warn!(err = %e, "Connection failed while sending the shutdown status");
                    return;
                }
                Ok(Ok(ev)) => {
                    if self.on_event(&ev) {
                        break true;
                    }
                }
            }
        };
        if acked {
            tracing::info!(session, "Broker acknowledged the offline status");
        } else {
            tracing::warn!(
                timeout = ?SHUTDOWN_ACK_TIMEOUT,
                "No acknowledgement for the offline status; disconnecting anyway"
            );
        }
        self.eventloop
            .pending
            .push_front(Request::Disconnect(Disconnect));
        let deadline = Instant::now() + DISCONNECT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => {
                    tracing::info!("Disconnected from broker");
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(err = %e, "Connection ended during disconnect");
                    break;
                }
                Err(_) => {
                    tracing::warn!("DISCONNECT not sent in time");
                    break;
                }
            }
        }
    }
}
