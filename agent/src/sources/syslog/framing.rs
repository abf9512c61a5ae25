//! TCP syslog framing (RFC 6587): splits a byte stream into lines.
//!
//! Pure and bounded: a [`Framer`] owns one buffer of `max_line + slack`
//! bytes, which the connection reads into directly
//! ([`Framer::read_buf`] / [`Framer::filled`]); [`Framer::next_frame`]
//! then cuts whole frames out of it without copying. It never awaits,
//! allocates after construction, or does I/O; the connection task does.
//!
//! The framing is chosen per connection from its first byte:
//!
//! - a digit `1`–`9`: **octet counting** (`MSG-LEN SP MSG`, RFC 6587
//!   §3.4.1), as syslog-ng's `syslog()` driver and rsyslog's
//!   `TCP_Framing="octet-counted"` send;
//! - anything else: **non-transparent framing**, one message per line
//!   ending in LF (§3.4.2), as `logger -T`, syslog-ng's `network()` and
//!   most devices send. A CR before the LF is dropped by the parser.
//!
//! A message longer than `max_line` is cut: its first `max_line` bytes are
//! returned with `truncated = true`, and the rest of that frame is skipped
//! (by count in octet-counting mode, up to the next LF otherwise), so the
//! stream never loses its place. An octet-counting header that is not a
//! number (more than 9 digits, or no space after them) cannot be resynced
//! by count: the connection falls back to newline framing from there, and
//! that is reported once ([`Framer::fell_back`]).

/// Mode of a connection, decided by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No byte seen yet.
    Unknown,
    /// `MSG-LEN SP MSG`.
    OctetCounting,
    /// Lines ending in LF.
    Newline,
}

/// What the framer is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Nothing to skip.
    None,
    /// Skip this many more bytes (rest of an oversized counted frame).
    Bytes(usize),
    /// Skip up to and including the next LF (rest of an oversized line).
    Line,
}

/// One frame cut out of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message bytes (at most `max_line`).
    pub data: &'a [u8],
    /// The message was longer and has been cut.
    pub truncated: bool,
}

/// Longest MSG-LEN header accepted: 9 digits (< 1 GB frames).
const MAX_LEN_DIGITS: usize = 9;

/// Splits one connection's byte stream into frames.
#[derive(Debug)]
pub struct Framer {
    buf: Box<[u8]>,
    /// Unconsumed data is `buf[start..end]`.
    start: usize,
    end: usize,
    max_line: usize,
    mode: Mode,
    skip: Skip,
    fell_back: bool,
}

impl Framer {
    /// A framer cutting messages at `max_line` bytes (at least 1).
    pub fn new(max_line: usize) -> Framer {
        let max_line = max_line.max(1);
        Framer {
            // Room for a full line plus an octet-count header and its space.
            buf: vec![0; max_line + MAX_LEN_DIGITS + 2].into_boxed_slice(),
            start: 0,
            end: 0,
            max_line,
            mode: Mode::Unknown,
            skip: Skip::None,
            fell_back: false,
        }
    }

    /// The framing detected so far.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether an invalid octet-counting header made the connection fall
    /// back to newline framing.
    pub fn fell_back(&self) -> bool {
        self.fell_back
    }

    /// Free space to read into. Call [`Framer::next_frame`] until it
    /// returns `None` first: then this is never empty.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`Framer::read_buf`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `input` as fits into the buffer; returns how many
    /// bytes were taken. For tests and fuzzing; connections read straight
    /// into [`Framer::read_buf`].
    pub fn push(&mut self, input: &[u8]) -> usize {
        let space = self.read_buf();
        let n = space.len().min(input.len());
        space[..n].copy_from_slice(&input[..n]);
        self.filled(n);
        n
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            self.discard_skipped();
            if self.skip != Skip::None || self.start == self.end {
                return None;
            }
            if self.mode == Mode::Unknown {
                self.mode = if (b'1'..=b'9').contains(&self.buf[self.start]) {
                    Mode::OctetCounting
                } else {
                    Mode::Newline
                };
            }
            match self.mode {
                Mode::OctetCounting => match self.counted_header() {
                    Header::Incomplete => return None,
                    Header::Invalid => {
                        self.mode = Mode::Newline;
                        self.fell_back = true;
                    }
                    Header::Frame { header, len } => {
                        let body = self.start + header;
                        let have = self.end - body;
                        if len <= self.max_line {
                            if have < len {
                                return None;
                            }
                            self.start = body + len;
                            return Some(Frame {
                                data: &self.buf[body..body + len],
                                truncated: false,
                            });
                        }
                        // Oversized: wait for max_line bytes, then skip the rest.
                        if have < self.max_line {
                            return None;
                        }
                        self.start = body + self.max_line;
                        self.skip = Skip::Bytes(len - self.max_line);
                        return Some(Frame {
                            data: &self.buf[body..body + self.max_line],
                            truncated: true,
                        });
                    }
                },
                Mode::Newline | Mode::Unknown => {
                    let data = &self.buf[self.start..self.end];
                    if let Some(i) = data.iter().position(|&b| b == b'\n') {
                        let from = self.start;
                        self.start += i + 1;
                        if i == 0 {
                            // Empty line (keep-alive, CRLF leftovers): nothing.
                            continue;
                        }
                        let (len, truncated) = if i > self.max_line {
                            (self.max_line, true)
                        } else {
                            (i, false)
                        };
                        return Some(Frame {
                            data: &self.buf[from..from + len],
                            truncated,
                        });
                    }
                    // More than max_line bytes and no LF: the line is too
                    // long (exactly max_line may still end in a LF).
                    if data.len() > self.max_line {
                        let from = self.start;
                        self.start += self.max_line;
                        self.skip = Skip::Line;
                        return Some(Frame {
                            data: &self.buf[from..from + self.max_line],
                            truncated: true,
                        });
                    }
                    return None;
                }
            }
        }
    }

    /// At end of stream: what is left, as a last frame (an unterminated
    /// line, or a counted frame cut short, flagged truncated).
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        self.discard_skipped();
        if self.skip != Skip::None || self.start == self.end {
            return None;
        }
        let (from, to) = (self.start, self.end);
        self.start = self.end;
        match self.mode {
            Mode::OctetCounting => match self.header_at(from, to) {
                Header::Frame { header, .. } => Some(Frame {
                    data: &self.buf[from + header..to],
                    truncated: true,
                }),
                _ => Some(Frame {
                    data: &self.buf[from..to],
                    truncated: true,
                }),
            },
            _ => Some(Frame {
                data: &self.buf[from..to],
                truncated: false,
            }),
        }
    }

    /// Drops buffered bytes that belong to the skipped part of an
    /// oversized frame.
    fn discard_skipped(&mut self) {
        match self.skip {
            Skip::None => {}
            Skip::Bytes(n) => {
                let take = n.min(self.end - self.start);
                self.start += take;
                self.skip = if n == take {
                    Skip::None
                } else {
                    Skip::Bytes(n - take)
                };
            }
            Skip::Line => {
                let data = &self.buf[self.start..self.end];
                match data.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.start += i + 1;
                        self.skip = Skip::None;
                    }
                    None => self.start = self.end,
                }
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn counted_header(&self) -> Header {
        self.header_at(self.start, self.end)
    }

    /// Reads `MSG-LEN SP` at `buf[from..to]`. Leading LF/CR between frames
    /// (some senders add them) are not allowed: they make it invalid.
    fn header_at(&self, from: usize, to: usize) -> Header {
        let data = &self.buf[from..to];
        let n = data
            .iter()
            .take(MAX_LEN_DIGITS + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n == 0 || n > MAX_LEN_DIGITS || data[0] == b'0' {
            return Header::Invalid;
        }
        match data.get(n) {
            None => Header::Incomplete,
            Some(b' ') => {
                let len = data[..n]
                    .iter()
                    .fold(0usize, |v, d| v * 10 + usize::from(d - b'0'));
                Header::Frame { header: n + 1, len }
            }
            Some(_) => Header::Invalid,
        }
    }
}

enum Header {
    Incomplete,
    Invalid,
    Frame { header: usize, len: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes; returns (frames, fell_back).
    fn frames(max: usize, input: &[u8], chunk: usize) -> (Vec<(Vec<u8>, bool)>, bool) {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let take = chunk.min(rest.len());
            let n = f.push(&rest[..take]);
            rest = &rest[n..];
            while let Some(fr) = f.next_frame() {
                out.push((fr.data.to_vec(), fr.truncated));
            }
        }
        if let Some(fr) = f.finish() {
            out.push((fr.data.to_vec(), fr.truncated));
        }
        (out, f.fell_back())
    }

    fn lines(v: &[(Vec<u8>, bool)]) -> Vec<(String, bool)> {
        v.iter()
            .map(|(d, t)| (String::from_utf8_lossy(d).into_owned(), *t))
            .collect()
    }

    #[test]
    fn newline_frames_any_chunking() {
        let input = b"<13>a\n<13>bb\r\n\n<13>ccc";
        for chunk in 1..input.len() {
            let (out, _) = frames(64, input, chunk);
            assert_eq!(
                lines(&out),
                vec![
                    ("<13>a".into(), false),
                    ("<13>bb\r".into(), false),
                    ("<13>ccc".into(), false)
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn octet_counting_any_chunking() {
        let input = b"5 <13>a6 <13>bb10 <13>c\nd\ne ";
        for chunk in 1..input.len() {
            let (out, fb) = frames(64, input, chunk);
            assert!(!fb);
            assert_eq!(
                lines(&out),
                vec![
                    ("<13>a".into(), false),
                    ("<13>bb".into(), false),
                    ("<13>c\nd\ne ".into(), false)
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn oversized_newline_line_is_cut_and_skipped() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nnext\n");
        for chunk in [1, 7, 50, 200] {
            let (out, _) = frames(10, &input, chunk);
            assert_eq!(
                lines(&out),
                vec![("x".repeat(10), true), ("next".into(), false)],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn oversized_counted_frame_is_cut_without_desync() {
        let mut input = b"30 ".to_vec();
        input.extend_from_slice(&[b'y'; 30]);
        input.extend_from_slice(b"4 next");
        for chunk in [1, 3, 13, 100] {
            let (out, fb) = frames(10, &input, chunk);
            assert!(!fb);
            assert_eq!(
                lines(&out),
                vec![("y".repeat(10), true), ("next".into(), false)],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn bad_counted_header_falls_back_to_lines() {
        let (out, fb) = frames(64, b"3 abc12x rest\nmore\n", 4);
        assert!(fb);
        assert_eq!(
            lines(&out),
            vec![
                ("abc".into(), false),
                ("12x rest".into(), false),
                ("more".into(), false)
            ]
        );
        let (_, fb) = frames(64, b"1234567890 x", 64);
        assert!(fb, "10 digits is not a length");
    }

    #[test]
    fn line_of_exactly_max_len_is_whole_however_it_arrives() {
        for chunk in 1..8 {
            let (out, _) = frames(5, b"abcde\nabcdef\n", chunk);
            assert_eq!(
                lines(&out),
                vec![("abcde".into(), false), ("abcde".into(), true)],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn eof_inside_counted_frame_is_truncated() {
        let (out, _) = frames(64, b"10 abc", 64);
        assert_eq!(lines(&out), vec![("abc".into(), true)]);
    }

    #[test]
    fn one_mib_line_keeps_connection_working() {
        let mut input = vec![b'z'; 1 << 20];
        input.extend_from_slice(b"\n<13>after\n");
        let (out, _) = frames(8192, &input, 65536);
        assert_eq!(out.len(), 2);
        assert!(out[0].1 && out[0].0.len() == 8192);
        assert_eq!(lines(&out[1..]), vec![("<13>after".into(), false)]);
    }
}
