//! Heap-free encoding with serde-json-core (agent side), and a serde-free
//! encoder for `log` batches that writes the same bytes faster.

use core::fmt;
use serde::Serialize;

use crate::payload::{LogOut, LogRecordOut};

/// Why a payload could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The buffer is too small for the payload.
    BufferFull,
    /// The value could not be represented (serde-json-core refused it).
    Unsupported,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::BufferFull => "payload does not fit the encode buffer",
            EncodeError::Unsupported => "payload value cannot be encoded as JSON",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// Encodes `msg` as compact JSON into `buf`, returning the bytes written.
///
/// Never allocates: serde-json-core writes straight into the slice. Non-finite
/// floats are written as `null`; callers must not produce them (the decoder
/// rejects `null` where a number is required).
pub fn encode<T: Serialize>(msg: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    serde_json_core::to_slice(msg, buf).map_err(|e| match e {
        serde_json_core::ser::Error::BufferFull => EncodeError::BufferFull,
        _ => EncodeError::Unsupported,
    })
}

/// Encodes a `log` batch into `buf` exactly as [`encode`] would, byte for
/// byte, but without serde.
///
/// Log batches are the agent's volume (up to [`MAX_LOG_RECORDS`] records
/// per message, thousands of lines per second from a busy site), and
/// serde-json-core escapes a string one `char` at a time: at 150k lines/s
/// that was about 30 % of the agent's CPU (perf, `scripts/bench/syslog.sh`).
/// Here a string's bytes that need no escape are copied in runs. The
/// escapes are serde-json-core's (`\"`, `\\`, `\b`, `\t`, `\n`, `\f`,
/// `\r`, `\u00XX` with upper-case hex for the other controls; nothing
/// else, not even DEL); the unit tests compare both encoders on random
/// records.
///
/// [`MAX_LOG_RECORDS`]: crate::payload::MAX_LOG_RECORDS
pub fn encode_log(msg: &LogOut<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = Writer { buf, at: 0 };
    w.raw(b"{\"v\":")?;
    w.uint(u64::from(msg.v))?;
    w.raw(b",\"site\":")?;
    w.str(msg.site)?;
    w.raw(b",\"boot\":")?;
    w.str(msg.boot)?;
    w.raw(b",\"seq\":")?;
    w.uint(msg.seq)?;
    w.raw(b",\"ts\":")?;
    w.uint(msg.ts)?;
    w.raw(b",\"records\":[")?;
    for (i, r) in msg.records.iter().enumerate() {
        if i > 0 {
            w.raw(b",")?;
        }
        record(&mut w, r)?;
    }
    w.raw(b"]}")?;
    Ok(w.at)
}

/// One record, in [`LogRecordOut`]'s field order with its skip rules.
fn record(w: &mut Writer<'_>, r: &LogRecordOut<'_>) -> Result<(), EncodeError> {
    w.raw(b"{")?;
    if let Some(ts) = r.ts {
        w.raw(b"\"ts\":")?;
        w.uint(ts)?;
        w.raw(b",")?;
    }
    w.raw(b"\"rx\":")?;
    w.uint(r.rx)?;
    w.raw(b",\"ip\":")?;
    w.str(r.ip)?;
    w.raw(b",\"host\":")?;
    w.str(r.host)?;
    w.raw(b",\"app\":")?;
    w.str(r.app)?;
    if let Some(p) = r.procid {
        w.raw(b",\"procid\":")?;
        w.str(p)?;
    }
    if let Some(m) = r.msgid {
        w.raw(b",\"msgid\":")?;
        w.str(m)?;
    }
    w.raw(b",\"facility\":")?;
    w.uint(u64::from(r.facility))?;
    w.raw(b",\"severity\":")?;
    w.uint(u64::from(r.severity))?;
    w.raw(b",\"format\":")?;
    w.str(r.format.as_str())?;
    w.raw(b",\"msg\":")?;
    w.str(r.msg)?;
    if let Some(sd) = r.sd {
        w.raw(b",\"sd\":")?;
        w.str(sd)?;
    }
    if r.truncated {
        w.raw(b",\"truncated\":true")?;
    }
    w.raw(b"}")
}

/// A cursor over the output slice.
struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn raw(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.at + bytes.len();
        let dst = self
            .buf
            .get_mut(self.at..end)
            .ok_or(EncodeError::BufferFull)?;
        dst.copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    fn uint(&mut self, mut n: u64) -> Result<(), EncodeError> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            // `n % 10` is below 10.
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.raw(&digits[i..])
    }

    /// A JSON string: runs of bytes that need no escape are copied whole
    /// (every byte of a multi-byte UTF-8 character is >= 0x80, so runs
    /// never split one).
    fn str(&mut self, s: &str) -> Result<(), EncodeError> {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        self.raw(b"\"")?;
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                0x08 => b"\\b",
                0x09 => b"\\t",
                0x0a => b"\\n",
                0x0c => b"\\f",
                0x0d => b"\\r",
                0x00..=0x1f => &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ],
                _ => continue,
            };
            self.raw(&bytes[start..i])?;
            self.raw(esc)?;
            start = i + 1;
        }
        self.raw(&bytes[start..])?;
        self.raw(b"\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::LogFormat;

    /// xorshift64*: deterministic cases without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Every control character, the escaped ASCII, DEL, and multi-byte
    /// characters of each length (U+FFFD is what the agent puts for
    /// invalid bytes).
    fn text(rng: &mut Rng) -> String {
        const OTHER: [char; 9] = ['"', '\\', '/', '\u{7f}', 'a', 'é', '€', '\u{fffd}', '😀'];
        let len = rng.below(24);
        (0..len)
            .map(|_| match rng.below(3) {
                0 => char::from(rng.below(0x20) as u8),
                1 => OTHER[rng.below(OTHER.len() as u64) as usize],
                _ => char::from(b' ' + rng.below(95) as u8),
            })
            .collect()
    }

    #[test]
    fn encode_log_writes_what_serde_json_core_writes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..3000 {
            let strings: Vec<[String; 7]> = (0..1 + rng.below(4))
                .map(|_| core::array::from_fn(|_| text(&mut rng)))
                .collect();
            let records: Vec<LogRecordOut<'_>> = strings
                .iter()
                .map(|s| {
                    let mut r = || rng.below(2) == 0;
                    let (has_ts, has_procid, has_msgid, has_sd, truncated) =
                        (r(), r(), r(), r(), r());
                    LogRecordOut {
                        ts: has_ts.then_some(rng.next()),
                        rx: rng.next() >> rng.below(64),
                        ip: &s[0],
                        host: &s[1],
                        app: &s[2],
                        procid: has_procid.then_some(s[3].as_str()),
                        msgid: has_msgid.then_some(s[4].as_str()),
                        facility: rng.below(24) as u8,
                        severity: rng.below(8) as u8,
                        format: LogFormat::ALL[rng.below(5) as usize],
                        msg: &s[5],
                        sd: has_sd.then_some(s[6].as_str()),
                        truncated,
                    }
                })
                .collect();
            let site = text(&mut rng);
            let msg = LogOut {
                v: 1,
                site: &site,
                boot: "0123456789abcdef",
                seq: rng.next() >> rng.below(64),
                ts: rng.next(),
                records: &records,
            };
            // Room to spare, and every buffer too small by a few bytes.
            let mut a = [0u8; 4096];
            let mut b = [0u8; 4096];
            let want = encode(&msg, &mut a);
            assert_eq!(encode_log(&msg, &mut b), want, "case {case}");
            let n = want.expect("fits");
            assert_eq!(a[..n], b[..n], "case {case}");
            for short in [n - 1, n / 2, 0] {
                assert_eq!(
                    encode_log(&msg, &mut b[..short]),
                    Err(EncodeError::BufferFull),
                    "case {case}, {short} bytes"
                );
            }
        }
    }
}
