//! Golden vectors: the agent-side encoder must produce the stored bytes, and
//! the bridge-side decoder must read them back as the same values.

use sitewatch_wire::golden::{self, INVALID, VALID};
use sitewatch_wire::payload::*;
use sitewatch_wire::{decode, encode, Message};
use std::path::PathBuf;

const SITE: &str = "lokasi1";
const BOOT: &str = "9f2c4e1a7b3d5608";
const VERSION: &str = "0.1.0";

fn header(seq: u64, ts: u64) -> Header<'static> {
    Header {
        site: SITE,
        boot: BOOT,
        seq,
        ts,
    }
}

fn heartbeat() -> HeartbeatOut<'static> {
    let mut hb = HeartbeatOut::new(header(2, 1_764_284_430_000), VERSION, 30);
    hb.uptime_secs = 86_400;
    hb.agent_uptime_secs = 30;
    hb.load = [0.25, 0.5, 1.125];
    hb.mem_total_bytes = 268_435_456;
    hb.mem_available_bytes = 134_217_728;
    hb.agent_rss_bytes = 3_145_728;
    hb.counters = AgentCounters {
        published: 2,
        acked: 1,
        reconnects: 0,
        connect_errors: 1,
        dropped: 0,
        disk_errors: 1,
        syslog_received: 3,
        syslog_rfc3164: 2,
        syslog_vendor: 1,
        ..AgentCounters::default()
    };
    hb
}

const MOUNTS: [MountOut<'static>; 3] = [
    MountOut {
        path: "/srv/recordings",
        fs_type: "ext4",
        total_bytes: 3_936_900_000_000,
        used_bytes: 3_700_000_000_000,
        avail_bytes: 36_900_000_000,
        used_pct: 99.01,
        inodes_total: 244_195_328,
        inodes_free: 244_000_000,
        read_only: false,
        error: None,
    },
    MountOut {
        path: "/tmp",
        fs_type: "tmpfs",
        total_bytes: 62_914_560,
        used_bytes: 1_048_576,
        avail_bytes: 61_865_984,
        used_pct: 1.67,
        inodes_total: 15_360,
        inodes_free: 15_300,
        read_only: false,
        error: None,
    },
    MountOut {
        path: "/mnt/usb \"backup\"",
        fs_type: "",
        total_bytes: 0,
        used_bytes: 0,
        avail_bytes: 0,
        used_pct: 0.0,
        inodes_total: 0,
        inodes_free: 0,
        read_only: false,
        error: Some("not_mounted"),
    },
];

const LOG_RECORDS: [LogRecordOut<'static>; 2] = [
    LogRecordOut {
        ts: Some(1_764_284_441_250),
        rx: 1_764_284_441_300,
        ip: "192.168.88.1",
        host: "gw-lokasi1",
        app: "system,info,account",
        procid: None,
        msgid: None,
        facility: 3,
        severity: 6,
        format: LogFormat::Rfc3164,
        msg: "user admin logged in from 192.168.88.10 via winbox",
        sd: None,
        truncated: false,
    },
    LogRecordOut {
        ts: Some(1_764_284_442_000),
        rx: 1_764_284_442_010,
        ip: "192.168.1.64",
        host: "nvr-1",
        app: "hikvision",
        procid: Some("-"),
        msgid: Some("ALARM"),
        facility: 16,
        severity: 4,
        format: LogFormat::Rfc5424,
        msg: "Video loss on channel 3 \"gate\"\tcam",
        sd: Some("[meta channel=\"3\"]"),
        truncated: true,
    },
];

/// Encodes the value each valid vector was made from.
fn encode_case(file: &str, buf: &mut [u8]) -> usize {
    let r = match file {
        "status-online.json" => encode(
            &StatusOut::new(
                header(1, 1_764_284_400_000),
                State::Online,
                None,
                1,
                VERSION,
                30,
            ),
            buf,
        ),
        "status-offline-shutdown.json" => encode(
            &StatusOut::new(
                header(4, 1_764_284_460_000),
                State::Offline,
                Some(OfflineReason::Shutdown),
                1,
                VERSION,
                30,
            ),
            buf,
        ),
        "status-offline-lost.json" => encode(
            &StatusOut::new(
                header(0, 1_764_284_400_000),
                State::Offline,
                Some(OfflineReason::Lost),
                1,
                VERSION,
                30,
            ),
            buf,
        ),
        "heartbeat.json" => encode(&heartbeat(), buf),
        "disk.json" => encode(&DiskOut::new(header(3, 1_764_284_431_000), &MOUNTS), buf),
        "log.json" => encode(
            &LogOut::new(header(5, 1_764_284_442_100), &LOG_RECORDS),
            buf,
        ),
        other => panic!("no encoder case for {other}"),
    };
    r.expect("encode")
}

fn vector_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(file)
}

#[test]
fn encoder_produces_golden_bytes() {
    let bless = std::env::var_os("SITEWATCH_BLESS").is_some();
    for v in VALID {
        let mut buf = vec![0u8; LOG_BUF_LEN];
        let n = encode_case(v.file, &mut buf);
        let got = &buf[..n];
        if bless {
            std::fs::write(vector_path(v.file), got).expect("write vector");
            continue;
        }
        assert_eq!(
            std::str::from_utf8(got).expect("utf8"),
            std::str::from_utf8(v.payload).expect("utf8"),
            "encoder output differs from wire/vectors/{}",
            v.file
        );
    }
}

#[test]
fn decoder_reads_golden_values() {
    for v in VALID {
        let m = decode(v.topic, v.payload).unwrap_or_else(|e| panic!("{}: {e}", v.file));
        assert_eq!(m.identity().0, SITE);
        assert_eq!(m.identity().1, BOOT);
        match (v.file, m) {
            ("status-online.json", Message::Status(s)) => {
                assert_eq!(s.state, State::Online);
                assert_eq!(s.reason, None);
                assert_eq!((s.seq, s.session, s.heartbeat_secs), (1, 1, 30));
                assert_eq!(s.agent_version, VERSION);
            }
            ("status-offline-shutdown.json", Message::Status(s)) => {
                assert_eq!(s.state, State::Offline);
                assert_eq!(s.reason, Some(OfflineReason::Shutdown));
                assert_eq!(s.seq, 4);
            }
            ("status-offline-lost.json", Message::Status(s)) => {
                assert_eq!(s.reason, Some(OfflineReason::Lost));
                assert_eq!(s.seq, 0);
            }
            ("heartbeat.json", Message::Heartbeat(h)) => {
                let want = heartbeat();
                assert_eq!(h.seq, want.seq);
                assert_eq!(h.ts, want.ts);
                assert_eq!(h.load, want.load);
                assert_eq!(h.uptime_secs, want.uptime_secs);
                assert_eq!(h.agent_uptime_secs, want.agent_uptime_secs);
                assert_eq!(h.mem_total_bytes, want.mem_total_bytes);
                assert_eq!(h.mem_available_bytes, want.mem_available_bytes);
                assert_eq!(h.agent_rss_bytes, want.agent_rss_bytes);
                assert_eq!(h.counters.get("published"), Some(&2));
                assert_eq!(h.counters.get("connect_errors"), Some(&1));
                assert_eq!(h.counters.get("syslog_vendor"), Some(&1));
                assert_eq!(h.counters.len(), 30);
            }
            ("disk.json", Message::Disk(d)) => {
                assert_eq!(d.mounts.len(), MOUNTS.len());
                for (got, want) in d.mounts.iter().zip(MOUNTS.iter()) {
                    assert_eq!(got.path, want.path);
                    assert_eq!(got.fs_type, want.fs_type);
                    assert_eq!(got.total_bytes, want.total_bytes);
                    assert_eq!(got.used_bytes, want.used_bytes);
                    assert_eq!(got.avail_bytes, want.avail_bytes);
                    assert_eq!(got.used_pct, want.used_pct);
                    assert_eq!(got.inodes_total, want.inodes_total);
                    assert_eq!(got.inodes_free, want.inodes_free);
                    assert_eq!(got.error.as_deref(), want.error);
                }
            }
            ("log.json", Message::Log(l)) => {
                assert_eq!(l.records.len(), LOG_RECORDS.len());
                for (got, want) in l.records.iter().zip(LOG_RECORDS.iter()) {
                    assert_eq!(got.ts, want.ts);
                    assert_eq!(got.rx, want.rx);
                    assert_eq!(got.ip, want.ip);
                    assert_eq!(got.host, want.host);
                    assert_eq!(got.app, want.app);
                    assert_eq!(got.procid.as_deref(), want.procid);
                    assert_eq!(got.msgid.as_deref(), want.msgid);
                    assert_eq!((got.facility, got.severity), (want.facility, want.severity));
                    assert_eq!(got.format, want.format.as_str());
                    assert_eq!(got.msg, want.msg);
                    assert_eq!(got.sd.as_deref(), want.sd);
                    assert_eq!(got.truncated, want.truncated);
                }
            }
            (f, m) => panic!("{f} decoded as unexpected {:?}", m.kind()),
        }
    }
}

#[test]
fn decoder_rejects_invalid_vectors_with_their_reason() {
    for v in INVALID {
        match decode(v.topic, v.payload) {
            Ok(m) => panic!("{} was accepted as {:?}", v.file, m.kind()),
            Err(e) => assert_eq!(e.reason(), v.reason, "{}: {e}", v.file),
        }
    }
    let (topic, big) = golden::too_large();
    let e = decode(topic, &big).expect_err("too large accepted");
    assert_eq!(e.reason(), "too_large");
}

#[test]
fn every_reason_has_a_vector() {
    for reason in sitewatch_wire::DecodeError::REASONS {
        let covered = reason == "too_large" || INVALID.iter().any(|v| v.reason == reason);
        assert!(covered, "no invalid vector for reason {reason}");
    }
}

#[test]
fn full_disk_message_fits_its_buffer() {
    // Worst case: MAX_MOUNTS entries with maximum-length paths of characters
    // that need escaping, plus the longest error code.
    let path = "\"".repeat(MAX_PATH_LEN / 2);
    let mounts: Vec<MountOut> = (0..MAX_MOUNTS)
        .map(|_| MountOut {
            path: &path,
            fs_type: "fuse.sshfs-longname",
            total_bytes: u64::MAX,
            used_bytes: u64::MAX,
            avail_bytes: u64::MAX,
            used_pct: 99.999_99,
            inodes_total: u64::MAX,
            inodes_free: u64::MAX,
            read_only: true,
            error: Some("statvfs_failed"),
        })
        .collect();
    let site = "s".repeat(63);
    let h = Header {
        site: &site,
        boot: BOOT,
        seq: u64::MAX,
        ts: u64::MAX,
    };
    let mut buf = [0u8; DISK_BUF_LEN];
    let n = encode(&DiskOut::new(h, &mounts), &mut buf).expect("fits");
    assert!(n <= DISK_BUF_LEN);
}

#[test]
fn encode_reports_a_small_buffer() {
    let mut buf = [0u8; 16];
    let e = encode(&heartbeat(), &mut buf).expect_err("must not fit");
    assert_eq!(e, sitewatch_wire::EncodeError::BufferFull);
}

#[test]
fn every_control_character_round_trips() {
    // Syslog lines carry arbitrary bytes; the heap-free encoder must escape
    // every control character so the bridge's decoder reads the text back.
    let text: String = (0u8..0x20)
        .map(char::from)
        .chain("\"\\/\u{7f}é€😀".chars())
        .collect();
    let rec = LogRecordOut {
        msg: &text,
        app: &text,
        ..LOG_RECORDS[0]
    };
    let recs = [rec];
    let mut buf = vec![0u8; LOG_BUF_LEN];
    let n = encode(&LogOut::new(header(9, 1), &recs), &mut buf).expect("encode");
    let Message::Log(l) = decode("sitewatch/v1/lokasi1/log", &buf[..n]).expect("decode") else {
        panic!("not a log");
    };
    assert_eq!(l.records[0].msg, text);
    assert_eq!(l.records[0].app, text);
}

#[test]
fn worst_case_log_record_fits_its_bound() {
    let msg = "\u{1}".repeat(LOG_MSG_MAX_BYTES);
    let field = "\u{1}".repeat(LOG_FIELD_MAX_BYTES);
    let sd = "\"".repeat(LOG_SD_MAX_BYTES);
    let rec = LogRecordOut {
        ts: Some(u64::MAX),
        rx: u64::MAX,
        ip: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        host: &field,
        app: &field,
        procid: Some(&field),
        msgid: Some(&field),
        facility: 23,
        severity: 7,
        format: LogFormat::NoTimestamp,
        msg: &msg,
        sd: Some(&sd),
        truncated: true,
    };
    let mut buf = vec![0u8; LOG_RECORD_MAX_BYTES];
    let n = encode(&rec, &mut buf).expect("one record fits LOG_RECORD_MAX_BYTES");
    assert!(n <= LOG_RECORD_MAX_BYTES);
}
