//! The outbox's on-disk frame format: encoding, decoding, and a scanner that
//! resynchronises after corrupt, torn or zero-filled bytes.
//!
//! Pure: works on byte slices and never touches files, so the same code
//! reads segments at start-up, streams them back at run time, and is fuzzed
//! (`fuzz/fuzz_targets/outbox_segment.rs`). It must never panic, loop, or
//! allocate in proportion to a length read from the input: disk contents
//! are input.
//!
//! # Frame layout (all integers little-endian)
//!
//! ```text
//! header, 16 bytes
//!   0  magic        4  b"SWOB"
//!   4  body_len     4  u32, 1 ..= MAX_BODY_LEN
//!   8  body_crc     4  CRC-32C of the body
//!  12  header_crc   4  CRC-32C of header bytes 0..12
//! body, body_len bytes; first byte is the kind
//!   kind 1, record:   class u8 (0 log, 1 series, 2 state, 3 event),
//!                     flags u8 (bit 0 retain; others 0), reserved u8 (0),
//!                     id u64, seq u64, topic_len u16, topic (UTF-8),
//!                     payload (the rest)
//!   kind 2, resolved: reserved [u8; 3] (0), count u32,
//!                     count × (start u64, end u64): ids in [start, end)
//!                     were acknowledged or dropped
//! ```
//!
//! The header has its own checksum so that a scanner looking for the next
//! frame after damage rejects a false `SWOB` in O(1), whatever length it
//! claims: resynchronising is linear in the damaged bytes.
//!
//! CRC-32C (Castagnoli) is hand-rolled with a 256-entry table built at
//! compile time: about 20 lines instead of a dependency, and it detects
//! every burst error up to 32 bits, like the crc32fast (IEEE) alternative.

use super::rangeset::RangeSet;
use super::record::{Class, Record, MAX_PAYLOAD_LEN, MAX_TOPIC_LEN};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"SWOB";

/// Bytes before the body.
pub const HEADER_LEN: usize = 16;

/// Fixed part of a record body before the topic.
const RECORD_FIXED: usize = 22;

/// Fixed part of a resolved body before the ranges.
const RESOLVED_FIXED: usize = 8;

/// Largest body accepted: the largest record plus its fixed fields.
pub const MAX_BODY_LEN: usize = RECORD_FIXED + MAX_TOPIC_LEN + MAX_PAYLOAD_LEN;

/// Largest frame.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_BODY_LEN;

/// Most ranges in one resolved frame (keeps such frames under 4 KiB).
pub const MAX_RANGES_PER_FRAME: usize = 255;

const KIND_RECORD: u8 = 1;
const KIND_RESOLVED: u8 = 2;
const FLAG_RETAIN: u8 = 1;

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32C (Castagnoli, reflected, as in iSCSI/ext4) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// A decoded record frame, borrowing from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Delivery class.
    pub class: Class,
    /// MQTT retain flag.
    pub retain: bool,
    /// Outbox id within the class.
    pub id: u64,
    /// The message's seq.
    pub seq: u64,
    /// MQTT topic.
    pub topic: &'a str,
    /// Encoded payload.
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    /// An owned [`Record`]; `None` only if the frame broke a record limit
    /// (cannot happen for frames that decoded).
    pub fn to_record(&self) -> Option<Record> {
        Record::new(
            self.class,
            self.topic,
            self.payload.to_vec(),
            self.retain,
            self.seq,
        )
        .ok()
    }
}

/// A decoded resolved frame: ranges of ids that need no delivery any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRef<'a> {
    /// `count × 16` bytes of ranges, already length-checked.
    raw: &'a [u8],
}

impl<'a> ResolvedRef<'a> {
    /// The `[start, end)` ranges, in file order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.raw
            .chunks_exact(16)
            .map(|c| (le_u64(&c[..8]), le_u64(&c[8..])))
    }
}

/// A decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A message.
    Record(RecordRef<'a>),
    /// Ids acknowledged or dropped.
    Resolved(ResolvedRef<'a>),
}

/// Why bytes were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipKind {
    /// Not a valid frame (bad magic, checksum or length): damaged bytes,
    /// a zero-filled hole, or garbage. Skipped up to the next valid header.
    Corrupt,
    /// The input ends inside a frame: a write torn by a crash or power cut.
    Torn,
    /// Checksums are fine but the body is not understood (unknown kind or
    /// broken field): written by a newer agent, or a bug.
    Unknown,
}

/// One step of scanning: what the bytes at the start of the input are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A valid frame `len` bytes long.
    Frame {
        /// The frame.
        frame: Frame<'a>,
        /// Its length including the header.
        len: usize,
    },
    /// The first `len` (≥ 1) bytes are to be skipped.
    Skip {
        /// Bytes to skip.
        len: usize,
        /// Why.
        kind: SkipKind,
    },
    /// Cannot decide without more bytes: at least `need` in total
    /// (never more than [`MAX_FRAME_LEN`]). Only when not at end of input.
    NeedMore {
        /// Bytes needed from the start of the input.
        need: usize,
    },
    /// The input is empty and at its end.
    End,
}

fn le_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[..2]);
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Body length if `h` (at least [`HEADER_LEN`] bytes) is a valid header.
fn header_body_len(h: &[u8]) -> Option<usize> {
    if h[..4] != MAGIC || crc32c(&h[..12]) != le_u32(&h[12..16]) {
        return None;
    }
    let len = le_u32(&h[4..8]) as usize;
    (1..=MAX_BODY_LEN).contains(&len).then_some(len)
}

/// Decodes a body whose checksum matched.
fn decode_body(body: &[u8]) -> Option<Frame<'_>> {
    match *body.first()? {
        KIND_RECORD => {
            if body.len() < RECORD_FIXED {
                return None;
            }
            let class = Class::from_u8(body[1])?;
            let flags = body[2];
            if flags & !FLAG_RETAIN != 0 || body[3] != 0 {
                return None;
            }
            let id = le_u64(&body[4..12]);
            let seq = le_u64(&body[12..20]);
            let topic_len = usize::from(le_u16(&body[20..22]));
            if topic_len == 0 || topic_len > MAX_TOPIC_LEN {
                return None;
            }
            let rest = &body[RECORD_FIXED..];
            if rest.len() < topic_len {
                return None;
            }
            let (topic, payload) = rest.split_at(topic_len);
            if payload.len() > MAX_PAYLOAD_LEN {
                return None;
            }
            let topic = std::str::from_utf8(topic).ok()?;
            Some(Frame::Record(RecordRef {
                class,
                retain: flags & FLAG_RETAIN != 0,
                id,
                seq,
                topic,
                payload,
            }))
        }
        KIND_RESOLVED => {
            if body.len() < RESOLVED_FIXED || body[1..4] != [0, 0, 0] {
                return None;
            }
            let count = le_u32(&body[4..8]) as usize;
            let raw = &body[RESOLVED_FIXED..];
            if count > MAX_RANGES_PER_FRAME || raw.len() != count * 16 {
                return None;
            }
            let r = ResolvedRef { raw };
            if r.ranges().any(|(s, e)| s >= e) {
                return None;
            }
            Some(Frame::Resolved(r))
        }
        _ => None,
    }
}

/// Offset (≥ 1) of the next valid header in `buf`, looking only at
/// positions where a whole header fits.
fn next_header(buf: &[u8]) -> Option<usize> {
    let last = buf.len().checked_sub(HEADER_LEN)?;
    (1..=last).find(|&p| buf[p] == MAGIC[0] && header_body_len(&buf[p..]).is_some())
}

/// Skips damaged bytes at the start of `buf` up to the next valid header
/// (or as far as the available bytes allow).
fn resync(buf: &[u8], eof: bool) -> Step<'_> {
    match next_header(buf) {
        Some(p) => Step::Skip {
            len: p,
            kind: SkipKind::Corrupt,
        },
        None if eof => Step::Skip {
            len: buf.len(),
            kind: SkipKind::Corrupt,
        },
        // Positions from here on were not checked: a header may start there.
        None => Step::Skip {
            len: buf.len() - (HEADER_LEN - 1),
            kind: SkipKind::Corrupt,
        },
    }
}

/// Looks at the start of `buf` and says what is there. `eof` tells whether
/// `buf` reaches the end of the input (file); if not, the answer may be
/// [`Step::NeedMore`].
///
/// Feeding a buffer whole or in growing pieces gives the same sequence of
/// frames and skips (tested, and checked by the fuzz target).
pub fn step(buf: &[u8], eof: bool) -> Step<'_> {
    if buf.is_empty() {
        return if eof {
            Step::End
        } else {
            Step::NeedMore { need: HEADER_LEN }
        };
    }
    if buf.len() < HEADER_LEN {
        return if eof {
            Step::Skip {
                len: buf.len(),
                kind: SkipKind::Torn,
            }
        } else {
            Step::NeedMore { need: HEADER_LEN }
        };
    }
    let Some(body_len) = header_body_len(buf) else {
        return resync(buf, eof);
    };
    let total = HEADER_LEN + body_len;
    if buf.len() < total {
        return if eof {
            Step::Skip {
                len: buf.len(),
                kind: SkipKind::Torn,
            }
        } else {
            Step::NeedMore { need: total }
        };
    }
    let body = &buf[HEADER_LEN..total];
    if crc32c(body) != le_u32(&buf[8..12]) {
        return resync(buf, eof);
    }
    match decode_body(body) {
        Some(frame) => Step::Frame { frame, len: total },
        None => Step::Skip {
            len: total,
            kind: SkipKind::Unknown,
        },
    }
}

/// Appends the header for `body` (already in `out` from `start`).
fn seal(out: &mut [u8], start: usize) {
    let body_len = out.len() - start - HEADER_LEN;
    let body_crc = crc32c(&out[start + HEADER_LEN..]);
    let h = &mut out[start..start + HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    // body_len ≤ MAX_BODY_LEN < u32::MAX, guaranteed by the encoders.
    h[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
    h[8..12].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c(&h[..12]);
    h[12..16].copy_from_slice(&header_crc.to_le_bytes());
}

/// Appends a record frame for `rec` with outbox id `id` to `out`; returns
/// the frame's length.
pub fn encode_record(out: &mut Vec<u8>, id: u64, rec: &Record) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out.push(KIND_RECORD);
    out.push(rec.class() as u8);
    out.push(if rec.retain() { FLAG_RETAIN } else { 0 });
    out.push(0);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&rec.seq().to_le_bytes());
    // Record::new guarantees topic ≤ MAX_TOPIC_LEN < u16::MAX and
    // payload ≤ MAX_PAYLOAD_LEN, so body ≤ MAX_BODY_LEN.
    out.extend_from_slice(&(rec.topic().len() as u16).to_le_bytes());
    out.extend_from_slice(rec.topic().as_bytes());
    out.extend_from_slice(rec.payload());
    seal(out, start);
    out.len() - start
}

/// Length of the frame [`encode_record`] makes for `rec`.
pub fn record_frame_len(rec: &Record) -> usize {
    HEADER_LEN + RECORD_FIXED + rec.topic().len() + rec.payload().len()
}

/// Appends resolved frames for every range of `set` (several frames if
/// there are more than [`MAX_RANGES_PER_FRAME`] ranges).
pub fn encode_resolved(out: &mut Vec<u8>, set: &RangeSet) {
    let ranges: Vec<(u64, u64)> = set.iter().collect();
    for chunk in ranges.chunks(MAX_RANGES_PER_FRAME) {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        out.extend_from_slice(&[KIND_RESOLVED, 0, 0, 0]);
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        for &(s, e) in chunk {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
        }
        seal(out, start);
    }
}

/// What scanning a whole buffer found (see [`scan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Record frames: (offset, id, frame length).
    pub records: Vec<(usize, u64, usize)>,
    /// Resolved frames: (offset, frame length).
    pub resolved: Vec<(usize, usize)>,
    /// Skipped regions: (offset, length, kind).
    pub skips: Vec<(usize, usize, SkipKind)>,
}

impl ScanSummary {
    /// Whether frames and skipped regions tile `0..len` exactly, in order.
    pub fn covers(&self, len: usize) -> bool {
        let mut spans: Vec<(usize, usize)> = self
            .records
            .iter()
            .map(|r| (r.0, r.2))
            .chain(self.resolved.iter().copied())
            .chain(self.skips.iter().map(|k| (k.0, k.1)))
            .collect();
        spans.sort_unstable();
        let mut pos = 0;
        for (off, n) in spans {
            if off != pos || n == 0 {
                return false;
            }
            pos += n;
        }
        pos == len
    }
}

/// Scans a whole segment held in memory. Every byte ends up in exactly one
/// frame or skipped region ([`ScanSummary::covers`]); touching skipped
/// regions of the same kind are reported as one.
pub fn scan(buf: &[u8]) -> ScanSummary {
    let mut s = ScanSummary::default();
    let mut pos = 0;
    loop {
        match step(&buf[pos..], true) {
            Step::End => break,
            // Unreachable with eof = true; stop rather than spin.
            Step::NeedMore { .. } => break,
            Step::Skip { len, kind } => {
                s.skips.push((pos, len, kind));
                pos += len;
            }
            Step::Frame { frame, len } => {
                match frame {
                    Frame::Record(r) => s.records.push((pos, r.id, len)),
                    Frame::Resolved(_) => s.resolved.push((pos, len)),
                }
                pos += len;
            }
        }
    }
    merge_skips(&mut s.skips);
    s
}

/// The same scan fed in pieces, as the run-time reader sees a file: the
/// input is revealed `chunk` bytes at a time (plus whatever a
/// [`Step::NeedMore`] asks for). Used by tests and the fuzz target to
/// check that piecewise reading agrees with [`scan`].
pub fn scan_chunked(buf: &[u8], chunk: usize) -> ScanSummary {
    let chunk = chunk.max(1);
    let mut s = ScanSummary::default();
    let mut pos = 0;
    let mut visible = chunk.min(buf.len());
    loop {
        let eof = visible == buf.len();
        match step(&buf[pos..visible], eof) {
            Step::End => break,
            Step::NeedMore { need } => {
                visible = (pos + need.max(visible - pos + 1)).min(buf.len());
            }
            Step::Skip { len, kind } => {
                s.skips.push((pos, len, kind));
                pos += len;
            }
            Step::Frame { frame, len } => {
                match frame {
                    Frame::Record(r) => s.records.push((pos, r.id, len)),
                    Frame::Resolved(_) => s.resolved.push((pos, len)),
                }
                pos += len;
            }
        }
        if pos >= visible && !eof {
            visible = (pos + chunk).min(buf.len());
        }
    }
    // Adjacent skips of the same kind are one region either way.
    merge_skips(&mut s.skips);
    s
}

/// Merges touching skipped regions of the same kind (piecewise reading
/// may report one damaged region in several pieces).
pub fn merge_skips(skips: &mut Vec<(usize, usize, SkipKind)>) {
    let mut out: Vec<(usize, usize, SkipKind)> = Vec::with_capacity(skips.len());
    for &(off, len, kind) in skips.iter() {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == off && last.2 == kind => last.1 += len,
            _ => out.push((off, len, kind)),
        }
    }
    *skips = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, payload_len: usize) -> (u64, Record) {
        let payload: Vec<u8> = (0..payload_len)
            .map(|i| (i * 7 + id as usize) as u8)
            .collect();
        let r = Record::new(
            Class::Series,
            "sitewatch/v1/s/heartbeat",
            payload,
            false,
            id * 10,
        )
        .expect("valid");
        (id, r)
    }

    fn segment(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for i in 1..=n {
            offsets.push(out.len());
            let (id, r) = rec(i, 20 + (i as usize * 13) % 50);
            encode_record(&mut out, id, &r);
        }
        (out, offsets)
    }

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn record_roundtrip() {
        let r = Record::new(
            Class::State,
            "sitewatch/v1/s/status",
            b"{\"v\":1}".to_vec(),
            true,
            42,
        )
        .expect("valid");
        let mut out = Vec::new();
        let n = encode_record(&mut out, 7, &r);
        assert_eq!(n, out.len());
        assert_eq!(n, record_frame_len(&r));
        match step(&out, true) {
            Step::Frame {
                frame: Frame::Record(d),
                len,
            } => {
                assert_eq!(len, n);
                assert_eq!(d.id, 7);
                assert_eq!(d.to_record(), Some(r));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resolved_roundtrip_and_split() {
        let mut set = RangeSet::new();
        for i in 0..600u64 {
            set.insert(i * 3);
        }
        let mut out = Vec::new();
        encode_resolved(&mut out, &set);
        let mut back = RangeSet::new();
        let mut pos = 0;
        let mut frames = 0;
        while let Step::Frame {
            frame: Frame::Resolved(r),
            len,
        } = step(&out[pos..], true)
        {
            for (s, e) in r.ranges() {
                back.insert_range(s, e);
            }
            frames += 1;
            pos += len;
        }
        assert_eq!(pos, out.len());
        assert_eq!(frames, 3);
        assert_eq!(back, set);
    }

    #[test]
    fn clean_segment_scans_whole_and_chunked() {
        let (seg, offsets) = segment(20);
        let s = scan(&seg);
        assert!(s.skips.is_empty());
        assert_eq!(s.records.iter().map(|r| r.0).collect::<Vec<_>>(), offsets);
        for chunk in [1, 7, 16, 100, 4096] {
            assert_eq!(scan_chunked(&seg, chunk), s, "chunk {chunk}");
        }
    }

    #[test]
    fn truncation_at_every_offset_keeps_whole_frames() {
        let (seg, offsets) = segment(6);
        for cut in 0..=seg.len() {
            let s = scan(&seg[..cut]);
            let whole = offsets
                .iter()
                .zip(offsets.iter().skip(1).chain(std::iter::once(&seg.len())))
                .filter(|(_, &end)| end <= cut)
                .count();
            assert_eq!(s.records.len(), whole, "cut at {cut}");
            assert!(s.covers(cut), "every byte accounted for at {cut}");
            assert!(s.skips.len() <= 1, "one torn tail at most: {:?}", s.skips);
            assert_eq!(scan_chunked(&seg[..cut], 5), s, "chunked at {cut}");
        }
    }

    #[test]
    fn zero_filled_tail_and_hole() {
        let (mut seg, offsets) = segment(5);
        let n = seg.len();
        seg.extend_from_slice(&[0u8; 5000]);
        let s = scan(&seg);
        assert_eq!(s.records.len(), 5);
        assert_eq!(s.skips, vec![(n, 5000, SkipKind::Corrupt)]);
        // A zeroed hole in the middle (page not written back): only the
        // frames it touches are lost.
        let (mut seg, _) = segment(5);
        let hole = offsets[2] + 3..offsets[3] + 10;
        seg[hole].fill(0);
        let s = scan(&seg);
        let ids: Vec<u64> = s.records.iter().map(|r| r.1).collect();
        assert_eq!(ids, vec![1, 2, 5]);
        assert_eq!(s.skips.len(), 1);
        assert_eq!(scan_chunked(&seg, 9), s);
    }

    #[test]
    fn random_byte_flips_never_wedge_and_lose_only_touched_frames() {
        let (seg, offsets) = segment(30);
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..3000 {
            let mut bad = seg.clone();
            let flips = rng.usize(1..4);
            let mut touched = std::collections::BTreeSet::new();
            for _ in 0..flips {
                let at = rng.usize(..bad.len());
                bad[at] ^= 1 << rng.u8(0..8);
                let frame = offsets.partition_point(|&o| o <= at) - 1;
                touched.insert(frame as u64 + 1);
            }
            let s = scan(&bad);
            let ids: Vec<u64> = s.records.iter().map(|r| r.1).collect();
            for id in 1..=30u64 {
                if !touched.contains(&id) {
                    assert!(ids.contains(&id), "untouched frame {id} lost: {ids:?}");
                } else {
                    assert!(!ids.contains(&id), "damaged frame {id} accepted");
                }
            }
            assert!(s.covers(bad.len()));
            assert_eq!(scan_chunked(&bad, rng.usize(1..300)), s);
        }
    }

    #[test]
    fn garbage_with_false_magic_is_linear_and_terminates() {
        // Many false magics claiming huge lengths.
        let mut buf = Vec::new();
        for i in 0..10_000u32 {
            buf.extend_from_slice(&MAGIC);
            buf.extend_from_slice(&(i * 997).to_le_bytes());
        }
        let s = scan(&buf);
        assert!(s.records.is_empty());
        assert_eq!(s.skips.iter().map(|k| k.1).sum::<usize>(), buf.len());
    }

    #[test]
    fn unknown_kind_with_valid_checksums_is_skipped_whole() {
        let (mut seg, _) = segment(1);
        let mut weird = vec![0u8; HEADER_LEN];
        weird.extend_from_slice(&[9, 1, 2, 3]);
        seal(&mut weird, 0);
        let n = weird.len();
        seg.extend_from_slice(&weird);
        let (more, _) = segment(1);
        seg.extend_from_slice(&more);
        let s = scan(&seg);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.skips.len(), 1);
        assert_eq!(s.skips[0].1, n);
        assert_eq!(s.skips[0].2, SkipKind::Unknown);
    }
}
