//! What each panel and alert rule must show for the scenario: one table
//! entry per panel, run one by one so that a failing panel names itself.

use std::collections::BTreeMap;

use sitewatch_e2e::grafana::csv::Rows;

const FLEET: &str = "sitewatch-fleet";
const SITE: &str = "sitewatch-site";
const ALERT: &str = "alert";

/// Every query's rows, by dashboard, title and site (`""` when the query
/// has no `$site`), and each alert rule's firing label sets.
pub struct Results {
    /// Rows by `dashboard|title|site`.
    pub rows: BTreeMap<String, Rows>,
    /// Firing label sets by alert rule title.
    pub firing: BTreeMap<String, Vec<String>>,
}

impl Results {
    fn r(&self, dash: &str, title: &str, site: &str) -> &Rows {
        self.rows
            .get(&format!("{dash}|{title}|{site}"))
            .unwrap_or_else(|| panic!("no query {dash}|{title}|{site}"))
    }

    fn fires(&self, title: &str) -> Vec<String> {
        self.firing
            .get(title)
            .cloned()
            .unwrap_or_else(|| panic!("rule {title}"))
    }

    /// Whether any query of this panel or rule ran.
    fn has(&self, dash: &str, title: &str) -> bool {
        let prefix = format!("{dash}|{title}|");
        self.rows.keys().any(|k| k.starts_with(&prefix))
    }
}

/// One panel (or alert rule) and what its rows must say.
struct Panel {
    dashboard: &'static str,
    title: &'static str,
    check: fn(&Results),
}

/// Runs every panel's check, each on its own: a failure names its panel,
/// and one failing panel does not hide the others.
pub fn check(res: &Results) {
    let panels = panels();
    let mut failed = Vec::new();
    for p in &panels {
        let name = format!("{} / {}", p.dashboard, p.title);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(res.has(p.dashboard, p.title), "no such panel was queried");
            (p.check)(res)
        }));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("panel {name}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} panel checks failed:\n{}",
        failed.len(),
        panels.len(),
        failed.join("\n")
    );
}

/// The table: each panel's expectations for the scenario.
fn panels() -> Vec<Panel> {
    vec![
        // Fleet overview.
        Panel {
            dashboard: FLEET,
            title: "Bridges (share-group sessions)",
            // The grafana bridge has no share group; the rows inserted
            // before the queries ran are one live, one dead and drained,
            // one dead.
            check: |res| {
                let bridges = res.r(FLEET, "Bridges (share-group sessions)", "");
                assert_eq!(
                    bridges.column("bridge"),
                    ["b-dead", "b-drained", "b-live"],
                    "gone first"
                );
                assert_eq!(bridges.column("state"), ["gone", "gone_drained", "up"]);
                assert_eq!(bridges.get(1, "taken_over_by"), "b-live");
                assert_eq!(bridges.get(1, "taken_over_messages"), "36");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites now",
            check: |res| {
                let now = res.r(FLEET, "Sites now", "");
                assert_eq!(
                    (
                        now.get(0, "offline"),
                        now.get(0, "stale"),
                        now.get(0, "online")
                    ),
                    ("1", "0", "4")
                );
                // site-down (offline: its last reading was on battery) and
                // site-cams (online, its rack UPS on battery).
                assert_eq!(now.get(0, "on_battery"), "2");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites (worst first)",
            check: |res| {
                let sites = res.r(FLEET, "Sites (worst first)", "");
                assert_eq!(
                    sites.column("site"),
                    [
                        "site-down",
                        "site-cams",
                        "site-disk",
                        "site-online",
                        "site-skew"
                    ],
                    "worst first: offline, on battery, failed mount, then the rest"
                );
                assert_eq!(sites.get(0, "state"), "offline");
                assert_eq!(sites.get(0, "reason"), "lost");
                assert_eq!(sites.get(0, "ups"), "on_battery");
                assert_eq!(sites.get(1, "state"), "online");
                assert_eq!(
                    (sites.get(1, "ups"), sites.get(1, "ups_runtime_secs")),
                    ("on_battery", "900")
                );
                assert_eq!(sites.get(1, "cameras_down"), "2");
                assert_eq!(sites.get(1, "cameras_degraded"), "1");
                assert_eq!(sites.get(1, "smart_critical"), "1");
                assert_eq!(sites.get(1, "smart_warning"), "0");
                assert_eq!(sites.get(2, "failed_mounts"), "1");
                assert_eq!(sites.get(2, "missing_messages"), "12");
                assert_eq!(sites.get(2, "ups"), "", "no [ups] at site-disk");
                // The uplink's address class (migration 15): site-cams
                // went behind CGNAT, site-disk is behind an LTE modem;
                // the real agent at site-online reports lo.
                assert_eq!(sites.get(1, "uplink"), "cgnat");
                assert_eq!(sites.get(2, "uplink"), "private");
                assert_eq!(sites.get(3, "uplink"), "loopback");
                assert_eq!(sites.get(0, "uplink"), "", "no address sent");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites behind CGNAT or double NAT",
            check: |res| {
                let t = res.r(FLEET, "Sites behind CGNAT or double NAT", "");
                assert_eq!(t.column("site"), ["site-cams", "site-disk"], "CGNAT first");
                assert_eq!(t.column("address"), ["100.72.18.9", "192.168.8.100"]);
                assert!(
                    t.get(0, "what_to_do").contains("port forwards cannot work"),
                    "{:?}",
                    t.rows
                );
                assert!(t.get(1, "what_to_do").contains("second forward"));
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Disks failed, read-only or above the watermark",
            check: |res| {
                let disks = res.r(FLEET, "Disks failed, read-only or above the watermark", "");
                let disk_rows: Vec<String> = (0..disks.rows.len())
                    .map(|i| {
                        format!(
                            "{} {} {}",
                            disks.get(i, "site"),
                            disks.get(i, "path"),
                            disks.get(i, "problem")
                        )
                    })
                    .collect();
                assert_eq!(
                    disk_rows,
                    [
                        "site-disk /srv/recordings not_mounted",
                        "site-disk / above_watermark"
                    ]
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites with failed or full disks",
            check: |res| {
                assert_eq!(
                    res.r(FLEET, "Sites with failed or full disks", "")
                        .get(0, "sites"),
                    "1"
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sequence gaps and agent drops",
            check: |res| {
                let gaps = res.r(FLEET, "Sequence gaps and agent drops", "");
                assert_eq!(
                    gaps.column("site"),
                    ["site-disk"],
                    "only the site with a gap"
                );
                assert_eq!(gaps.get(0, "missing_current_boot"), "12");
                assert_eq!(gaps.get(0, "dropped"), "5");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Site availability",
            check: |res| {
                let timeline = res.r(FLEET, "Site availability", "");
                let last_down = timeline
                    .rows
                    .iter()
                    .rev()
                    .find(|row| row[timeline.col("metric")] == "site-down")
                    .expect("site-down in the timeline");
                assert_eq!(last_down[timeline.col("up")], "0", "site-down ends offline");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Rejected messages",
            check: |res| {
                assert_eq!(
                    res.r(FLEET, "Rejected messages", "").get(0, "rejected"),
                    "1"
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Latest rejected messages",
            check: |res| {
                assert_eq!(
                    res.r(FLEET, "Latest rejected messages", "")
                        .get(0, "reason"),
                    "malformed"
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Last message stored",
            check: |res| {
                let ingest = res.r(FLEET, "Last message stored", "");
                assert!(
                    ingest
                        .get(0, "seconds_since_last_heartbeat")
                        .parse::<i64>()
                        .unwrap()
                        < 60
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Cameras now",
            check: |res| {
                let cams_now = res.r(FLEET, "Cameras now", "");
                assert_eq!(
                    (
                        cams_now.get(0, "down"),
                        cams_now.get(0, "degraded"),
                        cams_now.get(0, "ok")
                    ),
                    ("2", "1", "1")
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Disks by SMART verdict",
            check: |res| {
                let verdicts = res.r(FLEET, "Disks by SMART verdict", "");
                assert_eq!(
                    (
                        verdicts.get(0, "critical"),
                        verdicts.get(0, "warning"),
                        verdicts.get(0, "unknown"),
                        verdicts.get(0, "ok")
                    ),
                    ("1", "0", "0", "2")
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Cameras not ok (worst first)",
            check: |res| {
                let bad_cams = res.r(FLEET, "Cameras not ok (worst first)", "");
                let bad_rows: Vec<String> = (0..bad_cams.rows.len())
                    .map(|i| {
                        format!(
                            "{} {} {} {}",
                            bad_cams.get(i, "site"),
                            bad_cams.get(i, "camera"),
                            bad_cams.get(i, "class"),
                            bad_cams.get(i, "severity")
                        )
                    })
                    .collect();
                assert_eq!(
                    bad_rows,
                    [
                        "site-cams lobby stalled down",
                        "site-cams dahua-ch1 auth down",
                        "site-cams yard frozen degraded"
                    ],
                    "down before degraded, longest down first; the ok camera is not listed"
                );
                // class_since is the first probe of the class (agent time), not the latest.
                let lobby_for: i64 = bad_cams.get(0, "for_seconds").parse().expect("for_seconds");
                assert!(
                    (1190..1300).contains(&lobby_for),
                    "lobby stalled for {lobby_for} s"
                );
                assert_eq!(bad_cams.get(0, "failures"), "5");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Disks SMART critical or warning",
            check: |res| {
                let smart_bad = res.r(FLEET, "Disks SMART critical or warning", "");
                assert_eq!(smart_bad.column("device"), ["sda"]);
                assert_eq!(smart_bad.get(0, "verdict"), "critical");
                assert_eq!(smart_bad.get(0, "serial"), "ZW60ABCD");
                assert!(
                    smart_bad
                        .get(0, "reasons")
                        .starts_with("critical pending_growing: 16 sectors pending"),
                    "{}",
                    smart_bad.get(0, "reasons")
                );
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Recent events",
            check: |res| {
                let recent = res.r(FLEET, "Recent events", "");
                assert_eq!(
                    recent.column("subject"),
                    [
                        "dahua-ch1",
                        "ups",
                        "lobby",
                        "sda",
                        "yard",
                        "switch",
                        "nvr",
                        "switch",
                        "old-dvr"
                    ],
                    "newest first (site-down's UPS on battery among site-cams' events)"
                );
                assert_eq!(recent.get(0, "to_state"), "auth");
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Clock skew per site",
            check: |res| {
                let skews = res.r(FLEET, "Clock skew per site", "");
                assert_eq!(skews.get(0, "site"), "site-skew", "the skewed site first");
                assert_eq!(skews.get(0, "flag"), "beyond_bound");
                let skew_s: f64 = skews.get(0, "skew_seconds").parse().expect("skew");
                assert!(
                    (-365.0 * 86400.0 - 120.0..-365.0 * 86400.0 + 120.0).contains(&skew_s),
                    "site-skew is a year behind: {skew_s}"
                );
                let flags: BTreeMap<&str, &str> = skews
                    .column("site")
                    .into_iter()
                    .zip(skews.column("flag"))
                    .collect();
                assert_eq!(
                    flags.get("site-down"),
                    Some(&"site_not_online"),
                    "{flags:?}"
                );
                for ok in ["site-cams", "site-disk", "site-online"] {
                    assert_eq!(flags.get(ok), Some(&"ok"), "{flags:?}");
                }
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Sites with clock skew",
            check: |res| {
                assert_eq!(
                    res.r(FLEET, "Sites with clock skew", "").get(0, "sites"),
                    "1"
                );
            },
        },
        // Site detail.
        Panel {
            dashboard: SITE,
            title: "variable site",
            check: |res| {
                let site_var = res.r(SITE, "variable site", "site-disk");
                assert_eq!(
                    site_var.column("site"),
                    [
                        "site-cams",
                        "site-disk",
                        "site-down",
                        "site-online",
                        "site-skew"
                    ]
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "Days until full (trend of the time range)",
            check: |res| {
                let forecast = res.r(
                    SITE,
                    "Days until full (trend of the time range)",
                    "site-disk",
                );
                assert_eq!(forecast.column("path"), ["/"]);
                let days: f64 = forecast.get(0, "days_until_full").parse().expect("days");
                // 35 GB left, 192 GB more used per day: 0.18 days.
                assert!((0.17..=0.19).contains(&days), "days until full {days}");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Mounts now",
            check: |res| {
                let mounts = res.r(SITE, "Mounts now", "site-disk");
                assert_eq!(mounts.get(0, "error"), "not_mounted");
                let ok_mounts = res.r(SITE, "Mounts now", "site-online");
                assert_eq!(ok_mounts.column("path"), ["/dev/shm"]);
                assert_eq!(ok_mounts.get(0, "error"), "");
            },
        },
        Panel {
            dashboard: SITE,
            title: "UPS now",
            check: |res| {
                let cams = res.r(SITE, "UPS now", "site-cams");
                assert_eq!(cams.column("ups"), ["rack", "nvr"], "on battery first");
                assert_eq!(cams.column("power"), ["on_battery", "on_line"]);
                assert_eq!(cams.get(0, "status"), "OB DISCHRG");
                assert_eq!(
                    (
                        cams.get(0, "charge_pct"),
                        cams.get(0, "runtime_secs"),
                        cams.get(0, "load_pct"),
                        cams.get(0, "input_voltage_v")
                    ),
                    ("64", "900", "42", "0")
                );
                assert_eq!(
                    (cams.get(1, "runtime_secs"), cams.get(1, "input_voltage_v")),
                    ("", ""),
                    "not reported: empty, not 0"
                );
                let down = res.r(SITE, "UPS now", "site-down");
                assert_eq!(down.column("ups"), ["ups"]);
                assert_eq!(down.get(0, "power"), "on_battery");
                assert!(res.r(SITE, "UPS now", "site-online").rows.is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "UPS charge and load",
            check: |res| {
                let r = res.r(SITE, "UPS charge and load", "site-cams");
                let last = |metric: &str| {
                    r.rows
                        .iter()
                        .rev()
                        .find(|row| row[r.col("metric")] == metric)
                        .map(|row| row[r.col("pct")].clone())
                        .unwrap_or_else(|| panic!("no {metric}"))
                };
                assert_eq!(last("rack charge"), "64");
                assert_eq!(last("rack load"), "42");
                assert_eq!(last("nvr charge"), "100");
                assert_eq!(r.rows.len(), 12, "2 UPS x 2 figures x 3 readings");
            },
        },
        Panel {
            dashboard: SITE,
            title: "UPS runtime left",
            check: |res| {
                let r = res.r(SITE, "UPS runtime left", "site-cams");
                assert_eq!(
                    r.column("metric"),
                    ["rack", "rack", "rack"],
                    "nvr reports none"
                );
                assert_eq!(r.column("runtime_secs"), ["2400", "1500", "900"]);
            },
        },
        Panel {
            dashboard: SITE,
            title: "UPS input voltage",
            check: |res| {
                let r = res.r(SITE, "UPS input voltage", "site-cams");
                assert_eq!(
                    r.column("metric"),
                    ["rack", "rack", "rack"],
                    "nvr reports none"
                );
                assert_eq!(r.column("input_voltage_v"), ["231", "0", "0"]);
                assert!(res
                    .r(SITE, "UPS input voltage", "site-disk")
                    .rows
                    .is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "Uplink address",
            check: |res| {
                let cams = res.r(SITE, "Uplink address", "site-cams");
                assert_eq!(cams.column("address"), ["100.72.18.9"]);
                assert_eq!(cams.get(0, "class"), "cgnat");
                assert!(cams.get(0, "meaning").contains("carrier-grade NAT"));
                // Since the heartbeat that brought it, not the earlier
                // public one.
                assert_ne!(cams.get(0, "since"), "");
                let disk = res.r(SITE, "Uplink address", "site-disk");
                assert_eq!(disk.get(0, "class"), "private");
                let online = res.r(SITE, "Uplink address", "site-online");
                assert_eq!(
                    online.column("address"),
                    ["127.0.0.1"],
                    "a real agent on lo"
                );
                assert!(res.r(SITE, "Uplink address", "site-down").rows.is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "Uplink traffic",
            check: |res| {
                let num = |t: &str| {
                    t.parse::<f64>()
                        .unwrap_or_else(|_| panic!("not a number: {t:?}"))
                };
                // site-disk: 800 MB in and 400 MB out between its two
                // heartbeats: one row, twice the rate in as out.
                let disk = res.r(SITE, "Uplink traffic", "site-disk");
                assert_eq!(disk.rows.len(), 1, "{:?}", disk.rows);
                let (i, o) = (num(disk.get(0, "in")), num(disk.get(0, "out")));
                assert!(o > 0.0 && (i / o - 2.0).abs() < 1e-9, "in {i} out {o}");
                // site-cams: the receive counter was reset: a gap, never a
                // negative rate; the send counter still gives a rate.
                let cams = res.r(SITE, "Uplink traffic", "site-cams");
                assert_eq!(cams.rows.len(), 1, "{:?}", cams.rows);
                assert_eq!(cams.get(0, "in"), "", "reset shown as a gap");
                assert!(num(cams.get(0, "out")) > 0.0);
                // site-online: a real agent reporting lo, which its own
                // MQTT traffic crosses.
                let online = res.r(SITE, "Uplink traffic", "site-online");
                assert!(
                    online
                        .column("in")
                        .iter()
                        .any(|v| !v.is_empty() && num(v) > 0.0),
                    "{:?}",
                    online.rows
                );
                // No uplink counters: nothing, not zeros.
                assert!(res.r(SITE, "Uplink traffic", "site-down").rows.is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "Devices on the site LAN",
            check: |res| {
                let cams = res.r(SITE, "Devices on the site LAN", "site-cams");
                assert_eq!(
                    cams.column("target"),
                    ["nvr", "gate", "switch"],
                    "down first, then by loss"
                );
                assert_eq!(cams.column("state"), ["down", "up", "up"]);
                assert_eq!(cams.column("kind"), ["icmp", "tcp:554", "icmp"]);
                assert_eq!(cams.column("loss_pct"), ["100.0", "33.3", "0.0"]);
                assert_eq!(
                    cams.column("rtt_avg_ms"),
                    ["", "40.00", "1.00"],
                    "no answer: empty, not 0"
                );
                assert_eq!(cams.get(0, "last_seen"), "", "the NVR never answered");
                assert!(!cams.get(1, "last_seen").is_empty());
                // The NVR has been down since the first round stored.
                assert_ne!(cams.get(0, "state_since"), cams.get(1, "last_seen"));
                assert!(res
                    .r(SITE, "Devices on the site LAN", "site-online")
                    .rows
                    .is_empty());
            },
        },
        Panel {
            dashboard: FLEET,
            title: "Messages stored per interval",
            check: |res| {
                let r = res.r(FLEET, "Messages stored per interval", "");
                let mut by_kind = BTreeMap::<String, f64>::new();
                for row in &r.rows {
                    let n: f64 = row[r.col("messages")].parse().expect("number");
                    *by_kind.entry(row[r.col("metric")].clone()).or_default() += n;
                }
                // Every kind the scenario stores is counted (migration
                // 0016: not only heartbeat, disk, status and log). The
                // scenario's messages: camera probes 3 + 1 + 1 + 4
                // (site-cams, seqs 3-5, 9, 12, 15-18), SMART 3 (sda, sdb,
                // nvme0n1), events 8 of site-cams + 1 of site-down, UPS
                // readings 1 of site-down + 3 of site-cams (a reading of
                // two UPSes is one message), reach rounds 3 (a round of
                // three targets is one message).
                let n = |k: &str| by_kind.get(k).copied().unwrap_or_default();
                assert_eq!(
                    [n("stream"), n("smart"), n("event"), n("ups"), n("reach")],
                    [9.0, 3.0, 9.0, 4.0, 3.0],
                    "{by_kind:?}"
                );
                for k in ["heartbeat", "disk", "status"] {
                    assert!(n(k) > 0.0, "{k}: {by_kind:?}");
                }
            },
        },
        Panel {
            dashboard: FLEET,
            title: "LAN devices not answering",
            check: |res| {
                let r = res.r(FLEET, "LAN devices not answering", "");
                let rows: Vec<String> = (0..r.rows.len())
                    .map(|i| {
                        format!(
                            "{} {} {} {} {}",
                            r.get(i, "site"),
                            r.get(i, "target"),
                            r.get(i, "address"),
                            r.get(i, "kind"),
                            r.get(i, "state")
                        )
                    })
                    .collect();
                // Only the NVR of site-cams: its switch and gate camera
                // answer, and no other site has [reach].
                assert_eq!(rows, ["site-cams nvr 192.168.1.10 icmp down"]);
                assert_eq!(r.get(0, "last_seen"), "", "never answered");
                assert_eq!(r.get(0, "site_state"), "online");
                let secs: i64 = r.get(0, "for_seconds").parse().expect("seconds");
                assert!(
                    (1100..1300).contains(&secs),
                    "down since the first round (-1200 s): {secs}"
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "LAN devices: round trip and loss",
            check: |res| {
                let r = res.r(SITE, "LAN devices: round trip and loss", "site-cams");
                let series = |metric: &str| -> Vec<String> {
                    r.rows
                        .iter()
                        .filter(|row| row[r.col("metric")] == metric)
                        .map(|row| row[r.col("value")].clone())
                        .collect()
                };
                assert_eq!(series("gate rtt"), ["5", "20", "40"], "growing");
                assert_eq!(series("gate loss"), ["33.3", "33.3", "33.3"]);
                assert_eq!(series("nvr loss"), ["100", "100", "100"]);
                assert!(series("nvr rtt").is_empty(), "no answer: no point");
                assert_eq!(series("switch rtt").len(), 3);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Uplink errors and drops",
            check: |res| {
                let disk = res.r(SITE, "Uplink errors and drops", "site-disk");
                assert_eq!(disk.rows.len(), 1, "{:?}", disk.rows);
                let rx: f64 = disk.get(0, "rx errors").parse().expect("number");
                assert!(rx > 0.0, "10 receive errors in the interval");
                assert_eq!(disk.get(0, "tx errors").parse::<f64>().ok(), Some(0.0));
            },
        },
        Panel {
            dashboard: SITE,
            title: "Load",
            check: |res| assert!(!res.r(SITE, "Load", "site-online").rows.is_empty()),
        },
        Panel {
            dashboard: SITE,
            title: "Memory",
            check: |res| assert!(!res.r(SITE, "Memory", "site-online").rows.is_empty()),
        },
        Panel {
            dashboard: SITE,
            title: "Disk used % per mount",
            check: |res| {
                assert_eq!(
                    res.r(SITE, "Disk used % per mount", "site-disk").rows.len(),
                    5
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "Status events",
            check: |res| {
                let events = res.r(SITE, "Status events", "site-down");
                assert_eq!(events.get(0, "reason"), "lost");
            },
        },
        Panel {
            dashboard: SITE,
            title: "State",
            check: |res| {
                assert_eq!(res.r(SITE, "State", "site-down").get(0, "state"), "offline");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Cameras now",
            check: |res| {
                let site_cams = res.r(SITE, "Cameras now", "site-cams");
                assert_eq!(
                    site_cams.column("camera"),
                    ["lobby", "dahua-ch1", "yard", "gate"]
                );
                assert_eq!(site_cams.get(3, "resolution"), "640x360");
                assert_eq!(site_cams.get(3, "fps"), "25");
                assert!(res.r(SITE, "Cameras now", "site-online").rows.is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "Cameras from the centre",
            check: |res| {
                let t = "Cameras from the centre";
                let online = res.r(SITE, t, "site-online");
                assert_eq!(online.column("camera"), ["till", "door"], "failing first");
                assert_eq!(online.column("class"), ["auth", "ok"]);
                assert_eq!(online.get(1, "resolved_to"), "198.51.100.2");
                // The DDNS check (migration 15): door's name resolves to
                // the site's WAN address, till's does not.
                assert_eq!(online.column("ddns"), ["f", "t"]);
                let down = res.r(SITE, t, "site-down");
                assert_eq!(down.column("class"), ["dns"]);
                assert_eq!(
                    down.get(0, "resolved_to"),
                    "",
                    "a name that does not resolve"
                );
                assert!(res.r(SITE, t, "site-disk").rows.is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "Camera class",
            check: |res| {
                let timeline = res.r(SITE, "Camera class", "site-cams");
                let mut classes: Vec<String> = timeline
                    .rows
                    .iter()
                    .map(|row| {
                        format!(
                            "{}={}",
                            row[timeline.col("metric")],
                            row[timeline.col("class")]
                        )
                    })
                    .collect();
                classes.sort();
                classes.dedup();
                assert_eq!(
                    classes,
                    ["dahua-ch1=14", "gate=0", "lobby=0", "lobby=19", "yard=2"],
                    "class codes of the value mappings (ok 0, frozen 2, auth 14, stalled 19)"
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "Camera fps",
            check: |res| {
                let fps = res.r(SITE, "Camera fps", "site-cams");
                assert_eq!(fps.rows.len(), 9, "one row per probe, null when no frames");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Camera bitrate",
            check: |res| {
                assert_eq!(res.r(SITE, "Camera bitrate", "site-cams").rows.len(), 9);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Disks now (SMART)",
            check: |res| {
                let disks_now = res.r(SITE, "Disks now (SMART)", "site-cams");
                assert_eq!(disks_now.column("device"), ["sda", "nvme0n1", "sdb"]);
                assert_eq!(disks_now.get(0, "pending"), "16");
                assert_eq!(disks_now.get(0, "reallocated"), "8");
                assert_eq!(disks_now.get(0, "power_on_hours"), "25760");
                assert_eq!(disks_now.get(1, "nvme_percentage_used"), "3");
                assert_eq!(disks_now.get(1, "nvme_available_spare"), "100");
            },
        },
        Panel {
            dashboard: SITE,
            title: "SMART verdict per disk",
            check: |res| {
                let verdict_tl = res.r(SITE, "SMART verdict per disk", "site-cams");
                assert_eq!(verdict_tl.rows.len(), 3);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Disk temperature",
            check: |res| {
                assert_eq!(res.r(SITE, "Disk temperature", "site-cams").rows.len(), 3);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Bad sectors and link errors (ATA)",
            check: |res| {
                assert_eq!(
                    res.r(SITE, "Bad sectors and link errors (ATA)", "site-cams")
                        .rows
                        .len(),
                    2,
                    "sda and sdb, not the NVMe disk"
                );
            },
        },
        Panel {
            dashboard: SITE,
            title: "NVMe wear and spare",
            check: |res| {
                let nvme = res.r(SITE, "NVMe wear and spare", "site-cams");
                assert_eq!(nvme.column("metric"), ["nvme0n1"]);
                assert_eq!(nvme.get(0, "percentage_used"), "3");
            },
        },
        Panel {
            dashboard: SITE,
            title: "Power-on hours",
            check: |res| {
                assert_eq!(res.r(SITE, "Power-on hours", "site-cams").rows.len(), 3);
            },
        },
        Panel {
            dashboard: SITE,
            title: "Events of $site",
            check: |res| {
                assert_eq!(res.r(SITE, "Events of $site", "site-cams").rows.len(), 8);
                assert!(res.r(SITE, "Events of $site", "site-disk").rows.is_empty());
            },
        },
        Panel {
            dashboard: SITE,
            title: "Clock of $site",
            check: |res| {
                let clock = res.r(SITE, "Clock of $site", "site-skew");
                assert_eq!(clock.get(0, "flag"), "beyond_bound");
                assert_eq!(
                    res.r(SITE, "Clock of $site", "site-cams").get(0, "flag"),
                    "ok"
                );
            },
        },
        // Alert rules, with their thresholds applied.
        Panel {
            dashboard: ALERT,
            title: "Site offline or stale",
            check: |res| {
                assert_eq!(
                    res.r(ALERT, "Site offline or stale", "").column("site"),
                    ["site-down"],
                    "the down rule sees only the offline site (it fires once it has been down SITE_DOWN_MINUTES)"
                );
                assert!(
                    res.fires("Site offline or stale").is_empty(),
                    "down for seconds only, threshold is minutes"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Site lost while on battery (power cut)",
            check: |res| {
                let t = "Site lost while on battery (power cut)";
                assert_eq!(
                    res.r(ALERT, t, "").column("site"),
                    ["site-down"],
                    "the offline site whose last UPS event is on battery"
                );
                assert!(
                    res.fires(t).is_empty(),
                    "down for seconds only, threshold POWER_CUT_MINUTES is minutes"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Device on the site LAN unreachable",
            check: |res| {
                let t = "Device on the site LAN unreachable";
                // The NVR's last event is device_down (45 min); the
                // switch came back; site-down's devices are not judged;
                // old-dvr's last event is device_down too, but it was
                // taken out of [reach] (no row in reach_targets).
                assert_eq!(res.fires(t), ["site=site-cams,device=nvr"]);
                assert_eq!(res.r(ALERT, t, "").column("device"), ["nvr"]);
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Disk above watermark",
            check: |res| assert_eq!(res.fires("Disk above watermark"), ["site=site-disk,path=/"]),
        },
        Panel {
            dashboard: ALERT,
            title: "Disk forecast full",
            check: |res| assert_eq!(res.fires("Disk forecast full"), ["site=site-disk,path=/"]),
        },
        Panel {
            dashboard: ALERT,
            title: "Mount failed or read-only",
            check: |res| {
                assert_eq!(
                    res.fires("Mount failed or read-only"),
                    ["site=site-disk,path=/srv/recordings,problem=not_mounted"]
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Bridge not ingesting",
            check: |res| {
                assert!(res.fires("Bridge not ingesting").is_empty());
                let stalled = res.r(ALERT, "Bridge not ingesting", "");
                assert!(
                    stalled
                        .get(0, "minutes_since_heartbeat")
                        .parse::<f64>()
                        .unwrap()
                        < 1.0
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Bridge gone, session not drained",
            check: |res| {
                assert_eq!(
                    res.fires("Bridge gone, session not drained"),
                    ["bridge=b-dead"],
                    "silent 5 min and not drained; the drained and the live one do not fire"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Messages missing (sequence gaps)",
            check: |res| {
                assert_eq!(
                    res.fires("Messages missing (sequence gaps)"),
                    ["site=site-disk"],
                    "12 > GAP_MESSAGES=10"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Camera down",
            check: |res| {
                let mut down_rows = res.r(ALERT, "Camera down", "").column("camera");
                down_rows.sort_unstable();
                assert_eq!(
                    down_rows,
                    ["dahua-ch1", "lobby"],
                    "the rule sees both down cameras of the online site"
                );
                assert_eq!(
                    res.fires("Camera down"),
                    ["site=site-cams,camera=lobby,class=stalled"],
                    "stalled for 20 min > CAMERA_DOWN_MINUTES=10; auth for 4 min not yet; frozen is not down"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Cameras unreachable from the centre",
            check: |res| {
                let t = "Cameras unreachable from the centre";
                assert_eq!(
                    res.r(ALERT, t, "").column("site"),
                    ["site-cams"],
                    "only the online site whose fresh probes all fail"
                );
                assert_eq!(
                    res.fires(t),
                    ["site=site-cams,classes=tcp_timeout"],
                    "all unreachable for 20 min > CENTRE_UNREACHABLE_MINUTES=15"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Camera degraded",
            check: |res| {
                assert_eq!(
                    res.fires("Camera degraded"),
                    ["site=site-cams,camera=yard,class=frozen"],
                    "frozen for 40 min > CAMERA_DEGRADED_MINUTES=30"
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Disk SMART critical",
            check: |res| {
                assert_eq!(
                    res.fires("Disk SMART critical"),
                    ["site=site-cams,device=sda,reason=pending_growing,serial=ZW60ABCD"]
                );
            },
        },
        Panel {
            dashboard: ALERT,
            title: "Site clock skew",
            check: |res| {
                assert_eq!(
                    res.fires("Site clock skew"),
                    ["site=site-skew"],
                    "a year > CLOCK_SKEW_SECONDS=300; the offline site's Will-stamped skew is not counted"
                );
            },
        },
    ]
}
