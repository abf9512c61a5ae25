//! Carrying out a plan: each deletion re-opens the folders on the way from
//! the root's descriptor (`openat` with `O_NOFOLLOW | O_DIRECTORY`, same
//! device checked), re-checks that the name is still the listed file
//! (device, inode, mtime), then `unlinkat`s it. A folder swapped for a
//! symlink after the walk fails to open (`ELOOP`/`ENOTDIR`) instead of
//! redirecting the deletion outside the root.
//!
//! What remains racy, and why it is harmless: between the re-check and the
//! `unlinkat` the NVR could replace the file by a new one of the same name;
//! the folder descriptor still pins the folder inside the root, so at
//! worst a fresh recording inside the root is removed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use rustix::io::Errno;

use super::plan::Candidate;
use super::walk::{dir_flags, OpenRoot};
use super::ErrorList;

/// What an execution did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Indexes (into the planned slice) of the files removed.
    pub deleted: Vec<usize>,
    /// Indexes of the files that could not be removed.
    pub failed: Vec<usize>,
    /// Folders removed because they became empty.
    pub removed_dirs: u64,
    /// Why the failed ones failed (and folder errors), bounded.
    pub errors: ErrorList,
    /// The pass was asked to stop before the end of the plan.
    pub stopped: bool,
}

/// Opens the folder `rel` (relative, possibly empty = the root) without
/// following symlinks or leaving the root's filesystem.
fn open_dir(root: &OpenRoot, rel: &Path) -> Result<Option<OwnedFd>, Errno> {
    let mut cur: Option<OwnedFd> = None;
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            // Names come from getdents: never `..`, `.` or `/`.
            return Err(Errno::INVAL);
        };
        let parent: BorrowedFd<'_> = match &cur {
            Some(fd) => fd.as_fd(),
            None => root.fd.as_fd(),
        };
        let fd = rfs::openat(parent, name, dir_flags(), Mode::empty())?;
        if rfs::fstat(&fd)?.st_dev != root.dev || !root.same_mount(&fd) {
            return Err(Errno::XDEV);
        }
        cur = Some(fd);
    }
    Ok(cur)
}

/// Plain words for an errno met while deleting.
fn reason(e: Errno) -> String {
    match e {
        Errno::NOENT => "vanished before it could be deleted".into(),
        Errno::ACCESS | Errno::PERM => "permission denied".into(),
        Errno::ROFS => "the filesystem is read-only".into(),
        Errno::LOOP | Errno::NOTDIR => {
            "a folder on the way was replaced (by a symlink or a file); not followed".into()
        }
        Errno::XDEV => "a folder on the way is on another filesystem or mount; not entered".into(),
        e => io::Error::from(e).to_string(),
    }
}

/// Deletes `planned` (unless `dry_run`, which only counts them), then the
/// folders this emptied (never the root). `stop` is polled between files.
pub fn execute(
    root: &OpenRoot,
    planned: &[Candidate],
    dry_run: bool,
    stop: &dyn Fn() -> bool,
) -> Outcome {
    let mut out = Outcome::default();
    if dry_run {
        out.deleted = (0..planned.len()).collect();
        return out;
    }
    // The folder of the previous file, kept while consecutive files share
    // it: `(relative path, descriptor or None for the root itself)`.
    let mut cache: Option<(PathBuf, Option<OwnedFd>)> = None;
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    for (i, c) in planned.iter().enumerate() {
        if stop() {
            out.stopped = true;
            break;
        }
        let parent = c.rel.parent().unwrap_or(Path::new(""));
        let Some(name) = c.rel.file_name() else {
            out.failed.push(i);
            out.errors.push_reason(&c.rel, "has no file name");
            continue;
        };
        if cache.as_ref().is_none_or(|(rel, _)| rel != parent) {
            cache = match open_dir(root, parent) {
                Ok(fd) => Some((parent.to_owned(), fd)),
                Err(e) => {
                    out.failed.push(i);
                    out.errors.push_reason(&c.rel, &reason(e));
                    None
                }
            };
        }
        let Some((_, fd)) = &cache else { continue };
        let dir: BorrowedFd<'_> = match fd {
            Some(fd) => fd.as_fd(),
            None => root.fd.as_fd(),
        };
        match remove_file(dir, name, c) {
            Ok(()) => {
                out.deleted.push(i);
                for a in parent.ancestors() {
                    if !a.as_os_str().is_empty() {
                        touched.insert(a.to_owned());
                    }
                }
            }
            Err(why) => {
                out.failed.push(i);
                out.errors.push_reason(&c.rel, &why);
            }
        }
    }
    drop(cache);
    // Deepest first, so a parent is tried after its emptied children.
    let mut dirs: Vec<PathBuf> = touched.into_iter().collect();
    dirs.sort_unstable_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let (Some(parent), Some(name)) = (d.parent(), d.file_name()) else {
            continue;
        };
        let res = open_dir(root, parent).and_then(|fd| {
            let dir = match &fd {
                Some(fd) => fd.as_fd(),
                None => root.fd.as_fd(),
            };
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
        });
        match res {
            Ok(()) => out.removed_dirs += 1,
            // Not empty (new recordings, kept files), already gone, or a
            // mount point: all fine.
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOENT | Errno::BUSY) => {}
            Err(e) => out.errors.push_reason(&d, &reason(e)),
        }
    }
    out
}

/// Removes `name` in `dir` if it is still the listed file.
fn remove_file(dir: BorrowedFd<'_>, name: &OsStr, c: &Candidate) -> Result<(), String> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(reason)?;
    let same = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
        && st.st_dev == c.dev
        && st.st_ino == c.ino
        && st.st_mtime == c.mtime
        && u32::try_from(st.st_mtime_nsec).unwrap_or(0) == c.mtime_nsec;
    if !same {
        return Err("changed since it was listed; left alone".into());
    }
    rfs::unlinkat(dir, name, AtFlags::empty()).map_err(reason)
}
