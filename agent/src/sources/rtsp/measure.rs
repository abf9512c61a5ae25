//! Stream measurements from frame samples: pure arithmetic, no I/O, so it
//! is unit tested (and the NAL scanner fuzzed) without a camera.
//!
//! Times are milliseconds since the probe started (before DNS), so
//! `ttff_ms` is what an installer waits for a picture. RTP time comes
//! from the frames' timestamps (ticks of the stream's clock rate).

/// Most NAL units looked at in one frame; a frame with more is judged on
/// the first ones only (real frames have a handful).
pub const MAX_NALS_PER_FRAME: usize = 256;

/// One received video frame, as the meter needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSample {
    /// RTP time since the stream's first timestamp, in clock ticks.
    pub rtp_ticks: i64,
    /// When the frame's last packet arrived (ms since the probe start).
    pub arrival_ms: u64,
    /// Frame size in bytes (payload, as retina assembles it).
    pub bytes: usize,
    /// A random access point (IDR; for H.265 also CRA/BLA, see
    /// [`h265_has_irap`]).
    pub keyframe: bool,
    /// RTP packets lost just before this frame.
    pub loss: u16,
}

/// What a probe measured about the stream; every field is `None` when
/// the probe did not get far enough to know it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    /// Time to the first frame, from the probe start (DNS included).
    pub ttff_ms: Option<u64>,
    /// Time to the first keyframe, from the probe start.
    pub ttfk_ms: Option<u64>,
    /// RFC 6381 codec string (`avc1.42C01E`, `hvc1.1.6.L63.90`).
    pub codec: Option<String>,
    /// Picture width in pixels.
    pub width: Option<u32>,
    /// Picture height in pixels.
    pub height: Option<u32>,
    /// The frame rate the stream declares (SPS timing, else SDP
    /// `a=framerate`).
    pub declared_fps: Option<f32>,
    /// Frame rate from RTP timestamps: (frames − 1) / RTP time span.
    pub fps_rtp: Option<f32>,
    /// Frame rate from arrival times: (frames − 1) / arrival span.
    pub fps_wall: Option<f32>,
    /// Payload bit rate over the observed window, kbit/s.
    pub bitrate_kbps: Option<u32>,
    /// Mean RTP time between keyframes, seconds (needs two keyframes).
    pub keyframe_interval_s: Option<f32>,
    /// RTP packets lost during the window.
    pub loss: Option<u64>,
    /// RTP time advanced ÷ wall time from the first frame to the end of
    /// the window: about 1 when healthy, far below when frozen or stalled.
    pub rtp_wall_ratio: Option<f32>,
    /// Frames received.
    pub frames: Option<u32>,
    /// Keyframes received.
    pub keyframes: Option<u32>,
    /// Wall time from the last frame to the end of the window, ms.
    pub last_gap_ms: Option<u64>,
}

/// Accumulates [`FrameSample`]s in constant memory.
#[derive(Debug, Clone)]
pub struct Meter {
    clock_rate: u32,
    frames: u32,
    keyframes: u32,
    bytes: u64,
    loss: u64,
    first: Option<(i64, u64)>,
    last: Option<(i64, u64)>,
    first_key_ms: Option<u64>,
    last_key_ticks: Option<i64>,
    key_span_ticks: i64,
    key_gaps: u32,
}

impl Meter {
    /// A meter for a stream with RTP clock `clock_rate` Hz (90 kHz for
    /// video; 0 is treated as unknown and disables RTP-time figures).
    pub fn new(clock_rate: u32) -> Meter {
        Meter {
            clock_rate,
            frames: 0,
            keyframes: 0,
            bytes: 0,
            loss: 0,
            first: None,
            last: None,
            first_key_ms: None,
            last_key_ticks: None,
            key_span_ticks: 0,
            key_gaps: 0,
        }
    }

    /// Frames counted so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Arrival of the last frame, ms since the probe start.
    pub fn last_arrival_ms(&self) -> Option<u64> {
        self.last.map(|(_, ms)| ms)
    }

    /// Adds one frame.
    pub fn push(&mut self, f: FrameSample) {
        self.frames = self.frames.saturating_add(1);
        self.bytes = self.bytes.saturating_add(f.bytes as u64);
        self.loss = self.loss.saturating_add(f.loss.into());
        if self.first.is_none() {
            self.first = Some((f.rtp_ticks, f.arrival_ms));
        }
        self.last = Some((f.rtp_ticks, f.arrival_ms));
        if f.keyframe {
            self.keyframes = self.keyframes.saturating_add(1);
            if self.first_key_ms.is_none() {
                self.first_key_ms = Some(f.arrival_ms);
            }
            if let Some(prev) = self.last_key_ticks {
                let d = f.rtp_ticks.saturating_sub(prev);
                if d > 0 {
                    self.key_span_ticks = self.key_span_ticks.saturating_add(d);
                    self.key_gaps += 1;
                }
            }
            self.last_key_ticks = Some(f.rtp_ticks);
        }
    }

    /// The figures for a window that ended at `end_ms` (since the probe
    /// start). Codec, size and declared rate are filled in by the caller.
    pub fn finish(&self, end_ms: u64) -> Measurements {
        let mut m = Measurements {
            frames: Some(self.frames),
            keyframes: Some(self.keyframes),
            loss: Some(self.loss),
            ..Measurements::default()
        };
        let (Some((ts0, ms0)), Some((ts1, ms1))) = (self.first, self.last) else {
            return m;
        };
        m.ttff_ms = Some(ms0);
        m.ttfk_ms = self.first_key_ms;
        m.last_gap_ms = Some(end_ms.saturating_sub(ms1));
        let rate = f64::from(self.clock_rate);
        let rtp_span_s = if self.clock_rate > 0 {
            Some(ts1.saturating_sub(ts0) as f64 / rate)
        } else {
            None
        };
        let n = f64::from(self.frames.saturating_sub(1));
        if let Some(span) = rtp_span_s.filter(|s| *s > 0.0 && n > 0.0) {
            m.fps_rtp = Some((n / span) as f32);
        }
        let wall_span_s = ms1.saturating_sub(ms0) as f64 / 1000.0;
        if wall_span_s > 0.0 && n > 0.0 {
            m.fps_wall = Some((n / wall_span_s) as f32);
        }
        let window_s = end_ms.saturating_sub(ms0) as f64 / 1000.0;
        if window_s > 0.0 {
            m.bitrate_kbps = Some((self.bytes as f64 * 8.0 / 1000.0 / window_s).round() as u32);
            if let Some(span) = rtp_span_s {
                m.rtp_wall_ratio = Some((span.max(0.0) / window_s) as f32);
            }
        }
        if self.key_gaps > 0 && self.clock_rate > 0 {
            m.keyframe_interval_s =
                Some((self.key_span_ticks as f64 / rate / f64::from(self.key_gaps)) as f32);
        }
        m
    }
}

/// Why [`nal_types`] gave up on a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalError {
    /// A length prefix runs past the end of the frame.
    Truncated,
    /// A zero-length NAL unit.
    Empty,
}

impl std::fmt::Display for NalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NalError::Truncated => f.write_str("a NAL length runs past the end of the frame"),
            NalError::Empty => f.write_str("a zero-length NAL unit"),
        }
    }
}

impl std::error::Error for NalError {}

/// The first header byte of each NAL unit in a frame with 4-byte
/// big-endian length prefixes (retina's `FrameFormat::MP4`), at most
/// [`MAX_NALS_PER_FRAME`]. Never reads past `data`.
pub fn nal_headers(data: &[u8]) -> Result<heapless::Vec<u8, MAX_NALS_PER_FRAME>, NalError> {
    let mut out = heapless::Vec::new();
    let mut rest = data;
    while !rest.is_empty() && !out.is_full() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(NalError::Truncated);
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len == 0 {
            return Err(NalError::Empty);
        }
        let Some(nal) = tail.get(..len) else {
            return Err(NalError::Truncated);
        };
        // Cannot fail: the loop stops when full.
        let _ = out.push(nal[0]);
        rest = &tail[len..];
    }
    Ok(out)
}

/// H.265 NAL unit type from the first header byte.
pub fn h265_nal_type(header: u8) -> u8 {
    (header >> 1) & 0x3f
}

/// Whether an H.265 frame holds an IRAP picture (NAL types 16–23: BLA,
/// IDR, CRA). retina 0.4.21 flags only IDR as a random access point, so
/// open-GOP encoders (CRA keyframes, x265's default and many cameras)
/// would otherwise show one keyframe per probe.
pub fn h265_has_irap(data: &[u8]) -> Result<bool, NalError> {
    Ok(nal_headers(data)?
        .iter()
        .any(|h| (16..=23).contains(&h265_nal_type(*h))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: i64, fps: i64, key_every: i64) -> FrameSample {
        FrameSample {
            rtp_ticks: i * 90_000 / fps,
            arrival_ms: 100 + (i * 1000 / fps) as u64,
            bytes: 1000,
            keyframe: i % key_every == 0,
            loss: 0,
        }
    }

    #[test]
    fn healthy_25fps_gop_2s() {
        let mut m = Meter::new(90_000);
        for i in 0..200 {
            m.push(frame(i, 25, 50));
        }
        // 200 frames at 25 fps: last at 100 + 7960 ms; window ends at 8100.
        let r = m.finish(8100);
        assert_eq!(r.frames, Some(200));
        assert_eq!(r.keyframes, Some(4));
        assert_eq!(r.ttff_ms, Some(100));
        assert_eq!(r.ttfk_ms, Some(100));
        assert!((r.fps_rtp.expect("fps") - 25.0).abs() < 0.01, "{r:?}");
        assert!((r.fps_wall.expect("fps") - 25.0).abs() < 0.01, "{r:?}");
        assert!((r.keyframe_interval_s.expect("gop") - 2.0).abs() < 0.001);
        // 200 kB over 8 s = 200 kbit/s.
        assert_eq!(r.bitrate_kbps, Some(200));
        let ratio = r.rtp_wall_ratio.expect("ratio");
        assert!((0.99..=1.0).contains(&ratio), "{ratio}");
        assert_eq!(r.last_gap_ms, Some(40));
        assert_eq!(r.loss, Some(0));
    }

    #[test]
    fn frozen_timestamps_give_a_low_ratio() {
        let mut m = Meter::new(90_000);
        for i in 0..100 {
            m.push(FrameSample {
                rtp_ticks: 0,
                ..frame(i, 25, 1000)
            });
        }
        let r = m.finish(4100);
        assert_eq!(r.fps_rtp, None, "no RTP time passed");
        assert_eq!(r.rtp_wall_ratio, Some(0.0));
        assert!(r.fps_wall.is_some());
    }

    #[test]
    fn no_frames_only_counts() {
        let r = Meter::new(90_000).finish(5000);
        assert_eq!(r.frames, Some(0));
        assert_eq!((r.ttff_ms, r.fps_rtp, r.bitrate_kbps), (None, None, None));
    }

    #[test]
    fn loss_and_clock_zero_are_safe() {
        let mut m = Meter::new(0);
        m.push(FrameSample {
            loss: u16::MAX,
            ..frame(0, 25, 1)
        });
        m.push(frame(1, 25, 1));
        let r = m.finish(1000);
        assert_eq!(r.loss, Some(65_535));
        assert_eq!(
            (r.fps_rtp, r.rtp_wall_ratio, r.keyframe_interval_s),
            (None, None, None)
        );
    }

    #[test]
    fn nal_scanning() {
        // CRA (21 → header 0x2a), then a trailing slice (type 1).
        let data = [0, 0, 0, 2, 0x2a, 1, 0, 0, 0, 1, 0x02];
        assert_eq!(nal_headers(&data).expect("ok").as_slice(), &[0x2a, 0x02]);
        assert_eq!(h265_has_irap(&data), Ok(true));
        // IDR_W_RADL (19 → 0x26) is IRAP; TRAIL_R (1 → 0x02) is not.
        assert_eq!(h265_has_irap(&[0, 0, 0, 1, 0x26]), Ok(true));
        assert_eq!(h265_has_irap(&[0, 0, 0, 1, 0x02]), Ok(false));
        assert_eq!(h265_has_irap(&[0, 0, 0, 9, 0x26]), Err(NalError::Truncated));
        assert_eq!(h265_has_irap(&[0, 0, 0]), Err(NalError::Truncated));
        assert_eq!(h265_has_irap(&[0, 0, 0, 0]), Err(NalError::Empty));
        assert_eq!(h265_has_irap(&[]), Ok(false));
        // More NALs than the bound: looks at the first ones only.
        let many: Vec<u8> = (0..1000).flat_map(|_| [0, 0, 0, 1, 0x02]).collect();
        assert_eq!(nal_headers(&many).expect("ok").len(), MAX_NALS_PER_FRAME);
    }
}
