//! The OpenWrt package's UCI → TOML translation, run for real: the init
//! script (openwrt/files/sitewatch.init) is sourced once into a persistent
//! POSIX shell (`busybox sh` when present, else dash, as ash is close to
//! it) with the test stand-ins for OpenWrt's functions.sh and procd.sh
//! (openwrt/tests/stubs/). Per input, a /etc/config/sitewatch built from
//! the fuzz bytes (values UCI single-quoted, so the UCI layer stays valid
//! and any byte but NUL reaches the script) is loaded and `write_config`
//! writes the agent's TOML; the shell prints it, then a sentinel line with
//! the status.
//!
//! Input: one flags byte (presets: which tables are enabled, a usable site
//! id and broker URL...), then NUL-separated records `<tag><value>`: the
//! tag picks a UCI option (or starts another camera, cleanup root or
//! syslog host section), the value is any bytes but NUL (at most 256).
//!
//! What must hold:
//! 1. the translation refuses (nonzero status, a reason logged, no file
//!    left, not even the temporary one) or writes a UTF-8, valid TOML file
//!    (mode 0600);
//! 2. that file is exactly what the UCI sections imply (modelled below):
//!    every string equal to its UCI value, no extra key or table, so no
//!    injection; the model refuses where the script must;
//! 3. `Config::parse` accepts it, or explains (non-empty problems) without
//!    the password in its words; the summary of an accepted config does
//!    not show it either.
//!
//! `*_file` values are put under a directory that does not exist: the
//! agent's validation reads those files, and the fuzzer must not make it
//! read /dev/zero or stdin.
#![no_main]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::Config;
use toml::{Table, Value};

const MAX_VALUE: usize = 256;
const MAX_RECORDS: usize = 48;
/// Cameras, cleanup roots and syslog hosts: at most this many of each.
const MAX_REPEATED: usize = 4;
const FILE_PREFIX: &[u8] = b"/nonexistent-sitewatch-fuzz/";
const PLACEHOLDER_PW: &str = "fuzz-placeholder-password";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sec {
    Main,
    Mqtt,
    Heartbeat,
    Disk,
    Syslog,
    SyslogHost,
    Rtsp,
    Camera,
    Smart,
    Cleanup,
    CleanupRoot,
    Ups,
    Outbox,
}

/// Named sections, in file order, with their UCI type and name.
const NAMED: [(Sec, &str, &str); 10] = [
    (Sec::Main, "agent", "main"),
    (Sec::Mqtt, "mqtt", "mqtt"),
    (Sec::Heartbeat, "heartbeat", "heartbeat"),
    (Sec::Disk, "disk", "disk"),
    (Sec::Syslog, "syslog", "syslog"),
    (Sec::Rtsp, "rtsp", "rtsp"),
    (Sec::Smart, "smart", "smart"),
    (Sec::Cleanup, "cleanup", "cleanup"),
    (Sec::Ups, "ups", "ups"),
    (Sec::Outbox, "outbox", "outbox"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Opt,
    List,
    /// An option naming a file: the value goes under FILE_PREFIX.
    File,
}
use Kind::*;

const OPTIONS: &[(Sec, &str, Kind)] = &[
    (Sec::Main, "site_id", Opt),
    (Sec::Main, "log_level", Opt),
    (Sec::Mqtt, "url", Opt),
    (Sec::Mqtt, "username", Opt),
    (Sec::Mqtt, "password", Opt),
    (Sec::Mqtt, "password_file", File),
    (Sec::Mqtt, "ca_file", File),
    (Sec::Mqtt, "client_cert_file", File),
    (Sec::Mqtt, "client_key_file", File),
    (Sec::Mqtt, "client_id", Opt),
    (Sec::Mqtt, "allow_plaintext", Opt),
    (Sec::Mqtt, "keep_alive_secs", Opt),
    (Sec::Heartbeat, "interval_secs", Opt),
    (Sec::Disk, "enabled", Opt),
    (Sec::Disk, "interval_secs", Opt),
    (Sec::Disk, "mount", List),
    (Sec::Disk, "statvfs_timeout_ms", Opt),
    (Sec::Syslog, "enabled", Opt),
    (Sec::Syslog, "udp", List),
    (Sec::Syslog, "tcp", List),
    (Sec::Syslog, "timezone", Opt),
    (Sec::Syslog, "allow", List),
    (Sec::Syslog, "rate_limit_per_sec", Opt),
    (Sec::Syslog, "rate_limit_burst", Opt),
    (Sec::Syslog, "max_line_bytes", Opt),
    (Sec::SyslogHost, "address", Opt),
    (Sec::SyslogHost, "name", Opt),
    (Sec::Rtsp, "enabled", Opt),
    (Sec::Rtsp, "interval_secs", Opt),
    (Sec::Rtsp, "duration_secs", Opt),
    (Sec::Rtsp, "max_concurrent", Opt),
    (Sec::Camera, "name", Opt),
    (Sec::Camera, "url", Opt),
    (Sec::Camera, "username", Opt),
    (Sec::Camera, "password", Opt),
    (Sec::Camera, "password_file", File),
    (Sec::Camera, "transport", Opt),
    (Sec::Camera, "min_fps", Opt),
    (Sec::Camera, "interval_secs", Opt),
    (Sec::Camera, "duration_secs", Opt),
    (Sec::Smart, "enabled", Opt),
    (Sec::Smart, "interval_secs", Opt),
    (Sec::Smart, "device", List),
    (Sec::Smart, "smartctl_fallback", Opt),
    (Sec::Cleanup, "enabled", Opt),
    (Sec::Cleanup, "interval_secs", Opt),
    (Sec::Cleanup, "dry_run", Opt),
    (Sec::CleanupRoot, "path", Opt),
    (Sec::CleanupRoot, "high_watermark_pct", Opt),
    (Sec::CleanupRoot, "low_watermark_pct", Opt),
    (Sec::CleanupRoot, "include", List),
    (Sec::CleanupRoot, "exclude", List),
    (Sec::CleanupRoot, "min_age", Opt),
    (Sec::CleanupRoot, "keep_newest", Opt),
    (Sec::CleanupRoot, "max_deletions_per_run", Opt),
    (Sec::Outbox, "dir", Opt),
    (Sec::Outbox, "memory_max_bytes", Opt),
    (Sec::Outbox, "disk_max_bytes", Opt),
    (Sec::Ups, "enabled", Opt),
    (Sec::Ups, "server", Opt),
    (Sec::Ups, "name", List),
    (Sec::Ups, "interval_secs", Opt),
    (Sec::Ups, "timeout_secs", Opt),
    (Sec::Ups, "username", Opt),
    (Sec::Ups, "password_file", File),
];
/// Tags past the options start a new section of these types.
const NEW_SECTION: [Sec; 3] = [Sec::SyslogHost, Sec::Camera, Sec::CleanupRoot];

/// One UCI section: options and list items in file order.
#[derive(Default)]
struct Section {
    entries: Vec<(&'static str, bool, Vec<u8>)>,
}

impl Section {
    fn set(&mut self, name: &'static str, value: &[u8]) {
        self.entries.push((name, false, value.to_vec()));
    }
    /// The last `option NAME` (UCI: the last one wins); empty when unset.
    fn get(&self, name: &str) -> &[u8] {
        self.entries
            .iter()
            .rev()
            .find(|(n, list, _)| *n == name && !*list)
            .map_or(&[], |(_, _, v)| v.as_slice())
    }
    fn list(&self, name: &str) -> Vec<&[u8]> {
        self.entries
            .iter()
            .filter(|(n, list, _)| *n == name && *list)
            .map(|(_, _, v)| v.as_slice())
            .collect()
    }
}

struct Uci {
    named: Vec<Section>,
    hosts: Vec<Section>,
    cameras: Vec<Section>,
    roots: Vec<Section>,
}

impl Uci {
    fn from_input(data: &[u8]) -> Option<Uci> {
        let (&flags, rest) = data.split_first()?;
        let mut u = Uci {
            named: NAMED.iter().map(|_| Section::default()).collect(),
            hosts: Vec::new(),
            cameras: Vec::new(),
            roots: Vec::new(),
        };
        let presets: [(u8, Sec, &str, &str); 8] = [
            (0x01, Sec::Syslog, "enabled", "1"),
            (0x02, Sec::Rtsp, "enabled", "1"),
            (0x04, Sec::Smart, "enabled", "1"),
            (0x08, Sec::Cleanup, "enabled", "1"),
            (0x10, Sec::Disk, "enabled", "0"),
            (0x20, Sec::Main, "site_id", "lokasi1"),
            (0x20, Sec::Mqtt, "url", "mqtt://127.0.0.1:1883"),
            (0x40, Sec::Mqtt, "allow_plaintext", "1"),
        ];
        for (bit, sec, name, value) in presets {
            if flags & bit != 0 {
                u.named_mut(sec).set(name, value.as_bytes());
            }
        }
        if flags & 0x80 != 0 {
            u.named_mut(Sec::Cleanup).set("dry_run", b"1");
        }
        let n = OPTIONS.len() + NEW_SECTION.len();
        for rec in rest.split(|&b| b == 0).take(MAX_RECORDS) {
            let Some((&tag, value)) = rec.split_first() else {
                continue;
            };
            let value = &value[..value.len().min(MAX_VALUE)];
            let i = usize::from(tag.wrapping_sub(b'A')) % n;
            if i >= OPTIONS.len() {
                let sec = NEW_SECTION[i - OPTIONS.len()];
                let v = u.repeated_mut(sec);
                if v.len() < MAX_REPEATED {
                    v.push(Section::default());
                }
                continue;
            }
            let (sec, name, kind) = OPTIONS[i];
            let target = match sec {
                Sec::SyslogHost | Sec::Camera | Sec::CleanupRoot => {
                    let v = u.repeated_mut(sec);
                    if v.is_empty() {
                        v.push(Section::default());
                    }
                    v.last_mut().expect("one section")
                }
                _ => u.named_mut(sec),
            };
            match kind {
                Opt => target.set(name, value),
                File => target.set(name, &[FILE_PREFIX, value].concat()),
                List => target.entries.push((name, true, value.to_vec())),
            }
        }
        Some(u)
    }

    fn named(&self, sec: Sec) -> &Section {
        let i = NAMED.iter().position(|(s, _, _)| *s == sec).expect("named");
        &self.named[i]
    }
    fn named_mut(&mut self, sec: Sec) -> &mut Section {
        let i = NAMED.iter().position(|(s, _, _)| *s == sec).expect("named");
        &mut self.named[i]
    }
    fn repeated_mut(&mut self, sec: Sec) -> &mut Vec<Section> {
        match sec {
            Sec::SyslogHost => &mut self.hosts,
            Sec::Camera => &mut self.cameras,
            _ => &mut self.roots,
        }
    }

    /// The /etc/config/sitewatch text; values single-quoted as uciq does.
    fn render(&self) -> Vec<u8> {
        fn section(out: &mut Vec<u8>, header: &str, s: &Section) {
            out.extend_from_slice(header.as_bytes());
            out.push(b'\n');
            for (name, list, value) in &s.entries {
                out.extend_from_slice(if *list { b"\tlist " } else { b"\toption " });
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b" '");
                for &b in value {
                    if b == b'\'' {
                        out.extend_from_slice(b"'\\''");
                    } else {
                        out.push(b);
                    }
                }
                out.extend_from_slice(b"'\n");
            }
        }
        let mut out = Vec::new();
        for (i, (sec, ty, name)) in NAMED.iter().enumerate() {
            section(&mut out, &format!("config {ty} '{name}'"), &self.named[i]);
            let (ty, more) = match sec {
                Sec::Syslog => ("syslog_host", &self.hosts),
                Sec::Rtsp => ("camera", &self.cameras),
                Sec::Cleanup => ("cleanup_root", &self.roots),
                _ => continue,
            };
            for s in more {
                section(&mut out, &format!("config {ty}"), s);
            }
        }
        out
    }
}

/// `config_get_bool`: OpenWrt's words for on and off, else the default.
fn boolean(v: &[u8], default: bool) -> bool {
    match v {
        b"1" | b"on" | b"true" | b"yes" | b"enabled" => true,
        b"0" | b"off" | b"false" | b"no" | b"disabled" => false,
        _ => default,
    }
}

/// A refused translation, in the model.
struct Refused;

fn text(v: &[u8]) -> Result<String, Refused> {
    String::from_utf8(v.to_vec()).map_err(|_| Refused)
}

/// `emit_str`: nothing when empty; TOML is UTF-8, so other bytes refuse.
fn put_str(t: &mut Table, key: &str, v: &[u8]) -> Result<(), Refused> {
    if !v.is_empty() {
        t.insert(key.into(), Value::String(text(v)?));
    }
    Ok(())
}

fn put_list(t: &mut Table, key: &str, items: &[&[u8]]) -> Result<(), Refused> {
    let items = items
        .iter()
        .map(|v| text(v).map(Value::String))
        .collect::<Result<Vec<_>, _>>()?;
    t.insert(key.into(), Value::Array(items));
    Ok(())
}

/// Digits without leading zeros ("0" stays), TOML's integer spelling.
fn strip_zeros(digits: &str) -> &str {
    let s = digits.trim_start_matches('0');
    if s.is_empty() {
        "0"
    } else {
        s
    }
}

/// `emit_int`: digits only (leading zeros dropped), and small enough for
/// a TOML integer (at most 18 digits); anything else refuses.
fn put_int(t: &mut Table, key: &str, v: &[u8]) -> Result<(), Refused> {
    if v.is_empty() {
        return Ok(());
    }
    if !v.iter().all(u8::is_ascii_digit) {
        return Err(Refused);
    }
    let s = strip_zeros(std::str::from_utf8(v).expect("digits"));
    if s.len() > 18 {
        return Err(Refused);
    }
    t.insert(key.into(), Value::Integer(s.parse().expect("18 digits")));
    Ok(())
}

/// `emit_num` (min_fps): an integer as above, or DIGITS.DIGITS.
fn put_num(t: &mut Table, key: &str, v: &[u8]) -> Result<(), Refused> {
    if v.is_empty() {
        return Ok(());
    }
    if !v.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return Err(Refused);
    }
    let s = std::str::from_utf8(v).expect("ascii");
    match s.split_once('.') {
        None => put_int(t, key, v),
        Some((int, frac)) if !int.is_empty() && !frac.is_empty() && !frac.contains('.') => {
            let f: f64 = format!("{}.{frac}", strip_zeros(int))
                .parse()
                .expect("a decimal");
            t.insert(key.into(), Value::Float(f));
            Ok(())
        }
        Some(_) => Err(Refused),
    }
}

/// What `generate_toml` must write for this UCI config (sitewatch.init).
fn expected(u: &Uci) -> Result<Table, Refused> {
    let main = u.named(Sec::Main);
    let mut top = Table::new();
    put_str(&mut top, "site_id", main.get("site_id"))?;

    let m = u.named(Sec::Mqtt);
    let mut mqtt = Table::new();
    for k in [
        "url",
        "client_id",
        "username",
        "password",
        "password_file",
        "ca_file",
        "client_cert_file",
        "client_key_file",
    ] {
        put_str(&mut mqtt, k, m.get(k))?;
    }
    if boolean(m.get("allow_plaintext"), false) {
        mqtt.insert("allow_plaintext".into(), Value::Boolean(true));
    }
    put_int(&mut mqtt, "keep_alive_secs", m.get("keep_alive_secs"))?;
    top.insert("mqtt".into(), Value::Table(mqtt));

    let mut hb = Table::new();
    put_int(
        &mut hb,
        "interval_secs",
        u.named(Sec::Heartbeat).get("interval_secs"),
    )?;
    top.insert("heartbeat".into(), Value::Table(hb));

    let d = u.named(Sec::Disk);
    let mut disk = Table::new();
    put_int(&mut disk, "interval_secs", d.get("interval_secs"))?;
    if boolean(d.get("enabled"), true) {
        put_list(&mut disk, "mounts", &d.list("mount"))?;
    } else {
        put_list(&mut disk, "mounts", &[])?;
    }
    put_int(&mut disk, "statvfs_timeout_ms", d.get("statvfs_timeout_ms"))?;
    top.insert("disk".into(), Value::Table(disk));

    let mut log = Table::new();
    let level = main.get("log_level");
    put_str(
        &mut log,
        "level",
        if level.is_empty() { b"info" } else { level },
    )?;
    top.insert("log".into(), Value::Table(log));

    let s = u.named(Sec::Syslog);
    if boolean(s.get("enabled"), false) {
        let mut sys = Table::new();
        put_list(&mut sys, "udp", &s.list("udp"))?;
        put_list(&mut sys, "tcp", &s.list("tcp"))?;
        put_str(&mut sys, "timezone", s.get("timezone"))?;
        let allow = s.list("allow");
        if !allow.is_empty() {
            put_list(&mut sys, "allow", &allow)?;
        }
        for k in ["rate_limit_per_sec", "rate_limit_burst", "max_line_bytes"] {
            put_int(&mut sys, k, s.get(k))?;
        }
        let mut hosts = Table::new();
        for h in &u.hosts {
            let (address, name) = (h.get("address"), h.get("name"));
            if address.is_empty() || name.is_empty() {
                continue;
            }
            let address = text(address)?;
            // The same device twice: a TOML duplicate key, so refused.
            if hosts.contains_key(&address) {
                return Err(Refused);
            }
            hosts.insert(address, Value::String(text(name)?));
        }
        sys.insert("hosts".into(), Value::Table(hosts));
        top.insert("syslog".into(), Value::Table(sys));
    }

    let r = u.named(Sec::Rtsp);
    if boolean(r.get("enabled"), false) {
        let mut rtsp = Table::new();
        for k in ["interval_secs", "duration_secs", "max_concurrent"] {
            put_int(&mut rtsp, k, r.get(k))?;
        }
        let mut cams = Vec::new();
        for c in &u.cameras {
            let mut cam = Table::new();
            for k in [
                "name",
                "url",
                "username",
                "password",
                "password_file",
                "transport",
            ] {
                put_str(&mut cam, k, c.get(k))?;
            }
            put_num(&mut cam, "min_fps", c.get("min_fps"))?;
            put_int(&mut cam, "interval_secs", c.get("interval_secs"))?;
            put_int(&mut cam, "duration_secs", c.get("duration_secs"))?;
            cams.push(Value::Table(cam));
        }
        if !cams.is_empty() {
            rtsp.insert("camera".into(), Value::Array(cams));
        }
        top.insert("rtsp".into(), Value::Table(rtsp));
    }

    let sm = u.named(Sec::Smart);
    if boolean(sm.get("enabled"), false) {
        let mut smart = Table::new();
        put_int(&mut smart, "interval_secs", sm.get("interval_secs"))?;
        put_list(&mut smart, "devices", &sm.list("device"))?;
        let fallback = boolean(sm.get("smartctl_fallback"), true);
        smart.insert("smartctl_fallback".into(), Value::Boolean(fallback));
        top.insert("smart".into(), Value::Table(smart));
    }

    let cl = u.named(Sec::Cleanup);
    if boolean(cl.get("enabled"), false) {
        let mut cleanup = Table::new();
        put_int(&mut cleanup, "interval_secs", cl.get("interval_secs"))?;
        if boolean(cl.get("dry_run"), false) {
            cleanup.insert("dry_run".into(), Value::Boolean(true));
        }
        let mut roots = Vec::new();
        for r in &u.roots {
            let mut root = Table::new();
            put_str(&mut root, "path", r.get("path"))?;
            put_int(&mut root, "high_watermark_pct", r.get("high_watermark_pct"))?;
            put_int(&mut root, "low_watermark_pct", r.get("low_watermark_pct"))?;
            for k in ["include", "exclude"] {
                let items = r.list(k);
                if !items.is_empty() {
                    put_list(&mut root, k, &items)?;
                }
            }
            put_str(&mut root, "min_age", r.get("min_age"))?;
            put_int(&mut root, "keep_newest", r.get("keep_newest"))?;
            put_int(
                &mut root,
                "max_deletions_per_run",
                r.get("max_deletions_per_run"),
            )?;
            roots.push(Value::Table(root));
        }
        if !roots.is_empty() {
            cleanup.insert("root".into(), Value::Array(roots));
        }
        top.insert("cleanup".into(), Value::Table(cleanup));
    }

    let up = u.named(Sec::Ups);
    if boolean(up.get("enabled"), false) {
        let mut ups = Table::new();
        put_str(&mut ups, "server", up.get("server"))?;
        put_list(&mut ups, "names", &up.list("name"))?;
        put_int(&mut ups, "interval_secs", up.get("interval_secs"))?;
        put_int(&mut ups, "timeout_secs", up.get("timeout_secs"))?;
        put_str(&mut ups, "username", up.get("username"))?;
        put_str(&mut ups, "password_file", up.get("password_file"))?;
        top.insert("ups".into(), Value::Table(ups));
    }

    let o = u.named(Sec::Outbox);
    let (dir, mem, disk_max) = (
        o.get("dir"),
        o.get("memory_max_bytes"),
        o.get("disk_max_bytes"),
    );
    if !(dir.is_empty() && mem.is_empty() && disk_max.is_empty()) {
        let mut outbox = Table::new();
        put_str(&mut outbox, "dir", dir)?;
        put_int(&mut outbox, "memory_max_bytes", mem)?;
        put_int(&mut outbox, "disk_max_bytes", disk_max)?;
        top.insert("outbox".into(), Value::Table(outbox));
    }
    Ok(top)
}

/// The persistent shell that has sourced the stubs and the init script.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    dir: PathBuf,
    sentinel: String,
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// SITEWATCH_FUZZ_SHELL (a path), else `busybox sh`, dash, sh.
fn shell_command() -> Command {
    if let Some(sh) = std::env::var_os("SITEWATCH_FUZZ_SHELL") {
        return Command::new(sh);
    }
    if let Some(bb) = find_in_path("busybox") {
        let mut c = Command::new(bb);
        c.arg("sh");
        return c;
    }
    Command::new(find_in_path("dash").unwrap_or_else(|| PathBuf::from("sh")))
}

/// Removes the temp dirs of earlier runs whose process is gone.
fn remove_stale_dirs() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("sitewatch-uci-fuzz."))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Shell {
    fn start() -> Shell {
        let openwrt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openwrt");
        let init = openwrt.join("files/sitewatch.init");
        let stubs = openwrt.join("tests/stubs");
        assert!(init.is_file(), "no init script at {}", init.display());
        let dir = std::env::temp_dir().join(format!("sitewatch-uci-fuzz.{}", std::process::id()));
        remove_stale_dirs();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).expect("temp dir");
        let shell_err = std::fs::File::create(dir.join("shell.stderr")).expect("stderr file");
        let path = std::env::var("PATH").unwrap_or_default();
        let mut child = shell_command()
            .env("PATH", format!("{}:{path}", stubs.display()))
            .env("SWF_DIR", &dir)
            .env("SWF_STUBS", &stubs)
            .env("SWF_INIT", &init)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(shell_err)
            .spawn()
            .expect("start the shell");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        // The driver: each input runs `sw_fuzz_one SENTINEL </dev/null`
        // (nothing the script starts may eat the shell's own stdin). The
        // translation runs in a subshell (a fork, no exec): no state is
        // carried from one input to the next, so every finding reproduces
        // from its input alone.
        let setup = r#"
export UCI_CONFIG_DIR="$SWF_DIR/config" LOGGER_LOG="$SWF_DIR/logger.log" PROCD_LOG="$SWF_DIR/procd.log"
. "$SWF_STUBS/functions.sh"
. "$SWF_STUBS/procd.sh"
# A function, not just PATH: Debian's busybox-static runs its own applets
# before anything in PATH (FEATURE_SH_STANDALONE), so the logger applet
# would send the reasons to syslog instead of $LOGGER_LOG.
logger() { "$SWF_STUBS/logger" "$@"; }
. "$SWF_INIT"
CONF_DIR="$SWF_DIR/var/etc/sitewatch"
CONF="$CONF_DIR/agent.toml"
sw_fuzz_one() {
	rm -rf "$SWF_DIR/var"
	: >"$LOGGER_LOG"
	(
		config_load sitewatch
		write_config "" 2>"$SWF_DIR/stderr"
	) 2>"$SWF_DIR/sub.stderr"
	sw_rc=$?
	[ -f "$CONF" ] && cat "$CONF"
	printf '\n%s %s\n' "$1" "$sw_rc"
}
"#;
        stdin.write_all(setup.as_bytes()).expect("setup");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Shell {
            child,
            stdin,
            stdout,
            sentinel: format!("SWF-DONE-{}-{nanos:x}", std::process::id()),
            dir,
        }
    }

    /// Runs the translation on `uci`: (status, what the shell printed).
    fn run(&mut self, uci: &[u8]) -> (i32, Vec<u8>) {
        std::fs::write(self.dir.join("config/sitewatch"), uci).expect("write the UCI file");
        let cmd = format!("sw_fuzz_one {} </dev/null\n", self.sentinel);
        if self
            .stdin
            .write_all(cmd.as_bytes())
            .and_then(|()| self.stdin.flush())
            .is_err()
        {
            self.died();
        }
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match self.stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => self.died(),
                Ok(_) => {}
            }
            if let Some(rest) = line.strip_prefix(self.sentinel.as_bytes()) {
                let rc = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or_else(|| {
                        panic!("bad status line {:?}", String::from_utf8_lossy(&line))
                    });
                // The newline printed before the sentinel.
                assert_eq!(out.pop(), Some(b'\n'), "no newline before the sentinel");
                return (rc, out);
            }
            out.extend_from_slice(&line);
        }
    }

    fn died(&mut self) -> ! {
        let status = self.child.try_wait().ok().flatten();
        let mut err = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("shell.stderr")) {
            let _ = f.read_to_string(&mut err);
        }
        panic!("the shell died ({status:?}) running the translation; its stderr:\n{err}");
    }

    fn read(&self, name: &str) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join(name)).unwrap_or_default())
            .into_owned()
    }
}

static SHELL: OnceLock<Mutex<Shell>> = OnceLock::new();

/// Emitted password values (MQTT and cameras), for the secrecy check.
fn passwords(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |v: Option<&Value>| {
        if let Some(Value::String(s)) = v {
            out.push(s.clone());
        }
    };
    add(t.get("mqtt").and_then(|m| m.get("password")));
    if let Some(Value::Array(cams)) = t.get("rtsp").and_then(|r| r.get("camera")) {
        for c in cams {
            add(c.get("password"));
        }
    }
    out
}

/// Error text, or the summary of an accepted config.
fn agent_words(text: &str) -> String {
    match Config::parse(text, "fuzz.toml", |_| None) {
        Ok(c) => c.summary(),
        Err(p) => p.to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(uci) = Uci::from_input(data) else {
        return;
    };
    let file = uci.render();
    let want = expected(&uci);
    let mut sh = SHELL
        .get_or_init(|| Mutex::new(Shell::start()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (rc, out) = sh.run(&file);
    let show = || {
        format!(
            "UCI:\n{}\nTOML (status {rc}):\n{}\nlogged: {}shell errors: {}",
            String::from_utf8_lossy(&file),
            String::from_utf8_lossy(&out),
            sh.read("logger.log"),
            sh.read("sub.stderr")
        )
    };

    // 1. Refused (with a reason, nothing left behind) or a whole file.
    let conf_dir = sh.dir.join("var/etc/sitewatch");
    let mut left: Vec<String> = std::fs::read_dir(&conf_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    left.sort();
    if rc != 0 {
        assert!(left.is_empty(), "refused but left {left:?}\n{}", show());
        assert!(
            !sh.read("logger.log").trim().is_empty(),
            "refused without a logged reason\n{}",
            show()
        );
        assert!(
            want.is_err(),
            "refused a config that translates fine\n{}",
            show()
        );
        return;
    }
    assert_eq!(left, ["agent.toml"], "files left\n{}", show());
    let mode = std::fs::metadata(conf_dir.join("agent.toml"))
        .expect("agent.toml")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "TOML mode {mode:o}\n{}", show());
    let Ok(text) = std::str::from_utf8(&out) else {
        panic!("status 0 but the TOML is not UTF-8\n{}", show());
    };
    let got: Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => panic!("status 0 but invalid TOML: {e}\n{}", show()),
    };

    // 2. Exactly the UCI values, nothing more.
    let Ok(want) = want else {
        panic!("status 0 for a config that must be refused\n{}", show());
    };
    assert!(
        got == want,
        "TOML differs from the UCI values\nwant: {want:#?}\ngot: {got:#?}\n{}",
        show()
    );

    // 3. The agent accepts it or says why, never showing a password.
    if let Err(p) = Config::parse(text, "fuzz.toml", |_| None) {
        assert!(
            !p.list.is_empty() && p.list.iter().all(|l| !l.trim().is_empty()),
            "empty problem text: {p:?}"
        );
    }
    let words = agent_words(text);
    for pw in passwords(&got) {
        if pw.len() < 3 || !words.contains(&pw) {
            continue;
        }
        // Leaked, unless the words hold it for another reason (it is also
        // the username, a URL part...): the same config with another
        // password must then show it too.
        let other: String = text
            .lines()
            .map(|l| {
                if l.starts_with("password = ") {
                    format!("password = \"{PLACEHOLDER_PW}\"\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        assert!(
            agent_words(&other).contains(&pw),
            "the agent's words show the password {pw:?}:\n{words}\n{}",
            show()
        );
    }
});
