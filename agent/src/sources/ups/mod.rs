//! UPS source: reads each UPS from NUT's upsd (TCP 3493, `LIST VAR`)
//! every `[ups] interval_secs`, publishes the reading (`ups` kind: power
//! state, charge, runtime, load, input voltage of every UPS) and an
//! `event` on each change of power state (`ups_on_battery`,
//! `ups_low_battery`, `ups_on_line`), so the centre can tell a power cut
//! (site lost while its UPS was on battery) from an uplink fault.
//!
//! Talking to upsd rather than to the UPS keeps the agent free of USB and
//! serial drivers: NUT's drivers already know hundreds of models.

pub mod client;
pub mod config;
pub mod proto;

use crate::config::Doc;
use std::future::Future;

use sitewatch_wire::payload::{
    truncate, UpsEntryOut, UpsOut, MAX_TEXT_LEN, MAX_UPS, MAX_UPS_ERROR_LEN, MAX_UPS_NAME_LEN,
    MAX_UPS_STATUS_LEN,
};
use sitewatch_wire::topic::Kind;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use client::UpsResult;
pub use config::UpsConfig;
use proto::{Power, Reading};

use super::{Context, Running, Source};
use crate::check::{row, Row, Verdict};
use crate::sources::forward::event;
use crate::uplink::publish::Publisher;

/// A change of power state worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Event name.
    pub event: &'static str,
    /// `info`, `warning`, `critical`.
    pub severity: &'static str,
    /// Previous state (`None` for the first reading after start).
    pub from: Option<Power>,
    /// New state.
    pub to: Power,
}

/// Remembers each UPS's last power state; says which readings are a
/// change. Pure, so the real-upsd test drives it directly.
#[derive(Debug, Default)]
pub struct Tracker {
    /// At most [`config::MAX_UPS`] entries: a list is smaller than a map.
    last: Vec<(String, Power)>,
}

impl Tracker {
    /// The event for this reading, if any. The first reading after start
    /// is an event only when not on line (a restart on mains says
    /// nothing); `Unknown` (driver starting) is never one.
    pub fn observe(&mut self, ups: &str, r: &Reading) -> Option<Change> {
        let to = r.power();
        if to == Power::Unknown {
            return None;
        }
        let from = match self.last.iter_mut().find(|(n, _)| n == ups) {
            Some((_, p)) => Some(std::mem::replace(p, to)),
            None => {
                self.last.push((ups.to_owned(), to));
                None
            }
        };
        if from == Some(to) {
            return None;
        }
        let (event, severity) = match to {
            Power::OnLine if matches!(from, None | Some(Power::Unknown)) => return None,
            Power::OnLine => ("ups_on_line", "info"),
            Power::OnBattery => ("ups_on_battery", "warning"),
            Power::LowBattery => ("ups_low_battery", "critical"),
            Power::Unknown => return None,
        };
        Some(Change {
            event,
            severity,
            from,
            to,
        })
    }
}

/// The event's numbers (rounded; absent values left out).
pub fn numbers(r: &Reading) -> Vec<(&'static str, u64)> {
    [
        ("charge_pct", r.charge_pct),
        ("runtime_secs", r.runtime_secs),
        ("load_pct", r.load_pct),
        ("input_voltage_v", r.input_voltage),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v.round() as u64)))
    .collect()
}

fn publish_change(p: &Publisher, ups: &str, c: Change, r: &Reading) {
    let message = format!(
        "UPS '{ups}' is {} (flags {})",
        r.describe(),
        r.flags.join(" ")
    );
    let nums = numbers(r);
    let _ = p.publish(Kind::Event, |h| {
        event(
            h,
            c.event,
            c.severity,
            ups,
            c.from.map(Power::as_str),
            Some(c.to.as_str()),
            &message,
            &nums,
        )
    });
}

/// Publishes one `ups` reading: every UPS of the round (cut to the wire's
/// bounds), or why upsd could not be read.
fn publish_reading(p: &Publisher, interval_secs: u32, round: Result<&[UpsResult], &str>) {
    let (all, error) = match round {
        Ok(all) => (all, None),
        Err(e) => (&[][..], Some(truncate(e, MAX_TEXT_LEN))),
    };
    let all = &all[..all.len().min(MAX_UPS)];
    let status: Vec<String> = all
        .iter()
        .map(|u| {
            u.reading
                .as_ref()
                .map_or(String::new(), |r| r.flags.join(" "))
        })
        .collect();
    let entries: Vec<UpsEntryOut> = all
        .iter()
        .zip(&status)
        .map(|(u, status)| {
            let name = truncate(&u.name, MAX_UPS_NAME_LEN);
            let status = truncate(status, MAX_UPS_STATUS_LEN);
            match &u.reading {
                Ok(r) => UpsEntryOut {
                    name,
                    power: r.power().as_str(),
                    on_line: r.has("OL"),
                    on_battery: r.has("OB"),
                    low_battery: r.has("LB"),
                    status,
                    charge_pct: r.charge_pct.map(|x| x as f32),
                    runtime_secs: r.runtime_secs.map(|x| x.round() as u32),
                    load_pct: r.load_pct.map(|x| x as f32),
                    input_voltage_v: r.input_voltage.map(|x| x as f32),
                    error: None,
                },
                Err(e) => UpsEntryOut {
                    name,
                    power: Power::Unknown.as_str(),
                    on_line: false,
                    on_battery: false,
                    low_battery: false,
                    status,
                    charge_pct: None,
                    runtime_secs: None,
                    load_pct: None,
                    input_voltage_v: None,
                    error: Some(truncate(e, MAX_UPS_ERROR_LEN)),
                },
            }
        })
        .collect();
    let _ = p.publish(Kind::Ups, |h| {
        UpsOut::new(h, interval_secs, error, &entries)
    });
}

/// Logs a change of upsd reachability or of one UPS's error once.
fn log_errors(last: &mut Vec<(String, String)>, key: &str, err: Option<&str>) {
    let at = last.iter().position(|(k, _)| k == key);
    match (err, at.map(|i| &last[i].1)) {
        (Some(e), prev) if prev.map(String::as_str) != Some(e) => {
            tracing::warn!(ups = key, "UPS: {e}");
            match at {
                Some(i) => last[i].1 = e.to_owned(),
                None => last.push((key.to_owned(), e.to_owned())),
            }
        }
        (None, Some(_)) => {
            tracing::info!(ups = key, "UPS answers again");
            last.retain(|(k, _)| k != key);
        }
        _ => {}
    }
}

/// Runs the UPS source until `stop` is cancelled; the first reading waits
/// for `start` (first broker connection).
pub async fn run(
    p: Publisher,
    cfg: UpsConfig,
    start: impl Future<Output = ()>,
    stop: CancellationToken,
) {
    tokio::select! {
        biased;
        () = stop.cancelled() => return,
        () = start => {}
    }
    let mut tracker = Tracker::default();
    let mut errors = Vec::new();
    let secs = u32::try_from(cfg.interval.as_secs()).unwrap_or(u32::MAX);
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let res = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = client::read_all(&cfg) => r,
        };
        let all = match res {
            Ok(all) => {
                log_errors(&mut errors, "upsd", None);
                all
            }
            Err(e) => {
                log_errors(&mut errors, "upsd", Some(&e));
                publish_reading(&p, secs, Err(&e));
                p.board().ups(vec![("upsd".into(), "error".into(), e)]);
                continue;
            }
        };
        publish_reading(&p, secs, Ok(&all));
        p.board().ups(
            all.iter()
                .map(|u| match &u.reading {
                    Ok(r) => (u.name.clone(), r.power().as_str().to_owned(), r.describe()),
                    Err(e) => (u.name.clone(), "error".to_owned(), e.clone()),
                })
                .collect(),
        );
        for u in all {
            match &u.reading {
                Ok(r) => {
                    log_errors(&mut errors, &u.name, None);
                    if let Some(c) = tracker.observe(&u.name, r) {
                        tracing::info!(ups = %u.name, event = c.event, "UPS {}", r.describe());
                        publish_change(&p, &u.name, c, r);
                    }
                }
                Err(e) => log_errors(&mut errors, &u.name, Some(e)),
            }
        }
    }
}

/// `check --online` rows: upsd, then each UPS in plain words.
pub async fn rows(cfg: &UpsConfig) -> Vec<Row> {
    let upsd = format!("upsd at {}", cfg.server);
    let all = match client::read_all(cfg).await {
        Ok(all) => all,
        Err(e) => {
            return vec![row(
                upsd,
                Verdict::Failed,
                e,
                "start NUT's upsd (MODE=standalone in /etc/nut/nut.conf, LISTEN in upsd.conf) or fix [ups] server",
            )]
        }
    };
    if all.is_empty() {
        return vec![row(
            upsd,
            Verdict::Warning,
            "answers, but lists no UPS",
            "add the UPS to /etc/nut/ups.conf and start its driver (upsdrvctl start)",
        )];
    }
    let mut rows = vec![row(
        upsd,
        Verdict::Ok,
        format!("answers; {} UPS", all.len()),
        "",
    )];
    for u in all {
        let name = format!("ups '{}'", u.name);
        rows.push(match u.reading {
            Ok(r) => match r.power() {
                Power::OnLine => row(name, Verdict::Ok, r.describe(), ""),
                Power::OnBattery => row(
                    name,
                    Verdict::Warning,
                    r.describe(),
                    "mains power is off at the site (or the UPS input)",
                ),
                Power::LowBattery => row(
                    name,
                    Verdict::Failed,
                    r.describe(),
                    "the UPS is about to cut power: restore mains now",
                ),
                Power::Unknown => row(
                    name,
                    Verdict::Warning,
                    r.describe(),
                    "the driver reports neither OL nor OB: check it (upsc)",
                ),
            },
            Err(e) => row(
                name,
                Verdict::Failed,
                e,
                "check the name in ups.conf and that its driver runs (upsdrvctl start)",
            ),
        });
    }
    rows
}

/// The UPS source in the registry (off without `[ups]`).
pub struct UpsSource;

impl Source for UpsSource {
    const NAME: &'static str = "ups";
    type Raw = Option<config::UpsRaw>;
    type Config = Option<UpsConfig>;

    fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        super::read_optional(doc, Self::NAME, problems, config::read)
    }

    fn validate(raw: Self::Raw, problems: &mut Vec<String>) -> Option<Self::Config> {
        config::validate(raw, problems)
    }

    fn summary(cfg: &Self::Config) -> Option<String> {
        let c = cfg.as_ref()?;
        let which = if c.names.is_empty() {
            "every UPS".to_owned()
        } else {
            c.names.join(", ")
        };
        Some(format!(
            "UPS every {} s from upsd at {}: {which}",
            c.interval.as_secs(),
            c.server
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

    /// One reading of each UPS: the `ups` message, an event for any UPS
    /// not on line (as the running agent's first round), a note for the
    /// others.
    async fn once(p: &Publisher, cfg: &Self::Config, note: &mut dyn FnMut(String)) {
        let Some(c) = cfg else { return };
        let secs = u32::try_from(c.interval.as_secs()).unwrap_or(u32::MAX);
        match client::read_all(c).await {
            Err(e) => {
                publish_reading(p, secs, Err(&e));
                note(format!("ups: {e}"));
            }
            Ok(all) => {
                publish_reading(p, secs, Ok(&all));
                let mut t = Tracker::default();
                for u in all {
                    match &u.reading {
                        Ok(r) => match t.observe(&u.name, r) {
                            Some(ch) => publish_change(p, &u.name, ch, r),
                            None => note(format!("ups '{}': {}", u.name, r.describe())),
                        },
                        Err(e) => note(format!("ups '{}': {e}", u.name)),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(flags: &str) -> Reading {
        Reading {
            flags: flags.split_whitespace().map(str::to_owned).collect(),
            charge_pct: Some(79.6),
            ..Reading::default()
        }
    }

    #[test]
    fn changes_are_events() {
        let mut t = Tracker::default();
        assert_eq!(
            t.observe("u", &reading("OL CHRG")),
            None,
            "start on mains: quiet"
        );
        assert_eq!(t.observe("u", &reading("OL")), None);
        let c = t.observe("u", &reading("OB DISCHRG")).expect("on battery");
        assert_eq!(
            (c.event, c.severity, c.from, c.to),
            (
                "ups_on_battery",
                "warning",
                Some(Power::OnLine),
                Power::OnBattery
            )
        );
        assert_eq!(t.observe("u", &reading("OB")), None);
        assert_eq!(
            t.observe("u", &reading("OB LB")).map(|c| c.event),
            Some("ups_low_battery")
        );
        assert_eq!(t.observe("u", &reading("")), None, "unknown is no event");
        assert_eq!(
            t.observe("u", &reading("OL CHRG")).map(|c| c.event),
            Some("ups_on_line")
        );
        assert_eq!(
            Tracker::default()
                .observe("v", &reading("OB"))
                .map(|c| c.from),
            Some(None),
            "start on battery: told"
        );
        assert_eq!(numbers(&reading("OL")), [("charge_pct", 80)]);
    }
}
