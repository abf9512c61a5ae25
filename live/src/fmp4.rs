//! Fragmented MP4 (CMAF) boxes for one video track, written by hand as
//! Moonfire NVR and retina's `examples/client/src/mp4.rs` do: an
//! initialization segment (`ftyp` + `moov` with the codec's sample entry
//! from retina, `avc1`/`avcC` or `hvc1`/`hvcC`) and media segments
//! (`moof` + `mdat`), each starting at a keyframe.
//!
//! Pure: bytes in, bytes out; no I/O, no clock. Sizes are bounded by the
//! caller (a segment holds at most [`MAX_SAMPLES`] samples).

/// Most samples in one media segment (a 10 s GOP at 60 fps is 600).
pub const MAX_SAMPLES: usize = 2048;

/// One video access unit, length-prefixed NALs (retina's
/// `FrameFormat::MP4`).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Duration in timescale units (90 kHz for RTP video).
    pub duration: u32,
    /// Presentation time minus decode time (B-frames), timescale units.
    pub composition_offset: i32,
    /// Whether it is a random access point (keyframe).
    pub keyframe: bool,
    /// The access unit.
    pub data: bytes::Bytes,
}

fn put_box(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    body(out);
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    put_box(out, kind, |o| {
        o.push(version);
        o.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(o);
    });
}

fn u16be(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u32be(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u64be(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_be_bytes());
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The initialization segment: `ftyp` and `moov` for track 1.
/// `sample_entry` is the whole `avc1`/`hvc1` box (retina's
/// `VideoParameters::mp4_sample_entry().build()`).
pub fn init_segment(sample_entry: &[u8], width: u32, height: u32, timescale: u32) -> Vec<u8> {
    let mut o = Vec::with_capacity(1024 + sample_entry.len());
    put_box(&mut o, b"ftyp", |o| {
        o.extend_from_slice(b"iso6");
        u32be(o, 0);
        for b in [b"iso6", b"cmfc", b"mp41"] {
            o.extend_from_slice(b);
        }
    });
    put_box(&mut o, b"moov", |o| {
        full_box(o, b"mvhd", 0, 0, |o| {
            u32be(o, 0); // creation
            u32be(o, 0); // modification
            u32be(o, timescale);
            u32be(o, 0); // duration: unknown (fragmented)
            u32be(o, 0x0001_0000); // rate 1.0
            u16be(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]);
            for m in MATRIX {
                u32be(o, m);
            }
            o.extend_from_slice(&[0; 24]);
            u32be(o, 2); // next track id
        });
        put_box(o, b"trak", |o| {
            full_box(o, b"tkhd", 0, 0x7, |o| {
                u32be(o, 0);
                u32be(o, 0);
                u32be(o, 1); // track id
                u32be(o, 0);
                u32be(o, 0); // duration
                o.extend_from_slice(&[0; 8]);
                u16be(o, 0); // layer
                u16be(o, 0); // alternate group
                u16be(o, 0); // volume
                u16be(o, 0);
                for m in MATRIX {
                    u32be(o, m);
                }
                u32be(o, width << 16);
                u32be(o, height << 16);
            });
            put_box(o, b"mdia", |o| {
                full_box(o, b"mdhd", 0, 0, |o| {
                    u32be(o, 0);
                    u32be(o, 0);
                    u32be(o, timescale);
                    u32be(o, 0);
                    u16be(o, 0x55c4); // language "und"
                    u16be(o, 0);
                });
                full_box(o, b"hdlr", 0, 0, |o| {
                    u32be(o, 0);
                    o.extend_from_slice(b"vide");
                    o.extend_from_slice(&[0; 12]);
                    o.extend_from_slice(b"sitewatch-live\0");
                });
                put_box(o, b"minf", |o| {
                    full_box(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                    put_box(o, b"dinf", |o| {
                        full_box(o, b"dref", 0, 0, |o| {
                            u32be(o, 1);
                            full_box(o, b"url ", 0, 1, |_| {});
                        });
                    });
                    put_box(o, b"stbl", |o| {
                        full_box(o, b"stsd", 0, 0, |o| {
                            u32be(o, 1);
                            o.extend_from_slice(sample_entry);
                        });
                        for kind in [b"stts", b"stsc", b"stco"] {
                            full_box(o, kind, 0, 0, |o| u32be(o, 0));
                        }
                        full_box(o, b"stsz", 0, 0, |o| {
                            u32be(o, 0);
                            u32be(o, 0);
                        });
                    });
                });
            });
        });
        put_box(o, b"mvex", |o| {
            full_box(o, b"trex", 0, 0, |o| {
                u32be(o, 1); // track id
                u32be(o, 1); // sample description index
                u32be(o, 0);
                u32be(o, 0);
                u32be(o, 0);
            });
        });
    });
    o
}

/// `sample_flags` of a keyframe: depends on no other sample.
const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_flags` of another frame: depends on others, not a sync sample.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// One media segment (`moof` + `mdat`) with sequence number `seq` whose
/// first sample decodes at `base_decode_time` (timescale units).
/// `samples` must not be empty; at most [`MAX_SAMPLES`] are written.
pub fn media_segment(seq: u32, base_decode_time: u64, samples: &[Sample]) -> Vec<u8> {
    let samples = &samples[..samples.len().min(MAX_SAMPLES)];
    let payload: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut o = Vec::with_capacity(256 + samples.len() * 12 + payload);
    let mut data_offset_at = 0;
    put_box(&mut o, b"moof", |o| {
        full_box(o, b"mfhd", 0, 0, |o| u32be(o, seq));
        put_box(o, b"traf", |o| {
            // default-base-is-moof
            full_box(o, b"tfhd", 0, 0x02_0000, |o| u32be(o, 1));
            full_box(o, b"tfdt", 1, 0, |o| u64be(o, base_decode_time));
            // Version 1 (signed composition offsets); data-offset, sample
            // duration, size, flags and composition offset present.
            full_box(
                o,
                b"trun",
                1,
                0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800,
                |o| {
                    u32be(o, u32::try_from(samples.len()).unwrap_or(0));
                    data_offset_at = o.len();
                    u32be(o, 0);
                    for s in samples {
                        u32be(o, s.duration);
                        u32be(o, u32::try_from(s.data.len()).unwrap_or(u32::MAX));
                        u32be(
                            o,
                            if s.keyframe {
                                FLAGS_SYNC
                            } else {
                                FLAGS_NON_SYNC
                            },
                        );
                        o.extend_from_slice(&s.composition_offset.to_be_bytes());
                    }
                },
            );
        });
    });
    // The data offset is from the start of moof to the first sample byte.
    let offset = u32::try_from(o.len() + 8).unwrap_or(u32::MAX);
    o[data_offset_at..data_offset_at + 4].copy_from_slice(&offset.to_be_bytes());
    put_box(&mut o, b"mdat", |o| {
        for s in samples {
            o.extend_from_slice(&s.data);
        }
    });
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks top-level boxes: (type, size); fails on a size that does not fit.
    fn boxes(b: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= b.len() {
            let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
            assert!(len >= 8 && i + len <= b.len(), "box at {i} len {len}");
            out.push((String::from_utf8_lossy(&b[i + 4..i + 8]).into_owned(), len));
            i += len;
        }
        assert_eq!(i, b.len());
        out
    }

    #[test]
    fn init_has_ftyp_and_moov() {
        let entry = {
            let mut e = Vec::new();
            put_box(&mut e, b"avc1", |o| o.extend_from_slice(&[0; 78]));
            e
        };
        let init = init_segment(&entry, 640, 360, 90_000);
        let b: Vec<String> = boxes(&init).into_iter().map(|(k, _)| k).collect();
        assert_eq!(b, ["ftyp", "moov"]);
    }

    #[test]
    fn segment_data_offset_points_at_mdat_payload() {
        let s = [
            Sample {
                duration: 3600,
                composition_offset: 0,
                keyframe: true,
                data: bytes::Bytes::from_static(b"\x00\x00\x00\x01\x65"),
            },
            Sample {
                duration: 3600,
                composition_offset: 0,
                keyframe: false,
                data: bytes::Bytes::from_static(b"\x00\x00\x00\x01\x41"),
            },
        ];
        let seg = media_segment(7, 90_000, &s);
        let b = boxes(&seg);
        assert_eq!(b[0].0, "moof");
        assert_eq!(b[1].0, "mdat");
        let moof_len = b[0].1;
        // trun's data_offset: search for it after "trun" + version/flags + count.
        let at = seg.windows(4).position(|w| w == b"trun").expect("trun") + 4 + 4 + 4;
        let off = u32::from_be_bytes([seg[at], seg[at + 1], seg[at + 2], seg[at + 3]]) as usize;
        assert_eq!(off, moof_len + 8);
        assert_eq!(&seg[off..off + 5], b"\x00\x00\x00\x01\x65");
    }
}
