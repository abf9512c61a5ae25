//! The scenario the dashboards are checked against: crafted wire messages
//! (docs/wire.md) for the sites the real agent does not play.
//!
//! - site-down: online with a half-full disk, its UPS on battery (the
//!   event and a reading), then its Last Will.
//! - site-disk: "/" filling up, the recording disk not mounted, a sequence
//!   gap of 12 and 5 messages dropped by the agent.
//! - site-cams: four cameras (ok, stalled, frozen, auth), three SMART disks
//!   (one critical) and their events; two UPSes read three times, `rack`
//!   going on battery (runtime and input voltage falling), `nvr` on mains
//!   reporting neither runtime nor input voltage; three reachability
//!   rounds of its LAN devices (`nvr` down, `switch` up, `gate` TCP 554
//!   up with loss), and `old-dvr`, down when it was taken out of `[reach]`.
//! - site-skew: a gateway whose clock is a year behind.
//! - one message the bridge refuses.

use std::process::Command;

use sitewatch_testkit::Mosquitto;

fn publish(broker: &Mosquitto, topic: &str, payload: &str, retain: bool) {
    // A real agent numbers each message of a boot once: two crafted
    // messages with one (site, boot, seq) would be stored as they never
    // are in the field, and counted wrongly in `boots`.
    static SEEN: std::sync::Mutex<Vec<(String, String, u64)>> = std::sync::Mutex::new(Vec::new());
    // (Payloads that are not JSON are the scenario's rejected ones.)
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    if let (Some(site), Some(boot), Some(seq)) =
        (v["site"].as_str(), v["boot"].as_str(), v["seq"].as_u64())
    {
        let id = (site.to_owned(), boot.to_owned(), seq);
        let mut seen = SEEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            !seen.contains(&id),
            "scenario: {id:?} published twice ({topic})"
        );
        seen.push(id);
    }
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port().to_string(),
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        payload,
    ]);
    if retain {
        cmd.arg("-r");
    }
    let st = cmd.status().expect("run mosquitto_pub (mosquitto-clients)");
    assert!(st.success(), "mosquitto_pub {topic}");
}

/// Publishes the whole scenario to `broker`, times relative to `now_ms`
/// (Unix milliseconds).
pub fn publish_scenario(broker: &Mosquitto, now_ms: i64) {
    let status = |site: &str, seq: u64, ts: i64, state: &str, reason: Option<&str>| {
        let reason = reason
            .map(|r| format!(",\"reason\":\"{r}\""))
            .unwrap_or_default();
        format!(
            "{{\"v\":1,\"site\":\"{site}\",\"boot\":\"b0000000000000001\",\"seq\":{seq},\"ts\":{ts},\
             \"state\":\"{state}\"{reason},\"session\":1,\"agent_version\":\"0.1.0\",\"heartbeat_secs\":30}}"
        )
    };
    let heartbeat = |site: &str, seq: u64, ts: i64, dropped: u64| {
        format!(
            "{{\"v\":1,\"site\":\"{site}\",\"boot\":\"b0000000000000001\",\"seq\":{seq},\"ts\":{ts},\
             \"agent_version\":\"0.1.0\",\"interval_secs\":30,\"uptime_secs\":86400,\"agent_uptime_secs\":600,\
             \"load\":[0.5,0.4,0.3],\"mem_total_bytes\":268435456,\"mem_available_bytes\":134217728,\
             \"agent_rss_bytes\":3145728,\"counters\":{{\"published\":{seq},\"acked\":{seq},\"reconnects\":0,\
             \"connect_errors\":0,\"dropped\":{dropped},\"disk_errors\":0,\"syslog_dropped\":0}}}}"
        )
    };
    // The uplink's counters (docs/wire.md, `wan`), appended to a heartbeat.
    let wan = |hb: String, iface: &str, rx: u64, tx: u64, rx_errors: u64| {
        let end = hb.len() - 1;
        format!(
            "{},\"wan\":{{\"if\":\"{iface}\",\"rx_bytes\":{rx},\"tx_bytes\":{tx},\
             \"rx_errors\":{rx_errors},\"tx_errors\":0,\"rx_dropped\":0,\"tx_dropped\":0}}}}",
            &hb[..end]
        )
    };
    // The uplink's own address (bridge migration 15), appended to its
    // counters.
    let addr = |hb: String, addr: &str, class: &str| {
        let end = hb.len() - 2;
        format!(
            "{},\"addr\":\"{addr}\",\"addr_class\":\"{class}\"}}}}",
            &hb[..end]
        )
    };
    let total: u64 = 1_000_000_000_000;
    let mount = |path: &str, avail: u64| {
        let used = total - avail;
        let pct = used as f64 * 100.0 / total as f64;
        format!(
            "{{\"path\":\"{path}\",\"fs_type\":\"ext4\",\"total_bytes\":{total},\"used_bytes\":{used},\
             \"avail_bytes\":{avail},\"used_pct\":{pct:.2},\"inodes_total\":1000,\"inodes_free\":900,\"read_only\":false}}"
        )
    };
    let failed = |path: &str, err: &str| {
        format!(
            "{{\"path\":\"{path}\",\"fs_type\":\"\",\"total_bytes\":0,\"used_bytes\":0,\"avail_bytes\":0,\
             \"used_pct\":0,\"inodes_total\":0,\"inodes_free\":0,\"read_only\":false,\"error\":\"{err}\"}}"
        )
    };
    let disk = |site: &str, seq: u64, ts: i64, mounts: &[String]| {
        format!(
            "{{\"v\":1,\"site\":\"{site}\",\"boot\":\"b0000000000000001\",\"seq\":{seq},\"ts\":{ts},\
             \"mounts\":[{}]}}",
            mounts.join(",")
        )
    };
    let t = |site: &str, kind: &str| format!("sitewatch/v1/{site}/{kind}");

    // site-down: online with a half-full disk, then its Last Will.
    publish(
        broker,
        &t("site-down", "status"),
        &status("site-down", 1, now_ms - 600_000, "online", None),
        true,
    );
    publish(
        broker,
        &t("site-down", "heartbeat"),
        &heartbeat("site-down", 2, now_ms - 590_000, 0),
        false,
    );
    publish(
        broker,
        &t("site-down", "disk"),
        &disk(
            "site-down",
            3,
            now_ms - 580_000,
            &[mount("/srv/recordings", total / 2)],
        ),
        false,
    );
    // site-disk: online; "/" fills up (96.5 % now, 2 GB more every 15 min
    // over the last hour), the recording disk is not mounted; one heartbeat
    // then a gap of 12 (seq 8..19 never arrive) and 5 messages dropped by
    // the agent.
    publish(
        broker,
        &t("site-disk", "status"),
        &status("site-disk", 1, now_ms - 4_000_000, "online", None),
        true,
    );
    publish(
        broker,
        &t("site-disk", "heartbeat"),
        // Its uplink: twice as many bytes in as out, 10 receive errors.
        &wan(
            heartbeat("site-disk", 2, now_ms - 3_990_000, 0),
            "pppoe-wan",
            5_000_000_000,
            1_000_000_000,
            7,
        ),
        false,
    );
    for i in 0..5u64 {
        let avail = total / 1000 * 35 + (4 - i) * 2_000_000_000;
        let ts = now_ms - 3_600_000 + i as i64 * 900_000;
        publish(
            broker,
            &t("site-disk", "disk"),
            &disk(
                "site-disk",
                3 + i,
                ts,
                &[mount("/", avail), failed("/srv/recordings", "not_mounted")],
            ),
            false,
        );
    }
    publish(
        broker,
        &t("site-disk", "heartbeat"),
        // Behind an LTE modem's NAT (double NAT).
        &addr(
            wan(
                heartbeat("site-disk", 20, now_ms - 1_000, 5),
                "pppoe-wan",
                5_000_000_000 + 800_000_000,
                1_000_000_000 + 400_000_000,
                17,
            ),
            "192.168.8.100",
            "private",
        ),
        false,
    );
    // site-cams (correct clock, contiguous seqs 1..22 so no gap): four
    // cameras, three disks and their events, as an agent reports them
    // (docs/wire.md; shapes of wire/vectors/stream-*.json, smart-*.json,
    // event-*.json). gate is ok; lobby went from ok to stalled 20 min ago;
    // yard is frozen for 40 min; dahua-ch1 refuses the password for 4 min.
    // sda is SMART critical, sdb and nvme0n1 are ok.
    let boot = "b0000000000000001";
    let stream = |seq: u64, ago_s: i64, camera: &str, class: &str, failures: u32| {
        let ts = now_ms - ago_s * 1000;
        let figures = match class {
            "ok" => ",\"ttff_ms\":80,\"ttfk_ms\":80,\"codec\":\"avc1.42C01E\",\"width\":640,\"height\":360,\
                     \"fps\":25.0,\"fps_wall\":24.875,\"bitrate_kbps\":1320,\"keyframe_interval_s\":2.0,\
                     \"frames\":200,\"lost_packets\":0,\"rtp_wall_ratio\":1.0"
                .to_string(),
            "frozen" => ",\"ttff_ms\":90,\"codec\":\"avc1.42C01E\",\"width\":1920,\"height\":1080,\
                         \"fps\":25.0,\"fps_wall\":25.0,\"bitrate_kbps\":40,\"frames\":200,\"rtp_wall_ratio\":0.01"
                .to_string(),
            "stalled" => ",\"ttff_ms\":120,\"codec\":\"avc1.640028\",\"width\":1920,\"height\":1080,\
                          \"fps\":3.5,\"fps_wall\":3.5,\"bitrate_kbps\":210,\"frames\":7,\"rtp_wall_ratio\":0.2"
                .to_string(),
            "auth" => ",\"status_code\":401".to_string(),
            other => panic!("class {other}"),
        };
        format!(
            "{{\"v\":1,\"site\":\"site-cams\",\"boot\":\"{boot}\",\"seq\":{seq},\"ts\":{ts},\
             \"camera\":\"{camera}\",\"url\":\"rtsp://192.168.1.64:554/{camera}\",\"transport\":\"tcp\",\
             \"class\":\"{class}\",\"warnings\":[],\"detail\":\"{class} in the test scenario\",\
             \"started\":{},\"probe_ms\":8000,\"failures\":{failures}{figures}}}",
            ts - 9000
        )
    };
    let smart = |seq: u64, ago_s: i64, device: &str, verdict: &str| {
        let ts = now_ms - ago_s * 1000;
        let body = match verdict {
            "critical" => "\"protocol\":\"ata\",\"source\":\"native\",\"state\":\"read\",\"verdict\":\"critical\",\
                \"reasons\":[{\"code\":\"pending_growing\",\"level\":\"critical\",\"detail\":\"16 sectors pending reallocation, 4 more than at the last reading\"},\
                {\"code\":\"reallocated_stable\",\"level\":\"warning\",\"detail\":\"8 reallocated sectors, unchanged\"}],\
                \"model\":\"ST4000VX016-3CV104\",\"serial\":\"ZW60ABCD\",\"firmware\":\"CV11\",\"capacity_bytes\":4000787030016,\
                \"temperature_c\":41,\"power_on_hours\":25760,\"reallocated\":8,\"pending\":16,\"uncorrectable\":0,\"crc_errors\":0,\
                \"attributes\":[{\"id\":5,\"name\":\"Reallocated_Sector_Ct\",\"value\":100,\"worst\":100,\"thresh\":36,\"raw\":8,\"prefail\":true},\
                {\"id\":197,\"name\":\"Current_Pending_Sector\",\"value\":100,\"worst\":100,\"raw\":16,\"prefail\":false}]",
            "ok" if device.starts_with("nvme") => "\"protocol\":\"nvme\",\"source\":\"native\",\"state\":\"read\",\"verdict\":\"ok\",\
                \"reasons\":[],\"model\":\"WD Blue SN570\",\"serial\":\"SN570X1\",\"firmware\":\"234110WD\",\
                \"temperature_c\":38,\"power_on_hours\":4100,\"nvme\":{\"critical_warning\":0,\"available_spare\":100,\
                \"spare_threshold\":10,\"percentage_used\":3,\"media_errors\":0,\"unsafe_shutdowns\":5,\
                \"error_log_entries\":0,\"power_cycles\":40,\"data_units_written\":123456}",
            "ok" => "\"protocol\":\"ata\",\"source\":\"native\",\"state\":\"read\",\"verdict\":\"ok\",\"reasons\":[],\
                \"model\":\"WD40PURZ\",\"serial\":\"WXB1A2\",\"temperature_c\":35,\"power_on_hours\":9000,\
                \"reallocated\":0,\"pending\":0,\"uncorrectable\":0,\"crc_errors\":0,\"attributes\":[]",
            other => panic!("verdict {other}"),
        };
        format!(
            "{{\"v\":1,\"site\":\"site-cams\",\"boot\":\"{boot}\",\"seq\":{seq},\"ts\":{ts},\
             \"device\":\"{device}\",\"path\":\"/dev/{device}\",{body}}}"
        )
    };
    let event = |seq: u64,
                 ago_s: i64,
                 event: &str,
                 severity: &str,
                 subject: &str,
                 from: &str,
                 to: &str| {
        format!(
            "{{\"v\":1,\"site\":\"site-cams\",\"boot\":\"{boot}\",\"seq\":{seq},\"ts\":{},\
             \"event\":\"{event}\",\"severity\":\"{severity}\",\"subject\":\"{subject}\",\
             \"from\":\"{from}\",\"to\":\"{to}\",\"message\":\"{subject} went from {from} to {to}\",\"numbers\":{{}}}}",
            now_ms - ago_s * 1000
        )
    };
    let cams = |kind: &str, name: &str| format!("sitewatch/v1/site-cams/{kind}/{name}");
    publish(
        broker,
        &t("site-cams", "status"),
        &status("site-cams", 1, now_ms - 3_000_000, "online", None),
        true,
    );
    publish(
        broker,
        &t("site-cams", "heartbeat"),
        // Its uplink was re-created in between (a PPPoE reconnect): the
        // receive counter went back, the send counter (by chance) did not.
        &addr(
            wan(
                heartbeat("site-cams", 2, now_ms - 2_990_000, 0),
                "pppoe-wan",
                9_000_000_000,
                1_000,
                0,
            ),
            "81.2.69.142",
            "public",
        ),
        false,
    );
    for (seq, ago, camera, class, failures) in [
        (3, 2400, "gate", "ok", 0),
        (4, 2400, "lobby", "ok", 0),
        (5, 2400, "yard", "frozen", 1),
    ] {
        publish(
            broker,
            &cams("stream", camera),
            &stream(seq, ago, camera, class, failures),
            true,
        );
    }
    publish(
        broker,
        &cams("smart", "sda"),
        &smart(6, 1800, "sda", "critical"),
        true,
    );
    publish(
        broker,
        &cams("smart", "sdb"),
        &smart(7, 1800, "sdb", "ok"),
        true,
    );
    publish(
        broker,
        &cams("smart", "nvme0n1"),
        &smart(8, 1800, "nvme0n1", "ok"),
        true,
    );
    publish(
        broker,
        &cams("stream", "lobby"),
        &stream(9, 1200, "lobby", "stalled", 1),
        true,
    );
    let ev = t("site-cams", "event");
    publish(
        broker,
        &ev,
        &event(
            10,
            1200,
            "camera_down",
            "critical",
            "lobby",
            "ok",
            "stalled",
        ),
        false,
    );
    publish(
        broker,
        &ev,
        &event(
            11,
            1800,
            "disk_verdict",
            "critical",
            "sda",
            "warning",
            "critical",
        ),
        false,
    );
    publish(
        broker,
        &cams("stream", "dahua-ch1"),
        &stream(12, 240, "dahua-ch1", "auth", 1),
        true,
    );
    publish(
        broker,
        &ev,
        &event(
            13,
            240,
            "camera_down",
            "critical",
            "dahua-ch1",
            "ok",
            "auth",
        ),
        false,
    );
    publish(
        broker,
        &ev,
        &event(
            14,
            2400,
            "camera_degraded",
            "warning",
            "yard",
            "ok",
            "frozen",
        ),
        false,
    );
    for (seq, camera, class, failures) in [
        (15, "gate", "ok", 0),
        (16, "lobby", "stalled", 5),
        (17, "yard", "frozen", 9),
        (18, "dahua-ch1", "auth", 2),
    ] {
        publish(
            broker,
            &cams("stream", camera),
            &stream(seq, 60, camera, class, failures),
            true,
        );
    }
    // Its LAN devices ([[reach.target]], docs/wire.md events): the NVR
    // stopped answering 45 min ago; the switch dropped out and came back.
    let device = |seq: u64, ago_s: i64, ev: &str, subject: &str, from: &str, to: &str| {
        format!(
            "{{\"v\":1,\"site\":\"site-cams\",\"boot\":\"{boot}\",\"seq\":{seq},\"ts\":{},\
             \"event\":\"{ev}\",\"severity\":\"{}\",\"subject\":\"{subject}\",\
             \"from\":\"{from}\",\"to\":\"{to}\",\"message\":\"{subject}: {to}\",\
             \"numbers\":{{\"loss_pct\":{}}}}}",
            now_ms - ago_s * 1000,
            if ev == "device_down" {
                "critical"
            } else {
                "info"
            },
            if ev == "device_down" { 100 } else { 0 },
        )
    };
    for (seq, ago, kind, subject, from, to) in [
        (20, 2800, "device_down", "switch", "up", "down"),
        (21, 2700, "device_down", "nvr", "up", "down"),
        (22, 2650, "device_up", "switch", "down", "up"),
    ] {
        publish(
            broker,
            &ev,
            &device(seq, ago, kind, subject, from, to),
            false,
        );
    }
    publish(
        broker,
        &t("site-cams", "heartbeat"),
        // The PPPoE reconnect put it behind the ISP's carrier-grade NAT.
        &addr(
            wan(
                heartbeat("site-cams", 19, now_ms - 1_000, 0),
                "pppoe-wan",
                1_000_000,
                2_000_000,
                0,
            ),
            "100.72.18.9",
            "cgnat",
        ),
        false,
    );
    // site-skew: a gateway that booted with a date a year behind (no
    // battery-backed clock, NTP not synced yet); its heartbeat says so.
    let year_ms = 365 * 86_400_000;
    publish(
        broker,
        &t("site-skew", "status"),
        &status("site-skew", 1, now_ms - year_ms, "online", None),
        true,
    );
    publish(
        broker,
        &t("site-skew", "heartbeat"),
        &heartbeat("site-skew", 2, now_ms - year_ms + 1_000, 0).replacen(
            "\"counters\"",
            "\"clock\":\"before_build\",\"counters\"",
            1,
        ),
        false,
    );
    // Something the bridge refuses.
    publish(broker, &t("site-disk", "heartbeat"), "{not json", false);
    // site-down's UPS went on battery before the site went silent: the
    // power-cut rule names it (the agent's [ups] event, docs/wire.md).
    publish(
        broker,
        &t("site-down", "event"),
        &format!(
            "{{\"v\":1,\"site\":\"site-down\",\"boot\":\"b0000000000000001\",\"seq\":4,\
             \"ts\":{},\"event\":\"ups_on_battery\",\"severity\":\"warning\",\"subject\":\"ups\",\
             \"from\":\"on_line\",\"to\":\"on_battery\",\
             \"message\":\"ups: on battery (OB DISCHRG), charge 97 %\",\
             \"numbers\":{{\"charge_pct\":97,\"runtime_secs\":1500}}}}",
            now_ms - 560_000
        ),
        false,
    );
    // UPS readings (the agent's `ups` kind, docs/wire.md): site-down's
    // after its event; site-cams' rack on mains 20 min ago, then on
    // battery; its nvr UPS reports no runtime and no input voltage.
    let ups = |site: &str, seq: u64, ago_s: i64, entries: &[String]| {
        format!(
            "{{\"v\":1,\"site\":\"{site}\",\"boot\":\"b0000000000000001\",\"seq\":{seq},\"ts\":{},\
             \"interval_secs\":15,\"ups\":[{}]}}",
            now_ms - ago_s * 1000,
            entries.join(",")
        )
    };
    let entry = |name: &str,
                 status: &str,
                 charge: u32,
                 load: u32,
                 runtime: Option<u32>,
                 volts: Option<f32>| {
        let power = if status.contains("OB") {
            "on_battery"
        } else {
            "on_line"
        };
        let runtime = runtime
            .map(|r| format!(",\"runtime_secs\":{r}"))
            .unwrap_or_default();
        let volts = volts
            .map(|v| format!(",\"input_voltage_v\":{v:.1}"))
            .unwrap_or_default();
        format!(
            "{{\"name\":\"{name}\",\"power\":\"{power}\",\"on_line\":{},\"on_battery\":{},\
             \"low_battery\":false,\"status\":\"{status}\",\"charge_pct\":{charge}.0,\
             \"load_pct\":{load}.0{runtime}{volts}}}",
            status.contains("OL"),
            status.contains("OB"),
        )
    };
    publish(
        broker,
        &t("site-down", "ups"),
        &ups(
            "site-down",
            5,
            555,
            &[entry("ups", "OB DISCHRG", 97, 31, Some(1500), Some(0.0))],
        ),
        false,
    );
    for (seq, ago, rack) in [
        (
            23,
            1200,
            entry("rack", "OL", 100, 40, Some(2400), Some(231.0)),
        ),
        (
            24,
            600,
            entry("rack", "OB DISCHRG", 80, 42, Some(1500), Some(0.0)),
        ),
        (
            25,
            60,
            entry("rack", "OB DISCHRG", 64, 42, Some(900), Some(0.0)),
        ),
    ] {
        publish(
            broker,
            &t("site-cams", "ups"),
            &ups(
                "site-cams",
                seq,
                ago,
                &[rack, entry("nvr", "OL CHRG", 100, 15, None, None)],
            ),
            false,
        );
    }
    // Reachability rounds (the agent's `reach` kind, docs/wire.md) of
    // site-cams, seqs 26..28 after the UPS readings (23..25; the
    // device events above are 20..22): the NVR does not
    // answer (down since its device_down event); the switch answers in
    // about a millisecond; the gate camera's RTSP port loses one probe
    // of three, its round trip growing.
    let reach = |seq: u64, ago_s: i64, switch_ms: f32, gate_ms: f32| {
        format!(
            "{{\"v\":1,\"site\":\"site-cams\",\"boot\":\"b0000000000000001\",\"seq\":{seq},\
             \"ts\":{},\"interval_secs\":30,\"targets\":[\
             {{\"name\":\"nvr\",\"address\":\"192.168.1.10\",\"kind\":\"icmp\",\"state\":\"down\",\
             \"sent\":3,\"received\":0}},\
             {{\"name\":\"switch\",\"address\":\"192.168.1.2\",\"kind\":\"icmp\",\"state\":\"up\",\
             \"sent\":3,\"received\":3,\"rtt_min_ms\":{switch_ms},\"rtt_avg_ms\":{switch_ms},\
             \"rtt_max_ms\":{switch_ms}}},\
             {{\"name\":\"gate\",\"address\":\"192.168.1.31\",\"kind\":\"tcp\",\"port\":554,\
             \"state\":\"up\",\"sent\":3,\"received\":2,\"rtt_min_ms\":{gate_ms},\
             \"rtt_avg_ms\":{gate_ms},\"rtt_max_ms\":{gate_ms}}}]}}",
            now_ms - ago_s * 1000,
        )
    };
    for (seq, ago, switch_ms, gate_ms) in [
        (26, 1200, 0.75, 5.0),
        (27, 600, 1.25, 20.0),
        (28, 60, 1.0, 40.0),
    ] {
        publish(
            broker,
            &t("site-cams", "reach"),
            &reach(seq, ago, switch_ms, gate_ms),
            false,
        );
    }
    // A DVR taken out of [reach] while it was down: its last event is
    // device_down, but no round lists it, so it must not alert.
    publish(
        broker,
        &ev,
        &device(29, 2900, "device_down", "old-dvr", "up", "down"),
        false,
    );
    // The Will, last.
    publish(
        broker,
        &t("site-down", "status"),
        &status("site-down", 0, now_ms - 500_000, "offline", Some("lost")),
        true,
    );
}
