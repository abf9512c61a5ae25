//! LTE uplink source: every `[lte] interval_secs`, the modem's state,
//! access technology, operator and signal through ModemManager's `mmcli`
//! (`-m MODEM -K`, then `--signal-get -K`), a `status` line, `check
//! --online` rows in plain words, and an `lte_signal` event when the class
//! (`good`, `fair`, `poor`, `no_service`) changes and holds two rounds.
//!
//! Why mmcli and not the modem itself: ModemManager owns the modem's
//! control port (QMI, MBIM or AT) on OpenWrt and Debian alike; a second
//! client on `/dev/cdc-wdm0` would fight it. mmcli's key-value output is
//! a stable, documented format ([`mmcli`]).

pub mod mmcli;

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use sitewatch_wire::topic::Kind;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use toml::de::DeValue;

use super::{Context, Running, Source};
use crate::check::{row, Row, Verdict};
use crate::config::walk::{flag, number, text};
use crate::sources::forward::event;
use crate::uplink::publish::Publisher;
use mmcli::{Class, Modem, Signal, Tracker};

/// `[lte]` as written in the file (defaults filled in).
#[derive(Debug, Clone)]
pub struct LteRaw {
    modem: String,
    mmcli: String,
    interval_secs: u32,
    timeout_secs: u32,
    signal_setup: bool,
}

impl Default for LteRaw {
    fn default() -> LteRaw {
        LteRaw {
            modem: "any".into(),
            mmcli: "mmcli".into(),
            interval_secs: 60,
            timeout_secs: 10,
            signal_setup: true,
        }
    }
}

/// Validated `[lte]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LteConfig {
    /// mmcli's `-m`: `any`, an index or a modem's D-Bus path.
    pub modem: String,
    /// The mmcli program (a name looked up in PATH, or an absolute path).
    pub mmcli: String,
    /// Period between readings.
    pub interval: Duration,
    /// Bound on each mmcli call.
    pub timeout: Duration,
    /// Turn on ModemManager's extended signal polling (RSRP, RSRQ, SNR)
    /// when it is off, at the reading period.
    pub signal_setup: bool,
}

/// Reads `[lte]` (`Some(None)`: absent), a problem per unknown or
/// mistyped key.
fn read(table: Option<&DeValue<'_>>, problems: &mut Vec<String>) -> Option<Option<LteRaw>> {
    let Some(table) = table else {
        return Some(None);
    };
    let Some(table) = table.as_table() else {
        problems.push("lte must be a table: [lte]".into());
        return None;
    };
    let before = problems.len();
    let mut raw = LteRaw::default();
    for (key, value) in table {
        let value = value.get_ref();
        match key.get_ref().as_ref() {
            "modem" => text("lte.modem", value, &mut raw.modem, problems),
            "mmcli" => text("lte.mmcli", value, &mut raw.mmcli, problems),
            "interval_secs" => number("lte.interval_secs", value, &mut raw.interval_secs, problems),
            "timeout_secs" => number("lte.timeout_secs", value, &mut raw.timeout_secs, problems),
            "signal_setup" => flag("lte.signal_setup", value, &mut raw.signal_setup, problems),
            other => problems.push(format!(
                "unknown setting lte.{other} (known: modem, mmcli, interval_secs, timeout_secs, signal_setup)"
            )),
        }
    }
    (problems.len() == before).then_some(Some(raw))
}

/// A modem selector mmcli takes: `any`, an index, or a D-Bus path.
fn valid_modem(m: &str) -> bool {
    m == "any"
        || (!m.is_empty() && m.len() <= 9 && m.bytes().all(|b| b.is_ascii_digit()))
        || m.strip_prefix("/org/freedesktop/ModemManager1/Modem/")
            .is_some_and(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn validate(raw: Option<LteRaw>, problems: &mut Vec<String>) -> Option<Option<LteConfig>> {
    let Some(r) = raw else {
        return Some(None);
    };
    let before = problems.len();
    let interval = super::check_interval("lte.interval_secs", r.interval_secs, problems);
    if !(1..=60).contains(&r.timeout_secs) {
        problems.push(format!(
            "lte.timeout_secs = {}: must be between 1 and 60 seconds",
            r.timeout_secs
        ));
    }
    if !valid_modem(&r.modem) {
        problems.push(format!(
            "lte.modem = {:?}: use \"any\" (the first modem), a modem index such as \"0\", or \
             its path /org/freedesktop/ModemManager1/Modem/N (mmcli -L lists them)",
            r.modem
        ));
    }
    let program_ok = !r.mmcli.is_empty()
        && r.mmcli.len() <= 256
        && !r.mmcli.contains(char::is_whitespace)
        && (r.mmcli.starts_with('/') || !r.mmcli.contains('/'));
    if !program_ok {
        problems.push(format!(
            "lte.mmcli = {:?}: a program name (looked up in PATH) or an absolute path",
            r.mmcli
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(Some(LteConfig {
        modem: r.modem,
        mmcli: r.mmcli,
        interval: Duration::from_secs(u64::from(interval?)),
        timeout: Duration::from_secs(u64::from(r.timeout_secs)),
        signal_setup: r.signal_setup,
    }))
}

/// Runs `mmcli -m MODEM ARGS`, bounded; its stdout, or why not (mmcli's
/// own error line when it printed one: `error: couldn't find modem`).
fn mmcli(cfg: &LteConfig, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new(&cfg.mmcli);
    cmd.args(["-m", &cfg.modem]).args(args);
    let out = crate::child::output_bounded(cmd, cfg.timeout, mmcli::MAX_OUTPUT_BYTES)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let err = err.lines().next().unwrap_or("").trim();
    Err(if err.is_empty() {
        format!("{} exited with {}", cfg.mmcli, out.status)
    } else {
        format!("{}: {err}", cfg.mmcli)
    })
}

/// One reading: the modem, then its extended signal (absent when mmcli
/// cannot give it: no Signal interface, or polling off and not turned on).
/// With `setup`, turns polling on when it is off. Blocking.
fn read_modem(cfg: &LteConfig, setup: bool) -> Result<(Modem, Signal), String> {
    let pairs = mmcli::parse_keyvalue(&mmcli(cfg, &["-K"])?).map_err(|e| e.0)?;
    let modem = mmcli::modem(&pairs).map_err(|e| e.0)?;
    let mut signal = match mmcli(cfg, &["--signal-get", "-K"]) {
        Ok(out) => mmcli::parse_keyvalue(&out)
            .map(|p| mmcli::signal(&p))
            .unwrap_or_default(),
        Err(e) => {
            tracing::debug!(err = %e, "No extended signal from ModemManager");
            Signal::default()
        }
    };
    if setup && signal.refresh_secs == Some(0) {
        let rate = format!("--signal-setup={}", cfg.interval.as_secs().clamp(5, 3600));
        match mmcli(cfg, &[&rate]) {
            Ok(_) => {
                tracing::info!(
                    "Turned on ModemManager's extended signal polling ({rate}) for RSRP, RSRQ and SNR"
                );
                if let Ok(out) = mmcli(cfg, &["--signal-get", "-K"]) {
                    if let Ok(p) = mmcli::parse_keyvalue(&out) {
                        signal = mmcli::signal(&p);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(err = %e, "Cannot turn on ModemManager's extended signal polling")
            }
        }
    }
    Ok((modem, signal))
}

/// [`read_modem`] on a blocking thread.
async fn read_async(cfg: &LteConfig, setup: bool) -> Result<(Modem, Signal), String> {
    let c = cfg.clone();
    crate::spawn::spawn_blocking(move || read_modem(&c, setup))
        .await
        .unwrap_or_else(|e| Err(format!("mmcli task failed: {e}")))
}

fn publish_change(p: &Publisher, c: mmcli::Change, words: &str, numbers: &[(&'static str, u64)]) {
    let _ = p.publish(Kind::Event, |h| {
        event(
            h,
            "lte_signal",
            c.severity,
            "lte",
            c.from.map(Class::as_str),
            Some(c.to.as_str()),
            words,
            numbers,
        )
    });
}

/// The class and words of a round (an error is `no_service`: no modem,
/// or ModemManager not running, is no uplink over LTE either).
fn judge(r: &Result<(Modem, Signal), String>) -> (Class, String) {
    match r {
        Ok((m, s)) => (mmcli::classify(m, s), mmcli::describe(m, s)),
        Err(e) => (Class::NoService, e.clone()),
    }
}

/// Runs the LTE source until `stop` is cancelled; the first reading waits
/// for `start` (first broker connection).
pub async fn run(
    p: Publisher,
    cfg: LteConfig,
    start: impl Future<Output = ()>,
    stop: CancellationToken,
) {
    tokio::select! {
        biased;
        () = stop.cancelled() => return,
        () = start => {}
    }
    let mut tracker = Tracker::default();
    let mut last_error: Option<String> = None;
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let r = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = read_async(&cfg, cfg.signal_setup) => r,
        };
        let err = r.as_ref().err().cloned();
        if err != last_error {
            match &err {
                Some(e) => tracing::warn!("LTE: {e}"),
                None => tracing::info!("LTE: ModemManager answers again"),
            }
            last_error = err;
        }
        let (class, words) = judge(&r);
        p.board().lte(class.as_str(), words.clone());
        if let Some(c) = tracker.observe(class) {
            tracing::info!(class = class.as_str(), "LTE {words}");
            let nums = match &r {
                Ok((m, s)) => mmcli::numbers(m, s),
                Err(_) => Vec::new(),
            };
            publish_change(&p, c, &words, &nums);
        }
    }
}

/// `check --online` rows: the modem and its signal in plain words, with
/// what to do.
pub async fn rows(cfg: &LteConfig) -> Vec<Row> {
    let name = format!("lte modem {}", cfg.modem);
    let r = read_async(cfg, false).await;
    let (class, words) = judge(&r);
    let row = match (&r, class) {
        (Err(e), _) if e.starts_with(&format!("cannot run {}", cfg.mmcli)) => row(
            name,
            Verdict::Failed,
            words,
            "install ModemManager (OpenWrt: opkg install modemmanager; Debian: apt install \
             modemmanager) or remove [lte]",
        ),
        (Err(e), _) if e.contains("ModemManager process") => row(
            name,
            Verdict::Failed,
            words,
            "start ModemManager (/etc/init.d/modemmanager start, or systemctl start ModemManager)",
        ),
        (Err(_), _) => row(
            name,
            Verdict::Failed,
            words,
            "mmcli -L lists the modems ModemManager sees: check the USB modem, or [lte] modem",
        ),
        (Ok((m, _)), Class::NoService) => row(
            name,
            Verdict::Failed,
            words,
            match m.state.as_str() {
                "locked" => "the SIM wants its PIN: mmcli -i any --pin=PIN, or remove the PIN",
                "failed" => "no usable SIM: check it is inserted and active with the operator",
                "disabled" | "enabled" => {
                    "the modem is not connecting: check the APN in the network config"
                }
                _ => "no network: check the antenna and that the SIM is active with credit",
            },
        ),
        (Ok(_), Class::Poor) => row(
            name,
            Verdict::Warning,
            words,
            "weak signal: put the modem or its antenna higher or outside, away from metal",
        ),
        (Ok((_, s)), _) if cfg.signal_setup && s.refresh_secs == Some(0) => row(
            name,
            Verdict::Ok,
            words,
            "RSRP and SNR appear once the agent runs (it turns on ModemManager's signal polling)",
        ),
        (Ok(_), _) => row(name, Verdict::Ok, words, ""),
    };
    vec![row]
}

/// The LTE source in the registry (off without `[lte]`).
pub struct LteSource;

impl Source for LteSource {
    const NAME: &'static str = "lte";
    type Raw = Option<LteRaw>;
    type Config = Option<LteConfig>;

    /// Walks `[lte]` in the parsed document (no derived deserializer).
    fn read(doc: &crate::config::Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        read(doc.get(&["lte"]), problems)
    }

    fn validate(raw: Self::Raw, problems: &mut Vec<String>) -> Option<Self::Config> {
        validate(raw, problems)
    }

    fn summary(cfg: &Self::Config) -> Option<String> {
        let c = cfg.as_ref()?;
        Some(format!(
            "LTE signal every {} s from ModemManager (modem {})",
            c.interval.as_secs(),
            c.modem
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

    /// One reading in words (events need two rounds: none here).
    async fn once(_p: &Publisher, cfg: &Self::Config, note: &mut dyn FnMut(String)) {
        let Some(c) = cfg else { return };
        let (class, words) = judge(&read_async(c, false).await);
        note(format!("lte: {} ({words})", class.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<LteConfig>, Vec<String>> {
        let doc = crate::config::Doc::parse(text).map_err(|e| vec![e])?;
        let mut problems = Vec::new();
        let raw = read(doc.get(&["lte"]), &mut problems);
        let cfg = raw.and_then(|r| validate(r, &mut problems));
        match cfg {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(problems),
        }
    }

    #[test]
    fn config_defaults_and_problems() {
        assert_eq!(parse("").expect("absent"), None);
        let c = parse("[lte]\n").expect("defaults").expect("on");
        assert_eq!(
            (
                c.modem.as_str(),
                c.mmcli.as_str(),
                c.interval.as_secs(),
                c.timeout.as_secs()
            ),
            ("any", "mmcli", 60, 10)
        );
        assert!(c.signal_setup);
        let c = parse(
            "[lte]\nmodem = \"/org/freedesktop/ModemManager1/Modem/3\"\nmmcli = \"/usr/bin/mmcli\"\n\
             interval_secs = 30\nsignal_setup = false\n",
        )
        .expect("ok")
        .expect("on");
        assert_eq!(
            (c.modem.as_str(), c.interval.as_secs(), c.signal_setup),
            ("/org/freedesktop/ModemManager1/Modem/3", 30, false)
        );
        let p = parse(
            "[lte]\nmodem = \"usb0\"\nmmcli = \"bin/mmcli\"\ninterval_secs = 0\n\
             timeout_secs = 61\nsignal_setup = \"yes\"\nband = 3\n",
        )
        .expect_err("bad");
        let all = p.join("\n");
        for needle in [
            "lte.signal_setup = \"yes\": must be true or false",
            "unknown setting lte.band",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
        let p = parse("[lte]\nmodem = \"usb0\"\nmmcli = \"bin/mmcli\"\ninterval_secs = 0\ntimeout_secs = 61\n")
            .expect_err("bad");
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(parse("lte = 1\n").is_err());
    }

    #[test]
    fn errors_judge_as_no_service() {
        let (c, w) = judge(&Err("mmcli: error: couldn't find modem".into()));
        assert_eq!(
            (c, w.as_str()),
            (Class::NoService, "mmcli: error: couldn't find modem")
        );
    }
}
