//! Retention cleanup: keeps recording and backup folders below a used-space
//! watermark by deleting their oldest files, what sites' Python
//! "hdd-monitor" did.
//!
//! For each `[[cleanup.root]]`, a pass:
//! 1. opens the root (refused unless it exists and is canonical) and reads
//!    the usage of its filesystem (`statvfs`, computed like [`crate::sources::disk`]);
//! 2. if used % is above the high watermark, walks the root ([`walk`]):
//!    symlinks are never followed nor deleted (skipped and counted; a
//!    link is harmless to keep and following one is how a cleaner escapes
//!    its root), folders on another filesystem (a mount inside the root)
//!    are not entered, and only the oldest candidates are kept in memory;
//! 3. plans ([`plan`], pure) the oldest matching files to delete until used
//!    % is strictly below the low watermark, counting `st_blocks * 512` per
//!    file (what removal frees; 0 for a file with other hard links), never
//!    a file younger than `min_age` nor one of the newest `keep_newest`
//!    matching files, at most `max_deletions_per_run`;
//! 4. deletes them ([`delete`], fd-relative, re-checked), removes the
//!    folders this emptied (never the root), and reads usage again.
//!
//! Errors on single files (permission denied, vanished) are counted and
//! listed in the [`CleanupReport`] (at most [`MAX_ERRORS`]); the pass goes
//! on. A pass that finds the root above its high watermark yields a
//! report, also when nothing could be deleted (that is the alarming case).
//!
//! Patterns: see [`glob`]. A pattern without `/` matches the file name in
//! any folder (`*.mp4`); one with `/` matches the path from the root
//! (`cam1/**`, `**/*.bak`). Exclude wins over include; no include means
//! every file.
//!
//! `sitewatch-agent cleanup` runs one pass by hand. It only reports what it
//! would delete unless given `--yes` (an installer trying a config must not
//! lose footage by accident); `--dry-run` wins over `--yes`. The config's
//! `dry_run` is for the daemon ([`run`]).

mod check;
pub mod config;
pub mod delete;
pub mod forward;
pub mod glob;
pub mod plan;
pub mod walk;

use crate::config::Doc;
use std::future::Future;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

pub use config::{CleanupConfig, RootConfig};
pub use walk::OpenRoot;

use super::{Context, Running, Source};
use crate::check::Row;
use crate::uplink::publish::Publisher;

/// Most errors listed in one report; more are only counted.
pub const MAX_ERRORS: usize = 32;
/// Most deleted paths named in one report.
pub const MAX_SAMPLE: usize = 20;

/// Errors met during a pass: the first [`MAX_ERRORS`] with their path
/// relative to the root, and the count of all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorList {
    /// `(path relative to the root, reason in plain words)`.
    pub list: Vec<(String, String)>,
    /// Every error, listed or not.
    pub total: u64,
}

impl ErrorList {
    /// Records an I/O error on `rel`.
    pub fn push(&mut self, rel: &Path, e: &io::Error) {
        let why = match e.kind() {
            io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            io::ErrorKind::NotFound => "vanished".to_owned(),
            _ => e.to_string(),
        };
        self.push_reason(rel, &why);
    }

    /// Records a problem on `rel` in words.
    pub fn push_reason(&mut self, rel: &Path, why: &str) {
        self.total += 1;
        if self.list.len() < MAX_ERRORS {
            let p = if rel.as_os_str().is_empty() {
                ".".to_owned()
            } else {
                rel.to_string_lossy().into_owned()
            };
            self.list.push((p, why.to_owned()));
        }
    }

    fn extend(&mut self, other: ErrorList) {
        // The ones `other` could not list still count.
        let unlisted = other.total.saturating_sub(other.list.len() as u64);
        for (p, why) in other.list {
            self.push_reason(Path::new(&p), &why);
        }
        self.total += unlisted;
    }
}

/// Entries a pass passed over, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Symlinks (never followed, never deleted).
    pub symlinks: u64,
    /// Folders or files on another filesystem or mount than the root's
    /// (a bind mount of the same filesystem counts, on Linux 5.8+).
    pub other_filesystem: u64,
    /// Sockets, FIFOs, devices.
    pub special: u64,
    /// Folders deeper than [`walk::MAX_DEPTH`].
    pub too_deep: u64,
    /// Files not selected by include/exclude.
    pub not_matching: u64,
    /// Matching files younger than `min_age`.
    pub too_young: u64,
    /// Old-enough files kept as part of the newest `keep_newest`.
    pub kept_newest: u64,
}

/// What one pass over one root did (or would do, in a dry run). Times are
/// Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanupReport {
    /// The root path as configured.
    pub root: String,
    /// Nothing was deleted; the figures say what would have been.
    pub dry_run: bool,
    /// Files deleted.
    pub deleted_files: u64,
    /// Space freed by them, `st_blocks * 512` each.
    pub deleted_bytes: u64,
    /// Oldest modification time among the deleted files.
    pub oldest_deleted_mtime: Option<i64>,
    /// Newest modification time among the deleted files.
    pub newest_deleted_mtime: Option<i64>,
    /// Oldest modification time among the matching files left (`None`
    /// when none is left or it is unknown).
    pub oldest_kept_mtime: Option<i64>,
    /// Used % before the pass.
    pub used_pct_before: f32,
    /// Used % measured after the pass (a dry run changes nothing).
    pub used_pct_after: f32,
    /// Bytes that had to go to get below the low watermark.
    pub bytes_to_free: u64,
    /// Below the low watermark after the pass (dry run: would be).
    pub target_reached: bool,
    /// The pass stopped at `max_deletions_per_run`.
    pub hit_max_deletions: bool,
    /// Folders removed because the pass emptied them.
    pub removed_dirs: u64,
    /// Up to [`MAX_SAMPLE`] deleted paths, oldest first.
    pub sample: Vec<String>,
    /// Errors, bounded; the pass went on after each.
    pub errors: ErrorList,
    /// What was passed over.
    pub skipped: Skipped,
}

/// Runs one pass over one root. `Ok(None)`: below the high watermark,
/// nothing to do. `Err`: the root cannot be used (missing, not canonical,
/// unreadable), in plain words.
pub fn clean_root(
    root: &RootConfig,
    dry_run: bool,
    now: SystemTime,
    stop: &dyn Fn() -> bool,
) -> Result<Option<CleanupReport>, String> {
    let open = OpenRoot::open(&root.path)?;
    let before = open
        .fill()
        .map_err(|e| format!("cannot read the usage of its filesystem: {e}"))?;
    if before.used_pct <= f32::from(root.high_watermark_pct) {
        return Ok(None);
    }
    let listing = walk::scan(&open, root, now);
    let rules = plan::Rules {
        high_watermark_pct: root.high_watermark_pct,
        low_watermark_pct: root.low_watermark_pct,
        keep_newest: root.keep_newest,
        max_deletions: root.max_deletions_per_run,
    };
    let p = plan::plan(
        &listing.oldest,
        listing.matching_total,
        listing.old_enough_total,
        before,
        rules,
    );
    let planned = &listing.oldest[..p.delete];
    let outcome = delete::execute(&open, planned, dry_run, stop);
    let after = open.fill().unwrap_or(before);
    Ok(Some(report(
        root, dry_run, &listing, &p, planned, outcome, before, after,
    )))
}

#[allow(clippy::too_many_arguments)]
fn report(
    root: &RootConfig,
    dry_run: bool,
    listing: &walk::Listing,
    p: &plan::Plan,
    planned: &[plan::Candidate],
    outcome: delete::Outcome,
    before: plan::Fill,
    after: plan::Fill,
) -> CleanupReport {
    let deleted: Vec<&plan::Candidate> = outcome
        .deleted
        .iter()
        .filter_map(|&i| planned.get(i))
        .collect();
    let mut kept: Vec<i64> = outcome
        .failed
        .iter()
        .filter_map(|&i| planned.get(i).map(|c| c.mtime))
        .collect();
    // Not attempted after a stop request.
    kept.extend(
        planned
            .iter()
            .skip(outcome.deleted.len() + outcome.failed.len())
            .map(|c| c.mtime),
    );
    kept.extend(listing.oldest.get(p.delete).map(|c| c.mtime));
    kept.extend(listing.oldest_young_mtime);
    let mut errors = listing.errors.clone();
    errors.extend(outcome.errors);
    let mut skipped = listing.skipped;
    skipped.kept_newest = p.held_by_keep_newest;
    CleanupReport {
        root: root.path.clone(),
        dry_run,
        deleted_files: deleted.len() as u64,
        deleted_bytes: deleted.iter().map(|c| c.bytes).sum(),
        oldest_deleted_mtime: deleted.iter().map(|c| c.mtime).min(),
        newest_deleted_mtime: deleted.iter().map(|c| c.mtime).max(),
        oldest_kept_mtime: kept.into_iter().min(),
        used_pct_before: before.used_pct,
        used_pct_after: after.used_pct,
        bytes_to_free: p.bytes_to_free,
        target_reached: if dry_run {
            p.reaches_target
        } else {
            after.used_pct < f32::from(root.low_watermark_pct)
        },
        hit_max_deletions: p.hit_max_deletions,
        removed_dirs: outcome.removed_dirs,
        sample: deleted
            .iter()
            .take(MAX_SAMPLE)
            .map(|c| c.rel.to_string_lossy().into_owned())
            .collect(),
        errors,
        skipped,
    }
}

/// The result of one pass over one root.
#[derive(Debug, Clone, PartialEq)]
pub struct RootOutcome {
    /// The root path as configured.
    pub root: String,
    /// See [`clean_root`].
    pub result: Result<Option<CleanupReport>, String>,
}

/// One pass over every configured root. Blocking (walks and deletes).
pub fn pass(cfg: &CleanupConfig, dry_run: bool, stop: &dyn Fn() -> bool) -> Vec<RootOutcome> {
    let now = SystemTime::now();
    cfg.roots
        .iter()
        .take_while(|_| !stop())
        .map(|r| RootOutcome {
            root: r.path.clone(),
            result: clean_root(r, dry_run, now, stop),
        })
        .collect()
}

/// Runs a pass every `cfg.interval` (the first one at once) on a blocking
/// thread, sending one report per root that was above its high watermark,
/// until `shutdown`. Unusable roots are logged as warnings each pass.
pub async fn run(
    cfg: CleanupConfig,
    tx: tokio::sync::mpsc::Sender<CleanupReport>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = cfg.clone();
        let stop = shutdown.clone();
        let job =
            crate::spawn::spawn_blocking(move || pass(&c, c.dry_run, &|| stop.is_cancelled()));
        // On shutdown the pass stops at its next file; do not wait for it
        // (a walk of a huge folder is not interrupted).
        let outcomes = tokio::select! {
            () = shutdown.cancelled() => return,
            res = job => match res {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(err = %e, "Cleanup pass failed");
                    continue;
                }
            },
        };
        for o in outcomes {
            match o.result {
                Ok(None) => tracing::debug!(root = %o.root, "Cleanup: below the high watermark"),
                Ok(Some(r)) => {
                    tracing::info!(
                        root = %r.root,
                        dry_run = r.dry_run,
                        deleted_files = r.deleted_files,
                        deleted_bytes = r.deleted_bytes,
                        used_pct_before = r.used_pct_before,
                        used_pct_after = r.used_pct_after,
                        errors = r.errors.total,
                        "Cleanup pass"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        res = tx.send(r) => if res.is_err() { return },
                    }
                }
                Err(why) => tracing::warn!(root = %o.root, "Cleanup root skipped: it {why}"),
            }
        }
    }
}

/// `2024-01-02 03:04 UTC` for Unix seconds.
fn when(secs: i64) -> String {
    crate::sources::syslog::time::utc_minutes(secs)
}

/// `1.5 GiB`, `12.0 MiB`, `512 bytes`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

impl RootOutcome {
    /// What happened, in plain words for an installer (several lines).
    pub fn describe(&self) -> String {
        let r = match &self.result {
            Err(why) => return format!("{}: skipped: it {why}.", self.root),
            Ok(None) => {
                return format!(
                    "{}: below its high watermark; nothing to delete.",
                    self.root
                )
            }
            Ok(Some(r)) => r,
        };
        let verb = if r.dry_run { "would delete" } else { "deleted" };
        let mut s = format!(
            "{}: {:.1}% used (above the high watermark); {verb} {} files ({})",
            r.root,
            r.used_pct_before,
            r.deleted_files,
            size(r.deleted_bytes)
        );
        if let (Some(a), Some(b)) = (r.oldest_deleted_mtime, r.newest_deleted_mtime) {
            s.push_str(&format!(" modified {} to {}", when(a), when(b)));
        }
        s.push('.');
        if r.dry_run {
            s.push_str(if r.target_reached {
                " That would bring it below the low watermark."
            } else {
                " That would NOT bring it below the low watermark."
            });
        } else {
            s.push_str(&format!(
                " Now {:.1}% used{}.",
                r.used_pct_after,
                if r.target_reached {
                    ""
                } else {
                    ", still above the low watermark"
                }
            ));
        }
        if r.removed_dirs > 0 {
            s.push_str(&format!(" Removed {} emptied folders.", r.removed_dirs));
        }
        if let Some(k) = r.oldest_kept_mtime {
            s.push_str(&format!(" Oldest file kept: {}.", when(k)));
        }
        let k = &r.skipped;
        let mut held = Vec::new();
        if k.too_young > 0 {
            held.push(format!("{} younger than min_age", k.too_young));
        }
        if k.kept_newest > 0 {
            held.push(format!("{} among the newest keep_newest", k.kept_newest));
        }
        if r.hit_max_deletions {
            held.push("stopped at max_deletions_per_run".to_owned());
        }
        if k.symlinks + k.other_filesystem + k.special + k.too_deep > 0 {
            held.push(format!(
                "not entered or not touched: {} symlinks, {} on other filesystems, {} special files, {} too deep",
                k.symlinks, k.other_filesystem, k.special, k.too_deep
            ));
        }
        if !held.is_empty() {
            s.push_str(&format!("\n  Kept: {}.", held.join("; ")));
        }
        for p in &r.sample {
            s.push_str(&format!("\n  {verb}: {p}"));
        }
        if r.deleted_files > r.sample.len() as u64 {
            s.push_str(&format!(
                "\n  ... and {} more",
                r.deleted_files - r.sample.len() as u64
            ));
        }
        if r.errors.total > 0 {
            s.push_str(&format!("\n  {} errors:", r.errors.total));
            for (p, why) in &r.errors.list {
                s.push_str(&format!("\n    {p}: {why}"));
            }
        }
        s
    }
}

/// Retention cleanup in the registry (off without a `[cleanup]` table);
/// each pass is reported to
/// [`forward_cleanup`](forward::forward_cleanup).
pub struct CleanupSource;

impl Source for CleanupSource {
    const NAME: &'static str = "cleanup";
    type Raw = Option<config::CleanupRaw>;
    type Config = Option<CleanupConfig>;

    fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw> {
        super::read_optional(doc, Self::NAME, problems, config::read)
    }

    fn validate(raw: Self::Raw, problems: &mut Vec<String>) -> Option<Self::Config> {
        match raw {
            None => Some(None),
            Some(raw) => config::validate(raw, problems).map(Some),
        }
    }

    fn summary(cfg: &Self::Config) -> Option<String> {
        cfg.as_ref().map(CleanupConfig::summary)
    }

    fn start(cx: &Context, cfg: &Self::Config) -> Option<Box<dyn Running>> {
        let cfg = cfg.clone()?;
        Some(cx.spawn_reporting(move |tx, stop| run(cfg, tx, stop), forward::forward_cleanup))
    }

    fn check(cfg: &Self::Config) -> impl Future<Output = Vec<Row>> {
        check::rows(cfg.as_ref())
    }

    async fn once(p: &Publisher, cfg: &Self::Config, note: &mut dyn FnMut(String)) {
        let Some(c) = cfg else {
            note("cleanup: off (no [cleanup] table)".into());
            return;
        };
        // Always a dry run, whatever the config says.
        // Blocking, on this one-shot runtime: nothing else waits.
        for o in pass(c, true, &|| false) {
            match &o.result {
                Ok(Some(r)) => forward::publish_cleanup(p, r),
                Ok(None) => note(format!(
                    "cleanup: {} is below its high watermark; the daemon would publish nothing",
                    o.root
                )),
                Err(e) => note(format!("cleanup: {}: {e}", o.root)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(3 << 20), "3.0 MiB");
        let r = CleanupReport {
            root: "/srv/rec".into(),
            dry_run: true,
            deleted_files: 21,
            deleted_bytes: 21 << 20,
            oldest_deleted_mtime: Some(0),
            newest_deleted_mtime: Some(86_400),
            oldest_kept_mtime: Some(172_800),
            used_pct_before: 93.0,
            used_pct_after: 93.0,
            bytes_to_free: 1,
            target_reached: true,
            hit_max_deletions: false,
            removed_dirs: 0,
            sample: (0..MAX_SAMPLE).map(|i| format!("f{i}.mp4")).collect(),
            errors: ErrorList {
                list: vec![("a.mp4".into(), "permission denied".into())],
                total: 3,
            },
            skipped: Skipped {
                symlinks: 1,
                too_young: 4,
                ..Skipped::default()
            },
        };
        let o = RootOutcome {
            root: r.root.clone(),
            result: Ok(Some(r)),
        };
        let d = o.describe();
        for needle in [
            "/srv/rec: 93.0% used",
            "would delete 21 files (21.0 MiB) modified 1970-01-01 00:00 UTC to 1970-01-02 00:00 UTC",
            "would bring it below",
            "Oldest file kept: 1970-01-03",
            "4 younger than min_age",
            "1 symlinks",
            "would delete: f19.mp4",
            "... and 1 more",
            "3 errors:\n    a.mp4: permission denied",
        ] {
            assert!(d.contains(needle), "missing {needle}:\n{d}");
        }
    }
}
