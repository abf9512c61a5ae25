//! Reachability source: every `[reach] interval_secs`, `count` ICMP
//! echoes (or TCP connects) to each `[[reach.target]]` (NVR, PoE switch,
//! router, anything with an address): loss and min/avg/max round trip,
//! published each round as a `reach` reading, and an `event` on each
//! change of state (`device_down` after a whole round without an answer,
//! `device_up` at the first answer again).
//!
//! So the centre learns that a device on the site LAN is dead directly,
//! not only through its cameras failing.

pub mod config;
pub mod probe;
pub mod proto;

use std::future::Future;

use sitewatch_wire::payload::{
    truncate, ReachOut, ReachTargetOut, MAX_REACH_ERROR_LEN, MAX_REACH_TARGETS,
};
use sitewatch_wire::topic::Kind;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use config::ReachConfig;
use config::{Probe, Target};
use proto::{Change, Round, Tracker};

use super::{Context, Running, Source};
use crate::check::{row, Row, Verdict};
use crate::sources::forward::event;
use crate::uplink::publish::Publisher;

fn publish_change(p: &Publisher, t: &Target, c: Change, r: &Round) {
    let message = format!("{}: {}", t.label(), r.describe(t.port()));
    let mut nums = r.numbers();
    if let Some(port) = t.port() {
        nums.push(("port", u64::from(port)));
    }
    let _ = p.publish(Kind::Event, |h| {
        event(
            h,
            c.event,
            c.severity,
            &t.name,
            c.from,
            Some(c.to),
            &message,
            &nums,
        )
    });
}

/// One target's round as the wire carries it (round trips in ms, absent
/// without an answer; the config already holds names and addresses to
/// the wire's rules).
fn entry<'a>(t: &'a Target, r: &'a Round) -> ReachTargetOut<'a> {
    let ms = |us: u32| (r.reached() > 0).then(|| us as f32 / 1000.0);
    ReachTargetOut {
        name: &t.name,
        address: &t.address,
        kind: match t.probe {
            Probe::Icmp => "icmp",
            Probe::Tcp(_) => "tcp",
        },
        port: t.port(),
        state: state_word(r),
        sent: r.sent,
        received: r.answered,
        refused: r.refused,
        rtt_min_ms: ms(r.min_us),
        rtt_avg_ms: ms(r.avg_us()),
        rtt_max_ms: ms(r.max_us),
        error: r.error.as_deref().map(|e| truncate(e, MAX_REACH_ERROR_LEN)),
    }
}

/// Publishes the round as `reach` readings, [`MAX_REACH_TARGETS`] targets
/// per message (the wire's bound: a larger round is several messages).
fn publish_reading(p: &Publisher, secs: u32, targets: &[Target], rounds: &[Round]) {
    let entries: Vec<ReachTargetOut> = targets
        .iter()
        .zip(rounds)
        .map(|(t, r)| entry(t, r))
        .collect();
    for chunk in entries.chunks(MAX_REACH_TARGETS) {
        let _ = p.publish(Kind::Reach, |h| ReachOut::new(h, secs, chunk));
    }
}

/// Logs a change of a target's round error (no socket, no address) once.
fn log_error(last: &mut [Option<String>], i: usize, t: &Target, r: &Round) {
    if last[i] != r.error {
        match &r.error {
            Some(e) => tracing::warn!(target_name = %t.name, "Reach: {e}"),
            None => tracing::info!(target_name = %t.name, "Reach: probes run again"),
        }
        last[i].clone_from(&r.error);
    }
}

/// Runs the reachability source until `stop` is cancelled; the first
/// round waits for `start` (first broker connection).
pub async fn run(
    p: Publisher,
    cfg: ReachConfig,
    start: impl Future<Output = ()>,
    stop: CancellationToken,
) {
    tokio::select! {
        biased;
        () = stop.cancelled() => return,
        () = start => {}
    }
    let mut tracker = Tracker::default();
    let mut errors = vec![None; cfg.targets.len()];
    let secs = u32::try_from(cfg.interval.as_secs()).unwrap_or(u32::MAX);
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let rounds = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = probe::all(&cfg.targets, cfg.count, cfg.timeout) => r,
        };
        for (i, (t, r)) in cfg.targets.iter().zip(&rounds).enumerate() {
            log_error(&mut errors, i, t, r);
            if let Some(c) = tracker.observe(i, r) {
                tracing::info!(target_name = %t.name, event = c.event, "{}", r.describe(t.port()));
                publish_change(&p, t, c, r);
            }
        }
        publish_reading(&p, secs, &cfg.targets, &rounds);
        p.board().reach(
            cfg.targets
                .iter()
                .zip(&rounds)
                .map(|(t, r)| (t.label(), state_word(r), r.describe(t.port())))
                .collect(),
        );
    }
}

/// `up`, `down` or `unknown` (the round could not be run), as the wire
/// and the status file say it.
fn state_word(r: &Round) -> &'static str {
    match r.up() {
        Some(true) => "up",
        Some(false) => "down",
        None => "unknown",
    }
}

/// `check --online` rows: the ICMP socket (when a target pings), then one
/// round per target in plain words.
pub async fn rows(cfg: &ReachConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    if cfg.targets.iter().any(|t| t.probe == Probe::Icmp) {
        rows.push(match probe::open_icmp() {
            Ok((_, mode)) => row("reach: ICMP socket", Verdict::Ok, mode.describe(), ""),
            Err(e) => row("reach: ICMP socket", Verdict::Failed, e, probe::ICMP_TODO),
        });
    }
    let rounds = probe::all(&cfg.targets, cfg.count, cfg.timeout).await;
    for (t, r) in cfg.targets.iter().zip(rounds) {
        let words = r.describe(t.port());
        let name = format!("reach {}", t.label());
        rows.push(match (r.up(), t.probe) {
            (None, Probe::Icmp) if words.starts_with("cannot send ICMP") => {
                row(name, Verdict::Failed, words, probe::ICMP_TODO)
            }
            (None, _) => row(
                name,
                Verdict::Failed,
                words,
                "check the address (DNS) in [[reach.target]]",
            ),
            (Some(false), _) => row(
                name,
                Verdict::Failed,
                words,
                "check the device's power, cable and address (and that it answers ping)",
            ),
            (Some(true), Probe::Tcp(_)) if r.answered == 0 => row(
                name,
                Verdict::Warning,
                words,
                "the device is up but its service is not: check the port or restart the service",
            ),
            (Some(true), _) if r.lost() > 0 => row(
                name,
                Verdict::Warning,
                words,
                "answers, with loss: check the cable, the switch port or Wi-Fi",
            ),
            (Some(true), _) => row(name, Verdict::Ok, words, ""),
        });
    }
    rows
}

/// The reachability source in the registry (off without `[reach]`).
pub struct ReachSource;

impl Source for ReachSource {
    const NAME: &'static str = "reach";
    type Raw = Option<config::ReachRaw>;
    type Config = Option<ReachConfig>;

    /// Walks `[reach]` in the parsed document (no derived deserializer).
    fn read(doc: &crate::config::Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        config::read(doc.get(&["reach"]), problems)
    }

    fn validate(raw: Self::Raw, problems: &mut Vec<String>) -> Option<Self::Config> {
        config::validate(raw, problems)
    }

    fn summary(cfg: &Self::Config) -> Option<String> {
        let c = cfg.as_ref()?;
        let names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
        Some(format!(
            "reachability every {} s, {} probes each: {}",
            c.interval.as_secs(),
            c.count,
            names.join(", ")
        ))
    }

    fn start(cx: &Context, cfg: &Self::Config) -> Option<Box<dyn Running>> {
        let cfg = cfg.clone()?;
        let (p, first) = (cx.publisher.clone(), cx.first_connect());
        Some(cx.spawn(move |stop| run(p, cfg, first, stop)))
    }

    async fn check(cfg: &Self::Config) -> Vec<Row> {
        match cfg {
            Some(c) => rows(c).await,
            None => Vec::new(),
        }
    }

    /// One round of each target: the `reach` reading, a `device_down`
    /// event for a target that does not answer (as the running agent's
    /// first round), a note for the others.
    async fn once(p: &Publisher, cfg: &Self::Config, note: &mut dyn FnMut(String)) {
        let Some(c) = cfg else { return };
        let rounds = probe::all(&c.targets, c.count, c.timeout).await;
        let secs = u32::try_from(c.interval.as_secs()).unwrap_or(u32::MAX);
        publish_reading(p, secs, &c.targets, &rounds);
        let mut tracker = Tracker::default();
        for (i, (t, r)) in c.targets.iter().zip(&rounds).enumerate() {
            match tracker.observe(i, r) {
                Some(ch) => publish_change(p, t, ch, r),
                None => note(format!("reach {}: {}", t.label(), r.describe(t.port()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Outcome;
    use std::time::Duration;

    fn target(probe: Probe) -> Target {
        Target {
            name: "NVR".into(),
            address: "192.168.1.10".into(),
            probe,
        }
    }

    #[test]
    fn a_round_as_the_wire_carries_it() {
        let t = target(Probe::Icmp);
        let mut r = Round::default();
        r.add(Outcome::Answer(Duration::from_micros(412)));
        r.add(Outcome::Lost);
        r.add(Outcome::Answer(Duration::from_micros(664)));
        let e = entry(&t, &r);
        assert_eq!((e.kind, e.port, e.state), ("icmp", None, "up"));
        assert_eq!((e.sent, e.received, e.refused), (3, 2, 0));
        assert_eq!(
            (e.rtt_min_ms, e.rtt_avg_ms, e.rtt_max_ms),
            (Some(0.412), Some(0.538), Some(0.664))
        );

        // Nothing back: down, and no round trip at all (not 0).
        let t = target(Probe::Tcp(554));
        let mut r = Round::default();
        r.add(Outcome::Lost);
        let e = entry(&t, &r);
        assert_eq!((e.kind, e.port, e.state), ("tcp", Some(554), "down"));
        assert_eq!(
            (e.rtt_min_ms, e.rtt_avg_ms, e.rtt_max_ms),
            (None, None, None)
        );

        // Not run: unknown, the error cut to the wire's bound.
        let r = Round::failed("x".repeat(300));
        let e = entry(&t, &r);
        assert_eq!((e.state, e.sent), ("unknown", 0));
        assert_eq!(e.error.map(str::len), Some(MAX_REACH_ERROR_LEN));
    }

    #[test]
    fn a_full_config_round_encodes_and_decodes_in_messages_of_16() {
        let targets: Vec<Target> = (0..config::MAX_TARGETS)
            .map(|i| Target {
                name: format!("\"target\" {i:02} {}", "\\".repeat(40)),
                address: format!("{}{i:02}.example", "h".repeat(240)),
                probe: Probe::Tcp(65535),
            })
            .collect();
        let rounds: Vec<Round> = targets
            .iter()
            .map(|_| Round::failed("\u{1}".repeat(200)))
            .collect();
        let entries: Vec<ReachTargetOut> = targets
            .iter()
            .zip(&rounds)
            .map(|(t, r)| entry(t, r))
            .collect();
        let h = sitewatch_wire::payload::Header {
            site: "s",
            boot: "b1",
            seq: 1,
            ts: 1,
        };
        let mut buf = vec![0u8; sitewatch_wire::payload::REACH_BUF_LEN];
        let chunks: Vec<_> = entries.chunks(MAX_REACH_TARGETS).collect();
        assert_eq!(chunks.len(), 4);
        for chunk in chunks {
            let n = sitewatch_wire::encode(&ReachOut::new(h, 30, chunk), &mut buf)
                .expect("fits the buffer");
            let m = sitewatch_wire::decode("sitewatch/v1/s/reach", &buf[..n]).expect("valid");
            assert_eq!(m.kind(), Kind::Reach);
        }
    }
}
