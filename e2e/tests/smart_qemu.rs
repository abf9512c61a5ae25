//! The native SMART path against a real kernel: a Debian kernel boots under
//! qemu-system-x86_64 (TCG) with a busybox initramfs holding the static
//! x86_64-musl agent and smartctl 7.3, and four emulated disks (see
//! scripts/qemu-smart/run.sh): AHCI, NVMe, NVMe with
//! `smart_critical_warning=4`, and USB storage on xHCI. The guest runs
//! `sitewatch-agent smart --json` and `smartctl --json -a` on each disk.
//!
//! Asserted: the AHCI disk is read through ATA PASS-THROUGH(16) (identity,
//! attributes 1,3,4,5,9,12,190 equal to smartctl's, RETURN STATUS passed,
//! verdict ok) and again through ATA PASS-THROUGH(12) with `--type sat12`; the NVMe disk's identity and health log (verdict ok, equal
//! to smartctl's); the critical-warning disk is judged critical with the
//! reliability reason; the USB disk is reported as "no SAT passthrough".
//!
//! Prerequisites (qemu-system-x86, busybox-static, cpio, musl-tools, the
//! musl target, the kernel .deb) are installed by build.sh; when one cannot
//! be had the test FAILS, it never skips. Downloads are cached in
//! ~/.cache/sitewatch/qemu. Takes about a minute once the musl build is
//! warm (the guest boots in about 25 s under TCG).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_owned()
}

/// Runs a script, panicking with its output when it fails.
fn run_script(script: &str, out: &Path) -> String {
    let root = repo_root();
    let res = Command::new("bash")
        .arg(root.join(script))
        .arg(out)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "{script} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        res.status,
        tail(&stdout, 60),
        tail(&stderr, 60)
    );
    stdout
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines between `===SITEWATCH-BEGIN name===` and its END marker.
fn block<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("===SITEWATCH-BEGIN {name}===\n");
    let end = format!("===SITEWATCH-END {name}===");
    let s = out.find(&begin)? + begin.len();
    let e = s + out[s..].find(&end)?;
    Some(&out[s..e])
}

fn by_serial<'a>(disks: &'a [Value], serial: &str) -> &'a Value {
    disks
        .iter()
        .find(|d| d["serial"] == serial)
        .unwrap_or_else(|| panic!("no disk with serial {serial} in {disks:#?}"))
}

#[test]
fn native_smart_in_a_qemu_guest() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_script("scripts/qemu-smart/build.sh", dir.path());
    let out = run_script("scripts/qemu-smart/run.sh", dir.path());
    let secs = std::fs::read_to_string(dir.path().join("boot-seconds")).unwrap_or_default();
    eprintln!("guest run took {} s", secs.trim());

    let table = block(&out, "agent-table").expect("agent-table block");
    eprintln!("--- sitewatch-agent smart (in the guest)\n{table}");
    let json_block =
        block(&out, "agent-json").unwrap_or_else(|| panic!("no agent-json block:\n{out}"));
    let (json, exit) = json_block
        .trim_end()
        .rsplit_once("\nexit=")
        .unwrap_or_else(|| panic!("no exit status in:\n{json_block}"));
    // Critical and unsupported disks make the command exit 1.
    assert_eq!(exit.trim(), "1", "exit status of `smart --json`");
    let all: Value = serde_json::from_str(json.trim())
        .unwrap_or_else(|e| panic!("agent JSON does not parse ({e}):\n{json}"));
    let disks = all.as_array().expect("an array without DEVICE").clone();
    assert_eq!(disks.len(), 4, "four disks discovered: {disks:#?}");

    let smartctl = |dev: &str| -> Value {
        let b = block(&out, &format!("smartctl {dev}"))
            .unwrap_or_else(|| panic!("no smartctl block for {dev}"));
        serde_json::from_str(b).unwrap_or_else(|e| panic!("smartctl {dev} JSON: {e}\n{b}"))
    };

    // AHCI: ATA PASS-THROUGH(16) through libata.
    let ahci = by_serial(&disks, "SWAHCI0001");
    assert_eq!(ahci["reading"], "ata", "{ahci:#}");
    assert_eq!(ahci["model"], "SITEWATCH-AHCI-DISK");
    assert_eq!(ahci["passthrough"], 16);
    assert_eq!(ahci["smart_status"], "passed");
    assert_eq!(ahci["capacity_bytes"], 1u64 << 30);
    assert_eq!(ahci["verdict"], "ok", "{ahci:#}");
    let attrs = ahci["attributes"].as_array().expect("attributes");
    let ids: Vec<u64> = attrs.iter().filter_map(|a| a["id"].as_u64()).collect();
    assert_eq!(ids, [1, 3, 4, 5, 9, 12, 190], "{attrs:#?}");
    let t = ahci["temperature_c"]
        .as_i64()
        .expect("temperature from 190");
    assert!((1..100).contains(&t), "temperature {t}");
    // The same table as smartctl's, value for value.
    let sc = smartctl(ahci["device"].as_str().expect("device"));
    assert_eq!(sc["serial_number"], "SWAHCI0001");
    assert_eq!(sc["smart_status"]["passed"], true);
    let table = sc["ata_smart_attributes"]["table"]
        .as_array()
        .expect("smartctl table");
    assert_eq!(table.len(), attrs.len());
    for (ours, theirs) in attrs.iter().zip(table) {
        assert_eq!(ours["id"], theirs["id"]);
        assert_eq!(ours["value"], theirs["value"], "attribute {}", ours["id"]);
        assert_eq!(ours["worst"], theirs["worst"], "attribute {}", ours["id"]);
        assert_eq!(
            ours["threshold"], theirs["thresh"],
            "attribute {}",
            ours["id"]
        );
        assert_eq!(
            ours["raw"], theirs["raw"]["value"],
            "attribute {}",
            ours["id"]
        );
        assert_eq!(
            ours["prefail"], theirs["flags"]["prefailure"],
            "attribute {}",
            ours["id"]
        );
    }

    // The same disk through ATA PASS-THROUGH(12) (`--type sat12`, for old
    // USB bridges): the same identity and attributes.
    let b = block(&out, "agent-json-sat12").expect("agent-json-sat12 block");
    let (j, exit) = b
        .trim_end()
        .rsplit_once("\nexit=")
        .unwrap_or_else(|| panic!("no exit status in:\n{b}"));
    assert_eq!(exit.trim(), "0", "sat12 read of the SATA disk: {b}");
    let sat12: Value = serde_json::from_str(j.trim()).unwrap_or_else(|e| panic!("{e}: {j}"));
    assert_eq!(sat12["passthrough"], 12, "{sat12:#}");
    assert_eq!(sat12["type"], "sat12");
    assert_eq!(sat12["serial"], "SWAHCI0001");
    assert_eq!(sat12["smart_status"], "passed");
    assert_eq!(
        sat12["attributes"].as_array().map(Vec::len),
        Some(attrs.len())
    );

    // NVMe: Identify Controller and the health log, judged ok.
    let ok = by_serial(&disks, "SWNVMEOK01");
    assert_eq!(ok["reading"], "nvme", "{ok:#}");
    // QEMU reports no TNVMCAP: the size comes from the namespace's block
    // device (the 1 GiB image).
    assert_eq!(ok["capacity_bytes"], 1u64 << 30, "{ok:#}");
    assert_eq!(ok["model"], "QEMU NVMe Ctrl");
    assert_eq!(ok["critical_warning"], 0);
    assert_eq!(ok["verdict"], "ok", "{ok:#}");
    let sc = smartctl(ok["device"].as_str().expect("device"));
    let log = &sc["nvme_smart_health_information_log"];
    assert_eq!(ok["firmware"], sc["firmware_version"]);
    assert_eq!(ok["temperature_c"], log["temperature"]);
    assert_eq!(ok["available_spare"], log["available_spare"]);
    assert_eq!(ok["percentage_used"], log["percentage_used"]);
    assert_eq!(ok["media_errors"], log["media_errors"]);
    assert_eq!(ok["power_on_hours"], log["power_on_hours"]);

    // NVMe with critical warning bit 2: critical, for reliability.
    let crit = by_serial(&disks, "SWNVMECRIT1");
    assert_eq!(crit["critical_warning"], 4, "{crit:#}");
    assert_eq!(crit["verdict"], "critical", "{crit:#}");
    let reasons = crit["reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|r| r["code"] == "nvme_critical_warning"
            && r["level"] == "critical"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("reliability"))),
        "{reasons:#?}"
    );
    let sc = smartctl(crit["device"].as_str().expect("device"));
    assert_eq!(
        sc["nvme_smart_health_information_log"]["critical_warning"],
        4
    );

    // USB storage without SAT: a clear answer, not an error or a guess.
    let usb = disks
        .iter()
        .find(|d| d["reading"] == "unsupported")
        .unwrap_or_else(|| panic!("no unsupported disk: {disks:#?}"));
    let why = usb["unsupported"].as_str().expect("reason");
    assert!(why.contains("USB bridge with no SAT passthrough"), "{why}");
    assert!(why.contains("ILLEGAL REQUEST 05/20/00"), "{why}");
    assert_eq!(usb["verdict"], "unknown");
}
