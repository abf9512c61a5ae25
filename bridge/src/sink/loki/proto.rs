//! Loki's push messages, written by hand for `prost` (no `protoc` at build
//! time), and the request body encoding.
//!
//! Field numbers and types follow Loki's `pkg/push/push.proto`:
//!
//! ```text
//! message PushRequest      { repeated StreamAdapter streams = 1; string format = 2; }
//! message StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
//! message EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
//!                            repeated LabelPairAdapter structuredMetadata = 3;
//!                            repeated LabelPairAdapter parsed = 4; }
//! message LabelPairAdapter { string name = 1; string value = 2; }
//! google.protobuf.Timestamp { int64 seconds = 1; int32 nanos = 2; }
//! ```
//!
//! `format` and `hash` are left empty (Loki fills them in itself), and
//! `parsed` is never sent ("shouldn't be used by clients" in push.proto).
//!
//! The body is the encoded `PushRequest` compressed with snappy's *block*
//! format (not the framed stream format): Loki reads it with
//! `util.ParseProtoReader(..., util.RawSnappy)`, i.e. `snappy.Decode`
//! (`pkg/loghttp/push/push.go`, `pkg/util/http.go`).

use prost::Message as _;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// One entry per label set.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
    /// Ingestion format (`loki` or `otlp`); set by Loki, left empty.
    #[prost(string, tag = "2")]
    pub format: String,
}

/// `logproto.StreamAdapter`: one stream (label set) and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// Label set in Prometheus text form, e.g. `{job="sitewatch", site="a"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// Entries of the stream.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Hash of the labels; computed by Loki, left 0.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: one log line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    /// When the line was logged.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Per-line key/value pairs stored beside the line (not indexed).
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
    /// Query-side only; never sent.
    #[prost(message, repeated, tag = "4")]
    pub parsed: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LabelPairAdapter {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0..=999_999_999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// From nanoseconds since the Unix epoch (not before 1970).
    pub fn from_unix_nanos(ns: u64) -> Timestamp {
        Timestamp {
            seconds: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
            // < 1e9, fits.
            nanos: i32::try_from(ns % 1_000_000_000).unwrap_or(0),
        }
    }
}

/// Encodes `req` and compresses it with snappy's block format: the body
/// of `POST /loki/api/v1/push` with `Content-Type: application/x-protobuf`.
pub fn encode_body(req: &PushRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{job="sitewatch"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1_764_284_441,
                        nanos: 250_000_000,
                    }),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "ip".into(),
                        value: "10.0.0.1".into(),
                    }],
                    parsed: vec![],
                }],
                hash: 0,
            }],
            format: String::new(),
        }
    }

    #[test]
    fn round_trips_through_raw_snappy() {
        let req = sample();
        let body = encode_body(&req).expect("encode");
        // Block format: starts with the uncompressed length as a varint,
        // never with the framed format's stream identifier (0xff ...).
        assert_ne!(body[0], 0xff);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("raw snappy");
        assert_eq!(PushRequest::decode(raw.as_slice()).expect("decode"), req);
    }

    /// The exact protobuf bytes of a tiny request, worked out by hand from
    /// push.proto's field numbers and wire types.
    #[test]
    fn field_numbers_match_push_proto() {
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: "{a=\"b\"}".into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1,
                        nanos: 2,
                    }),
                    line: "x".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "k".into(),
                        value: "v".into(),
                    }],
                    parsed: vec![],
                }],
                hash: 0,
            }],
            format: String::new(),
        };
        let entry: &[u8] = &[
            0x0a, 0x04, 0x08, 0x01, 0x10, 0x02, // timestamp (1): seconds 1, nanos 2
            0x12, 0x01, b'x', // line (2)
            0x1a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', // structuredMetadata (3)
        ];
        let mut stream = vec![0x0a, 0x07];
        stream.extend_from_slice(b"{a=\"b\"}");
        stream.push(0x12);
        stream.push(u8::try_from(entry.len()).expect("small"));
        stream.extend_from_slice(entry);
        let mut want = vec![0x0a, u8::try_from(stream.len()).expect("small")];
        want.extend_from_slice(&stream);
        assert_eq!(req.encode_to_vec(), want);
    }

    #[test]
    fn timestamp_from_nanos() {
        let t = Timestamp::from_unix_nanos(1_764_284_441_250_000_123);
        assert_eq!(t.seconds, 1_764_284_441);
        assert_eq!(t.nanos, 250_000_123);
    }
}
