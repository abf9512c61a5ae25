//! Segment files of one class directory: listing, appending, reading back
//! in pieces, deleting, and collecting what needs an fsync.
//!
//! File I/O only: it does not decide what to keep or drop (that is the
//! outbox's job) and never calls fsync itself (a [`super::SyncJob`] does,
//! off the caller's lock). Segment files are `<16 hex digits>.seg`, numbered
//! upwards; a process only ever appends to a segment it created itself, so
//! a torn tail left by a crash stays in an old, read-only segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::frame::{self, Frame, SkipKind, Step, HEADER_LEN, MAX_FRAME_LEN};
use super::record::Record;

/// How much a reader fetches at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Where a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskPos {
    /// Segment number.
    pub seg: u64,
    /// Offset of the frame in the segment.
    pub off: u64,
    /// Frame length.
    pub len: u32,
}

/// A position in a class log: the next frame to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub seg: u64,
    pub off: u64,
}

/// What the outbox knows about one segment file.
#[derive(Debug, Clone)]
pub(crate) struct SegInfo {
    /// Segment number (file name).
    pub no: u64,
    /// Current length.
    pub bytes: u64,
    /// Largest record id in it (0: none).
    pub max_id: u64,
    /// Created by this process (damage found in it is new, so counted).
    pub fresh: bool,
}

/// The segment being appended to.
#[derive(Debug)]
struct Head {
    no: u64,
    file: File,
    /// A write failed; the next append starts a new segment.
    broken: bool,
}

/// Files and directories to flush, collected under the outbox's lock and
/// flushed without it. Closed segments are named by path and opened by the
/// flush (fsync works per inode, whatever the descriptor), so no
/// descriptor is held between flushes and a segment deleted meanwhile is
/// simply skipped.
#[derive(Debug, Default)]
pub(crate) struct SyncFiles {
    /// Heads still being written: duplicated descriptors.
    pub open: Vec<(PathBuf, File)>,
    /// Closed segments written since the last flush.
    pub closed: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

/// The segment files of one class.
#[derive(Debug)]
pub(crate) struct SegLog {
    dir: PathBuf,
    /// Oldest first; the head, if any, is last.
    pub segs: VecDeque<SegInfo>,
    head: Option<Head>,
    next_no: u64,
    segment_bytes: u64,
    /// Closed heads written since the last sync (numbers; bounded by the
    /// segments that exist, as deleting one forgets it).
    unsynced: Vec<u64>,
    head_dirty: bool,
    dir_dirty: bool,
}

/// Parses `<16 hex>.seg`.
fn segment_no(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub(crate) fn create_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the outbox directory {}", dir.display()))
}

impl SegLog {
    /// Opens (creating if needed) the class directory `dir` and lists its
    /// segments. Empty segment files are removed. Other files are ignored.
    pub fn open(dir: &Path, segment_bytes: u64) -> anyhow::Result<SegLog> {
        create_dir(dir)?;
        let mut segs = Vec::new();
        let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let Some(no) = entry.file_name().to_str().and_then(segment_no) else {
                continue;
            };
            let path = entry.path();
            let meta = entry
                .metadata()
                .with_context(|| format!("reading the size of {}", path.display()))?;
            if !meta.is_file() {
                continue;
            }
            if meta.len() == 0 {
                fs::remove_file(&path)
                    .with_context(|| format!("removing the empty segment {}", path.display()))?;
                continue;
            }
            segs.push(SegInfo {
                no,
                bytes: meta.len(),
                max_id: 0,
                fresh: false,
            });
        }
        segs.sort_by_key(|s| s.no);
        let next_no = segs.last().map_or(1, |s| s.no.saturating_add(1));
        Ok(SegLog {
            dir: dir.to_owned(),
            segs: segs.into(),
            head: None,
            next_no,
            segment_bytes,
            unsynced: Vec::new(),
            head_dirty: false,
            dir_dirty: false,
        })
    }

    /// Path of segment `no`.
    pub fn path(&self, no: u64) -> PathBuf {
        self.dir.join(format!("{no:016x}.seg"))
    }

    /// The class directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of the segment being appended to.
    pub fn head_no(&self) -> Option<u64> {
        self.head.as_ref().map(|h| h.no)
    }

    /// Bytes of all segment files.
    pub fn physical_bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.bytes).sum()
    }

    /// Reads a whole segment (start-up scans).
    pub fn read_whole(&self, no: u64) -> io::Result<Vec<u8>> {
        fs::read(self.path(no))
    }

    /// Closes the head; the next append starts a new segment.
    pub fn rotate(&mut self) {
        if let Some(h) = self.head.take() {
            if self.head_dirty {
                self.unsynced.push(h.no);
            }
            self.head_dirty = false;
        }
    }

    fn new_head(&mut self) -> io::Result<()> {
        self.rotate();
        let no = self.next_no;
        let path = self.path(no);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        self.next_no = no.saturating_add(1);
        self.segs.push_back(SegInfo {
            no,
            bytes: 0,
            max_id: 0,
            fresh: true,
        });
        self.head = Some(Head {
            no,
            file,
            broken: false,
        });
        self.dir_dirty = true;
        Ok(())
    }

    /// Appends one or more whole frames with a single `write`, starting a
    /// new segment first if the head would grow past `segment_bytes` (a
    /// frame bigger than that gets a segment of its own). `max_id` is the
    /// largest record id among the frames.
    ///
    /// On error the head is cut back to its previous length (so it never
    /// holds half a frame) and abandoned.
    pub fn append(&mut self, frames: &[u8], max_id: u64) -> io::Result<DiskPos> {
        let need_new = match (&self.head, self.segs.back()) {
            (Some(h), Some(last)) => {
                h.broken
                    || (last.bytes > 0 && last.bytes + frames.len() as u64 > self.segment_bytes)
            }
            _ => true,
        };
        if need_new {
            self.new_head()?;
        }
        let (Some(head), Some(last)) = (self.head.as_mut(), self.segs.back_mut()) else {
            return Err(io::Error::other("outbox segment head missing"));
        };
        let off = last.bytes;
        if let Err(e) = head.file.write_all(frames) {
            head.broken = true;
            // Best effort: drop a partial frame so readers do not count it.
            let _ = head.file.set_len(off);
            return Err(e);
        }
        last.bytes += frames.len() as u64;
        last.max_id = last.max_id.max(max_id);
        self.head_dirty = true;
        Ok(DiskPos {
            seg: last.no,
            off,
            len: u32::try_from(frames.len()).unwrap_or(u32::MAX),
        })
    }

    /// Deletes segment `no` (missing is fine).
    pub fn delete(&mut self, no: u64) -> io::Result<()> {
        if self.head_no() == Some(no) {
            self.head = None;
            self.head_dirty = false;
        }
        self.segs.retain(|s| s.no != no);
        self.unsynced.retain(|&n| n != no);
        match fs::remove_file(self.path(no)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Segments written since the last call (the head as a duplicated
    /// handle, closed ones by path), and the directory if segments were
    /// created.
    pub fn take_sync(&mut self, out: &mut SyncFiles) -> io::Result<()> {
        let closed = std::mem::take(&mut self.unsynced);
        out.closed
            .extend(closed.into_iter().map(|no| self.path(no)));
        if self.head_dirty {
            if let Some(h) = &self.head {
                out.open.push((self.path(h.no), h.file.try_clone()?));
            }
            self.head_dirty = false;
        }
        if self.dir_dirty {
            out.dirs.push(self.dir.clone());
            self.dir_dirty = false;
        }
        Ok(())
    }
}

/// A record read back from a segment.
#[derive(Debug)]
pub(crate) struct ReadRecord {
    pub id: u64,
    pub rec: Record,
    pub pos: DiskPos,
}

/// Reads a class log forward from a [`Cursor`], a piece at a time (memory:
/// one chunk, or one largest frame).
#[derive(Debug, Default)]
pub(crate) struct Reader {
    /// Segment the buffer and handle belong to.
    no: u64,
    file: Option<File>,
    /// File offset of `buf[0]`.
    base: u64,
    buf: Vec<u8>,
}

/// Counts of what a reader skipped.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadSkips {
    /// Damaged regions in segments written by this process.
    pub corrupt: u64,
    /// Read errors (the rest of that segment is skipped).
    pub io_errors: u64,
}

impl Reader {
    /// Whether the reader holds segment `no` open.
    pub fn is_on(&self, no: u64) -> bool {
        self.file.is_some() && self.no == no
    }

    /// Forgets the buffer (the segment may be gone).
    pub fn reset(&mut self) {
        self.file = None;
        self.buf.clear();
        self.base = 0;
    }

    /// Makes `buf` start at `off` and hold at least `want` bytes, or up to
    /// `file_len`.
    fn fill(&mut self, off: u64, want: usize, file_len: u64) -> io::Result<()> {
        let end = self.base + self.buf.len() as u64;
        if off < self.base || off > end {
            self.buf.clear();
            self.base = off;
        } else if off > self.base {
            let skip = usize::try_from(off - self.base).unwrap_or(usize::MAX);
            self.buf.drain(..skip.min(self.buf.len()));
            self.base = off;
        }
        let Some(file) = &self.file else {
            return Err(io::Error::other("outbox reader has no file"));
        };
        let target = (want.max(READ_CHUNK) as u64).min(file_len.saturating_sub(off));
        while (self.buf.len() as u64) < target {
            let have = self.buf.len();
            let more = usize::try_from(target - have as u64).unwrap_or(READ_CHUNK);
            self.buf.resize(have + more, 0);
            let n = file.read_at(&mut self.buf[have..], off + have as u64)?;
            self.buf.truncate(have + n);
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// The next record after `cursor` for which `want(id)` holds, advancing
    /// the cursor past it. Resolved frames, unwanted records and damaged
    /// bytes are passed over. `None` when the cursor reaches the end of
    /// the newest segment.
    pub fn next(
        &mut self,
        log: &SegLog,
        cursor: &mut Cursor,
        skips: &mut ReadSkips,
        mut want: impl FnMut(u64) -> bool,
    ) -> Option<ReadRecord> {
        loop {
            let info = log.segs.iter().find(|s| s.no >= cursor.seg)?;
            if info.no != cursor.seg {
                *cursor = Cursor {
                    seg: info.no,
                    off: 0,
                };
            }
            let (no, file_len, fresh) = (info.no, info.bytes, info.fresh);
            if cursor.off >= file_len {
                if log.segs.iter().any(|s| s.no > no) {
                    *cursor = Cursor {
                        seg: no.saturating_add(1),
                        off: 0,
                    };
                    continue;
                }
                return None;
            }
            if self.no != no || self.file.is_none() {
                self.reset();
                match File::open(log.path(no)) {
                    Ok(f) => {
                        self.file = Some(f);
                        self.no = no;
                    }
                    Err(_) => {
                        skips.io_errors += 1;
                        cursor.off = file_len;
                        continue;
                    }
                }
            }
            let end = self.base + self.buf.len() as u64;
            let refill = cursor.off < self.base
                || cursor.off > end
                || (end - cursor.off < HEADER_LEN as u64 && end < file_len);
            if refill && self.fill(cursor.off, HEADER_LEN, file_len).is_err() {
                skips.io_errors += 1;
                cursor.off = file_len;
                self.reset();
                continue;
            }
            let start = usize::try_from(cursor.off - self.base).unwrap_or(usize::MAX);
            let avail = &self.buf[start.min(self.buf.len())..];
            let eof = self.base + self.buf.len() as u64 >= file_len;
            match frame::step(avail, eof) {
                Step::End => {
                    cursor.off = file_len;
                }
                Step::NeedMore { need } => {
                    let before = self.buf.len();
                    let need = need.min(MAX_FRAME_LEN);
                    if self.fill(cursor.off, need, file_len).is_err()
                        || self.buf.len() <= before.saturating_sub(start)
                    {
                        // Could not read more although the file claims it:
                        // the file shrank or failed. Skip the rest.
                        skips.io_errors += 1;
                        cursor.off = file_len;
                        self.reset();
                    }
                }
                Step::Skip { len, kind } => {
                    if fresh && kind != SkipKind::Torn {
                        skips.corrupt += 1;
                    }
                    cursor.off += len as u64;
                }
                Step::Frame { frame, len } => {
                    let pos = DiskPos {
                        seg: no,
                        off: cursor.off,
                        len: u32::try_from(len).unwrap_or(u32::MAX),
                    };
                    cursor.off += len as u64;
                    if let Frame::Record(r) = frame {
                        if want(r.id) {
                            if let Some(rec) = r.to_record() {
                                return Some(ReadRecord { id: r.id, rec, pos });
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::outbox::record::Class;

    fn rec(i: u64, len: usize) -> Record {
        Record::new(
            Class::Log,
            "sitewatch/v1/s/log",
            vec![i as u8; len],
            false,
            i,
        )
        .expect("valid")
    }

    #[test]
    fn append_rotate_read_back_in_pieces() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let mut log = SegLog::open(&dir, 4096).expect("open");
        let mut buf = Vec::new();
        let mut positions = Vec::new();
        for i in 1..=50u64 {
            buf.clear();
            frame::encode_record(&mut buf, i, &rec(i, 100 + (i as usize * 37) % 700));
            positions.push(log.append(&buf, i).expect("append"));
        }
        assert!(log.segs.len() > 5, "rotated: {}", log.segs.len());
        assert!(log.segs.iter().all(|s| s.bytes <= 4096));
        // A big frame gets its own segment.
        buf.clear();
        frame::encode_record(&mut buf, 51, &rec(51, 10_000));
        let big = log.append(&buf, 51).expect("append big");
        assert_eq!(big.off, 0);

        let mut reader = Reader::default();
        let mut cursor = Cursor {
            seg: log.segs[0].no,
            off: 0,
        };
        let mut skips = ReadSkips::default();
        let mut ids = Vec::new();
        while let Some(r) = reader.next(&log, &mut cursor, &mut skips, |id| id % 2 == 1) {
            assert_eq!(r.rec, rec(r.id, r.rec.payload().len()));
            ids.push(r.id);
        }
        assert_eq!(ids, (1..=51).filter(|i| i % 2 == 1).collect::<Vec<_>>());
        assert_eq!((skips.corrupt, skips.io_errors), (0, 0));
        // Appending after the end is picked up by the same reader.
        buf.clear();
        frame::encode_record(&mut buf, 53, &rec(53, 10));
        log.append(&buf, 53).expect("append");
        let r = reader
            .next(&log, &mut cursor, &mut skips, |_| true)
            .expect("new record");
        assert_eq!(r.id, 53);
        assert!(reader
            .next(&log, &mut cursor, &mut skips, |_| true)
            .is_none());
    }

    #[test]
    fn reopen_lists_segments_and_removes_empty_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("series");
        {
            let mut log = SegLog::open(&dir, 1 << 20).expect("open");
            let mut buf = Vec::new();
            frame::encode_record(&mut buf, 1, &rec(1, 10));
            log.append(&buf, 1).expect("append");
        }
        fs::write(dir.join("00000000000000ff.seg"), b"").expect("empty");
        fs::write(dir.join("notes.txt"), b"hello").expect("other");
        let log = SegLog::open(&dir, 1 << 20).expect("reopen");
        assert_eq!(log.segs.len(), 1);
        assert!(!log.segs[0].fresh);
        assert!(!dir.join("00000000000000ff.seg").exists());
        assert!(dir.join("notes.txt").exists());
        assert_eq!(segment_no("00000000000000ff.seg"), Some(255));
        assert_eq!(segment_no("ff.seg"), None);
    }
}
