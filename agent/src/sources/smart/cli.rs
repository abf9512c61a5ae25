//! `sitewatch-agent smart [DEVICE] [--type TYPE] [--json]`: reads SMART
//! natively, judges it with the same rules as the daemon, and prints it
//! for an installer.
//!
//! Without DEVICE every disk found in `/sys/block` is read. The rules run
//! with the default limits and without previous values (each disk's first
//! reading: counters above zero are warnings, growth cannot be seen).
//!
//! Exit status: 0 when every disk read is `ok` (a disk in standby, left
//! asleep, does not count against it); 1 when any disk is `warning` or
//! `critical`, could not be read or has no usable health interface, or
//! when no disk was found.
//!
//! `--json`: one object for DEVICE, else an array, one object per disk
//! (written by hand: the agent carries no JSON serializer beyond
//! serde-json-core, which cannot produce these variable-size documents).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::ata::AtaHealth;
use super::config::Limits;
use super::report::{DeviceType, Reading};
use super::rules::{judge, Level, Verdict};
use super::{io, nvme};

/// One disk's line in the output.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Device node.
    pub path: PathBuf,
    /// Type asked for (`auto` unless forced).
    pub kind: DeviceType,
    /// The reading, or why the device could not be read.
    pub reading: Result<Reading, String>,
    /// The rules' judgement (`None` for an unreadable device).
    pub verdict: Option<Verdict>,
}

impl Entry {
    /// Reads and judges one device (blocking).
    pub fn read(path: &Path, kind: DeviceType) -> Entry {
        let reading = io::read(path, kind);
        let verdict = reading
            .as_ref()
            .ok()
            .map(|r| judge(r, None, &Limits::default()));
        Entry {
            path: path.to_owned(),
            kind,
            reading,
            verdict,
        }
    }

    /// The verdict word: `ok`, `warning`, `critical`, `unknown`, or
    /// `unreadable`.
    pub fn verdict_word(&self) -> &'static str {
        match &self.verdict {
            Some(v) => v.level.as_str(),
            None => "unreadable",
        }
    }

    /// Whether this disk makes the command exit 1.
    pub fn is_bad(&self) -> bool {
        match (&self.reading, &self.verdict) {
            (Ok(Reading::Standby), _) => false,
            (Ok(_), Some(v)) => v.level != Level::Ok,
            _ => true,
        }
    }
}

/// Runs the subcommand: reads `device` (or every disk found), prints to
/// stdout, returns the exit status.
pub fn run(device: Option<&Path>, kind: Option<DeviceType>, json: bool) -> u8 {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    run_in(
        Path::new("/sys/block"),
        device,
        kind,
        json,
        &mut stdout.lock(),
        &mut stderr.lock(),
    )
}

/// [`run`] with the disks listed from `sys_block` and the output written
/// to `out` / `err`. The exit status does not depend on `json`: only the
/// shape of the output does.
pub fn run_in(
    sys_block: &Path,
    device: Option<&Path>,
    kind: Option<DeviceType>,
    json: bool,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> u8 {
    // A closed stdout (`| head`) is not a disk problem: write errors are
    // ignored, the status still says what was read.
    let (entries, single) = match device {
        Some(p) => (vec![Entry::read(p, kind.unwrap_or_default())], true),
        None => match io::discover::disks_in(sys_block) {
            Ok(found) if found.is_empty() => {
                let _ = writeln!(
                    err,
                    "No disks found in {} (loop, RAM, device-mapper, md, virtio and SD cards are skipped).",
                    sys_block.display()
                );
                if json {
                    let _ = writeln!(out, "[]");
                }
                return 1;
            }
            Ok(found) => (
                found
                    .iter()
                    .map(|f| Entry::read(&f.path, kind.unwrap_or(f.kind)))
                    .collect(),
                false,
            ),
            Err(e) => {
                let _ = writeln!(err, "Cannot list disks in {}: {e}", sys_block.display());
                if json {
                    let _ = writeln!(out, "[]");
                }
                return 1;
            }
        },
    };
    let _ = if json {
        if single {
            writeln!(out, "{}", entry_json(&entries[0]))
        } else {
            writeln!(out, "{}", entries_json(&entries))
        }
    } else {
        write!(out, "{}", table(&entries))
    };
    u8::from(entries.iter().any(Entry::is_bad))
}

/// Kernel-style name of a device path.
fn device_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// IDs shown in the table's short attribute list: the ones the rules and
/// installers look at.
const KEY_ATTRIBUTES: [u8; 10] = [1, 5, 9, 12, 187, 188, 190, 194, 197, 198];

fn health_word(h: AtaHealth) -> &'static str {
    match h {
        AtaHealth::Passed => "passed",
        AtaHealth::Failing => "FAILING",
        AtaHealth::Unknown => "unknown",
    }
}

fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// The plain-words table, one block per disk.
pub fn table(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        let _ = writeln!(
            s,
            "{}  {}",
            e.path.display(),
            e.verdict_word().to_uppercase()
        );
        let row = |s: &mut String, k: &str, v: &str| {
            let _ = writeln!(s, "  {k:<13} {v}");
        };
        match &e.reading {
            Err(why) => row(&mut s, "Error:", why),
            Ok(r) => {
                match r {
                    Reading::Ata {
                        identity,
                        health,
                        passthrough,
                        ..
                    } => {
                        row(
                            &mut s,
                            "Type:",
                            &format!("ATA (SAT, ATA PASS-THROUGH({passthrough}))"),
                        );
                        row(&mut s, "Model:", &identity.model);
                        row(&mut s, "Serial:", &identity.serial);
                        row(&mut s, "Firmware:", &identity.firmware);
                        if let Some(c) = identity.capacity_bytes {
                            row(&mut s, "Capacity:", &gb(c));
                        }
                        row(&mut s, "SMART status:", health_word(*health));
                    }
                    Reading::Nvme { identity, health } => {
                        row(&mut s, "Type:", "NVMe");
                        row(&mut s, "Model:", &identity.model);
                        row(&mut s, "Serial:", &identity.serial);
                        row(&mut s, "Firmware:", &identity.firmware);
                        if let Some(c) = identity.capacity_bytes {
                            row(&mut s, "Capacity:", &gb(c));
                        }
                        let warn = if health.critical_warning == 0 {
                            "none".to_owned()
                        } else {
                            format!(
                                "0x{:02x} ({})",
                                health.critical_warning,
                                nvme::critical_warning_names(health.critical_warning).join(", ")
                            )
                        };
                        row(&mut s, "Crit. warning:", &warn);
                        row(
                            &mut s,
                            "Spare:",
                            &format!(
                                "{} % (threshold {} %)",
                                health.available_spare, health.spare_threshold
                            ),
                        );
                        row(&mut s, "Used:", &format!("{} %", health.percentage_used));
                        row(&mut s, "Media errors:", &health.media_errors.to_string());
                        row(
                            &mut s,
                            "Unsafe stops:",
                            &health.unsafe_shutdowns.to_string(),
                        );
                    }
                    Reading::Scsi { identity, ie, .. } => {
                        row(&mut s, "Type:", "SCSI (LOG SENSE)");
                        row(&mut s, "Vendor:", &identity.vendor);
                        row(&mut s, "Model:", &identity.product);
                        row(&mut s, "Revision:", &identity.revision);
                        if let Some(ie) = ie {
                            row(
                                &mut s,
                                "Exceptions:",
                                &format!("ASC 0x{:02x} ASCQ 0x{:02x}", ie.asc, ie.ascq),
                            );
                        }
                    }
                    Reading::Standby => row(&mut s, "State:", "standby (not woken, not read)"),
                    // The reason is the verdict's `unsupported` reason.
                    Reading::Unsupported { .. } => {}
                }
                if let Some(t) = r.temperature_c() {
                    row(&mut s, "Temperature:", &format!("{t} °C"));
                }
                if let Some(h) = r.power_on_hours() {
                    row(&mut s, "Power-on:", &format!("{h} hours"));
                }
            }
        }
        if let Some(v) = &e.verdict {
            for (i, reason) in v.reasons.iter().enumerate() {
                let label = if i == 0 { "Reasons:" } else { "" };
                row(
                    &mut s,
                    label,
                    &format!("[{}] {}", reason.level.as_str(), reason.detail),
                );
            }
        }
        if let Ok(Reading::Ata { attributes, .. }) = &e.reading {
            let _ = writeln!(
                s,
                "  {:>3} {:<26} {:>5} {:>5} {:>6} {:>14}",
                "ID", "Attribute", "Value", "Worst", "Thresh", "Raw"
            );
            for a in attributes.iter().filter(|a| KEY_ATTRIBUTES.contains(&a.id)) {
                let th = a.threshold.map_or("-".to_owned(), |t| t.to_string());
                let _ = writeln!(
                    s,
                    "  {:>3} {:<26} {:>5} {:>5} {:>6} {:>14}",
                    a.id,
                    a.name(),
                    a.current,
                    a.worst,
                    th,
                    a.raw_value()
                );
            }
        }
        s.push('\n');
    }
    s
}

/// JSON string literal with escapes (RFC 8259).
fn jstr(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Builder for one JSON object.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        jstr(self.out, k);
        self.out.push(':');
        self.out
    }
    fn str(&mut self, k: &str, v: &str) {
        let o = self.key(k);
        jstr(o, v);
    }
    fn num(&mut self, k: &str, v: impl std::fmt::Display) {
        let o = self.key(k);
        let _ = write!(o, "{v}");
    }
    fn opt_num(&mut self, k: &str, v: Option<impl std::fmt::Display>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.key(k).push_str("null"),
        }
    }
    fn boolean(&mut self, k: &str, v: bool) {
        self.key(k).push_str(if v { "true" } else { "false" });
    }
    fn end(self) {
        self.out.push('}');
    }
}

fn kind_word(r: &Result<Reading, String>) -> &'static str {
    match r {
        Ok(Reading::Ata { .. }) => "ata",
        Ok(Reading::Nvme { .. }) => "nvme",
        Ok(Reading::Scsi { .. }) => "scsi",
        Ok(Reading::Standby) => "standby",
        Ok(Reading::Unsupported { .. }) => "unsupported",
        Err(_) => "error",
    }
}

/// One disk as a JSON object.
pub fn entry_json(e: &Entry) -> String {
    let mut s = String::new();
    let mut o = Obj::new(&mut s);
    o.str("device", &device_name(&e.path));
    o.str("path", &e.path.display().to_string());
    o.str("type", e.kind.as_str());
    o.str("reading", kind_word(&e.reading));
    o.str("verdict", e.verdict_word());
    {
        let out = o.key("reasons");
        out.push('[');
        if let Some(v) = &e.verdict {
            for (i, r) in v.reasons.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let mut ro = Obj::new(out);
                ro.str("code", r.code);
                ro.str("level", r.level.as_str());
                ro.str("detail", &r.detail);
                ro.end();
            }
        }
        out.push(']');
    }
    match &e.reading {
        Err(why) => o.str("error", why),
        Ok(r) => {
            if let Some(m) = r.model() {
                o.str("model", m);
            }
            if let Some(sn) = r.serial() {
                o.str("serial", sn);
            }
            o.opt_num("temperature_c", r.temperature_c());
            o.opt_num("power_on_hours", r.power_on_hours());
            match r {
                Reading::Ata {
                    identity,
                    attributes,
                    health,
                    passthrough,
                } => {
                    o.str("firmware", &identity.firmware);
                    o.opt_num("capacity_bytes", identity.capacity_bytes);
                    o.str(
                        "smart_status",
                        health_word(*health).to_ascii_lowercase().as_str(),
                    );
                    o.num("passthrough", passthrough);
                    let out = o.key("attributes");
                    out.push('[');
                    for (i, a) in attributes.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let mut ao = Obj::new(out);
                        ao.num("id", a.id);
                        ao.str("name", a.name());
                        ao.num("value", a.current);
                        ao.num("worst", a.worst);
                        ao.opt_num("threshold", a.threshold);
                        ao.boolean("prefail", a.prefail());
                        ao.num("raw", a.raw_u48());
                        ao.num("raw_value", a.raw_value());
                        ao.end();
                    }
                    out.push(']');
                }
                Reading::Nvme { identity, health } => {
                    o.str("firmware", &identity.firmware);
                    o.opt_num("capacity_bytes", identity.capacity_bytes);
                    o.num("critical_warning", health.critical_warning);
                    o.num("temperature_k", health.temperature_k);
                    o.num("available_spare", health.available_spare);
                    o.num("spare_threshold", health.spare_threshold);
                    o.num("percentage_used", health.percentage_used);
                    o.num("media_errors", health.media_errors);
                    o.num("error_log_entries", health.error_log_entries);
                    o.num("unsafe_shutdowns", health.unsafe_shutdowns);
                    o.num("power_cycles", health.power_cycles);
                    o.num("data_units_read", health.data_units_read);
                    o.num("data_units_written", health.data_units_written);
                }
                Reading::Scsi { identity, ie, .. } => {
                    o.str("vendor", &identity.vendor);
                    o.str("revision", &identity.revision);
                    o.opt_num("ie_asc", ie.map(|i| i.asc));
                    o.opt_num("ie_ascq", ie.map(|i| i.ascq));
                }
                Reading::Standby => {}
                Reading::Unsupported { reason } => o.str("unsupported", reason),
            }
        }
    }
    o.end();
    s
}

/// Every disk as a JSON array.
pub fn entries_json(entries: &[Entry]) -> String {
    let items: Vec<String> = entries.iter().map(entry_json).collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::smart::{ata, nvme as nv};

    /// Runs `run_in` in both output modes; returns (status, stdout) each.
    fn both_modes(sys_block: &Path, device: Option<&Path>) -> [(u8, String); 2] {
        [false, true].map(|json| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = run_in(sys_block, device, None, json, &mut out, &mut err);
            (code, String::from_utf8_lossy(&out).into_owned())
        })
    }

    #[test]
    fn exit_status_is_the_same_with_and_without_json() {
        let empty = tempfile::tempdir().unwrap();
        let [(text, _), (json, out)] = both_modes(empty.path(), None);
        assert_eq!(
            (text, json),
            (1, 1),
            "no disk found is a failure in both modes"
        );
        assert_eq!(out.trim(), "[]");

        let missing = empty.path().join("no-such-dir");
        let [(text, _), (json, out)] = both_modes(&missing, None);
        assert_eq!((text, json), (1, 1), "an unreadable /sys/block too");
        assert_eq!(out.trim(), "[]", "--json output stays JSON");

        let dev = empty.path().join("sdz");
        let [(text, table), (json, out)] = both_modes(empty.path(), Some(&dev));
        assert_eq!((text, json), (1, 1), "an unreadable device");
        assert!(table.contains("UNREADABLE"), "{table}");
        assert!(out.contains(r#""verdict":"unreadable""#), "{out}");
    }

    fn ata_entry() -> Entry {
        let id = ata::tests::identify("QEMU HARDDISK", "SWAHCI0001", 2_097_152);
        let mut attrs =
            ata::parse_smart_data(&ata::tests::data_sector(&ata::tests::QEMU_ATTRS)).unwrap();
        ata::merge_thresholds(&mut attrs, &ata::tests::QEMU_THRESH);
        let reading = Reading::Ata {
            identity: ata::parse_identify(&id).unwrap(),
            attributes: attrs,
            health: AtaHealth::Passed,
            passthrough: 16,
        };
        let verdict = Some(judge(&reading, None, &Limits::default()));
        Entry {
            path: PathBuf::from("/dev/sda"),
            kind: DeviceType::Auto,
            reading: Ok(reading),
            verdict,
        }
    }

    fn nvme_entry(cw: u8) -> Entry {
        let reading = Reading::Nvme {
            identity: nv::parse_identify_controller(&nv::tests::identify(
                "QEMU NVMe Ctrl",
                "SWN\"1",
            ))
            .unwrap(),
            health: nv::parse_health_log(&nv::tests::health_log(cw, 323, 0)).unwrap(),
        };
        let verdict = Some(judge(&reading, None, &Limits::default()));
        Entry {
            path: PathBuf::from("/dev/nvme0n1"),
            kind: DeviceType::Nvme,
            reading: Ok(reading),
            verdict,
        }
    }

    #[test]
    fn table_shows_identity_verdict_and_key_attributes() {
        let t = table(&[ata_entry()]);
        assert!(t.contains("/dev/sda  OK"), "{t}");
        assert!(t.contains("SWAHCI0001"), "{t}");
        assert!(t.contains("SMART status: passed"), "{t}");
        assert!(
            t.contains("Power_On_Hours") || t.contains("Power_On"),
            "{t}"
        );
    }

    #[test]
    fn critical_warning_is_named_and_exits_1() {
        let e = nvme_entry(4);
        assert_eq!(e.verdict_word(), "critical");
        assert!(e.is_bad());
        let t = table(std::slice::from_ref(&e));
        assert!(t.contains("0x04 (reliability"), "{t}");
        assert!(!nvme_entry(0).is_bad());
    }

    #[test]
    fn unreadable_and_standby_exit_codes() {
        let mut e = ata_entry();
        e.reading = Err("cannot open /dev/sdz: no such device".into());
        e.verdict = None;
        assert!(e.is_bad());
        assert_eq!(e.verdict_word(), "unreadable");
        let j = entry_json(&e);
        assert!(
            j.contains(r#""error":"cannot open /dev/sdz: no such device""#),
            "{j}"
        );
        let standby = Reading::Standby;
        let v = judge(&standby, None, &Limits::default());
        let e = Entry {
            reading: Ok(standby),
            verdict: Some(v),
            ..e
        };
        assert!(!e.is_bad());
    }

    #[test]
    fn json_is_valid_and_escaped() {
        let entries = [ata_entry(), nvme_entry(4)];
        let j = entries_json(&entries);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v[0]["serial"], "SWAHCI0001");
        assert_eq!(v[0]["smart_status"], "passed");
        assert_eq!(v[0]["verdict"], "ok");
        assert!(v[0]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == 9));
        assert_eq!(v[1]["serial"], "SWN\"1");
        assert_eq!(v[1]["critical_warning"], 4);
        assert_eq!(v[1]["verdict"], "critical");
        assert_eq!(v[1]["reasons"][0]["code"], "nvme_critical_warning");
        let mut s = String::new();
        jstr(&mut s, "a\u{1}\n\\");
        assert_eq!(s, r#""a\u0001\n\\""#);
    }
}
