//! Store-and-forward outbox: every message waits here until the broker
//! acknowledges it (PUBACK), bounded in memory and optionally on disk.
//!
//! # Role
//!
//! Sources [`Outbox::push`] encoded messages ([`Record`]s) without ever
//! blocking; the MQTT uplink takes them with [`Outbox::next_to_send`] /
//! [`Outbox::mark_sent`], reports PUBACKs with [`Outbox::ack`] (mapping
//! rumqttc packet ids with [`PkidTracker`](crate::uplink::pkid::PkidTracker)) and puts back what rumqttc
//! discarded: [`Outbox::requeue`] for each message
//! [`PkidTracker::connected`](crate::uplink::pkid::PkidTracker::connected) reports lost on a clean reconnect, or
//! [`Outbox::requeue_unacked`] for everything when the MQTT client itself
//! is replaced. [`Outbox::stats`] feeds the heartbeat.
//!
//! This module must not talk to MQTT, spawn tasks, sleep, log, or fsync on
//! the caller's thread unless asked ([`Outbox::sync_now`]): the uplink runs
//! a [`SyncJob`] on a blocking thread. It never blocks on a full queue: it
//! drops, and counts every drop by class.
//!
//! # Rules
//!
//! * **Classes** ([`Class`]): `Log < Series < State < Event` by drop
//!   priority. State is retained latest-value-per-topic: pushing a state
//!   record replaces an older one for the same topic that is not in flight
//!   (counted in [`Stats::replaced`], since its `seq` becomes a gap).
//! * **When full** ([`policy::victim`]): drop the oldest record, not in
//!   flight, of the lowest class; the record being pushed counts as the
//!   newest of its class, so a log batch never displaces a heartbeat.
//!   Memory mode measures `memory_max_bytes` (topic + payload + per-record
//!   overhead); disk mode measures `disk_max_bytes` (frame bytes of
//!   records not yet resolved).
//! * **Drain** ([`policy::DRAIN_ORDER`]): at most `max_in_flight` records
//!   sent and not acknowledged; ready State records first and never rate
//!   limited (a handful, the freshest view of the site), then Event,
//!   Series, Log, each in push order, through a byte token bucket
//!   (`drain_bytes_per_sec`, burst one second or one largest message).
//!   The limit is for the backlog an outage leaves, so a recovering site
//!   does not saturate its uplink: records pushed while connected
//!   ([`Outbox::push_live`]) credit their size to the bucket, so live
//!   traffic goes as fast as the broker acknowledges it and the backlog
//!   drains at `drain_bytes_per_sec` on top of it (live credit is capped
//!   at the queue's own bound). Time series and events are produced at a
//!   tiny fraction of the drain rate (about 2 per minute), so logs still
//!   drain; fresh state never waits behind a backlog.
//! * **Delivery**: a record leaves only on [`Outbox::ack`] (or a drop).
//!   [`Outbox::requeue`] / [`Outbox::requeue_unacked`] put records in
//!   flight back in front, in push order (within a class the queue is kept
//!   sorted by id), and remove state records that a newer one replaced
//!   meanwhile.
//!
//! # Disk mode
//!
//! With `dir` set, each class has a directory of append-only segment files
//! (format in [`frame`]): every record is written with one `write()`
//! before `push` returns, and acknowledgements and drops are appended as
//! "resolved" frames in batches of [`MARK_BATCH`] ids (and at every sync).
//! After a restart [`Outbox::open`] scans the segments, skips and counts
//! damaged or torn bytes, and resumes at the first unresolved record of
//! each class, in order; state is reduced to the latest record per topic.
//! A crash between an ack and its marker re-sends that message once: the
//! bridge deduplicates by (site, boot, seq).
//!
//! Flushing ([`Outbox::sync_due`], [`SyncJob`]): a written record schedules
//! a flush (fdatasync of each dirty segment file, fsync of a class
//! directory that got a new segment) at most `fsync_interval_ms` later;
//! markers never schedule one by themselves (losing a marker only re-sends
//! a message) and ride along with the next. So an idle outbox never
//! flushes, and a busy one flushes once per interval. The reasoning for
//! the 5 s default is on [`OutboxConfig::fsync_interval_ms`].
//!
//! Memory stays bounded in disk mode: the next records to send are cached
//! up to `memory_max_bytes`; the rest is read back from disk as the queue
//! drains ("spilled" records). State records always stay in memory (at
//! most [`MAX_STATE_RECORDS`]).
//!
//! Space is reclaimed a segment at a time: a Log/Series/Event segment is
//! deleted once the reader has passed it and none of its records is still
//! waiting in memory; a State segment once none of its records is live
//! and a sync has made the newer records durable. State is compacted (live
//! records copied to a new segment) when more than [`STATE_MAX_SEGMENTS`]
//! segments hold live records.

pub mod config;
pub mod frame;
pub mod policy;
pub mod rangeset;
pub mod record;
mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use config::OutboxConfig;
pub use record::{Class, Id, PerClass, Record, RecordError};

use policy::{TokenBucket, Victim};
use rangeset::RangeSet;
use store::{Cursor, DiskPos, ReadSkips, Reader, SegLog, SyncFiles};

/// Resolved ids buffered before a marker frame is written.
pub const MARK_BATCH: u32 = 32;

/// Most state records kept (distinct retained topics in flight or queued).
/// A site has one status topic plus one per camera and disk.
pub const MAX_STATE_RECORDS: usize = 1024;

/// Segments holding live state records beyond which they are compacted
/// into a new one.
pub const STATE_MAX_SEGMENTS: usize = 3;

/// What one record costs against `memory_max_bytes` besides its topic and
/// payload: the queue slot and two heap allocations.
pub const RECORD_OVERHEAD: u64 = std::mem::size_of::<Slot>() as u64 + 32;

/// Name of the lock file in the outbox directory.
const LOCK_FILE: &str = "lock";

/// One queued record.
#[derive(Debug)]
struct Slot {
    n: u64,
    rec: Record,
    in_flight: bool,
    /// Cost against the memory bound.
    cost: u64,
    /// Where its frame is, in disk mode (`None` if writing it failed).
    disk: Option<DiskPos>,
}

fn mem_cost(rec: &Record) -> u64 {
    RECORD_OVERHEAD + rec.topic().len() as u64 + rec.payload().len() as u64
}

/// Disk state of one class.
#[derive(Debug)]
struct ClassDisk {
    log: SegLog,
    reader: Reader,
    /// Next frame to read back (Log/Series/Event).
    cursor: Cursor,
    /// Records with an id up to this are in memory or resolved.
    loaded_upto: u64,
    /// Records on disk beyond the cursor (not in memory).
    spilled: u64,
    spilled_bytes: u64,
    /// Ids resolved before the last start that may still be ahead of the
    /// cursor.
    replay_resolved: RangeSet,
    /// Resolved ids whose marker is not written yet.
    pending_marks: RangeSet,
    pending_ids: u32,
    /// Frame bytes of records not resolved (the disk bound).
    live_bytes: u64,
    /// State only: live records per segment.
    live_per_seg: BTreeMap<u64, u32>,
}

impl ClassDisk {
    fn new(log: SegLog) -> ClassDisk {
        ClassDisk {
            log,
            reader: Reader::default(),
            cursor: Cursor::default(),
            loaded_upto: 0,
            spilled: 0,
            spilled_bytes: 0,
            replay_resolved: RangeSet::new(),
            pending_marks: RangeSet::new(),
            pending_ids: 0,
            live_bytes: 0,
            live_per_seg: BTreeMap::new(),
        }
    }
}

/// The queue of one class.
#[derive(Debug)]
struct ClassQueue {
    class: Class,
    /// Sorted by `n`; in flight and ready mixed.
    mem: VecDeque<Slot>,
    ready: usize,
    next_n: u64,
    /// State only: topic → newest record's `n`.
    latest: HashMap<String, u64>,
    disk: Option<ClassDisk>,
}

impl ClassQueue {
    fn new(class: Class) -> ClassQueue {
        ClassQueue {
            class,
            mem: VecDeque::new(),
            ready: 0,
            next_n: 1,
            latest: HashMap::new(),
            disk: None,
        }
    }

    fn find(&self, n: u64) -> Option<usize> {
        self.mem.binary_search_by_key(&n, |s| s.n).ok()
    }

    fn first_ready(&self) -> Option<usize> {
        if self.ready == 0 {
            return None;
        }
        self.mem.iter().position(|s| !s.in_flight)
    }

    /// Oldest ready slot whose removal frees the bound in force.
    fn first_droppable(&self, disk_mode: bool) -> Option<usize> {
        if self.ready == 0 {
            return None;
        }
        self.mem
            .iter()
            .position(|s| !s.in_flight && (!disk_mode || s.disk.is_some()))
    }

    fn spilled(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.spilled)
    }

    fn fifo(&self) -> bool {
        self.class != Class::State
    }
}

/// Result of [`Outbox::push`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// The new record's id, or `None` if it was dropped itself (the
    /// outbox is full of records of its class or higher).
    pub id: Option<Id>,
    /// Records dropped by this push, by class (including the new record
    /// when `id` is `None`).
    pub dropped: PerClass<u32>,
    /// An older unsent state record for the same topic was replaced.
    pub replaced: bool,
    /// Writing to disk failed (counted in [`Stats::disk_errors`]); the
    /// record is kept in memory only, or dropped if that is impossible.
    pub disk_error: bool,
}

/// Result of [`Outbox::next_to_send`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// Send this record, then call [`Outbox::mark_sent`].
    Send(Id, &'a Record),
    /// `max_in_flight` records await their PUBACK.
    WindowFull,
    /// The drain rate limit holds the next record until then.
    RateLimited(Instant),
    /// Nothing is ready.
    Empty,
}

/// Counters and gauges for the heartbeat. Counters are monotonic for the
/// life of the [`Outbox`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records waiting (queued, in flight, or on disk), by class.
    pub depth: PerClass<u64>,
    /// Their size by class: topic + payload in memory, frame bytes on disk.
    pub bytes: PerClass<u64>,
    /// Records sent and not acknowledged.
    pub in_flight: u64,
    /// Cost of the records in memory (against `memory_max_bytes`).
    pub memory_bytes: u64,
    /// Size of all segment files (0 in memory mode).
    pub disk_bytes: u64,
    /// Records dropped because the outbox was full, by class.
    pub dropped: PerClass<u64>,
    /// State records replaced by a newer one for the same topic before
    /// they were delivered (their `seq` is a gap, like a drop).
    pub replaced: u64,
    /// Records handed to MQTT ([`Outbox::mark_sent`]).
    pub sent: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Records put back after a lost connection.
    pub requeued: u64,
    /// Records found on disk at start.
    pub replayed: u64,
    /// Damaged or torn regions skipped in segment files.
    pub corrupt_skipped: u64,
    /// fsync/fdatasync calls completed (one per dirty segment file or
    /// directory in a flush).
    pub fsyncs: u64,
    /// Flushes completed ([`SyncJob`]s); each is a batch of `fsyncs`.
    pub syncs: u64,
    /// Disk writes, reads, flushes or deletions that failed.
    pub disk_errors: u64,
}

/// What [`Outbox::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// The outbox directory (`None` in memory mode).
    pub dir: Option<PathBuf>,
    /// Records not yet delivered, by class (state: latest per topic).
    pub records: PerClass<u64>,
    /// Their frame bytes, by class.
    pub bytes: PerClass<u64>,
    /// Segment files found.
    pub segments: u64,
    /// Segment files deleted because everything in them was resolved.
    pub segments_deleted: u64,
    /// Damaged or torn regions skipped.
    pub corrupt_regions: u64,
    /// Bytes in those regions.
    pub corrupt_bytes: u64,
    /// Segments that could not be read (skipped).
    pub read_errors: u64,
    /// Undelivered state records superseded by a newer one for the same
    /// topic (not replayed; counted in [`Stats::replaced`]).
    pub replaced: u64,
}

/// Files to flush, taken by [`Outbox::begin_sync`]; run it with
/// [`SyncJob::run`] where blocking is fine (`spawn_blocking`), then hand
/// the result to [`Outbox::finish_sync`].
#[derive(Debug)]
pub struct SyncJob {
    files: SyncFiles,
    /// State segments to delete once the flush succeeded.
    deletes: Vec<u64>,
}

/// Result of [`SyncJob::run`].
#[derive(Debug)]
pub struct SyncDone {
    fsyncs: u64,
    errors: Vec<String>,
    deletes: Vec<u64>,
}

impl SyncJob {
    /// Flushes every file (fdatasync) and directory (fsync) collected.
    /// Blocking.
    pub fn run(self) -> SyncDone {
        let mut done = SyncDone {
            fsyncs: 0,
            errors: Vec::new(),
            deletes: self.deletes,
        };
        for (path, file) in &self.files.open {
            match file.sync_data() {
                Ok(()) => done.fsyncs += 1,
                Err(e) => done
                    .errors
                    .push(format!("flushing {}: {e}", path.display())),
            }
        }
        for path in &self.files.closed {
            match File::open(path).and_then(|f| f.sync_data()) {
                Ok(()) => done.fsyncs += 1,
                // Reclaimed meanwhile: nothing left to flush.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => done
                    .errors
                    .push(format!("flushing {}: {e}", path.display())),
            }
        }
        for dir in &self.files.dirs {
            match File::open(dir).and_then(|d| d.sync_all()) {
                Ok(()) => done.fsyncs += 1,
                Err(e) => done
                    .errors
                    .push(format!("flushing directory {}: {e}", dir.display())),
            }
        }
        done
    }
}

/// Disk-mode state shared by all classes.
#[derive(Debug)]
struct DiskShared {
    dir: PathBuf,
    /// Held (flock) for the outbox's lifetime: one agent per directory.
    _lock: File,
    /// Oldest write not yet flushed.
    dirty_since: Option<Instant>,
}

/// The outbox. Not thread-safe by itself: share it as `Mutex<Outbox>`;
/// every method is short and never waits on I/O beyond one `write()`
/// (except [`Outbox::open`], [`Outbox::sync_now`] and [`Outbox::close`]).
#[derive(Debug)]
pub struct Outbox {
    memory_max: u64,
    disk_max: u64,
    window: u32,
    fsync_interval: Duration,
    q: [ClassQueue; 4],
    mem_total: u64,
    in_flight: u32,
    bucket: TokenBucket,
    stats: Stats,
    disk: Option<DiskShared>,
    /// Frame encoding buffer, reused.
    scratch: Vec<u8>,
}

impl Outbox {
    /// Opens the outbox: memory only without `cfg.dir`, else creates or
    /// replays the directory (taking its lock file). Errors name the path
    /// at fault; invalid settings are refused with
    /// [`OutboxConfig::problems`].
    pub fn open(cfg: &OutboxConfig) -> anyhow::Result<(Outbox, ReplayReport)> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            anyhow::bail!("invalid [outbox] settings: {}", problems.join("; "));
        }
        let mut ob = Outbox {
            memory_max: cfg.memory_max_bytes,
            disk_max: cfg.disk_max_bytes,
            window: u32::from(cfg.max_in_flight),
            fsync_interval: cfg.fsync_interval(),
            q: Class::BY_PRIORITY.map(ClassQueue::new),
            mem_total: 0,
            in_flight: 0,
            bucket: TokenBucket::new(
                cfg.drain_bytes_per_sec,
                frame::MAX_FRAME_LEN as u64,
                if cfg.dir.is_some() {
                    cfg.disk_max_bytes
                } else {
                    cfg.memory_max_bytes
                },
            ),
            stats: Stats::default(),
            disk: None,
            scratch: Vec::new(),
        };
        let mut report = ReplayReport::default();
        if let Some(dir) = &cfg.dir {
            ob.open_disk(dir, cfg.segment_bytes, &mut report)?;
        }
        ob.stats.replayed = report.records.total();
        ob.stats.corrupt_skipped = report.corrupt_regions;
        ob.stats.disk_errors = report.read_errors;
        ob.stats.replaced = report.replaced;
        Ok((ob, report))
    }

    fn open_disk(
        &mut self,
        dir: &Path,
        segment_bytes: u64,
        report: &mut ReplayReport,
    ) -> anyhow::Result<()> {
        store::create_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        // A few tries over ~2 s: a just-forked child (any Command::spawn
        // in this process, between fork and exec) or an agent that is
        // still exiting holds the lock for a moment. A second agent on
        // the same directory holds it for good and is still refused.
        let mut tries = 0;
        let locked = loop {
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Err(rustix::io::Errno::WOULDBLOCK) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other,
            }
        };
        locked.with_context(|| {
            format!(
                "locking {}: is another sitewatch-agent using this outbox directory?",
                lock_path.display()
            )
        })?;
        report.dir = Some(dir.to_owned());
        for c in Class::BY_PRIORITY {
            let cdir = dir.join(c.as_str());
            let log = SegLog::open(&cdir, segment_bytes)?;
            report.segments += log.segs.len() as u64;
            self.q[c.index()].disk = Some(ClassDisk::new(log));
            if c == Class::State {
                self.replay_state(report)
                    .with_context(|| format!("replaying {}", cdir.display()))?;
            } else {
                self.replay_fifo(c, report);
            }
        }
        self.disk = Some(DiskShared {
            dir: dir.to_owned(),
            _lock: lock,
            dirty_since: None,
        });
        // Make the state compaction durable and drop what it replaced.
        self.sync_now()?;
        Ok(())
    }

    /// Scans a Log/Series/Event directory newest segment first, so that
    /// every "resolved" marker (always written after its record) is known
    /// before the segment holding the record is counted. Memory: one
    /// segment and its record list at a time.
    fn replay_fifo(&mut self, c: Class, report: &mut ReplayReport) {
        let q = &mut self.q[c.index()];
        let Some(d) = q.disk.as_mut() else { return };
        let mut resolved = RangeSet::new();
        let mut max_id = 0u64;
        let mut live_per_seg: Vec<(u64, u64)> = Vec::new();
        let (mut live, mut live_bytes) = (0u64, 0u64);
        for i in (0..d.log.segs.len()).rev() {
            let no = d.log.segs[i].no;
            let data = match d.log.read_whole(no) {
                Ok(data) => data,
                Err(_) => {
                    report.read_errors += 1;
                    live_per_seg.push((no, 1));
                    continue;
                }
            };
            let mut recs: Vec<(u64, u64)> = Vec::new();
            let mut seg_max = 0u64;
            let mut pos = 0;
            let mut last_skip_end = None;
            loop {
                match frame::step(&data[pos..], true) {
                    frame::Step::End | frame::Step::NeedMore { .. } => break,
                    frame::Step::Skip { len, .. } => {
                        // One damaged region may take several steps.
                        if last_skip_end != Some(pos) {
                            report.corrupt_regions += 1;
                        }
                        report.corrupt_bytes += len as u64;
                        pos += len;
                        last_skip_end = Some(pos);
                    }
                    frame::Step::Frame { frame, len } => {
                        match frame {
                            frame::Frame::Record(r) if r.class == c => {
                                recs.push((r.id, len as u64));
                                seg_max = seg_max.max(r.id);
                            }
                            frame::Frame::Record(_) => {
                                // A record of another class: misplaced, skip.
                                report.corrupt_regions += 1;
                                report.corrupt_bytes += len as u64;
                            }
                            frame::Frame::Resolved(r) => {
                                for (s, e) in r.ranges() {
                                    resolved.insert_range(s, e);
                                    max_id = max_id.max(e - 1);
                                }
                            }
                        }
                        pos += len;
                    }
                }
            }
            let mut seg_live = 0;
            for (id, len) in recs {
                if !resolved.contains(id) {
                    seg_live += 1;
                    live_bytes += len;
                }
            }
            live += seg_live;
            d.log.segs[i].max_id = seg_max;
            max_id = max_id.max(seg_max);
            live_per_seg.push((no, seg_live));
        }
        // Delete the fully resolved prefix now.
        for &(no, seg_live) in live_per_seg.iter().rev() {
            if seg_live > 0 {
                break;
            }
            if d.log.delete(no).is_ok() {
                report.segments_deleted += 1;
            } else {
                report.read_errors += 1;
                break;
            }
        }
        q.next_n = max_id.saturating_add(1).max(1);
        d.cursor = Cursor {
            seg: d.log.segs.front().map_or(0, |s| s.no),
            off: 0,
        };
        d.spilled = live;
        d.spilled_bytes = live_bytes;
        d.live_bytes = live_bytes;
        d.replay_resolved = resolved;
        report.records[c] += live;
        report.bytes[c] += live_bytes;
    }

    /// Loads the latest state record per topic, writes the live ones into
    /// a fresh segment and schedules the old segments for deletion after
    /// the sync that [`Outbox::open_disk`] does next.
    fn replay_state(&mut self, report: &mut ReplayReport) -> anyhow::Result<()> {
        let c = Class::State;
        let q = &mut self.q[c.index()];
        let Some(d) = q.disk.as_mut() else {
            return Ok(());
        };
        // topic → newest record (a compaction copy has the same id and
        // replaces the original harmlessly).
        let mut latest: HashMap<String, (u64, Record)> = HashMap::new();
        // Every state id seen (bounded: state segments are compacted).
        let mut ids: Vec<u64> = Vec::new();
        let mut resolved = RangeSet::new();
        let mut max_id = 0u64;
        let old: Vec<u64> = d.log.segs.iter().map(|s| s.no).collect();
        for &no in &old {
            let Ok(data) = d.log.read_whole(no) else {
                report.read_errors += 1;
                continue;
            };
            let mut pos = 0;
            let mut last_skip_end = None;
            loop {
                match frame::step(&data[pos..], true) {
                    frame::Step::End | frame::Step::NeedMore { .. } => break,
                    frame::Step::Skip { len, .. } => {
                        // One damaged region may take several steps.
                        if last_skip_end != Some(pos) {
                            report.corrupt_regions += 1;
                        }
                        report.corrupt_bytes += len as u64;
                        pos += len;
                        last_skip_end = Some(pos);
                    }
                    frame::Step::Frame { frame, len } => {
                        match frame {
                            frame::Frame::Record(r) if r.class == c => {
                                max_id = max_id.max(r.id);
                                ids.push(r.id);
                                let newer = latest.get(r.topic).is_none_or(|(n, _)| r.id >= *n);
                                if let (true, Some(rec)) = (newer, r.to_record()) {
                                    latest.insert(r.topic.to_owned(), (r.id, rec));
                                }
                            }
                            frame::Frame::Record(_) => {
                                report.corrupt_regions += 1;
                                report.corrupt_bytes += len as u64;
                            }
                            frame::Frame::Resolved(r) => {
                                for (s, e) in r.ranges() {
                                    resolved.insert_range(s, e);
                                    max_id = max_id.max(e - 1);
                                }
                            }
                        }
                        pos += len;
                    }
                }
            }
        }
        q.next_n = max_id.saturating_add(1).max(1);
        let newest: std::collections::HashSet<u64> = latest.values().map(|(n, _)| *n).collect();
        ids.sort_unstable();
        ids.dedup();
        report.replaced += ids
            .iter()
            .filter(|&&n| !resolved.contains(n) && !newest.contains(&n))
            .count() as u64;
        let mut live: Vec<(u64, Record)> = latest
            .into_values()
            .filter(|(n, _)| !resolved.contains(*n))
            .collect();
        // Unstable: equal ids can only come from a damaged file, and their
        // order was the HashMap's anyway (about 1 KB less than a stable sort).
        live.sort_unstable_by_key(|(n, _)| *n);
        live.truncate(MAX_STATE_RECORDS);
        // Rewrite the live records into a new segment; the old ones hold no
        // live record any more, so the sync that open_disk does next
        // deletes them once the copies are durable.
        d.log.rotate();
        for (n, rec) in live {
            self.scratch.clear();
            frame::encode_record(&mut self.scratch, n, &rec);
            let pos = d
                .log
                .append(&self.scratch, n)
                .with_context(|| format!("writing to {}", d.log.dir().display()))?;
            *d.live_per_seg.entry(pos.seg).or_insert(0) += 1;
            d.live_bytes += u64::from(pos.len);
            report.records[c] += 1;
            report.bytes[c] += u64::from(pos.len);
            let cost = mem_cost(&rec);
            q.latest.insert(rec.topic().to_owned(), n);
            q.mem.push_back(Slot {
                n,
                rec,
                in_flight: false,
                cost,
                disk: Some(pos),
            });
            q.ready += 1;
            self.mem_total += cost;
        }
        report.segments_deleted += old.len() as u64;
        Ok(())
    }

    // ------------------------------------------------------------ push

    /// Queues a record produced while the uplink is connected: like
    /// [`Outbox::push`], and its size is credited to the drain limit, so
    /// live traffic is paced by the broker's acknowledgements
    /// (`max_in_flight`), not by `drain_bytes_per_sec` (see "Drain" in
    /// the module docs).
    pub fn push_live(&mut self, rec: Record) -> PushOutcome {
        let cost = policy::rate_limited(rec.class()).then(|| rec.wire_len());
        let out = self.push(rec);
        if let (Some(cost), Some(_)) = (cost, out.id) {
            self.bucket.credit(cost);
        }
        out
    }

    /// Queues `rec` as backlog (produced while the uplink is down); never
    /// blocks. See the module docs for what is dropped when full.
    pub fn push(&mut self, rec: Record) -> PushOutcome {
        let class = rec.class();
        let ci = class.index();
        let disk_mode = self.disk.is_some();
        let mut out = PushOutcome::default();

        if class == Class::State {
            if let Some(&old) = self.q[ci].latest.get(rec.topic()) {
                if let Some(idx) = self.q[ci].find(old) {
                    if !self.q[ci].mem[idx].in_flight {
                        self.remove_slot(class, idx);
                        self.stats.replaced += 1;
                        out.replaced = true;
                    }
                }
            }
            if self.q[ci].mem.len() >= MAX_STATE_RECORDS {
                match self.q[ci].first_ready() {
                    Some(idx) => {
                        self.remove_slot(class, idx);
                        self.count_drop(class, &mut out);
                    }
                    None => {
                        self.count_drop(class, &mut out);
                        return out;
                    }
                }
            }
        }

        let cost = mem_cost(&rec);
        let need = if disk_mode {
            frame::record_frame_len(&rec) as u64
        } else {
            cost
        };
        loop {
            let (used, max) = if disk_mode {
                (self.disk_live_total(), self.disk_max)
            } else {
                (self.mem_total, self.memory_max)
            };
            if used + need <= max {
                break;
            }
            if need > max {
                self.count_drop(class, &mut out);
                return out;
            }
            let droppable = PerClass(
                self.q
                    .each_ref()
                    .map(|q| q.first_droppable(disk_mode).is_some() || q.spilled() > 0),
            );
            match policy::victim(class, droppable) {
                Victim::Incoming => {
                    self.count_drop(class, &mut out);
                    return out;
                }
                Victim::Existing(c) => {
                    if self.drop_oldest(c) {
                        self.count_drop(c, &mut out);
                    }
                }
            }
        }

        let n = self.q[ci].next_n;
        self.q[ci].next_n += 1;
        let mut slot = Slot {
            n,
            rec,
            in_flight: false,
            cost,
            disk: None,
        };
        let mut keep_in_memory = true;
        if self.q[ci].disk.is_some() {
            self.scratch.clear();
            frame::encode_record(&mut self.scratch, n, &slot.rec);
            let fits = self.mem_total + cost <= self.memory_max;
            let mut write_failed = false;
            if let Some(d) = self.q[ci].disk.as_mut() {
                match d.log.append(&self.scratch, n) {
                    Ok(pos) => {
                        d.live_bytes += u64::from(pos.len);
                        slot.disk = Some(pos);
                        if class == Class::State {
                            *d.live_per_seg.entry(pos.seg).or_insert(0) += 1;
                        } else if d.spilled == 0 && fits {
                            d.loaded_upto = n;
                            d.cursor = Cursor {
                                seg: pos.seg,
                                off: pos.off + u64::from(pos.len),
                            };
                        } else {
                            d.spilled += 1;
                            d.spilled_bytes += u64::from(pos.len);
                            keep_in_memory = false;
                        }
                    }
                    Err(_) => {
                        write_failed = true;
                        // Memory only, if push order allows and there is
                        // room; the record is then lost if the agent stops.
                        if class != Class::State && (d.spilled > 0 || !fits) {
                            keep_in_memory = false;
                        } else {
                            d.loaded_upto = d.loaded_upto.max(n);
                        }
                    }
                }
            }
            if write_failed {
                self.stats.disk_errors += 1;
                out.disk_error = true;
                if !keep_in_memory {
                    self.count_drop(class, &mut out);
                    return out;
                }
            } else if let Some(s) = &mut self.disk {
                s.dirty_since.get_or_insert_with(Instant::now);
            }
        }
        let q = &mut self.q[ci];
        if class == Class::State {
            q.latest.insert(slot.rec.topic().to_owned(), n);
        }
        if keep_in_memory {
            self.mem_total += cost;
            q.ready += 1;
            q.mem.push_back(slot);
        }
        out.id = Some(Id::new(class, n));
        if class == Class::State && self.state_segments() > STATE_MAX_SEGMENTS {
            self.compact_state();
        }
        out
    }

    fn count_drop(&mut self, c: Class, out: &mut PushOutcome) {
        self.stats.dropped[c] += 1;
        out.dropped[c] = out.dropped[c].saturating_add(1);
    }

    fn disk_live_total(&self) -> u64 {
        self.q
            .iter()
            .filter_map(|q| q.disk.as_ref())
            .map(|d| d.live_bytes)
            .sum()
    }

    /// State segments holding live records. Segments with none are not
    /// counted: they only wait for the next flush to be deleted, and
    /// compacting because of them would make a new segment per push.
    fn state_segments(&self) -> usize {
        self.q[Class::State.index()]
            .disk
            .as_ref()
            .map_or(0, |d| d.live_per_seg.len())
    }

    /// Removes slot `idx` of class `c` without delivering it (drop or
    /// replacement) or after its PUBACK: memory, in-flight and latest
    /// bookkeeping, and its resolved marker.
    fn remove_slot(&mut self, c: Class, idx: usize) -> Option<Slot> {
        let q = &mut self.q[c.index()];
        let slot = q.mem.remove(idx)?;
        self.mem_total -= slot.cost;
        if slot.in_flight {
            self.in_flight -= 1;
        } else {
            q.ready -= 1;
        }
        if c == Class::State && q.latest.get(slot.rec.topic()) == Some(&slot.n) {
            q.latest.remove(slot.rec.topic());
        }
        self.resolve(c, slot.n, slot.disk);
        Some(slot)
    }

    /// Drops the oldest droppable record of `c`; false if there was none
    /// after all (the spilled count was stale and is now corrected).
    fn drop_oldest(&mut self, c: Class) -> bool {
        let disk_mode = self.disk.is_some();
        if let Some(idx) = self.q[c.index()].first_droppable(disk_mode) {
            return self.remove_slot(c, idx).is_some();
        }
        let Some(r) = self.read_spilled(c) else {
            return false;
        };
        if let Some(d) = self.q[c.index()].disk.as_mut() {
            d.spilled = d.spilled.saturating_sub(1);
            d.spilled_bytes = d.spilled_bytes.saturating_sub(u64::from(r.pos.len));
            d.loaded_upto = r.id;
        }
        self.resolve(c, r.id, Some(r.pos));
        true
    }

    /// Reads the next spilled record of FIFO class `c`; on reaching the end
    /// corrects the spilled counts (damage found since start).
    fn read_spilled(&mut self, c: Class) -> Option<store::ReadRecord> {
        let q = &mut self.q[c.index()];
        let d = q.disk.as_mut()?;
        if d.spilled == 0 {
            return None;
        }
        let mut skips = ReadSkips::default();
        let loaded_upto = d.loaded_upto;
        let replay = &d.replay_resolved;
        let r = d.reader.next(&d.log, &mut d.cursor, &mut skips, |id| {
            id > loaded_upto && !replay.contains(id)
        });
        self.stats.corrupt_skipped += skips.corrupt;
        self.stats.disk_errors += skips.io_errors;
        match &r {
            Some(r) => d.replay_resolved.remove_below(r.id),
            None => {
                // Everything readable is read: what was counted as spilled
                // but not found is lost to damage.
                d.spilled = 0;
                d.spilled_bytes = 0;
                d.live_bytes = q
                    .mem
                    .iter()
                    .filter_map(|s| s.disk)
                    .map(|p| u64::from(p.len))
                    .sum();
                d.replay_resolved.clear();
            }
        }
        r
    }

    /// Marks id `n` of `c` resolved on disk (if its frame is there) and
    /// reclaims space.
    fn resolve(&mut self, c: Class, n: u64, pos: Option<DiskPos>) {
        let Some(d) = self.q[c.index()].disk.as_mut() else {
            return;
        };
        let Some(pos) = pos else { return };
        d.pending_marks.insert(n);
        d.pending_ids += 1;
        d.live_bytes = d.live_bytes.saturating_sub(u64::from(pos.len));
        if c == Class::State {
            if let Some(live) = d.live_per_seg.get_mut(&pos.seg) {
                *live -= 1;
                if *live == 0 {
                    d.live_per_seg.remove(&pos.seg);
                }
            }
        }
        // No flush is scheduled for a marker: losing one to a power cut
        // only re-sends that message. Markers ride along with the next
        // flush (begin_sync writes the pending ones first).
        if d.pending_ids >= MARK_BATCH {
            self.write_marks(c);
        }
        if c != Class::State {
            self.reclaim_fifo(c);
        }
    }

    /// Appends the pending resolved marker of `c`.
    fn write_marks(&mut self, c: Class) {
        let Some(d) = self.q[c.index()].disk.as_mut() else {
            return;
        };
        if d.pending_marks.is_empty() {
            return;
        }
        self.scratch.clear();
        frame::encode_resolved(&mut self.scratch, &d.pending_marks);
        d.pending_marks.clear();
        d.pending_ids = 0;
        if d.log.append(&self.scratch, 0).is_err() {
            // Lost markers only mean those records are sent again after a
            // restart.
            self.stats.disk_errors += 1;
        }
    }

    /// Deletes Log/Series/Event segments the reader has passed and that
    /// hold no record still in memory.
    fn reclaim_fifo(&mut self, c: Class) {
        let q = &mut self.q[c.index()];
        let first_in_mem = q.mem.iter().find_map(|s| s.disk).map(|p| p.seg);
        let Some(d) = q.disk.as_mut() else { return };
        while let Some(front) = d.log.segs.front() {
            if d.log.head_no() == Some(front.no) {
                break;
            }
            let passed = d.cursor.seg > front.no
                || (d.cursor.seg == front.no && d.cursor.off >= front.bytes);
            if !passed || first_in_mem.is_some_and(|seg| seg <= front.no) {
                break;
            }
            let no = front.no;
            if d.reader.is_on(no) {
                d.reader.reset();
            }
            if d.log.delete(no).is_err() {
                self.stats.disk_errors += 1;
                break;
            }
        }
    }

    /// Copies live state records into a new segment; the old segments are
    /// deleted after the next successful sync (see [`Outbox::begin_sync`]).
    fn compact_state(&mut self) {
        let q = &mut self.q[Class::State.index()];
        let Some(d) = q.disk.as_mut() else { return };
        d.log.rotate();
        for slot in q.mem.iter_mut() {
            self.scratch.clear();
            frame::encode_record(&mut self.scratch, slot.n, &slot.rec);
            match d.log.append(&self.scratch, slot.n) {
                Ok(pos) => {
                    if let Some(old) = slot.disk.replace(pos) {
                        d.live_bytes = d.live_bytes.saturating_sub(u64::from(old.len));
                        if let Some(live) = d.live_per_seg.get_mut(&old.seg) {
                            *live -= 1;
                            if *live == 0 {
                                d.live_per_seg.remove(&old.seg);
                            }
                        }
                    }
                    d.live_bytes += u64::from(pos.len);
                    *d.live_per_seg.entry(pos.seg).or_insert(0) += 1;
                }
                Err(_) => {
                    self.stats.disk_errors += 1;
                    break;
                }
            }
        }
        if let Some(s) = &mut self.disk {
            s.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    // ------------------------------------------------------------ drain

    /// Loads spilled records back into memory while there is room (always
    /// at least one ready record per class).
    fn refill(&mut self) {
        for c in policy::DRAIN_ORDER {
            if !self.q[c.index()].fifo() {
                continue;
            }
            while self.q[c.index()].spilled() > 0
                && (self.mem_total < self.memory_max || self.q[c.index()].ready == 0)
            {
                let Some(r) = self.read_spilled(c) else { break };
                let q = &mut self.q[c.index()];
                if let Some(d) = q.disk.as_mut() {
                    d.spilled = d.spilled.saturating_sub(1);
                    d.spilled_bytes = d.spilled_bytes.saturating_sub(u64::from(r.pos.len));
                    d.loaded_upto = r.id;
                }
                let cost = mem_cost(&r.rec);
                q.mem.push_back(Slot {
                    n: r.id,
                    rec: r.rec,
                    in_flight: false,
                    cost,
                    disk: Some(r.pos),
                });
                q.ready += 1;
                self.mem_total += cost;
            }
        }
    }

    /// The next record to send, if the window and the rate limit allow.
    /// Does not change what is in flight: call [`Outbox::mark_sent`] once
    /// the record is handed to MQTT (calling this again before that returns
    /// the same record).
    pub fn next_to_send(&mut self, now: Instant) -> Next<'_> {
        if self.in_flight >= self.window {
            return Next::WindowFull;
        }
        self.refill();
        let ready = PerClass(self.q.each_ref().map(|q| q.ready > 0));
        let Some(c) = policy::next_class(ready) else {
            return Next::Empty;
        };
        let q = &self.q[c.index()];
        let Some(idx) = q.first_ready() else {
            return Next::Empty;
        };
        if policy::rate_limited(c) {
            let cost = q.mem[idx].rec.wire_len();
            if let Some(at) = self.bucket.ready_at(now, cost) {
                return Next::RateLimited(at);
            }
        }
        let slot = &self.q[c.index()].mem[idx];
        Next::Send(Id::new(c, slot.n), &slot.rec)
    }

    /// Records that `id` was handed to MQTT. False if unknown or already
    /// in flight.
    pub fn mark_sent(&mut self, id: Id, now: Instant) -> bool {
        let c = id.class();
        let q = &mut self.q[c.index()];
        let Some(idx) = q.find(id.n()) else {
            return false;
        };
        let slot = &mut q.mem[idx];
        if slot.in_flight {
            return false;
        }
        slot.in_flight = true;
        q.ready -= 1;
        self.in_flight += 1;
        self.stats.sent += 1;
        if policy::rate_limited(c) {
            let cost = slot.rec.wire_len();
            self.bucket.spend(now, cost);
        }
        true
    }

    /// The broker acknowledged `id`: it leaves the outbox. False if
    /// unknown (already dropped or acknowledged).
    pub fn ack(&mut self, id: Id) -> bool {
        let c = id.class();
        let Some(idx) = self.q[c.index()].find(id.n()) else {
            return false;
        };
        self.remove_slot(c, idx);
        self.stats.acked += 1;
        true
    }

    /// Puts one in-flight record back in front of its class (rumqttc
    /// discarded it: see [`PkidTracker::connected`](crate::uplink::pkid::PkidTracker::connected) and
    /// [`PkidTracker::on_await_ack`](crate::uplink::pkid::PkidTracker::on_await_ack)). A state record replaced meanwhile is
    /// removed instead. False if it was not in flight.
    pub fn requeue(&mut self, id: Id) -> bool {
        let c = id.class();
        let q = &mut self.q[c.index()];
        let Some(idx) = q.find(id.n()) else {
            return false;
        };
        if !q.mem[idx].in_flight {
            return false;
        }
        q.mem[idx].in_flight = false;
        q.ready += 1;
        self.in_flight -= 1;
        self.stats.requeued += 1;
        self.drop_if_replaced(c, idx);
        true
    }

    /// Every record in flight goes back in front of its class, in push
    /// order; state records replaced meanwhile are removed instead. For
    /// when nothing handed to MQTT can be sent any more (the `EventLoop`
    /// and its request channel were replaced; pair with
    /// [`PkidTracker::reset`](crate::uplink::pkid::PkidTracker::reset)). After an ordinary lost connection use
    /// [`Outbox::requeue`] for what [`PkidTracker::connected`](crate::uplink::pkid::PkidTracker::connected) returns:
    /// messages still in rumqttc's request channel will be sent and must
    /// not be requeued. Returns how many records were in flight.
    pub fn requeue_unacked(&mut self) -> usize {
        let mut count = 0;
        for c in Class::BY_PRIORITY {
            let mut idx = 0;
            while idx < self.q[c.index()].mem.len() {
                let q = &mut self.q[c.index()];
                if q.mem[idx].in_flight {
                    q.mem[idx].in_flight = false;
                    q.ready += 1;
                    self.in_flight -= 1;
                    count += 1;
                    if self.drop_if_replaced(c, idx) {
                        continue;
                    }
                }
                idx += 1;
            }
        }
        self.stats.requeued += count as u64;
        count
    }

    /// Removes ready state slot `idx` if a newer record for its topic
    /// exists. True if removed.
    fn drop_if_replaced(&mut self, c: Class, idx: usize) -> bool {
        if c != Class::State {
            return false;
        }
        let q = &self.q[c.index()];
        let slot = &q.mem[idx];
        if q.latest.get(slot.rec.topic()) == Some(&slot.n) {
            return false;
        }
        self.remove_slot(c, idx);
        self.stats.replaced += 1;
        true
    }

    // ------------------------------------------------------------ sync

    /// When the next flush is due (`None`: nothing to flush, or memory
    /// mode). Written records are flushed at most `fsync_interval_ms`
    /// after the first unflushed write.
    pub fn sync_due(&self) -> Option<Instant> {
        self.disk
            .as_ref()
            .and_then(|d| d.dirty_since)
            .map(|t| t + self.fsync_interval)
    }

    /// Writes pending markers and collects the files to flush. Returns
    /// `None` if there is nothing to do.
    pub fn begin_sync(&mut self) -> Option<SyncJob> {
        let shared = self.disk.as_mut()?;
        shared.dirty_since = None;
        for c in Class::BY_PRIORITY {
            self.write_marks(c);
        }
        let mut files = SyncFiles::default();
        let mut deletes = Vec::new();
        for c in Class::BY_PRIORITY {
            let Some(d) = self.q[c.index()].disk.as_mut() else {
                continue;
            };
            if d.log.take_sync(&mut files).is_err() {
                self.stats.disk_errors += 1;
            }
            if c == Class::State {
                // Segments with no live record, oldest first, never the head.
                for s in &d.log.segs {
                    if d.log.head_no() == Some(s.no) || d.live_per_seg.contains_key(&s.no) {
                        break;
                    }
                    deletes.push(s.no);
                }
            }
        }
        if files.open.is_empty()
            && files.closed.is_empty()
            && files.dirs.is_empty()
            && deletes.is_empty()
        {
            return None;
        }
        Some(SyncJob { files, deletes })
    }

    /// Takes the result of a [`SyncJob`]: counts flushes and errors, and
    /// deletes the state segments the flush made safe to delete. Returns
    /// the errors in words (for the log), if any.
    pub fn finish_sync(&mut self, done: SyncDone) -> Result<(), String> {
        self.stats.fsyncs += done.fsyncs;
        self.stats.syncs += 1;
        if !done.errors.is_empty() {
            self.stats.disk_errors += done.errors.len() as u64;
            if let Some(s) = &mut self.disk {
                s.dirty_since.get_or_insert_with(Instant::now);
            }
            return Err(done.errors.join("; "));
        }
        if let Some(d) = self.q[Class::State.index()].disk.as_mut() {
            for no in done.deletes {
                if d.live_per_seg.contains_key(&no) || d.log.head_no() == Some(no) {
                    continue;
                }
                if d.log.delete(no).is_err() {
                    self.stats.disk_errors += 1;
                }
            }
        }
        Ok(())
    }

    /// [`Outbox::begin_sync`], [`SyncJob::run`] and
    /// [`Outbox::finish_sync`] in one blocking call.
    pub fn sync_now(&mut self) -> anyhow::Result<()> {
        let Some(job) = self.begin_sync() else {
            return Ok(());
        };
        let dir = self
            .disk
            .as_ref()
            .map(|d| d.dir.display().to_string())
            .unwrap_or_default();
        self.finish_sync(job.run())
            .map_err(|e| anyhow::anyhow!("flushing the outbox in {dir}: {e}"))
    }

    /// Writes pending markers and flushes; for shutdown. Records still
    /// queued stay on disk for the next start (memory mode: they are lost,
    /// see [`Stats::depth`] before calling).
    pub fn close(mut self) -> anyhow::Result<()> {
        self.sync_now()
    }

    // ------------------------------------------------------------ stats

    /// Current counters and gauges.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.in_flight = u64::from(self.in_flight);
        s.memory_bytes = self.mem_total;
        for q in &self.q {
            let c = q.class;
            s.depth[c] = q.mem.len() as u64;
            s.bytes[c] = q
                .mem
                .iter()
                .map(|sl| (sl.rec.topic().len() + sl.rec.payload().len()) as u64)
                .sum();
            if let Some(d) = &q.disk {
                s.depth[c] += d.spilled;
                s.bytes[c] += d.spilled_bytes;
                s.disk_bytes += d.log.physical_bytes();
            }
        }
        s
    }

    /// Whether nothing is waiting (nothing queued, in flight or spilled).
    pub fn is_empty(&self) -> bool {
        self.q.iter().all(|q| q.mem.is_empty() && q.spilled() == 0)
    }

    /// The outbox directory, in disk mode.
    pub fn dir(&self) -> Option<&Path> {
        self.disk.as_ref().map(|d| d.dir.as_path())
    }
}

impl Drop for Outbox {
    /// Writes pending markers (one `write()` per class, no flush), so an
    /// outbox dropped without [`Outbox::close`] re-sends fewer messages
    /// after a restart.
    fn drop(&mut self) {
        for c in Class::BY_PRIORITY {
            self.write_marks(c);
        }
    }
}

#[cfg(test)]
mod tests;
