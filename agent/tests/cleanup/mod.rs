//! Retention cleanup on the real filesystem: each test mounts a small
//! tmpfs of its own (so used % is exact and controllable) under a temp
//! folder, with an "outside" tree next to it that must never change.
//! Needs root (mount); a test fails loudly, never skips, without it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sitewatch_agent::sources::cleanup::{self, delete, plan, walk, CleanupReport, RootConfig};

use crate::util::agent_bin;

const MIB: usize = 1 << 20;
const DAY: u64 = 86_400;

/// A mount made for one test; unmounted on drop, also after a failure.
struct Mount {
    path: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (`8m`) at `path`.
    fn tmpfs(path: &Path, size: &str) -> Mount {
        let opts = format!("size={size},mode=0755");
        Self::run(path, &["-t", "tmpfs", "-o", &opts, "tmpfs"])
    }

    /// `src` bound onto `path` (same filesystem, another place).
    fn bind(src: &Path, path: &Path) -> Mount {
        Self::run(path, &["--bind", src.to_str().expect("utf8")])
    }

    fn run(path: &Path, args: &[&str]) -> Mount {
        fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount at {} (these tests need root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount {
            path: path.to_owned(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a failed test left something open): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A temp folder with `root/` (an 8 MiB tmpfs) and `outside/` (next to it,
/// on the temp folder's filesystem). Field order: mounts drop before the
/// folder is removed.
struct Site {
    mounts: Vec<Mount>,
    root: PathBuf,
    outside: PathBuf,
    _dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical tempdir");
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir_all(&outside).expect("outside");
        let mounts = vec![Mount::tmpfs(&root, "8m")];
        Site {
            mounts,
            root,
            outside,
            _dir: dir,
        }
    }

    fn root_str(&self) -> &str {
        self.root.to_str().expect("utf8 path")
    }

    fn rules(&self) -> RootConfig {
        let mut r = RootConfig::new(self.root_str(), 80, 50);
        r.keep_newest = 0;
        r
    }
}

/// Writes `mib` MiB (really allocated on tmpfs) modified `age` ago.
fn file(path: &Path, mib: usize, age: Duration) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("parent");
    }
    let mut f = fs::File::create(path).expect("create");
    f.write_all(&vec![0x5a; mib * MIB]).expect("write");
    f.set_modified(SystemTime::now() - age).expect("set mtime");
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * DAY)
}

/// Every entry under `dir` (not following symlinks): kind, size, mtime,
/// inode, link target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let link = fs::read_link(&p).ok();
            out.insert(
                p.strip_prefix(base).expect("under base").to_owned(),
                format!(
                    "{:?} {} {} {} {:?}",
                    m.file_type(),
                    m.len(),
                    m.mtime(),
                    m.ino(),
                    link
                ),
            );
            if m.is_dir() {
                walk(&p, base, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn names(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

fn clean(rules: &RootConfig, dry_run: bool) -> Option<CleanupReport> {
    cleanup::clean_root(rules, dry_run, SystemTime::now(), &|| false).expect("root usable")
}

/// Seven 1 MiB recordings in dated folders, oldest in 2024/01.
fn seven_recordings(site: &Site) {
    for (i, d) in [
        "2024/01/a",
        "2024/01/b",
        "2024/02/c",
        "2024/02/d",
        "2024/03/e",
        "2024/03/f",
        "g",
    ]
    .iter()
    .enumerate()
    {
        file(&site.root.join(format!("{d}.mp4")), 1, days(20 - i as u64));
    }
}

#[test]
fn watermarks_oldest_first_and_emptied_folders_removed() {
    let site = Site::new();
    file(&site.outside.join("old.mp4"), 1, days(400));
    let outside = snapshot(&site.outside);
    let rules = site.rules();

    // 5 of 8 MiB: 62.5 % is below the high watermark of 80 %.
    for (i, d) in [
        "2024/01/a",
        "2024/01/b",
        "2024/02/c",
        "2024/02/d",
        "2024/03/e",
    ]
    .iter()
    .enumerate()
    {
        file(&site.root.join(format!("{d}.mp4")), 1, days(20 - i as u64));
    }
    assert_eq!(clean(&rules, false), None);
    // 7 of 8 MiB: 87.5 %; below 50 % means at most 3 MiB left, so the 4
    // oldest go, and the two folders they emptied with them.
    file(&site.root.join("2024/03/f.mp4"), 1, days(15));
    file(&site.root.join("g.mp4"), 1, days(14));
    let r = clean(&rules, false).expect("above the high watermark");
    assert_eq!(r.deleted_files, 4, "{r:#?}");
    assert_eq!(
        r.sample,
        [
            "2024/01/a.mp4",
            "2024/01/b.mp4",
            "2024/02/c.mp4",
            "2024/02/d.mp4"
        ]
    );
    assert_eq!(r.deleted_bytes, 4 * MIB as u64);
    assert!((r.used_pct_before - 87.5).abs() < 0.01, "{r:#?}");
    assert!((r.used_pct_after - 37.5).abs() < 0.01, "{r:#?}");
    assert!(
        r.target_reached && !r.dry_run && r.errors.total == 0,
        "{r:#?}"
    );
    assert_eq!(r.removed_dirs, 2, "{r:#?}");
    let now = walk_now();
    let mt = |age: u64| now - (age * DAY) as i64;
    assert!((r.oldest_deleted_mtime.expect("some") - mt(20)).abs() <= 2);
    assert!((r.newest_deleted_mtime.expect("some") - mt(17)).abs() <= 2);
    assert!((r.oldest_kept_mtime.expect("some") - mt(16)).abs() <= 2);
    assert_eq!(
        names(&site.root),
        ["2024", "2024/03", "2024/03/e.mp4", "2024/03/f.mp4", "g.mp4"]
    );
    assert_eq!(snapshot(&site.outside), outside);

    // Below the low watermark now: nothing more to do. The root itself
    // is never removed, even when everything in it goes.
    assert_eq!(clean(&rules, false), None);
    let mut all = rules.clone();
    all.high_watermark_pct = 1;
    all.low_watermark_pct = 1;
    clean(&all, false).expect("report");
    assert!(names(&site.root).is_empty());
    assert!(site.root.is_dir());
    drop(site.mounts);
}

fn walk_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

#[test]
fn min_age_and_newest_n_are_kept() {
    let site = Site::new();
    let mut rules = site.rules();
    rules.keep_newest = 5;
    rules.min_age = days(1);
    // 4 old files and 3 recent ones (inside min_age): 87.5 % used.
    for i in 0..4 {
        file(&site.root.join(format!("old{i}.mp4")), 1, days(10 - i));
    }
    for i in 0..3 {
        file(
            &site.root.join(format!("new{i}.mp4")),
            1,
            Duration::from_secs(3600 * (i + 1)),
        );
    }
    // 7 matching, the newest 5 are kept: only old0 and old1 may go, which
    // is not enough to reach the low watermark.
    let r = clean(&rules, false).expect("report");
    assert_eq!(r.sample, ["old0.mp4", "old1.mp4"], "{r:#?}");
    assert!(!r.target_reached, "{r:#?}");
    assert_eq!(
        (r.skipped.too_young, r.skipped.kept_newest),
        (3, 2),
        "{r:#?}"
    );
    assert_eq!(
        names(&site.root),
        ["new0.mp4", "new1.mp4", "new2.mp4", "old2.mp4", "old3.mp4"]
    );
    // min_age alone: the young ones survive even with keep_newest 0
    // (62.5 % used now; act above 60 %).
    rules.keep_newest = 0;
    rules.high_watermark_pct = 60;
    let r = clean(&rules, false).expect("report");
    assert_eq!(r.sample, ["old2.mp4", "old3.mp4"], "{r:#?}");
    assert_eq!(names(&site.root), ["new0.mp4", "new1.mp4", "new2.mp4"]);
}

#[test]
fn include_and_exclude_select_what_may_go() {
    let site = Site::new();
    let mut rules = site.rules();
    rules.include = ["*.mp4", "**/*.bak"]
        .iter()
        .map(|p| cleanup::glob::Glob::new(p).expect("pattern"))
        .collect();
    rules.exclude = vec![cleanup::glob::Glob::new("keep/**").expect("pattern")];
    file(&site.root.join("notes.txt"), 1, days(30));
    file(&site.root.join("keep/evidence.mp4"), 1, days(29));
    file(&site.root.join("db/old.bak"), 1, days(28));
    file(&site.root.join("cam1/a.mp4"), 1, days(27));
    file(&site.root.join("cam1/b.mp4"), 1, days(26));
    file(&site.root.join("cam1/c.mp4"), 1, days(25));
    file(&site.root.join("cam1/d.mp4"), 1, days(24));
    let r = clean(&rules, false).expect("report");
    assert_eq!(
        r.sample,
        ["db/old.bak", "cam1/a.mp4", "cam1/b.mp4", "cam1/c.mp4"],
        "{r:#?}"
    );
    assert_eq!(r.skipped.not_matching, 2, "{r:#?}");
    assert_eq!(
        names(&site.root),
        [
            "cam1",
            "cam1/d.mp4",
            "keep",
            "keep/evidence.mp4",
            "notes.txt"
        ]
    );
}

#[test]
fn dry_run_deletes_nothing_and_reports_the_same_plan() {
    let site = Site::new();
    seven_recordings(&site);
    let rules = site.rules();
    let before = snapshot(&site.root);
    let dry = clean(&rules, true).expect("report");
    assert_eq!(snapshot(&site.root), before, "a dry run changed the root");
    assert!(
        dry.dry_run && dry.target_reached && dry.removed_dirs == 0,
        "{dry:#?}"
    );
    assert_eq!(dry.used_pct_after, dry.used_pct_before);
    let real = clean(&rules, false).expect("report");
    assert_eq!(
        (dry.deleted_files, dry.deleted_bytes, &dry.sample),
        (real.deleted_files, real.deleted_bytes, &real.sample)
    );
    assert_eq!(
        (
            dry.oldest_deleted_mtime,
            dry.newest_deleted_mtime,
            dry.oldest_kept_mtime
        ),
        (
            real.oldest_deleted_mtime,
            real.newest_deleted_mtime,
            real.oldest_kept_mtime
        )
    );
    assert_ne!(snapshot(&site.root), before);
}

#[test]
fn symlinks_inside_the_root_are_never_followed_nor_deleted() {
    let site = Site::new();
    // Old recordings outside, reachable through links inside the root.
    file(&site.outside.join("victim.mp4"), 1, days(900));
    file(&site.outside.join("dir/a.mp4"), 1, days(900));
    file(&site.outside.join("dir/sub/b.mp4"), 1, days(900));
    std::os::unix::fs::symlink(site.outside.join("victim.mp4"), site.root.join("link.mp4"))
        .expect("symlink");
    std::os::unix::fs::symlink(site.outside.join("dir"), site.root.join("cam9")).expect("symlink");
    let outside = snapshot(&site.outside);
    seven_recordings(&site);
    // Asks for everything: only the root's own files may go.
    let mut rules = site.rules();
    rules.low_watermark_pct = 1;
    let r = clean(&rules, false).expect("report");
    assert_eq!(r.deleted_files, 7, "{r:#?}");
    assert_eq!(r.skipped.symlinks, 2, "{r:#?}");
    // Links take no blocks on tmpfs: the root is empty, 0 % < 1 %.
    assert!(r.target_reached, "{r:#?}");
    assert_eq!(snapshot(&site.outside), outside);
    assert_eq!(names(&site.root), ["cam9", "link.mp4"]);
}

#[test]
fn another_filesystem_mounted_inside_the_root_is_not_entered() {
    let mut site = Site::new();
    let inner = site.root.join("usb");
    site.mounts.push(Mount::tmpfs(&inner, "4m"));
    file(&inner.join("ancient.mp4"), 1, days(900));
    file(&inner.join("x/older.mp4"), 1, days(901));
    let inner_before = snapshot(&inner);
    // A folder of the root's own filesystem bound elsewhere inside it: same
    // device, another mount.
    file(&site.root.join("elsewhere/old.mp4"), 1, days(900));
    site.mounts.push(Mount::bind(
        &site.root.join("elsewhere"),
        &site.root.join("bound"),
    ));
    let elsewhere_before = snapshot(&site.root.join("elsewhere"));
    seven_recordings(&site);
    let mut rules = site.rules();
    rules.low_watermark_pct = 1;
    rules.exclude = vec![cleanup::glob::Glob::new("elsewhere/**").expect("pattern")];
    let r = clean(&rules, false).expect("report");
    assert_eq!(r.deleted_files, 7, "{r:#?}");
    assert_eq!(r.skipped.other_filesystem, 2, "{r:#?}");
    assert_eq!(snapshot(&inner), inner_before);
    assert_eq!(snapshot(&site.root.join("elsewhere")), elsewhere_before);
    // Unmount before the site (these mounts are on top of the root).
    while let Some(m) = site.mounts.pop() {
        drop(m);
    }
}

#[test]
fn root_paths_must_be_canonical_and_not_climb() {
    let site = Site::new();
    let link = site.outside.join("root-link");
    std::os::unix::fs::symlink(&site.root, &link).expect("symlink");
    let mut rules = site.rules();
    rules.path = link.to_str().expect("utf8").to_owned();
    let e = cleanup::clean_root(&rules, false, SystemTime::now(), &|| false)
        .expect_err("a symlinked root is refused");
    assert!(
        e.contains("is not canonical") && e.contains(site.root_str()),
        "{e}"
    );
    rules.path = site.root.join("missing").to_str().expect("utf8").to_owned();
    let e = cleanup::clean_root(&rules, false, SystemTime::now(), &|| false).expect_err("missing");
    assert!(e.contains("does not exist"), "{e}");

    // `..` never gets past the config.
    let text = format!(
        "site_id = \"s\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[cleanup]\n[[cleanup.root]]\n\
         path = \"{}/../outside\"\nhigh_watermark_pct = 90\nlow_watermark_pct = 85\n",
        site.root_str()
    );
    let p = sitewatch_agent::Config::parse(&text, "t.toml", |_| None).expect_err("`..` refused");
    assert!(p.to_string().contains("`..`"), "{p}");
}

/// Walk, then change the tree, then delete: what the walk saw is
/// re-checked, and what cannot be deleted safely is reported.
#[test]
fn changes_between_listing_and_deleting_are_reported_and_the_run_goes_on() {
    let site = Site::new();
    seven_recordings(&site);
    file(&site.outside.join("2024/01/b.mp4"), 1, days(900));
    let outside = snapshot(&site.outside);
    let mut rules = site.rules();
    rules.low_watermark_pct = 1;
    let root = cleanup::OpenRoot::open(site.root_str()).expect("open");
    let fill = root.fill().expect("statvfs");
    let listing = walk::scan(&root, &rules, SystemTime::now());
    let rule = plan::Rules {
        high_watermark_pct: 80,
        low_watermark_pct: 1,
        keep_newest: 0,
        max_deletions: 100,
    };
    let p = plan::plan(
        &listing.oldest,
        listing.matching_total,
        listing.old_enough_total,
        fill,
        rule,
    );
    assert_eq!(p.delete, 7);

    // 2024/01 is swapped for a symlink to a look-alike folder outside.
    fs::rename(site.root.join("2024/01"), site.root.join("2024/01.moved")).expect("rename");
    std::os::unix::fs::symlink(site.outside.join("2024/01"), site.root.join("2024/01"))
        .expect("symlink");
    // 2024/02/c.mp4 is deleted by someone else (the NVR).
    fs::remove_file(site.root.join("2024/02/c.mp4")).expect("remove");
    // 2024/02/d.mp4 is replaced by a new recording of the same name.
    fs::remove_file(site.root.join("2024/02/d.mp4")).expect("remove");
    file(&site.root.join("2024/02/d.mp4"), 1, days(30));

    let out = delete::execute(&root, &listing.oldest[..p.delete], false, &|| false);
    assert_eq!(out.deleted, [4, 5, 6], "{out:#?}");
    assert_eq!(out.failed, [0, 1, 2, 3], "{out:#?}");
    let errs: BTreeMap<&str, &str> = out
        .errors
        .list
        .iter()
        .map(|(p, w)| (p.as_str(), w.as_str()))
        .collect();
    assert!(errs["2024/01/a.mp4"].contains("replaced"), "{errs:?}");
    assert!(errs["2024/01/b.mp4"].contains("replaced"), "{errs:?}");
    assert!(errs["2024/02/c.mp4"].contains("vanished"), "{errs:?}");
    assert!(
        errs["2024/02/d.mp4"].contains("changed since it was listed"),
        "{errs:?}"
    );
    assert_eq!(out.errors.total, 4);
    assert_eq!(snapshot(&site.outside), outside);
    assert_eq!(
        names(&site.root),
        [
            "2024",
            "2024/01",
            "2024/01.moved",
            "2024/01.moved/a.mp4",
            "2024/01.moved/b.mp4",
            "2024/02",
            "2024/02/d.mp4"
        ]
    );
}

#[test]
fn the_task_sends_reports_until_shut_down() {
    let site = Site::new();
    seven_recordings(&site);
    let cfg = cleanup::CleanupConfig {
        interval: Duration::from_secs(1),
        dry_run: true,
        roots: vec![site.rules()],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(cleanup::run(cfg, tx, stop.clone()));
        for _ in 0..2 {
            let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a report in time")
                .expect("open channel");
            assert!(r.dry_run && r.deleted_files == 4, "{r:#?}");
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops in time")
            .expect("no panic");
    });
    assert_eq!(names(&site.root).len(), 11, "a dry run deleted something");
}

#[test]
fn cli_prints_the_plan_and_deletes_only_with_yes() {
    let site = Site::new();
    seven_recordings(&site);
    let cfg = site._dir.path().join("agent.toml");
    fs::write(
        &cfg,
        format!(
            "site_id = \"s\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[cleanup]\n\
             [[cleanup.root]]\npath = \"{}\"\nhigh_watermark_pct = 80\nlow_watermark_pct = 50\n\
             keep_newest = 0\nmin_age = \"1d\"\n",
            site.root_str()
        ),
    )
    .expect("config");
    let before = snapshot(&site.root);
    let run = |args: &[&str]| {
        let out = Command::new(agent_bin())
            .env_remove("SITEWATCH_SITE_ID")
            .env_remove("SITEWATCH_MQTT_URL")
            .arg("cleanup")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("run the agent");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = run(&[]);
    assert!(ok, "{text}");
    assert!(text.contains("would delete 4 files (4.0 MiB)"), "{text}");
    assert!(text.contains("would delete: 2024/01/a.mp4"), "{text}");
    assert!(text.contains("--yes"), "{text}");
    assert_eq!(snapshot(&site.root), before);
    let (ok, text) = run(&["--yes", "--dry-run"]);
    assert!(ok && text.contains("would delete 4 files"), "{text}");
    assert_eq!(snapshot(&site.root), before);
    let (ok, text) = run(&["--yes"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("deleted 4 files (4.0 MiB)") && text.contains("Now 37.5% used"),
        "{text}"
    );
    assert!(text.contains("Removed 2 emptied folders"), "{text}");
    assert_eq!(names(&site.root).len(), 5);
    let (ok, text) = run(&["--yes"]);
    assert!(ok && text.contains("below its high watermark"), "{text}");
}

#[test]
fn a_pass_holds_and_deletes_at_most_max_deletions() {
    let site = Site::new();
    seven_recordings(&site);
    let mut rules = site.rules();
    rules.max_deletions_per_run = 2;
    let root = cleanup::OpenRoot::open(site.root_str()).expect("open");
    // The walk keeps only max + 1 candidates, the oldest ones.
    let listing = walk::scan(&root, &rules, SystemTime::now());
    let kept: Vec<_> = listing.oldest.iter().map(|c| c.rel.clone()).collect();
    assert_eq!(
        kept,
        ["2024/01/a.mp4", "2024/01/b.mp4", "2024/02/c.mp4"].map(PathBuf::from)
    );
    assert_eq!((listing.matching_total, listing.old_enough_total), (7, 7));
    let r = clean(&rules, false).expect("report");
    assert_eq!(r.sample, ["2024/01/a.mp4", "2024/01/b.mp4"], "{r:#?}");
    assert!(r.hit_max_deletions && !r.target_reached, "{r:#?}");
    // 11 entries less the two files and the folder they emptied.
    assert_eq!(names(&site.root).len(), 8);
    assert_eq!(r.removed_dirs, 1);
}
