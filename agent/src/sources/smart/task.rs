//! The SMART polling task: every interval, read each disk in turn (one at
//! a time, in a blocking thread, under a timeout), fall back to smartctl
//! when the native path cannot read, judge, remember, and hand the
//! reports to the caller.
//!
//! The task does no ioctl itself: the `reader` passed in does (the `io`
//! module in production, a function over synthesized readings in tests).
//! It is called with the configured type; when it should not wake disks
//! in standby (`standby_skip`), the reader captures that setting.
//!
//! Change events: [`Output::Changed`] is sent when a disk's level differs
//! from its previous reading's. The previous level survives restarts for
//! disks with a serial (it is in the state file); a `Standby` reading
//! changes nothing (a sleeping backup disk is not news), an unreadable
//! disk becomes [`Level::Unknown`] (that is news).

use std::collections::HashMap;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use super::config::SmartConfig;
use super::report::{DeviceType, DiskReport, Reading, Source};
use super::rules::{judge, Level};
use super::state::{Previous, State};

/// Reads one device natively: `Ok` with what was read (including
/// `Standby` and `Unsupported`), `Err` with a plain-words reason when the
/// read itself failed (permission, I/O error).
pub type Reader = Arc<dyn Fn(&Path, DeviceType) -> Result<Reading, String> + Send + Sync>;

/// Lists the disks to read when the config names none (`/sys/block`
/// discovery in production).
pub type Discover = Arc<dyn Fn() -> Vec<PathBuf> + Send + Sync>;

/// What the task hands to the publisher.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A disk was read (every disk, every interval).
    Read(Box<DiskReport>),
    /// A disk's level changed since its previous reading; sent after the
    /// matching `Read`.
    Changed {
        /// Kernel name, `sda`.
        device: String,
        /// Previous level.
        from: Level,
        /// New level.
        to: Level,
        /// The reading that changed it.
        report: Box<DiskReport>,
    },
}

/// The program run for the fallback.
pub const SMARTCTL: &str = "smartctl";

/// Runs the task with the devices from the config only (`devices` and
/// `[[smart.device]]`); with neither, nothing is read. Use [`run_with`]
/// to add discovery.
pub async fn run(
    cfg: SmartConfig,
    state_dir: Option<PathBuf>,
    reader: Reader,
    tx: Sender<Output>,
    shutdown: CancellationToken,
) {
    run_with(cfg, state_dir, reader, None, tx, shutdown).await
}

/// [`run`] with a discovery function, used when `devices` is empty.
pub async fn run_with(
    cfg: SmartConfig,
    state_dir: Option<PathBuf>,
    reader: Reader,
    discover: Option<Discover>,
    tx: Sender<Output>,
    shutdown: CancellationToken,
) {
    let mut poller = Poller::new(cfg, state_dir, reader, discover).await;
    let mut tick = tokio::time::interval(poller.cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !poller.round(&tx, &shutdown).await {
            return;
        }
    }
}

/// The daemon's reader (native ioctls, honouring `standby_skip`) and
/// its `/sys/block` discovery.
pub fn native(cfg: &SmartConfig) -> (Reader, Discover) {
    let standby = if cfg.standby_skip {
        super::io::Standby::Skip
    } else {
        super::io::Standby::Wake
    };
    let reader: Reader = Arc::new(move |p: &Path, k| super::io::read_with(p, k, standby));
    (reader, Arc::new(super::io::discover::paths))
}

/// One round over every disk, as the task's first round, but without the
/// saved state: nothing is loaded or written (`sitewatch-agent once`).
pub async fn once(
    cfg: SmartConfig,
    reader: Reader,
    discover: Option<Discover>,
    tx: Sender<Output>,
) {
    let mut poller = Poller::new(cfg, None, reader, discover).await;
    poller.round(&tx, &CancellationToken::new()).await;
}

/// The task's memory between rounds.
struct Poller {
    cfg: SmartConfig,
    state_dir: Option<PathBuf>,
    reader: Reader,
    discover: Option<Discover>,
    state: State,
    /// Last level per device name (for disks without a state key).
    levels: HashMap<String, Level>,
    /// Devices whose read timed out and is still blocked in the kernel.
    hung: Arc<Mutex<HashSet<PathBuf>>>,
    warned_empty: bool,
}

impl Poller {
    async fn new(
        cfg: SmartConfig,
        state_dir: Option<PathBuf>,
        reader: Reader,
        discover: Option<Discover>,
    ) -> Poller {
        let state = match &state_dir {
            Some(d) => {
                let d = d.clone();
                crate::spawn::spawn_blocking(move || State::load(&d))
                    .await
                    .unwrap_or_default()
            }
            None => State::default(),
        };
        Poller {
            cfg,
            state_dir,
            reader,
            discover,
            state,
            levels: HashMap::new(),
            hung: Arc::new(Mutex::new(HashSet::new())),
            warned_empty: false,
        }
    }

    /// Reads every disk once; `false` when the receiver is gone or
    /// shutdown was requested.
    async fn round(&mut self, tx: &Sender<Output>, shutdown: &CancellationToken) -> bool {
        let discovered = match (&self.discover, self.cfg.devices.is_empty()) {
            (Some(d), true) => {
                let d = Arc::clone(d);
                crate::spawn::spawn_blocking(move || d())
                    .await
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let list = self.cfg.device_list(&discovered);
        if list.is_empty() && !self.warned_empty {
            tracing::warn!("SMART: no disks to read (none configured or discovered)");
            self.warned_empty = true;
        }
        let mut dirty = false;
        for dev in list {
            if shutdown.is_cancelled() {
                return false;
            }
            let (reading, source) = self.read(&dev.path, dev.kind).await;
            let outputs = self.judge(&dev.path, dev.kind, reading, source, &mut dirty);
            for o in outputs {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return false,
                    r = tx.send(o) => if r.is_err() { return false },
                }
            }
        }
        if dirty {
            self.save().await;
        }
        true
    }

    /// Native read under the timeout, then smartctl when that gave
    /// nothing usable.
    async fn read(&self, path: &Path, kind: DeviceType) -> (Reading, Source) {
        let native = self.native(path, kind).await;
        let usable = matches!(
            native,
            Ok(Reading::Ata { .. }
                | Reading::Nvme { .. }
                | Reading::Scsi { .. }
                | Reading::Standby)
        );
        if usable || !self.cfg.smartctl_fallback {
            return (unsupported_from(native), Source::Native);
        }
        let p = path.to_owned();
        let timeout = self.cfg.read_timeout;
        let standby_skip = self.cfg.standby_skip;
        let fallback =
            crate::spawn::spawn_blocking(move || run_smartctl(&p, kind, standby_skip, timeout))
                .await
                .unwrap_or_else(|e| Err(format!("smartctl task failed: {e}")));
        match fallback {
            Ok(Reading::Unsupported { reason }) => {
                let native = unsupported_from(native);
                let why = match &native {
                    Reading::Unsupported { reason: n } => format!("{n}; smartctl: {reason}"),
                    _ => reason,
                };
                (Reading::Unsupported { reason: why }, Source::Native)
            }
            Ok(r) => {
                tracing::debug!(device = %path.display(), "SMART read through smartctl");
                (r, Source::Smartctl)
            }
            Err(why) => {
                tracing::debug!(device = %path.display(), "smartctl fallback: {why}");
                (unsupported_from(native), Source::Native)
            }
        }
    }

    async fn native(&self, path: &Path, kind: DeviceType) -> Result<Reading, String> {
        if lock(&self.hung).contains(path) {
            return Err(format!(
                "the previous read has not returned yet (more than {} s; the device or its bridge hangs)",
                self.cfg.read_timeout.as_secs()
            ));
        }
        let reader = Arc::clone(&self.reader);
        let hung = Arc::clone(&self.hung);
        let p = path.to_owned();
        lock(&self.hung).insert(p.clone());
        let job = crate::spawn::spawn_blocking(move || {
            let r = reader(&p, kind);
            lock(&hung).remove(&p);
            r
        });
        match tokio::time::timeout(self.cfg.read_timeout, job).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                lock(&self.hung).remove(path);
                Err(format!("the read failed: {e}"))
            }
            Err(_) => Err(format!(
                "no answer within {} s (read_timeout_secs)",
                self.cfg.read_timeout.as_secs()
            )),
        }
    }

    /// Judges one reading, updates the memory and returns what to send.
    fn judge(
        &mut self,
        path: &Path,
        kind: DeviceType,
        reading: Reading,
        source: Source,
        dirty: &mut bool,
    ) -> Vec<Output> {
        let device = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let key = reading.state_key();
        let previous = key.as_ref().and_then(|k| self.state.disks.get(k));
        let verdict = judge(&reading, previous, &self.cfg.limits);
        let from = self
            .levels
            .get(&device)
            .copied()
            .or_else(|| previous.and_then(|p| p.level));
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let to = verdict.level;
        let standby = matches!(reading, Reading::Standby);
        if let Some(p) = Previous::from_reading(&reading, to, now_ms) {
            if let Some(k) = key {
                self.state.insert(k, p);
                *dirty = true;
            }
        }
        if !standby {
            self.levels.insert(device.clone(), to);
        }
        match to {
            Level::Critical | Level::Warning => tracing::warn!(
                device = %device,
                level = to.as_str(),
                reasons = %verdict.reasons.iter().map(|r| r.code).collect::<Vec<_>>().join(","),
                "SMART verdict"
            ),
            _ => tracing::debug!(device = %device, level = to.as_str(), "SMART verdict"),
        }
        let report = Box::new(DiskReport {
            device: device.clone(),
            path: path.to_owned(),
            kind: reading.resolved_type().unwrap_or(kind),
            source,
            reading,
            verdict,
            read_at_ms: now_ms,
        });
        let mut out = vec![Output::Read(report.clone())];
        if let Some(from) = from.filter(|&f| f != to && !standby) {
            out.push(Output::Changed {
                device,
                from,
                to,
                report,
            });
        }
        out
    }

    async fn save(&self) {
        let Some(dir) = self.state_dir.clone() else {
            return;
        };
        let state = self.state.clone();
        match crate::spawn::spawn_blocking(move || state.save(&dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("Cannot save the SMART state: {e:#}"),
            Err(e) => tracing::warn!(err = %e, "SMART state save task failed"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unsupported_from(r: Result<Reading, String>) -> Reading {
    r.unwrap_or_else(|reason| Reading::Unsupported { reason })
}

/// Runs `smartctl --json -a` on `path` (with `-n standby` when standby
/// disks are skipped, and `-d` for a forced type), bounded in time and
/// output size, and parses its JSON. `Err` when smartctl is missing, hangs
/// or prints something that is not its JSON.
pub fn run_smartctl(
    path: &Path,
    kind: DeviceType,
    standby_skip: bool,
    timeout: Duration,
) -> Result<Reading, String> {
    run_smartctl_program(SMARTCTL, path, kind, standby_skip, timeout)
}

/// [`run_smartctl`] with the program named (tests).
pub fn run_smartctl_program(
    program: &str,
    path: &Path,
    kind: DeviceType,
    standby_skip: bool,
    timeout: Duration,
) -> Result<Reading, String> {
    let mut cmd = Command::new(program);
    cmd.arg("--json").arg("-a");
    if standby_skip {
        cmd.args(["-n", "standby"]);
    }
    match kind {
        DeviceType::Auto => {}
        DeviceType::Sat => {
            cmd.args(["-d", "sat"]);
        }
        DeviceType::Sat12 => {
            cmd.args(["-d", "sat,12"]);
        }
        DeviceType::Nvme => {
            cmd.args(["-d", "nvme"]);
        }
        DeviceType::Scsi => {
            cmd.args(["-d", "scsi"]);
        }
    }
    cmd.arg(path);
    let crate::child::Output {
        status,
        stdout: out,
        ..
    } = crate::child::output_bounded(cmd, timeout, super::smartctl::MAX_INPUT_BYTES)?;
    super::smartctl::parse_smartctl_json(&out)
        .map_err(|e| format!("{program} exited with {status}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::smart::ata::tests::{
        data_sector, identify, threshold_sector, QEMU_ATTRS, QEMU_THRESH,
    };
    use crate::sources::smart::ata::{self, AtaHealth};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    /// QEMU's disk with raw 5 (reallocated) set from `realloc`.
    fn qemu_with_realloc(realloc: u64) -> Reading {
        let mut rows = QEMU_ATTRS.to_vec();
        rows[3].4 = realloc;
        let mut attributes = ata::parse_smart_data(&data_sector(&rows)).expect("data");
        let th = ata::parse_thresholds(&threshold_sector(&QEMU_THRESH)).expect("th");
        ata::merge_thresholds(&mut attributes, &th);
        Reading::Ata {
            identity: ata::parse_identify(&identify("QEMU HARDDISK", "QM00001", 1 << 21))
                .expect("identify"),
            attributes,
            health: AtaHealth::Passed,
            passthrough: 16,
        }
    }

    fn cfg(devices: &[&str]) -> SmartConfig {
        SmartConfig {
            interval: Duration::from_millis(50),
            devices: devices
                .iter()
                .map(|p| super::super::config::DeviceSpec {
                    path: PathBuf::from(p),
                    kind: DeviceType::Auto,
                })
                .collect(),
            smartctl_fallback: false,
            read_timeout: Duration::from_millis(300),
            ..SmartConfig::default()
        }
    }

    async fn next(rx: &mut tokio::sync::mpsc::Receiver<Output>) -> Output {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an output in time")
            .expect("channel open")
    }

    fn report(o: &Output) -> &DiskReport {
        match o {
            Output::Read(r) => r,
            Output::Changed { report, .. } => report,
        }
    }

    #[tokio::test]
    async fn reads_judges_and_reports_changes_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let realloc = Arc::new(AtomicU64::new(0));
        let r2 = Arc::clone(&realloc);
        let reader: Reader = Arc::new(move |p: &Path, _| {
            assert_eq!(p, Path::new("/dev/sda"));
            Ok(qemu_with_realloc(r2.load(Ordering::SeqCst)))
        });

        // First run: healthy, baseline; no change event for a first reading.
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            cfg(&["/dev/sda"]),
            Some(dir.path().to_owned()),
            Arc::clone(&reader),
            tx,
            stop.clone(),
        ));
        let o = next(&mut rx).await;
        let Output::Read(r) = &o else { panic!("{o:?}") };
        assert_eq!((r.device.as_str(), r.kind), ("sda", DeviceType::Sat));
        assert_eq!(r.verdict.level, Level::Ok);
        assert_eq!(r.source, Source::Native);
        // Reallocations appear: Warning (first non-zero) → Changed.
        realloc.store(8, Ordering::SeqCst);
        let o = loop {
            let o = next(&mut rx).await;
            if matches!(o, Output::Changed { .. }) {
                break o;
            }
        };
        assert!(
            matches!(&o, Output::Changed { from: Level::Ok, to: Level::Critical, device, .. } if device == "sda"),
            "0 -> 8 is growth: {o:?}"
        );
        // Stable at 8: back to Warning, one more change.
        let o = loop {
            let o = next(&mut rx).await;
            if matches!(o, Output::Changed { .. }) {
                break o;
            }
        };
        assert!(
            matches!(
                &o,
                Output::Changed {
                    from: Level::Critical,
                    to: Level::Warning,
                    ..
                }
            ),
            "{o:?}"
        );
        stop.cancel();
        task.await.expect("task ends");

        // Restart with the same state dir: 8 -> 9 is growth, and the
        // previous level (Warning) is remembered, so a Changed follows.
        realloc.store(9, Ordering::SeqCst);
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            cfg(&["/dev/sda"]),
            Some(dir.path().to_owned()),
            reader,
            tx,
            stop.clone(),
        ));
        let o = next(&mut rx).await;
        assert_eq!(report(&o).verdict.reasons[0].code, "reallocated_growing");
        let o = next(&mut rx).await;
        assert!(
            matches!(
                &o,
                Output::Changed {
                    from: Level::Warning,
                    to: Level::Critical,
                    ..
                }
            ),
            "{o:?}"
        );
        stop.cancel();
        task.await.expect("task ends");
    }

    #[tokio::test]
    async fn hung_reads_time_out_and_standby_is_not_a_change() {
        let calls = Arc::new(AtomicU64::new(0));
        let c2 = Arc::clone(&calls);
        let reader: Reader = Arc::new(move |p: &Path, kind| {
            let n = c2.fetch_add(1, Ordering::SeqCst);
            match p.to_str() {
                Some("/dev/sdb") => {
                    // A USB bridge that hangs on the first call.
                    if n == 0 {
                        std::thread::sleep(Duration::from_millis(1500));
                    }
                    Err("never".into())
                }
                _ => {
                    assert_eq!(kind, DeviceType::Auto);
                    Ok(Reading::Standby)
                }
            }
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            cfg(&["/dev/sdb", "/dev/sdc"]),
            None,
            reader,
            tx,
            stop.clone(),
        ));
        let started = Instant::now();
        let o = next(&mut rx).await;
        let r = report(&o);
        assert_eq!(r.device, "sdb");
        assert!(
            matches!(&r.reading, Reading::Unsupported { reason } if reason.contains("no answer within")),
            "{r:?}"
        );
        assert_eq!(r.verdict.level, Level::Unknown);
        assert!(
            started.elapsed() < Duration::from_millis(1200),
            "timed out, not waited"
        );
        let o = next(&mut rx).await;
        assert_eq!(report(&o).reading, Reading::Standby);
        // Next round: sdb is still hung, so it is not read again.
        let o = next(&mut rx).await;
        assert!(
            matches!(&report(&o).reading, Reading::Unsupported { reason } if reason.contains("previous read has not returned")),
            "{o:?}"
        );
        // Standby never produces a Changed.
        for _ in 0..3 {
            let o = next(&mut rx).await;
            assert!(matches!(o, Output::Read(_)), "{o:?}");
        }
        stop.cancel();
        task.await.expect("task ends");
    }

    /// Needs smartctl installed (`smartmontools`; the test scripts install
    /// it): this runs the real program.
    fn require_smartctl() {
        let found = std::process::Command::new(SMARTCTL)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "smartctl not found: install smartmontools (apt-get install smartmontools)"
        );
    }

    #[test]
    fn real_smartctl_output_for_a_missing_device_is_unsupported() {
        require_smartctl();
        let r = run_smartctl(
            Path::new("/dev/sitewatch-no-such-disk"),
            DeviceType::Auto,
            true,
            Duration::from_secs(20),
        )
        .expect("smartctl ran and printed JSON");
        assert!(
            matches!(&r, Reading::Unsupported { reason } if reason.contains("failed: No such device")),
            "{r:?}"
        );
        let e = run_smartctl_program(
            "sitewatch-no-such-program",
            Path::new("/dev/sda"),
            DeviceType::Sat,
            true,
            Duration::from_secs(1),
        )
        .expect_err("missing program");
        assert!(e.contains("cannot run"), "{e}");
    }

    #[test]
    fn hung_smartctl_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prog = dir.path().join("smartctl-hangs");
        std::fs::write(&prog, "#!/bin/sh\nexec sleep 30\n").expect("write");
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let started = Instant::now();
        let e = run_smartctl_program(
            prog.to_str().expect("utf-8"),
            Path::new("/dev/sda"),
            DeviceType::Auto,
            true,
            Duration::from_millis(300),
        )
        .expect_err("hangs");
        assert!(e.contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn fallback_to_smartctl_keeps_both_reasons_when_neither_can_read() {
        require_smartctl();
        let reader: Reader =
            Arc::new(|_: &Path, _| Err("permission denied (need CAP_SYS_RAWIO)".into()));
        let mut c = cfg(&["/dev/sitewatch-no-such-disk"]);
        c.smartctl_fallback = true;
        c.read_timeout = Duration::from_secs(20);
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(c, None, reader, tx, stop.clone()));
        let o = next(&mut rx).await;
        stop.cancel();
        task.await.expect("task ends");
        let r = report(&o);
        assert_eq!(r.source, Source::Native);
        assert!(
            matches!(&r.reading, Reading::Unsupported { reason }
                if reason.contains("CAP_SYS_RAWIO") && reason.contains("smartctl: smartctl could not read the device: Smartctl open device: /dev/sitewatch-no-such-disk failed: No such device")),
            "{r:?}"
        );
    }

    #[test]
    fn captured_smartctl_documents_are_unsupported() {
        for (name, words) in [
            (
                "captured-smartctl-7.3-open-not-permitted.json",
                "Operation not permitted",
            ),
            (
                "captured-smartctl-7.3-no-such-device.json",
                "failed: No such device",
            ),
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/smart")
                .join(name);
            let bytes = std::fs::read(&path).expect("fixture");
            let r = crate::sources::smart::smartctl::parse_smartctl_json(&bytes).expect("parses");
            assert!(
                matches!(&r, Reading::Unsupported { reason } if reason.contains(words)),
                "{name}: {r:?}"
            );
        }
    }
}
