//! Batching of syslog records into `log` messages, and the bounded memory
//! of logs waiting for the uplink.
//!
//! Records are copied once, as text already converted to UTF-8 (invalid
//! bytes become U+FFFD) and cut to the wire limits, into the open batch's
//! single text buffer; a record itself is a few numbers and ranges. The
//! encoded JSON size of each record is computed exactly as the encoder
//! will write it ([`json_str_len`]), so a batch is closed before its
//! encoded size passes [`LOG_BATCH_MAX_BYTES`], at [`MAX_LOG_RECORDS`]
//! records, or when it is older than `batch_max_wait`.
//!
//! Closed batches wait in a queue until the MQTT client takes them. The
//! memory of the open and the waiting batches is bounded by
//! `pending_max_bytes`; at the bound the **oldest** waiting batch is
//! dropped and its records are counted in `syslog_dropped`. Oldest, not
//! newest: during a long uplink outage the records that matter when the
//! site comes back are the recent ones (what the devices are doing now,
//! and their recovery), and a device that repeats one error would
//! otherwise freeze the buffer with the start of its flood. A durable
//! outbox (a later issue) will replace this bound.
//!
//! This module does no I/O and never awaits; [`super::source`] drives it.

use std::collections::VecDeque;
use std::ops::Range;

use sitewatch_wire::payload::{
    LogFormat, LogRecordOut, LOG_BATCH_MAX_BYTES, LOG_FIELD_MAX_BYTES, LOG_MSG_MAX_BYTES,
    LOG_SD_MAX_BYTES, MAX_LOG_RECORDS,
};
use tokio::time::Instant;

/// One record to add, as parsed (text not yet converted).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Device timestamp, Unix ms.
    pub ts: Option<u64>,
    /// Receive time, Unix ms.
    pub rx: u64,
    /// Sender address as text.
    pub ip: &'a str,
    /// Host (already chosen: configured name, line, or ip).
    pub host: &'a [u8],
    /// APP-NAME / TAG.
    pub app: &'a [u8],
    /// PROCID.
    pub procid: Option<&'a [u8]>,
    /// MSGID.
    pub msgid: Option<&'a [u8]>,
    /// Facility 0–23.
    pub facility: u8,
    /// Severity 0–7.
    pub severity: u8,
    /// Parser rule.
    pub format: LogFormat,
    /// Message.
    pub msg: &'a [u8],
    /// Structured data.
    pub sd: Option<&'a [u8]>,
    /// The line was cut by the receiver.
    pub truncated: bool,
}

type Span = Range<u32>;

/// A stored record: numbers plus ranges into the batch text.
#[derive(Debug, Clone)]
struct Rec {
    ts: Option<u64>,
    rx: u64,
    ip: Span,
    host: Span,
    app: Span,
    procid: Option<Span>,
    msgid: Option<Span>,
    msg: Span,
    sd: Option<Span>,
    facility: u8,
    severity: u8,
    format: LogFormat,
    truncated: bool,
}

/// A batch of records sharing one text buffer.
#[derive(Debug)]
pub struct Batch {
    text: String,
    recs: Vec<Rec>,
    /// Encoded size of the records, commas included.
    encoded: usize,
    opened: Instant,
}

impl Batch {
    fn new(now: Instant) -> Batch {
        Batch {
            text: String::new(),
            recs: Vec::new(),
            encoded: 0,
            opened: now,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Bytes of memory held (capacity based).
    pub fn mem(&self) -> usize {
        self.text.capacity() + self.recs.capacity() * std::mem::size_of::<Rec>() + 64
    }

    /// Encoded size of the records part (without the envelope).
    pub fn encoded_len(&self) -> usize {
        self.encoded
    }

    fn s(&self, r: &Span) -> &str {
        self.text
            .get(r.start as usize..r.end as usize)
            .unwrap_or_default()
    }

    /// The records as wire values, borrowing this batch.
    pub fn records(&self) -> Vec<LogRecordOut<'_>> {
        self.recs
            .iter()
            .map(|r| LogRecordOut {
                ts: r.ts,
                rx: r.rx,
                ip: self.s(&r.ip),
                host: self.s(&r.host),
                app: self.s(&r.app),
                procid: r.procid.as_ref().map(|x| self.s(x)),
                msgid: r.msgid.as_ref().map(|x| self.s(x)),
                facility: r.facility,
                severity: r.severity,
                format: r.format,
                msg: self.s(&r.msg),
                sd: r.sd.as_ref().map(|x| self.s(x)),
                truncated: r.truncated,
            })
            .collect()
    }
}

/// Appends `bytes` to `out` as UTF-8 (invalid sequences become U+FFFD),
/// stopping before `max` bytes of output. Returns whether it had to cut.
pub fn push_lossy(out: &mut String, bytes: &[u8], max: usize) -> bool {
    let limit = out.len() + max;
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if out.len() + valid.len() > limit {
            let room = limit - out.len();
            let mut cut = room;
            while !valid.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&valid[..cut]);
            return true;
        }
        out.push_str(valid);
        if !chunk.invalid().is_empty() {
            if out.len() + '\u{FFFD}'.len_utf8() > limit {
                return true;
            }
            out.push('\u{FFFD}');
        }
    }
    false
}

/// Length of `s` as a JSON string, quotes included, exactly as
/// `sitewatch_wire::encode` (serde-json-core) writes it.
pub fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn num_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Encoded length of one record (see [`LogRecordOut`]'s field order).
fn record_len(b: &Batch, r: &Rec) -> usize {
    // Each field: `"key":value`; fields separated by commas; braces.
    let field = |key: &str, value: usize| key.len() + 3 + value;
    let mut len = 2;
    let mut n = 0;
    let mut add = |l: usize| {
        len += l;
        n += 1;
    };
    if let Some(ts) = r.ts {
        add(field("ts", num_len(ts)));
    }
    add(field("rx", num_len(r.rx)));
    add(field("ip", json_str_len(b.s(&r.ip))));
    add(field("host", json_str_len(b.s(&r.host))));
    add(field("app", json_str_len(b.s(&r.app))));
    if let Some(p) = &r.procid {
        add(field("procid", json_str_len(b.s(p))));
    }
    if let Some(m) = &r.msgid {
        add(field("msgid", json_str_len(b.s(m))));
    }
    add(field("facility", num_len(r.facility.into())));
    add(field("severity", num_len(r.severity.into())));
    add(field("format", json_str_len(r.format.as_str())));
    add(field("msg", json_str_len(b.s(&r.msg))));
    if let Some(sd) = &r.sd {
        add(field("sd", json_str_len(b.s(sd))));
    }
    if r.truncated {
        add(field("truncated", 4));
    }
    len + n - 1
}

/// Open batch plus the batches waiting for the uplink, bounded in memory.
#[derive(Debug)]
pub struct Pending {
    open: Option<Batch>,
    closed: VecDeque<Batch>,
    /// Memory of `closed`.
    closed_mem: usize,
    max_bytes: usize,
    /// Room for the envelope (`{"v":1,"site":...,"records":[` … `]}`).
    envelope: usize,
}

/// What [`Pending::add`] did besides adding.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Records dropped to stay within the memory bound.
    pub dropped: u64,
    /// The open batch was closed (full) and is waiting.
    pub closed: bool,
}

impl Pending {
    /// Holds at most `max_bytes` of logs. `site` and `boot` size the
    /// message envelope.
    pub fn new(max_bytes: usize, site: &str, boot: &str) -> Pending {
        // {"v":1,"site":S,"boot":B,"seq":N,"ts":N,"records":[...]} with
        // 20-digit numbers.
        let envelope = 64 + json_str_len(site) + json_str_len(boot) + 2 * 20;
        Pending {
            open: None,
            closed: VecDeque::new(),
            closed_mem: 0,
            max_bytes,
            envelope,
        }
    }

    /// Memory held by pending logs.
    pub fn mem(&self) -> usize {
        self.closed_mem + self.open.as_ref().map_or(0, Batch::mem)
    }

    /// Records held (open and waiting).
    pub fn records(&self) -> usize {
        self.closed.iter().map(Batch::len).sum::<usize>() + self.open.as_ref().map_or(0, Batch::len)
    }

    /// Whether closed batches are waiting for the uplink.
    pub fn has_closed(&self) -> bool {
        !self.closed.is_empty()
    }

    /// Adds one record, closing the open batch first if the record would
    /// not fit in it.
    pub fn add(&mut self, input: &Input<'_>, now: Instant) -> Added {
        let mut out = Added::default();
        let batch = self.open.get_or_insert_with(|| Batch::new(now));
        let mark = batch.text.len();
        let span = |t: &mut String, bytes: &[u8], max: usize| -> (Span, bool) {
            let start = t.len();
            let cut = push_lossy(t, bytes, max);
            (start as u32..t.len() as u32, cut)
        };
        let t = &mut batch.text;
        let (ip, _) = span(t, input.ip.as_bytes(), LOG_FIELD_MAX_BYTES);
        let (host, _) = span(t, input.host, LOG_FIELD_MAX_BYTES);
        let (app, _) = span(t, input.app, LOG_FIELD_MAX_BYTES);
        let procid = input.procid.map(|p| span(t, p, LOG_FIELD_MAX_BYTES).0);
        let msgid = input.msgid.map(|m| span(t, m, LOG_FIELD_MAX_BYTES).0);
        let (msg, msg_cut) = span(t, input.msg, LOG_MSG_MAX_BYTES);
        let mut sd_cut = false;
        let sd = input.sd.map(|s| {
            let (r, c) = span(t, s, LOG_SD_MAX_BYTES);
            sd_cut = c;
            r
        });
        let rec = Rec {
            ts: input.ts,
            rx: input.rx,
            ip,
            host,
            app,
            procid,
            msgid,
            msg,
            sd,
            facility: input.facility.min(23),
            severity: input.severity.min(7),
            format: input.format,
            truncated: input.truncated || msg_cut || sd_cut,
        };
        let len = record_len(batch, &rec);
        let limit = LOG_BATCH_MAX_BYTES.saturating_sub(self.envelope);
        let full = !batch.recs.is_empty()
            && (batch.recs.len() >= MAX_LOG_RECORDS || batch.encoded + 1 + len > limit);
        if full {
            // Move this record's text into a fresh batch.
            let mut fresh = Batch::new(now);
            fresh.text.push_str(&batch.text[mark..]);
            batch.text.truncate(mark);
            let shift = |r: &Span| r.start - mark as u32..r.end - mark as u32;
            let moved = Rec {
                ip: shift(&rec.ip),
                host: shift(&rec.host),
                app: shift(&rec.app),
                procid: rec.procid.as_ref().map(shift),
                msgid: rec.msgid.as_ref().map(shift),
                msg: shift(&rec.msg),
                sd: rec.sd.as_ref().map(shift),
                ..rec
            };
            fresh.encoded = len;
            fresh.recs.push(moved);
            let old = std::mem::replace(batch, fresh);
            self.push_closed(old);
            out.closed = true;
        } else {
            batch.encoded += if batch.recs.is_empty() { len } else { len + 1 };
            batch.recs.push(rec);
        }
        out.dropped = self.enforce_bound();
        out
    }

    /// Closes the open batch if it is older than `max_wait` (or if
    /// `force`). Returns whether a batch was closed.
    pub fn close_if(&mut self, now: Instant, max_wait: std::time::Duration, force: bool) -> bool {
        let due = self
            .open
            .as_ref()
            .is_some_and(|b| !b.is_empty() && (force || now.duration_since(b.opened) >= max_wait));
        if due {
            if let Some(b) = self.open.take() {
                self.push_closed(b);
            }
        }
        due
    }

    fn push_closed(&mut self, mut b: Batch) {
        b.text.shrink_to_fit();
        b.recs.shrink_to_fit();
        self.closed_mem += b.mem();
        self.closed.push_back(b);
    }

    /// Drops the oldest waiting batches until within the bound; returns
    /// the number of records dropped.
    fn enforce_bound(&mut self) -> u64 {
        let mut dropped = 0;
        while self.mem() > self.max_bytes {
            match self.closed.pop_front() {
                Some(b) => {
                    self.closed_mem -= b.mem();
                    dropped += b.len() as u64;
                }
                None => break,
            }
        }
        dropped
    }

    /// The oldest waiting batch.
    pub fn front(&self) -> Option<&Batch> {
        self.closed.front()
    }

    /// Removes the oldest waiting batch (after it was handed over).
    pub fn pop_front(&mut self) -> Option<Batch> {
        let b = self.closed.pop_front()?;
        self.closed_mem -= b.mem();
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_wire::payload::{Header, LogOut, LOG_BUF_LEN};

    fn input<'a>(msg: &'a [u8], app: &'a [u8]) -> Input<'a> {
        Input {
            ts: Some(1_764_284_441_250),
            rx: 1_764_284_441_300,
            ip: "192.168.1.64",
            host: b"nvr-1",
            app,
            procid: Some(b"12"),
            msgid: None,
            facility: 16,
            severity: 4,
            format: LogFormat::Rfc3164,
            msg,
            sd: None,
            truncated: false,
        }
    }

    fn encode(b: &Batch) -> Vec<u8> {
        let recs = b.records();
        let h = Header {
            site: "lokasi1",
            boot: "0123456789abcdef",
            seq: u64::MAX,
            ts: u64::MAX,
        };
        let mut buf = vec![0u8; LOG_BUF_LEN];
        let n = sitewatch_wire::encode(&LogOut::new(h, &recs), &mut buf).expect("fits");
        buf.truncate(n);
        buf
    }

    #[test]
    fn lossy_and_limits() {
        let mut s = String::new();
        assert!(!push_lossy(&mut s, b"a\xffb", 10));
        assert_eq!(s, "a\u{fffd}b");
        let mut s = String::new();
        assert!(push_lossy(&mut s, "ééé".as_bytes(), 5));
        assert_eq!(s, "éé");
        let mut s = String::new();
        assert!(push_lossy(&mut s, b"ab\xff", 4));
        assert_eq!(s, "ab");
    }

    #[test]
    fn computed_length_matches_the_encoder() {
        let now = Instant::now();
        let mut p = Pending::new(1 << 24, "lokasi1", "0123456789abcdef");
        let weird: Vec<u8> = (0u8..=255).collect();
        p.add(&input(&weird, b"a\"b\\c"), now);
        p.add(&input(b"plain", b""), now);
        let mut i = input("ünïcødé \u{7f}\t".as_bytes(), b"x");
        i.ts = None;
        i.procid = None;
        i.msgid = Some(b"ID47");
        i.sd = Some(b"[a b=\"c\"]");
        i.truncated = true;
        p.add(&i, now);
        p.close_if(now, std::time::Duration::ZERO, true);
        let b = p.front().expect("batch");
        let json = encode(b);
        let text = std::str::from_utf8(&json).expect("utf8");
        let start = text.find("\"records\":[").expect("records") + 11;
        let records_len = text.len() - start - 2;
        assert_eq!(b.encoded_len(), records_len, "{text}");
        assert!(text.len() <= b.encoded_len() + p.envelope);
    }

    #[test]
    fn batches_close_before_64k() {
        let now = Instant::now();
        let mut p = Pending::new(1 << 24, "lokasi1", "0123456789abcdef");
        let msg = vec![b'\x01'; 4000]; // 6 bytes each encoded
        let mut closed = 0;
        for _ in 0..40 {
            closed += usize::from(p.add(&input(&msg, b"app"), now).closed);
        }
        assert!(closed >= 1);
        while let Some(b) = p.pop_front() {
            let n = encode(&b).len();
            assert!(n <= LOG_BATCH_MAX_BYTES, "{n}");
            assert!(
                n > LOG_BATCH_MAX_BYTES - 30_000,
                "{n}: batches should be full"
            );
        }
        // Small records: the size bound closes the batch long before the
        // 1024-record bound (a record is at least ~130 bytes encoded).
        let mut p = Pending::new(1 << 24, "lokasi1", "0123456789abcdef");
        for _ in 0..3000 {
            p.add(&input(b"x", b"a"), now);
        }
        let b = p.pop_front().expect("closed");
        assert!(b.len() > 300 && b.len() <= MAX_LOG_RECORDS, "{}", b.len());
        assert!(encode(&b).len() <= LOG_BATCH_MAX_BYTES);
    }

    #[test]
    fn memory_bound_drops_oldest() {
        let now = Instant::now();
        let mut p = Pending::new(256 * 1024, "s", "b");
        let msg = vec![b'm'; 8000];
        let mut dropped = 0;
        for _ in 0..200 {
            dropped += p.add(&input(&msg, b"a"), now).dropped;
        }
        assert!(dropped > 0);
        assert!(p.mem() <= 256 * 1024, "{}", p.mem());
        assert_eq!(p.records() as u64 + dropped, 200);
    }

    #[test]
    fn oversized_fields_are_cut_and_flagged() {
        let now = Instant::now();
        let mut p = Pending::new(1 << 24, "s", "b");
        let long = vec![b'a'; LOG_MSG_MAX_BYTES + 10];
        let app = vec![b'b'; 1000];
        p.add(&input(&long, &app), now);
        p.close_if(now, std::time::Duration::ZERO, true);
        let b = p.front().expect("batch");
        let r = &b.records()[0];
        assert!(r.truncated);
        assert_eq!(r.msg.len(), LOG_MSG_MAX_BYTES);
        assert_eq!(r.app.len(), LOG_FIELD_MAX_BYTES);
    }
}
