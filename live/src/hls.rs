//! Live view: one on-demand RTSP session per camera (retina, TCP
//! interleaved), remuxed without transcoding into fMP4 segments that
//! start at keyframes, served as an HLS playlist.
//!
//! [`Registry::open`] returns the camera's running session or starts
//! one, within the global and per-site limits (a [`LimitHit`] says which
//! in plain words). Every viewer's request touches the session; a session
//! not touched for `limits.idle_secs` stops and leaves the registry, so
//! however many viewers there are, the site's uplink carries one stream.
//!
//! Segments are cut at the first keyframe after [`TARGET_SEGMENT`]; the
//! last [`KEEP_SEGMENTS`] are kept in memory (a few hundred KB per
//! sub-stream). The RTSP credentials go to retina only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Camera, Config, Site};
use crate::fmp4::{self, Sample};

/// A segment is cut at the first keyframe after this much media.
pub const TARGET_SEGMENT: Duration = Duration::from_secs(1);
/// Segments kept per session (the playlist's window).
pub const KEEP_SEGMENTS: usize = 6;
/// A viewer counts while its player asked for the playlist this recently
/// (hls.js reloads a live playlist about once per segment).
pub const VIEWER_WINDOW: Duration = Duration::from_secs(10);
/// Most viewers tracked per session (the map stays bounded whatever
/// clients send).
const MAX_VIEWERS: usize = 1024;
/// Longest the RTSP session may take to start (DESCRIBE..PLAY) and any
/// frame may be late before the session is given up.
const RTSP_TIMEOUT: Duration = Duration::from_secs(10);

/// One media segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub seq: u64,
    /// Duration in seconds.
    pub duration: f64,
    /// `moof` + `mdat`.
    pub data: Bytes,
}

/// What viewers read of a session.
#[derive(Debug, Default)]
pub struct HlsState {
    /// The initialization segment, once the parameters are known.
    pub init: Option<Bytes>,
    /// RFC 6381 codec string, e.g. `avc1.42C01E`.
    pub codec: Option<String>,
    /// Picture size.
    pub size: Option<(u32, u32)>,
    /// The newest segments, oldest first.
    pub segments: VecDeque<Segment>,
    /// Why the session ended, if it failed.
    pub error: Option<String>,
    /// Whether the session task has ended.
    pub ended: bool,
}

/// A running session.
pub struct Session {
    /// Site id.
    pub site: String,
    /// Camera name.
    pub camera: String,
    /// Shared with the task.
    pub state: Mutex<HlsState>,
    /// Bumped on every new segment (and at the end).
    pub changed: watch::Sender<u64>,
    last_touch: Mutex<Instant>,
    /// Viewers (a key per player, see `http`) and their last playlist
    /// request: HLS has no connection per viewer to count.
    viewers: Mutex<HashMap<u64, Instant>>,
    /// Bytes of segments served to viewers.
    pub served_bytes: std::sync::atomic::AtomicU64,
}

impl Session {
    /// Marks a viewer's request (keeps the session open).
    pub fn touch(&self) {
        if let Ok(mut t) = self.last_touch.lock() {
            *t = Instant::now();
        }
    }

    /// Marks a viewer's playlist request.
    pub fn seen(&self, viewer: u64) {
        if let Ok(mut v) = self.viewers.lock() {
            v.retain(|_, t| t.elapsed() < VIEWER_WINDOW);
            if v.len() < MAX_VIEWERS || v.contains_key(&viewer) {
                v.insert(viewer, Instant::now());
            }
        }
    }

    /// Viewers who asked for the playlist within [`VIEWER_WINDOW`].
    pub fn viewers(&self) -> usize {
        self.viewers
            .lock()
            .map(|v| v.values().filter(|t| t.elapsed() < VIEWER_WINDOW).count())
            .unwrap_or(0)
    }

    fn idle_for(&self) -> Duration {
        self.last_touch
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// Waits until at least `n` segments exist, the session ended, or
    /// `wait` passed.
    pub async fn wait_segments(&self, n: usize, wait: Duration) {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let Ok(st) = self.state.lock() else { return };
                if st.segments.len() >= n || st.ended {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// The HLS playlist (`#EXT-X-VERSION:7`, fMP4 with `#EXT-X-MAP`).
    pub fn playlist(&self) -> Option<String> {
        let st = self.state.lock().ok()?;
        let first = st.segments.front()?;
        st.init.as_ref()?;
        let target = st
            .segments
            .iter()
            .map(|s| s.duration)
            .fold(1.0_f64, f64::max)
            .ceil() as u64;
        let mut p = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-MAP:URI=\"init.mp4\"\n",
            first.seq
        );
        for s in &st.segments {
            p.push_str(&format!("#EXTINF:{:.3},\nseg-{}.m4s\n", s.duration, s.seq));
        }
        Some(p)
    }
}

/// A refused session: which limit, in plain words.
#[derive(Debug, Clone)]
pub struct LimitHit(pub String);

/// The running sessions, keyed by (site, camera).
pub struct Registry {
    config: Arc<Config>,
    sessions: Mutex<HashMap<(String, String), Arc<Session>>>,
    cancel: CancellationToken,
    /// Sessions started since start (metrics).
    pub started: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// An empty registry; sessions stop when `cancel` is cancelled.
    pub fn new(config: Arc<Config>, cancel: CancellationToken) -> Arc<Registry> {
        Arc::new(Registry {
            config,
            sessions: Mutex::new(HashMap::new()),
            cancel,
            started: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The configured site and camera, if any.
    pub fn find(&self, site: &str, camera: &str) -> Option<(&Site, &Camera)> {
        let s = self.config.sites.iter().find(|s| s.id == site)?;
        let c = s.cameras.iter().find(|c| c.name == camera)?;
        Some((s, c))
    }

    /// Open sessions (all sites).
    pub fn open_count(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Viewers of all sessions (see [`Session::viewers`]).
    pub fn viewers(&self) -> usize {
        self.sessions
            .lock()
            .map(|m| m.values().map(|s| s.viewers()).sum())
            .unwrap_or(0)
    }

    /// The running session of a camera, without starting one.
    pub fn get(&self, site: &str, camera: &str) -> Option<Arc<Session>> {
        let m = self.sessions.lock().ok()?;
        m.get(&(site.to_owned(), camera.to_owned())).cloned()
    }

    /// The camera's session, started if needed within the limits.
    pub fn open(self: &Arc<Self>, site: &Site, camera: &Camera) -> Result<Arc<Session>, LimitHit> {
        let mut m = self
            .sessions
            .lock()
            .map_err(|_| LimitHit("internal error".to_owned()))?;
        let key = (site.id.clone(), camera.name.clone());
        if let Some(s) = m.get(&key) {
            s.touch();
            return Ok(s.clone());
        }
        if m.len() >= self.config.limits.sessions {
            return Err(LimitHit(format!(
                "the centre is at its limit of {} live streams at once; close another \
                 camera's view or try again in a minute",
                self.config.limits.sessions
            )));
        }
        let per_site = m.keys().filter(|(s, _)| *s == site.id).count();
        if per_site >= site.max_sessions {
            let open: Vec<&str> = m
                .keys()
                .filter(|(s, _)| *s == site.id)
                .map(|(_, c)| c.as_str())
                .collect();
            return Err(LimitHit(format!(
                "site {} is at its limit of {} live stream(s) at once (its uplink is small); \
                 open now: {}. Close one of those or wait until it is idle",
                site.id,
                site.max_sessions,
                open.join(", ")
            )));
        }
        let (tx, _) = watch::channel(0);
        let session = Arc::new(Session {
            site: site.id.clone(),
            camera: camera.name.clone(),
            state: Mutex::new(HlsState::default()),
            changed: tx,
            last_touch: Mutex::new(Instant::now()),
            viewers: Mutex::new(HashMap::new()),
            served_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        m.insert(key.clone(), session.clone());
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let registry = self.clone();
        let (site, camera) = (site.clone(), camera.clone());
        let s2 = session.clone();
        tokio::spawn(async move {
            tracing::info!(site = %site.id, camera = %camera.name, "Live session starting.");
            let idle = registry.config.limits.idle;
            let result = tokio::select! {
                biased;
                _ = registry.cancel.cancelled() => Ok(()),
                _ = idle_watch(&s2, idle) => {
                    tracing::info!(site = %site.id, camera = %camera.name,
                        idle_secs = idle.as_secs(), "Live session idle: closing.");
                    Ok(())
                }
                r = stream(&site, &camera, &s2) => r,
            };
            if let Err(e) = &result {
                tracing::warn!(site = %site.id, camera = %camera.name,
                    err = %format!("{e:#}"), "Live session failed.");
            }
            if let Ok(mut m) = registry.sessions.lock() {
                m.remove(&key);
            }
            if let Ok(mut st) = s2.state.lock() {
                st.ended = true;
                if let Err(e) = result {
                    st.error = Some(format!("{e:#}"));
                }
            }
            s2.changed.send_modify(|v| *v += 1);
        });
        Ok(session)
    }
}

async fn idle_watch(s: &Session, idle: Duration) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if s.idle_for() >= idle {
            return;
        }
    }
}

/// Runs the RTSP session and feeds segments until it fails.
async fn stream(site: &Site, camera: &Camera, s: &Session) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use retina::client::{PlayOptions, SessionGroup, SessionOptions, SetupOptions, Transport};
    use retina::codec::{CodecItem, FrameFormat, ParametersRef};
    let group = Arc::new(SessionGroup::default());
    let creds = site
        .credentials
        .as_ref()
        .map(|c| retina::client::Credentials {
            username: c.username.clone(),
            password: c.password.expose().to_owned(),
        });
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("sitewatch-live/{}", env!("CARGO_PKG_VERSION")))
        .session_group(group.clone());
    let mut described = tokio::time::timeout(
        RTSP_TIMEOUT,
        retina::client::Session::describe(camera.url.clone(), opts),
    )
    .await
    .context("no RTSP answer (DESCRIBE)")?
    .map_err(|e| anyhow::anyhow!("DESCRIBE: {}", rtsp_words(&e)))?;
    let vi = described
        .streams()
        .iter()
        .position(|st| st.media() == "video")
        .context("the camera offers no video stream")?;
    let h265 = described.streams()[vi].encoding_name() == "h265";
    tokio::time::timeout(
        RTSP_TIMEOUT,
        described.setup(
            vi,
            SetupOptions::default()
                .transport(Transport::Tcp(Default::default()))
                .frame_format(FrameFormat::MP4),
        ),
    )
    .await
    .context("no RTSP answer (SETUP)")?
    .map_err(|e| anyhow::anyhow!("SETUP: {}", rtsp_words(&e)))?;
    let playing = tokio::time::timeout(
        RTSP_TIMEOUT,
        // No timestamp enforcement: with B-frames (H.265 from x265, many
        // cameras' main streams) presentation times go backwards in
        // decode order.
        described.play(PlayOptions::default()),
    )
    .await
    .context("no RTSP answer (PLAY)")?
    .map_err(|e| anyhow::anyhow!("PLAY: {}", rtsp_words(&e)))?;
    let mut demuxed = playing
        .demuxed()
        .map_err(|e| anyhow::anyhow!("{}", rtsp_words(&e)))?;

    let mut segmenter = Segmenter::new(90_000);
    loop {
        let item = tokio::time::timeout(RTSP_TIMEOUT, demuxed.next())
            .await
            .context("no frame from the camera for 10 s")?;
        let Some(item) = item else {
            anyhow::bail!("the camera ended the stream");
        };
        let item = item.map_err(|e| anyhow::anyhow!("{}", rtsp_words(&e)))?;
        let CodecItem::VideoFrame(f) = item else {
            continue;
        };
        if f.has_new_parameters() || s.state.lock().map(|st| st.init.is_none()).unwrap_or(false) {
            if let Some(ParametersRef::Video(p)) = demuxed.streams()[vi].parameters() {
                let entry = p
                    .mp4_sample_entry()
                    .build()
                    .map_err(|e| anyhow::anyhow!("sample entry: {e}"))?;
                let (w, h) = p.pixel_dimensions();
                segmenter.set_clock(f.timestamp().clock_rate().get());
                let init = fmp4::init_segment(&entry, w, h, f.timestamp().clock_rate().get());
                if let Ok(mut st) = s.state.lock() {
                    if st.init.is_some() && f.has_new_parameters() {
                        // New parameters: viewers must reload; start over.
                        st.segments.clear();
                    }
                    st.init = Some(Bytes::from(init));
                    st.codec = Some(p.rfc6381_codec().to_owned());
                    st.size = Some((w, h));
                }
            }
        }
        let pts = f.timestamp().elapsed();
        let key = f.is_random_access_point() || (h265 && is_h265_irap(f.data()));
        if let Some(seg) = segmenter.push(pts, key, Bytes::from(f.into_data())) {
            if let Ok(mut st) = s.state.lock() {
                st.segments.push_back(seg);
                while st.segments.len() > KEEP_SEGMENTS {
                    st.segments.pop_front();
                }
            }
            s.changed.send_modify(|v| *v += 1);
        }
    }
}

/// Cuts access units (decode order, presentation times) into media
/// segments that each start at a keyframe: pure, so that the fuzz target
/// `live_segmenter` and unit tests drive it without a camera.
///
/// Frames before the first keyframe are dropped (a segment must start
/// with one); a GOP longer than [`fmp4::MAX_SAMPLES`] is dropped whole
/// and the next keyframe starts over, so memory stays bounded whatever
/// the camera sends. Timestamps are arbitrary `i64`s: all arithmetic
/// saturates.
#[derive(Debug)]
pub struct Segmenter {
    /// The current GOP in decode order: (presentation ts, keyframe, data).
    gop: Vec<(i64, bool, Bytes)>,
    seq: u64,
    clock: u32,
}

impl Segmenter {
    /// A segmenter for a stream with `clock` timestamp units per second
    /// (90 000 for RTP video; 0 is taken as 1).
    pub fn new(clock: u32) -> Segmenter {
        Segmenter {
            gop: Vec::new(),
            seq: 0,
            clock: clock.max(1),
        }
    }

    /// The stream's clock rate changed (new parameters).
    pub fn set_clock(&mut self, clock: u32) {
        self.clock = clock.max(1);
    }

    /// Frames held for the next segment.
    pub fn pending(&self) -> usize {
        self.gop.len()
    }

    /// Feeds one access unit; returns the finished segment when this
    /// keyframe closes one of at least [`TARGET_SEGMENT`].
    pub fn push(&mut self, pts: i64, key: bool, data: Bytes) -> Option<Segment> {
        if self.gop.is_empty() && !key {
            return None; // wait for the first keyframe
        }
        if self.gop.len() >= fmp4::MAX_SAMPLES {
            // A GOP longer than a segment may hold: drop it, wait for the
            // next keyframe.
            self.gop.clear();
            return None;
        }
        let mut out = None;
        if let (true, Some(first)) = (key, self.gop.first()) {
            let span = i128::from(pts) - i128::from(first.0);
            if span * 1000 >= TARGET_SEGMENT.as_millis() as i128 * i128::from(self.clock) {
                let (segment, duration) = segment_of(&self.gop, pts, self.seq);
                self.gop.clear();
                out = Some(Segment {
                    seq: self.seq,
                    duration: duration as f64 / f64::from(self.clock),
                    data: Bytes::from(segment),
                });
                self.seq += 1;
            }
        }
        self.gop.push((pts, key, data));
        out
    }
}

/// One GOP (decode order, presentation times) as a media segment; `next`
/// is the next keyframe's time. Decode times are the presentation times
/// sorted (frames with B-frames arrive out of presentation order), each
/// sample's composition offset the difference. Returns the segment and
/// its duration in timescale units.
fn segment_of(gop: &[(i64, bool, Bytes)], next: i64, seq: u64) -> (Vec<u8>, i64) {
    let mut dts: Vec<i64> = gop.iter().map(|g| g.0).collect();
    dts.sort_unstable();
    let first = dts.first().copied().unwrap_or(0);
    let last = dts.last().copied().unwrap_or(0);
    let samples: Vec<Sample> = gop
        .iter()
        .zip(&dts)
        .enumerate()
        .map(|(i, ((pts, key, data), &dt))| {
            let end = dts
                .get(i + 1)
                .copied()
                .unwrap_or(next.max(dt.saturating_add(1)));
            Sample {
                duration: u32::try_from(end.saturating_sub(dt).clamp(1, i64::from(u32::MAX)))
                    .unwrap_or(1),
                composition_offset: i32::try_from(pts.saturating_sub(dt)).unwrap_or(0),
                keyframe: *key,
                data: data.clone(),
            }
        })
        .collect();
    let base = u64::try_from(first).unwrap_or(0);
    let number = u32::try_from(seq % u64::from(u32::MAX)).unwrap_or(0) + 1;
    (
        fmp4::media_segment(number, base, &samples),
        next.max(last).saturating_sub(first).max(1),
    )
}

/// H.265 CRA/BLA/IDR (IRAP, NAL types 16-23) in length-prefixed NALs:
/// retina 0.4.21 flags only IDR pictures as random access points.
pub fn is_h265_irap(data: &[u8]) -> bool {
    let mut i = 0;
    while i + 5 <= data.len() {
        let len = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
        let t = (data[i + 4] >> 1) & 0x3f;
        if (16..=23).contains(&t) && data[i + 4] & 0x80 == 0 {
            return true;
        }
        i = i.saturating_add(4).saturating_add(len);
    }
    false
}

/// retina's error in words that never hold the password (retina does
/// not print credentials; the URL has none).
fn rtsp_words(e: &retina::Error) -> String {
    match e.status_code() {
        Some(401) => "401: the NVR refused the user name or password".to_owned(),
        Some(404) => "404: no stream at that path".to_owned(),
        Some(c) => format!("RTSP status {c}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One length-prefixed NAL of H.265 type `t` (layer 0, tid 1).
    fn h265_nal(t: u8) -> Vec<u8> {
        let mut v = 3u32.to_be_bytes().to_vec();
        v.extend_from_slice(&[t << 1, 1, 0xAF]);
        v
    }

    #[test]
    fn segments_start_at_keyframes_and_span_at_least_the_target() {
        let mut s = Segmenter::new(90_000);
        // Frames before the first keyframe are dropped.
        assert!(s.push(0, false, Bytes::from_static(b"x")).is_none());
        assert_eq!(s.pending(), 0);
        let mut out = Vec::new();
        // 25 fps, a keyframe every 12 frames (0.48 s): segments close at
        // the first keyframe at least 1 s after their start (3 GOPs).
        for i in 0..100i64 {
            if let Some(seg) = s.push(3600 * (i + 1), i % 12 == 0, Bytes::from_static(b"f")) {
                out.push(seg);
            }
        }
        assert!(out.len() >= 2);
        for (n, seg) in out.iter().enumerate() {
            assert_eq!(seg.seq, n as u64);
            assert!((seg.duration - 1.44).abs() < 1e-9, "{}", seg.duration);
            // moof first; its trun's first sample flags say "sync".
            assert_eq!(&seg.data[4..8], b"moof");
        }
    }

    #[test]
    fn a_gop_too_long_is_dropped_and_timestamps_saturate() {
        let mut s = Segmenter::new(0);
        assert!(s.push(i64::MIN, true, Bytes::new()).is_none());
        for _ in 0..fmp4::MAX_SAMPLES + 5 {
            assert!(s.push(i64::MAX, false, Bytes::new()).is_none());
        }
        assert!(s.pending() <= fmp4::MAX_SAMPLES);
        // Extreme jumps still give a segment without overflow.
        assert!(s.push(i64::MIN, true, Bytes::new()).is_none());
        let seg = s.push(i64::MAX, true, Bytes::new()).expect("segment");
        assert!(seg.duration > 0.0);
    }

    #[test]
    fn h265_cra_and_idr_are_keyframes_other_types_not() {
        // CRA (21), IDR_W_RADL (19), BLA_W_LP (16): IRAP, open GOP too.
        for t in [16, 19, 20, 21] {
            assert!(is_h265_irap(&h265_nal(t)), "type {t}");
        }
        // TRAIL_R (1), RASL_N (8), VPS (32), SPS (33), PPS (34): not.
        for t in [1, 8, 32, 33, 34] {
            assert!(!is_h265_irap(&h265_nal(t)), "type {t}");
        }
        // Parameter sets first, then a CRA in the same access unit.
        let mut au = h265_nal(32);
        au.extend(h265_nal(33));
        au.extend(h265_nal(34));
        au.extend(h265_nal(21));
        assert!(is_h265_irap(&au));
    }
}
