//! The confined walk of one root: lists the oldest candidate files
//! without following symlinks, leaving the root's filesystem or holding
//! more than a bounded number of entries.
//!
//! Every directory is opened relative to its parent's descriptor with
//! `O_NOFOLLOW | O_DIRECTORY` (`openat`), every entry is `fstatat`ed with
//! `AT_SYMLINK_NOFOLLOW`, and names come from `getdents` (never `.` or
//! `..`), so no path string is ever resolved below the root.
//!
//! Memory bound: a max-heap keeps the `max_deletions_per_run + 1` oldest
//! candidates (the newest is evicted when it overflows; the extra one is
//! the oldest file kept), plus one open directory per level of the current
//! path, at most [`MAX_DEPTH`] levels. A root with millions of files costs
//! time, not memory.

use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::config::RootConfig;
use super::plan::{Candidate, Fill};
use super::{ErrorList, Skipped};
use crate::sources::disk::probe::Usage;

/// Deepest folder level visited below the root; deeper folders are
/// skipped and counted (bounds open descriptors and stack memory).
pub const MAX_DEPTH: usize = 64;

/// Flags for every directory the walk or a deletion opens.
pub(crate) fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// A root opened for one pass: the descriptor every operation starts from.
#[derive(Debug)]
pub struct OpenRoot {
    /// The configured (canonical) path, for messages.
    pub path: String,
    pub(crate) fd: OwnedFd,
    /// Device of the root's filesystem: nothing on another is touched.
    pub(crate) dev: u64,
    /// Mount id of the root (Linux 5.8+), which also tells a bind mount of
    /// a folder from elsewhere on the same filesystem apart.
    pub(crate) mnt: Option<u64>,
}

impl OpenRoot {
    /// Opens `path`, refusing it unless it is a directory reached without
    /// any symlink (it must equal its canonical form).
    pub fn open(path: &str) -> Result<OpenRoot, String> {
        let canon = std::fs::canonicalize(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "does not exist".to_owned(),
            _ => format!("cannot be resolved: {e}"),
        })?;
        if canon != Path::new(path) {
            return Err(format!(
                "is not canonical (it resolves to {}); configure that path instead",
                canon.display()
            ));
        }
        let fd = rfs::open(path, dir_flags(), Mode::empty())
            .map_err(|e| format!("cannot be opened as a folder: {}", io::Error::from(e)))?;
        let st =
            rfs::fstat(&fd).map_err(|e| format!("cannot be examined: {}", io::Error::from(e)))?;
        Ok(OpenRoot {
            path: path.to_owned(),
            mnt: mount_id(&fd),
            fd,
            dev: st.st_dev,
        })
    }

    /// Whether the open folder `fd` is on the root's mount. Without mount
    /// ids (kernels before 5.8) only the device is compared, by callers.
    pub(crate) fn same_mount(&self, fd: &OwnedFd) -> bool {
        match (self.mnt, mount_id(fd)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Usage of the root's filesystem, computed like the disk source.
    pub fn fill(&self) -> io::Result<Fill> {
        let st = rfs::fstatvfs(&self.fd)?;
        let u = Usage::from_raw(
            st.f_frsize,
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
        );
        Ok(Fill {
            used_bytes: u.used_bytes,
            avail_bytes: u.avail_bytes,
            used_pct: u.used_pct,
        })
    }
}

/// The mount id of an open file, if the kernel reports it.
fn mount_id(fd: &OwnedFd) -> Option<u64> {
    let stx = rfs::statx(fd, c"", AtFlags::EMPTY_PATH, rfs::StatxFlags::MNT_ID).ok()?;
    (stx.stx_mask & rfs::StatxFlags::MNT_ID.bits() != 0).then_some(stx.stx_mnt_id)
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The oldest old-enough matching files, oldest first, at most
    /// `max_deletions_per_run + 1`.
    pub oldest: Vec<Candidate>,
    /// Every matching regular file (young ones included).
    pub matching_total: u64,
    /// Matching files older than `min_age`.
    pub old_enough_total: u64,
    /// Modification time of the oldest matching file younger than
    /// `min_age` (Unix seconds).
    pub oldest_young_mtime: Option<i64>,
    /// What was passed over, by reason.
    pub skipped: Skipped,
    /// Errors (unreadable folders...), bounded.
    pub errors: ErrorList,
}

/// Seconds since the epoch of `t` (negative before 1970).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `rel` joined as the `/`-separated text patterns match against.
fn rel_text(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// Walks the root. `now` decides `min_age`.
pub fn scan(root: &OpenRoot, rules: &RootConfig, now: SystemTime) -> Listing {
    let cap = rules.max_deletions_per_run.saturating_add(1);
    let young_after =
        unix_secs(now).saturating_sub(i64::try_from(rules.min_age.as_secs()).unwrap_or(i64::MAX));
    let mut out = Listing::default();
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();

    // Each level: the open directory and its path relative to the root.
    let first = match rfs::Dir::read_from(&root.fd) {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(Path::new(""), &io::Error::from(e));
            return out;
        }
    };
    let mut stack: Vec<(rfs::Dir, PathBuf)> = vec![(first, PathBuf::new())];
    let mut walk = Walk {
        root,
        rules,
        young_after,
        cap,
        heap: &mut heap,
        out: &mut out,
    };
    loop {
        let depth = stack.len();
        let Some((dir, rel_dir)) = stack.last_mut() else {
            break;
        };
        match walk.step(dir, rel_dir, depth) {
            Step::Next => {}
            Step::Done => {
                stack.pop();
            }
            Step::Enter(d, rel) => stack.push((d, rel)),
        }
    }
    out.oldest = heap.into_sorted_vec();
    out
}

/// What to do after one directory entry.
enum Step {
    Next,
    Done,
    Enter(rfs::Dir, PathBuf),
}

/// The walk's state apart from the directory stack.
struct Walk<'a> {
    root: &'a OpenRoot,
    rules: &'a RootConfig,
    young_after: i64,
    cap: usize,
    heap: &'a mut BinaryHeap<Candidate>,
    out: &'a mut Listing,
}

impl Walk<'_> {
    /// Reads and handles one entry of `dir` (at `depth` levels).
    fn step(&mut self, dir: &mut rfs::Dir, rel_dir: &Path, depth: usize) -> Step {
        let out = &mut *self.out;
        let entry = match dir.read() {
            None => return Step::Done,
            Some(Err(e)) => {
                out.errors.push(rel_dir, &io::Error::from(e));
                return Step::Done;
            }
            Some(Ok(e)) => e,
        };
        let name_c = entry.file_name();
        let name = OsStr::from_bytes(name_c.to_bytes());
        if name == "." || name == ".." {
            return Step::Next;
        }
        let rel = rel_dir.join(name);
        let Ok(fd) = dir.fd() else {
            return Step::Done;
        };
        let st = match rfs::statat(fd, name_c, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Deleted between listing and stat: nothing to do.
            Err(rustix::io::Errno::NOENT) => return Step::Next,
            Err(e) => {
                out.errors.push(&rel, &io::Error::from(e));
                return Step::Next;
            }
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => out.skipped.symlinks += 1,
            FileType::Directory => {
                if st.st_dev != self.root.dev {
                    out.skipped.other_filesystem += 1;
                    return Step::Next;
                }
                if depth >= MAX_DEPTH {
                    out.skipped.too_deep += 1;
                    return Step::Next;
                }
                let sub = match rfs::openat(fd, name_c, dir_flags(), Mode::empty()) {
                    Ok(s) => s,
                    Err(rustix::io::Errno::NOENT) => return Step::Next,
                    Err(e) => {
                        out.errors.push(&rel, &io::Error::from(e));
                        return Step::Next;
                    }
                };
                // A bind mount of a folder from elsewhere (same device).
                if !self.root.same_mount(&sub) {
                    out.skipped.other_filesystem += 1;
                    return Step::Next;
                }
                // Swapped for another directory (or a mount) since the stat.
                match rfs::fstat(&sub) {
                    Ok(s2) if s2.st_dev == st.st_dev && s2.st_ino == st.st_ino => {}
                    Ok(_) => {
                        out.errors.push_reason(&rel, "changed while being listed");
                        return Step::Next;
                    }
                    Err(e) => {
                        out.errors.push(&rel, &io::Error::from(e));
                        return Step::Next;
                    }
                }
                match rfs::Dir::new(sub) {
                    Ok(d) => return Step::Enter(d, rel),
                    Err(e) => out.errors.push(&rel, &io::Error::from(e)),
                }
            }
            FileType::RegularFile => {
                if st.st_dev != self.root.dev {
                    // A file bind-mounted over a name inside the root.
                    out.skipped.other_filesystem += 1;
                    return Step::Next;
                }
                if !self.rules.selects(&rel_text(&rel)) {
                    out.skipped.not_matching += 1;
                    return Step::Next;
                }
                out.matching_total += 1;
                let mtime = st.st_mtime;
                if mtime > self.young_after {
                    out.skipped.too_young += 1;
                    out.oldest_young_mtime =
                        Some(out.oldest_young_mtime.map_or(mtime, |m| m.min(mtime)));
                    return Step::Next;
                }
                out.old_enough_total += 1;
                let blocks = u64::try_from(st.st_blocks).unwrap_or(0);
                let c = Candidate {
                    mtime,
                    mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
                    rel,
                    bytes: if st.st_nlink > 1 {
                        0
                    } else {
                        blocks.saturating_mul(512)
                    },
                    dev: st.st_dev,
                    ino: st.st_ino,
                };
                if self.heap.len() < self.cap {
                    self.heap.push(c);
                } else if self.heap.peek().is_some_and(|newest| c < *newest) {
                    self.heap.pop();
                    self.heap.push(c);
                }
            }
            _ => out.skipped.special += 1,
        }
        Step::Next
    }
}
