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

/// A later heartbeat from the same gateway, whose uplink is `pppoe-wan`.
fn heartbeat_wan() -> HeartbeatOut<'static> {
    let mut hb = heartbeat();
    hb.seq = 14;
    hb.ts = 1_764_284_500_000;
    hb.wan = Some(WanOut {
        iface: "pppoe-wan",
        rx_bytes: 98_765_432_100,
        tx_bytes: 1_234_567_890,
        rx_errors: 3,
        tx_errors: 0,
        rx_dropped: 12,
        tx_dropped: 1,
        ..WanOut::default()
    });
    hb
}

/// A later heartbeat again, from a gateway whose uplink has its own
/// addresses: IPv4 from the ISP's carrier-grade NAT range, and IPv6.
fn heartbeat_wan_addr() -> HeartbeatOut<'static> {
    let mut hb = heartbeat_wan();
    hb.seq = 17;
    hb.ts = 1_764_284_530_000;
    if let Some(w) = hb.wan.as_mut() {
        w.addr = Some("100.72.18.9");
        w.addr_class = Some("cgnat");
        w.addr6 = Some("2001:db8:4006:812::200e");
    }
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

const WARN_LOSS: [&str; 1] = ["loss"];

fn stream_ok() -> StreamOut<'static> {
    StreamOut {
        v: 1,
        site: SITE,
        boot: BOOT,
        seq: 6,
        ts: 1_764_284_450_000,
        camera: "gate",
        url: "rtsp://192.168.1.64:554/Streaming/Channels/101",
        transport: "tcp",
        class: "ok",
        warnings: &WARN_LOSS,
        detail: "H.264 640x360 at 25.0 fps, 2 RTP packets lost",
        started: 1_764_284_441_000,
        probe_ms: 8_120,
        failures: 0,
        status_code: None,
        ttff_ms: Some(80),
        ttfk_ms: Some(80),
        codec: Some("avc1.42C01E"),
        width: Some(640),
        height: Some(360),
        fps: Some(25.0),
        fps_wall: Some(24.875),
        bitrate_kbps: Some(1_320),
        keyframe_interval_s: Some(2.0),
        frames: Some(200),
        lost_packets: Some(2),
        rtp_wall_ratio: Some(1.0),
    }
}

fn stream_auth() -> StreamOut<'static> {
    StreamOut {
        seq: 7,
        camera: "dahua-ch1",
        url: "rtsp://nvr.lokasi1.example:554/cam/realmonitor?channel=1&subtype=0",
        class: "auth",
        warnings: &[],
        detail: "the NVR refused the user name or password (401)",
        probe_ms: 12,
        failures: 3,
        status_code: Some(401),
        ttff_ms: None,
        ttfk_ms: None,
        codec: None,
        width: None,
        height: None,
        fps: None,
        fps_wall: None,
        bitrate_kbps: None,
        keyframe_interval_s: None,
        frames: None,
        lost_packets: None,
        rtp_wall_ratio: None,
        ..stream_ok()
    }
}

const ATA_ATTRS: [AttributeOut<'static>; 4] = [
    AttributeOut {
        id: 5,
        name: "Reallocated_Sector_Ct",
        value: 100,
        worst: 100,
        thresh: Some(36),
        raw: 8,
        prefail: true,
        failed: None,
    },
    AttributeOut {
        id: 9,
        name: "Power_On_Hours",
        value: 71,
        worst: 71,
        thresh: Some(0),
        raw: 25_760,
        prefail: false,
        failed: None,
    },
    AttributeOut {
        id: 194,
        name: "Temperature_Celsius",
        value: 41,
        worst: 55,
        thresh: Some(0),
        raw: 41,
        prefail: false,
        failed: None,
    },
    AttributeOut {
        id: 197,
        name: "Current_Pending_Sector",
        value: 100,
        worst: 100,
        thresh: None,
        raw: 16,
        prefail: false,
        failed: None,
    },
];

const ATA_REASONS: [ReasonOut<'static>; 2] = [
    ReasonOut {
        code: "pending_growing",
        level: "critical",
        detail: "16 sectors pending reallocation, 4 more than at the last reading",
    },
    ReasonOut {
        code: "reallocated_stable",
        level: "warning",
        detail: "8 reallocated sectors, unchanged",
    },
];

fn smart_ata() -> SmartOut<'static> {
    SmartOut {
        v: 1,
        site: SITE,
        boot: BOOT,
        seq: 8,
        ts: 1_764_284_460_000,
        device: "sda",
        path: "/dev/sda",
        protocol: "ata",
        source: "native",
        state: "read",
        verdict: "critical",
        reasons: &ATA_REASONS,
        model: Some("ST4000VX016-3CV104"),
        serial: Some("ZW60ABCD"),
        firmware: Some("CV11"),
        capacity_bytes: Some(4_000_787_030_016),
        temperature_c: Some(41),
        power_on_hours: Some(25_760),
        reallocated: Some(8),
        pending: Some(16),
        uncorrectable: Some(0),
        crc_errors: Some(0),
        nvme: None,
        attributes: &ATA_ATTRS,
        detail: None,
    }
}

const NVME_REASONS: [ReasonOut<'static>; 1] = [ReasonOut {
    code: "nvme_reliability_degraded",
    level: "critical",
    detail: "the NVMe controller reports degraded reliability (critical warning bit 2)",
}];

fn smart_nvme() -> SmartOut<'static> {
    SmartOut {
        seq: 9,
        device: "nvme0n1",
        path: "/dev/nvme0n1",
        protocol: "nvme",
        reasons: &NVME_REASONS,
        model: Some("QEMU NVMe Ctrl"),
        serial: Some("sw-nvme-crit"),
        firmware: Some("8.0.0"),
        capacity_bytes: None,
        temperature_c: Some(50),
        power_on_hours: Some(0),
        reallocated: None,
        pending: None,
        uncorrectable: None,
        crc_errors: None,
        nvme: Some(NvmeOut {
            critical_warning: 4,
            available_spare: 100,
            spare_threshold: 10,
            percentage_used: 0,
            media_errors: 0,
            unsafe_shutdowns: 1,
            error_log_entries: 0,
            power_cycles: 1,
            data_units_written: 0,
        }),
        attributes: &[],
        ..smart_ata()
    }
}

const CLEANUP_NUMBERS: [(&str, u64); 3] = [
    ("deleted_files", 42),
    ("deleted_bytes", 21_474_836_480),
    ("errors", 1),
];

fn event_camera_down() -> EventOut<'static> {
    EventOut {
        v: 1,
        site: SITE,
        boot: BOOT,
        seq: 10,
        ts: 1_764_284_470_000,
        event: "camera_down",
        severity: "critical",
        subject: "dahua-ch1",
        from: Some("ok"),
        to: Some("auth"),
        message:
            "camera dahua-ch1 went from ok to auth: the NVR refused the user name or password (401)",
        numbers: NumbersOut(&[]),
    }
}

fn event_cleanup() -> EventOut<'static> {
    EventOut {
        seq: 11,
        event: "cleanup",
        severity: "info",
        subject: "/srv/recordings",
        from: None,
        to: None,
        message: "deleted 42 files (20.0 GiB) under /srv/recordings; 1 error",
        numbers: NumbersOut(&CLEANUP_NUMBERS),
        ..event_camera_down()
    }
}

/// Two UPSes: the rack one on battery with every figure; the small one
/// on mains that reports neither runtime nor input voltage (absent, not 0).
const UPS: [UpsEntryOut<'static>; 2] = [
    UpsEntryOut {
        name: "rack",
        power: "on_battery",
        on_line: false,
        on_battery: true,
        low_battery: false,
        status: "OB DISCHRG",
        charge_pct: Some(87.5),
        runtime_secs: Some(1_260),
        load_pct: Some(31.0),
        input_voltage_v: Some(0.0),
        error: None,
    },
    UpsEntryOut {
        name: "nvr-ups",
        power: "on_line",
        on_line: true,
        on_battery: false,
        low_battery: false,
        status: "OL CHRG",
        charge_pct: Some(100.0),
        runtime_secs: None,
        load_pct: Some(12.5),
        input_voltage_v: None,
        error: None,
    },
];

/// One round of four targets: the NVR answers ping with one probe of
/// three lost; the switch accepts connections on 80; the gate camera's
/// RTSP port refuses (the device is up, its service is not); the door
/// camera does not answer at all (no round trips: absent, not 0).
const REACH: [ReachTargetOut<'static>; 4] = [
    ReachTargetOut {
        name: "NVR",
        address: "192.168.1.10",
        kind: "icmp",
        port: None,
        state: "up",
        sent: 3,
        received: 2,
        refused: 0,
        rtt_min_ms: Some(0.412),
        rtt_avg_ms: Some(0.538),
        rtt_max_ms: Some(0.664),
        error: None,
    },
    ReachTargetOut {
        name: "PoE switch",
        address: "sw1.lan",
        kind: "tcp",
        port: Some(80),
        state: "up",
        sent: 3,
        received: 3,
        refused: 0,
        rtt_min_ms: Some(1.25),
        rtt_avg_ms: Some(1.5),
        rtt_max_ms: Some(2.0),
        error: None,
    },
    ReachTargetOut {
        name: "gate camera",
        address: "192.168.1.31",
        kind: "tcp",
        port: Some(554),
        state: "up",
        sent: 3,
        received: 0,
        refused: 3,
        rtt_min_ms: Some(0.75),
        rtt_avg_ms: Some(0.875),
        rtt_max_ms: Some(1.0),
        error: None,
    },
    ReachTargetOut {
        name: "door camera",
        address: "192.168.1.32",
        kind: "icmp",
        port: None,
        state: "down",
        sent: 3,
        received: 0,
        refused: 0,
        rtt_min_ms: None,
        rtt_avg_ms: None,
        rtt_max_ms: None,
        error: None,
    },
];

/// A round that could not be run: the name did not resolve.
const REACH_UNRESOLVED: [ReachTargetOut<'static>; 1] = [ReachTargetOut {
    name: "NVR",
    address: "nvr.lan",
    kind: "icmp",
    port: None,
    state: "unknown",
    sent: 0,
    received: 0,
    refused: 0,
    rtt_min_ms: None,
    rtt_avg_ms: None,
    rtt_max_ms: None,
    error: Some("cannot resolve nvr.lan: failed to lookup address information"),
}];

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
        "heartbeat-wan.json" => encode(&heartbeat_wan(), buf),
        "heartbeat-wan-addr.json" => encode(&heartbeat_wan_addr(), buf),
        "disk.json" => encode(&DiskOut::new(header(3, 1_764_284_431_000), &MOUNTS), buf),
        "log.json" => encode(
            &LogOut::new(header(5, 1_764_284_442_100), &LOG_RECORDS),
            buf,
        ),
        "stream-ok.json" => encode(&stream_ok(), buf),
        "stream-auth.json" => encode(&stream_auth(), buf),
        "smart-ata.json" => encode(&smart_ata(), buf),
        "smart-nvme-critical.json" => encode(&smart_nvme(), buf),
        "event-camera-down.json" => encode(&event_camera_down(), buf),
        "event-cleanup.json" => encode(&event_cleanup(), buf),
        "ups.json" => encode(
            &UpsOut::new(header(12, 1_764_284_480_000), 15, None, &UPS),
            buf,
        ),
        "ups-upsd-down.json" => encode(
            &UpsOut::new(
                header(13, 1_764_284_495_000),
                15,
                Some("cannot connect to upsd at 127.0.0.1:3493: Connection refused (os error 111)"),
                &[],
            ),
            buf,
        ),
        "reach.json" => encode(
            &ReachOut::new(header(15, 1_764_284_510_000), 30, &REACH),
            buf,
        ),
        "reach-unresolved.json" => encode(
            &ReachOut::new(header(16, 1_764_284_540_000), 30, &REACH_UNRESOLVED),
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
                assert_eq!(h.counters.len(), 36);
                assert_eq!(h.clock.as_deref(), Some("ok"));
                assert_eq!(h.wan, None);
            }
            ("heartbeat-wan.json", Message::Heartbeat(h)) => {
                let want = heartbeat_wan().wan.expect("wan");
                let got = h.wan.expect("wan decoded");
                assert_eq!(got.iface, want.iface);
                assert_eq!(
                    (got.rx_bytes, got.tx_bytes, got.rx_errors, got.tx_errors),
                    (want.rx_bytes, want.tx_bytes, want.rx_errors, want.tx_errors)
                );
                assert_eq!(
                    (got.rx_dropped, got.tx_dropped),
                    (want.rx_dropped, want.tx_dropped)
                );
                // An agent older than the addresses: none decoded.
                assert_eq!((got.addr, got.addr_class, got.addr6), (None, None, None));
            }
            ("heartbeat-wan-addr.json", Message::Heartbeat(h)) => {
                let want = heartbeat_wan_addr().wan.expect("wan");
                let got = h.wan.expect("wan decoded");
                assert_eq!(got.iface, want.iface);
                assert_eq!(got.rx_bytes, want.rx_bytes);
                assert_eq!(got.addr.as_deref(), want.addr);
                assert_eq!(got.addr_class.as_deref(), want.addr_class);
                assert_eq!(got.addr6.as_deref(), want.addr6);
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
            ("stream-ok.json", Message::Stream(st)) => {
                let want = stream_ok();
                assert_eq!((st.camera.as_str(), st.class.as_str()), ("gate", "ok"));
                assert_eq!(st.url, want.url);
                assert_eq!(st.warnings, ["loss"]);
                assert_eq!(st.codec.as_deref(), want.codec);
                assert_eq!((st.width, st.height), (Some(640), Some(360)));
                assert_eq!(st.fps, want.fps);
                assert_eq!(st.fps_wall, want.fps_wall);
                assert_eq!(st.keyframe_interval_s, Some(2.0));
                assert_eq!(st.lost_packets, Some(2));
                assert_eq!(st.status_code, None);
            }
            ("stream-auth.json", Message::Stream(st)) => {
                assert_eq!(st.class, "auth");
                assert_eq!(st.status_code, Some(401));
                assert_eq!(st.failures, 3);
                assert_eq!((st.fps, st.codec), (None, None));
            }
            ("smart-ata.json", Message::Smart(sm)) => {
                assert_eq!(
                    (sm.device.as_str(), sm.verdict.as_str()),
                    ("sda", "critical")
                );
                assert_eq!(sm.reasons.len(), 2);
                assert_eq!(sm.reasons[0].code, "pending_growing");
                assert_eq!(sm.attributes.len(), ATA_ATTRS.len());
                assert_eq!(sm.attributes[0].raw, 8);
                assert_eq!(sm.attributes[3].thresh, None);
                assert_eq!(sm.pending, Some(16));
                assert_eq!(sm.nvme, None);
            }
            ("smart-nvme-critical.json", Message::Smart(sm)) => {
                assert_eq!(sm.protocol, "nvme");
                let n = sm.nvme.expect("nvme figures");
                assert_eq!(n.critical_warning, 4);
                assert!(sm.attributes.is_empty());
            }
            ("event-camera-down.json", Message::Event(ev)) => {
                assert_eq!(ev.event, "camera_down");
                assert_eq!(
                    (ev.from.as_deref(), ev.to.as_deref()),
                    (Some("ok"), Some("auth"))
                );
                assert!(ev.numbers.is_empty());
            }
            ("event-cleanup.json", Message::Event(ev)) => {
                assert_eq!(ev.subject, "/srv/recordings");
                assert_eq!(ev.numbers.get("deleted_bytes"), Some(&21_474_836_480));
                assert_eq!(ev.numbers.len(), 3);
            }
            ("ups.json", Message::Ups(u)) => {
                assert_eq!((u.seq, u.interval_secs, u.error.as_deref()), (12, 15, None));
                assert_eq!(u.ups.len(), UPS.len());
                for (got, want) in u.ups.iter().zip(UPS.iter()) {
                    assert_eq!(got.name, want.name);
                    assert_eq!(got.power, want.power);
                    assert_eq!(
                        (got.on_line, got.on_battery, got.low_battery),
                        (want.on_line, want.on_battery, want.low_battery)
                    );
                    assert_eq!(got.status, want.status);
                    assert_eq!(got.charge_pct, want.charge_pct);
                    assert_eq!(got.runtime_secs, want.runtime_secs);
                    assert_eq!(got.load_pct, want.load_pct);
                    assert_eq!(got.input_voltage_v, want.input_voltage_v);
                    assert_eq!(got.error.as_deref(), want.error);
                }
                // 0 V is a reading; an unreported voltage is absent.
                assert_eq!(u.ups[0].input_voltage_v, Some(0.0));
                assert_eq!(
                    (u.ups[1].input_voltage_v, u.ups[1].runtime_secs),
                    (None, None)
                );
            }
            ("ups-upsd-down.json", Message::Ups(u)) => {
                assert!(u.ups.is_empty());
                assert!(u
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("cannot connect")));
            }
            ("reach.json", Message::Reach(r)) => {
                assert_eq!((r.seq, r.interval_secs), (15, 30));
                assert_eq!(r.targets.len(), REACH.len());
                for (got, want) in r.targets.iter().zip(REACH.iter()) {
                    assert_eq!(
                        (got.name.as_str(), got.address.as_str(), got.kind.as_str()),
                        (want.name, want.address, want.kind)
                    );
                    assert_eq!((got.port, got.state.as_str()), (want.port, want.state));
                    assert_eq!(
                        (got.sent, got.received, got.refused),
                        (want.sent, want.received, want.refused)
                    );
                    assert_eq!(
                        (got.rtt_min_ms, got.rtt_avg_ms, got.rtt_max_ms),
                        (want.rtt_min_ms, want.rtt_avg_ms, want.rtt_max_ms)
                    );
                    assert_eq!(got.error.as_deref(), want.error);
                }
                // Loss is derived; a target that did not answer has no
                // round trip.
                let lost: Vec<u32> = r.targets.iter().map(|t| t.lost()).collect();
                assert_eq!(lost, [1, 0, 0, 3]);
                assert_eq!(r.targets[3].rtt_avg_ms, None);
            }
            ("reach-unresolved.json", Message::Reach(r)) => {
                let t = &r.targets[0];
                assert_eq!((t.state.as_str(), t.sent, t.lost()), ("unknown", 0, 0));
                assert!(t.error.as_deref().is_some_and(|e| e.contains("resolve")));
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
        // `reserved_kind` cannot happen in v1 any more: every kind the
        // topic grammar knows has a payload now. The reason stays so a
        // later grammar can reserve kinds again without renaming it.
        let covered = reason == "too_large"
            || reason == "reserved_kind"
            || INVALID.iter().any(|v| v.reason == reason);
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

fn worst_header(site: &str) -> Header<'_> {
    Header {
        site,
        boot: BOOT,
        seq: u64::MAX,
        ts: u64::MAX,
    }
}

#[test]
fn worst_case_stream_smart_and_event_fit_their_buffers() {
    let site = "s".repeat(63);
    let h = worst_header(&site);
    let text = "\u{1}".repeat(MAX_TEXT_LEN);
    let url = "\u{1}".repeat(MAX_URL_LEN);
    let ident = "\u{1}".repeat(MAX_IDENT_LEN);
    let code = "c".repeat(MAX_CODE_LEN);
    let name = "n".repeat(255);
    let warnings = vec![code.as_str(); MAX_WARNINGS];
    let st = StreamOut {
        site: h.site,
        seq: h.seq,
        ts: h.ts,
        camera: &name,
        url: &url,
        transport: &code,
        class: &code,
        warnings: &warnings,
        detail: &text,
        started: u64::MAX,
        probe_ms: u32::MAX,
        failures: u32::MAX,
        status_code: Some(u16::MAX),
        ttff_ms: Some(u32::MAX),
        ttfk_ms: Some(u32::MAX),
        codec: Some(&ident),
        width: Some(u32::MAX),
        height: Some(u32::MAX),
        fps: Some(f32::MAX),
        fps_wall: Some(f32::MAX),
        bitrate_kbps: Some(u32::MAX),
        keyframe_interval_s: Some(f32::MAX),
        frames: Some(u32::MAX),
        lost_packets: Some(u64::MAX),
        rtp_wall_ratio: Some(f32::MAX),
        ..stream_ok()
    };
    let mut buf = vec![0u8; STREAM_BUF_LEN];
    encode(&st, &mut buf).expect("stream fits STREAM_BUF_LEN");

    let reason = "\u{1}".repeat(MAX_REASON_LEN);
    let reasons = vec![
        ReasonOut {
            code: &code,
            level: &code,
            detail: &reason,
        };
        MAX_REASONS
    ];
    let attrs = vec![
        AttributeOut {
            id: 255,
            name: &code,
            value: 255,
            worst: 255,
            thresh: Some(255),
            raw: u64::MAX,
            prefail: true,
            failed: Some("past"),
        };
        MAX_ATTRIBUTES
    ];
    let path = "\u{1}".repeat(MAX_PATH_LEN);
    let sm = SmartOut {
        site: h.site,
        seq: h.seq,
        ts: h.ts,
        device: &name,
        path: &path,
        protocol: &code,
        source: &code,
        state: &code,
        verdict: &code,
        reasons: &reasons,
        model: Some(&ident),
        serial: Some(&ident),
        firmware: Some(&ident),
        capacity_bytes: Some(u64::MAX),
        temperature_c: Some(i16::MIN),
        power_on_hours: Some(u64::MAX),
        reallocated: Some(u64::MAX),
        pending: Some(u64::MAX),
        uncorrectable: Some(u64::MAX),
        crc_errors: Some(u64::MAX),
        nvme: Some(NvmeOut {
            critical_warning: 255,
            available_spare: 255,
            spare_threshold: 255,
            percentage_used: 255,
            media_errors: u64::MAX,
            unsafe_shutdowns: u64::MAX,
            error_log_entries: u64::MAX,
            power_cycles: u64::MAX,
            data_units_written: u64::MAX,
        }),
        attributes: &attrs,
        detail: Some(&text),
        ..smart_ata()
    };
    let mut buf = vec![0u8; SMART_BUF_LEN];
    encode(&sm, &mut buf).expect("smart fits SMART_BUF_LEN");

    let numbers = vec![(code.as_str(), u64::MAX); MAX_EVENT_NUMBERS];
    let ev = EventOut {
        site: h.site,
        seq: h.seq,
        ts: h.ts,
        event: &code,
        severity: &code,
        subject: &path,
        from: Some(&code),
        to: Some(&code),
        message: &text,
        numbers: NumbersOut(&numbers),
        ..event_camera_down()
    };
    let mut buf = vec![0u8; EVENT_BUF_LEN];
    encode(&ev, &mut buf).expect("event fits EVENT_BUF_LEN");
}

#[test]
fn worst_case_ups_fits_its_buffer() {
    let site = "s".repeat(63);
    let name = "\u{1}".repeat(MAX_UPS_NAME_LEN);
    let status = "\u{1}".repeat(MAX_UPS_STATUS_LEN);
    let error = "\u{1}".repeat(MAX_UPS_ERROR_LEN);
    let text = "\u{1}".repeat(MAX_TEXT_LEN);
    let code = "c".repeat(MAX_CODE_LEN);
    let entries = vec![
        UpsEntryOut {
            name: &name,
            power: &code,
            on_line: true,
            on_battery: true,
            low_battery: true,
            status: &status,
            charge_pct: Some(f32::MAX),
            runtime_secs: Some(u32::MAX),
            load_pct: Some(f32::MAX),
            input_voltage_v: Some(f32::MAX),
            error: Some(&error),
        };
        MAX_UPS
    ];
    let msg = UpsOut::new(worst_header(&site), u32::MAX, Some(&text), &entries);
    let mut buf = vec![0u8; UPS_BUF_LEN];
    let n = encode(&msg, &mut buf).expect("ups fits UPS_BUF_LEN");
    let m = decode(&format!("sitewatch/v1/{site}/ups"), &buf[..n]);
    assert!(m.is_ok(), "{m:?}");
}

#[test]
fn ups_figures_may_be_null() {
    // Another encoder may write an unreported value as null: the same as
    // absent, never 0.
    let p = br#"{"v":1,"site":"lokasi1","boot":"b1","seq":1,"ts":1,"interval_secs":15,"ups":[{"name":"u","power":"on_line","on_line":true,"on_battery":false,"low_battery":false,"status":"OL","charge_pct":null,"runtime_secs":null,"load_pct":null,"input_voltage_v":null}]}"#;
    let Message::Ups(u) = decode("sitewatch/v1/lokasi1/ups", p).expect("decode") else {
        panic!("not ups");
    };
    let e = &u.ups[0];
    assert_eq!(
        (e.charge_pct, e.runtime_secs, e.load_pct, e.input_voltage_v),
        (None, None, None, None)
    );
}

#[test]
fn truncate_cuts_on_a_char_boundary() {
    assert_eq!(truncate("abc", 5), "abc");
    assert_eq!(truncate("aé", 2), "a");
    assert_eq!(truncate("aé", 3), "aé");
}

#[test]
fn worst_case_heartbeat_with_wan_fits_its_buffer() {
    let site = "s".repeat(63);
    let mut hb = HeartbeatOut::new(worst_header(&site), VERSION, u32::MAX);
    hb.uptime_secs = u64::MAX;
    hb.agent_uptime_secs = u64::MAX;
    hb.load = [f32::MAX; 3];
    hb.mem_total_bytes = u64::MAX;
    hb.mem_available_bytes = u64::MAX;
    hb.agent_rss_bytes = u64::MAX;
    hb.clock = "before_build";
    hb.wan = Some(WanOut {
        iface: "abcdefghijklmno",
        rx_bytes: u64::MAX,
        tx_bytes: u64::MAX,
        rx_errors: u64::MAX,
        tx_errors: u64::MAX,
        rx_dropped: u64::MAX,
        tx_dropped: u64::MAX,
        addr: Some("255.255.255.255"),
        addr_class: Some("abcdefghijklmnopqrstuvwxyz012345"),
        addr6: Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    });
    hb.counters = AgentCounters {
        published: u64::MAX,
        acked: u64::MAX,
        reconnects: u64::MAX,
        connect_errors: u64::MAX,
        dropped: u64::MAX,
        disk_errors: u64::MAX,
        ..AgentCounters::default()
    };
    let mut buf = [0u8; HEARTBEAT_BUF_LEN];
    let n = encode(&hb, &mut buf).expect("fits");
    // The counters left at 0 take 19 more digits each at their largest.
    let zeros = std::str::from_utf8(&buf[..n])
        .expect("utf-8")
        .matches("\":0")
        .count();
    assert!(
        n + zeros * 19 <= HEARTBEAT_BUF_LEN,
        "{n} B + {zeros} counters"
    );
}

#[test]
fn worst_case_reach_fits_its_buffer() {
    let site = "s".repeat(63);
    let name = "\u{1}".repeat(MAX_REACH_NAME_LEN);
    let address = "a".repeat(MAX_REACH_ADDRESS_LEN);
    let error = "\u{1}".repeat(MAX_REACH_ERROR_LEN);
    let code = "c".repeat(MAX_CODE_LEN);
    let entries = vec![
        ReachTargetOut {
            name: &name,
            address: &address,
            kind: &code,
            port: Some(u16::MAX),
            state: &code,
            sent: u32::MAX,
            received: u32::MAX,
            refused: u32::MAX,
            rtt_min_ms: Some(f32::MAX),
            rtt_avg_ms: Some(f32::MAX),
            rtt_max_ms: Some(f32::MAX),
            error: Some(&error),
        };
        MAX_REACH_TARGETS
    ];
    let msg = ReachOut::new(worst_header(&site), u32::MAX, &entries);
    let mut buf = vec![0u8; REACH_BUF_LEN];
    let n = encode(&msg, &mut buf).expect("reach fits REACH_BUF_LEN");
    assert!(n > REACH_BUF_LEN / 2, "bound far too loose: {n}");
    // (Refused by the decoder: control characters in the name.)
}

#[test]
fn reach_rules() {
    let ok = r#"{"v":1,"site":"lokasi1","boot":"b1","seq":1,"ts":1,"interval_secs":30,"targets":[{"name":"NVR","address":"10.0.0.1","kind":"icmp","state":"up","sent":3,"received":3,"rtt_min_ms":null,"rtt_avg_ms":null,"rtt_max_ms":null}]}"#;
    assert!(decode("sitewatch/v1/lokasi1/reach", ok.as_bytes()).is_ok());
    let bad = [
        ("\"targets\":[{", "\"targets\":[]"),
        ("\"name\":\"NVR\"", "\"name\":\"N\\u0007\""),
        ("10.0.0.1", "10.0.0.1/24"),
        ("\"icmp\"", "\"ICMP\""),
        ("\"received\":3", "\"received\":4"),
        ("\"rtt_min_ms\":null", "\"rtt_min_ms\":1.0"),
        ("\"kind\":\"icmp\"", "\"kind\":\"tcp\",\"port\":0"),
    ];
    for (from, to) in bad {
        let p = if to == "\"targets\":[]" {
            ok.split("\"targets\":")
                .next()
                .unwrap_or_default()
                .to_owned()
                + "\"targets\":[]}"
        } else {
            ok.replacen(from, to, 1)
        };
        assert_ne!(p, ok, "{from}");
        let e = decode("sitewatch/v1/lokasi1/reach", p.as_bytes()).expect_err(&p);
        assert_eq!(e.reason(), "invalid", "{p}: {e}");
    }
    // Two targets with one name.
    let two = ok.replacen("}]}", "},{\"name\":\"NVR\",\"address\":\"h\",\"kind\":\"icmp\",\"state\":\"down\",\"sent\":1,\"received\":0}]}", 1);
    let e = decode("sitewatch/v1/lokasi1/reach", two.as_bytes()).expect_err("dup");
    assert_eq!(e.reason(), "invalid");
}
