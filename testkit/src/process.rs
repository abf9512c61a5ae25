//! Process plumbing shared by the service handles, and [`ChildGuard`] for
//! the binaries under test.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rustix::process::{Pid, Signal};
use tempfile::TempDir;

const INSTALL_HINT: &str = "install with: apt-get install mosquitto mosquitto-clients postgresql";

/// A binary under test (agent, bridge, …) that is killed when dropped.
///
/// A panicking test must not leave a stray process behind holding ports or
/// writing into a database that is being deleted, so `Drop` sends
/// `SIGKILL` and reaps it. Its stdout and stderr go to a log file in a
/// private temporary directory, readable with [`ChildGuard::log_contents`]
/// for assertions and for failure messages; stdin is `/dev/null`.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    status: Option<ExitStatus>,
    program: String,
    log_path: PathBuf,
    _dir: TempDir,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to a fresh log file.
    ///
    /// Takes `&mut Command` so that builder chains work:
    /// `ChildGuard::spawn(Command::new(bin).arg("--config").arg(path))`.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<ChildGuard> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-child-")
            .tempdir()
            .context("creating a temporary directory for a child log")?;
        let log_path = dir.path().join("output.log");
        let (stdout, stderr) = open_log(&log_path)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {program}"))?;
        Ok(ChildGuard {
            child,
            status: None,
            program,
            log_path,
            _dir: dir,
        })
    }

    /// The OS process id, e.g. for looking the process up in `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `sig` (see [`crate::sig`]), e.g. `SIGTERM` to test
    /// graceful shutdown or `SIGSTOP` to simulate a hang.
    ///
    /// Fails if the process has already exited: the pid may then belong
    /// to an unrelated process.
    pub fn signal(&mut self, sig: i32) -> anyhow::Result<()> {
        if let Some(status) = self.try_status() {
            bail!(
                "cannot send signal {sig} to {} (pid {}): it already exited with {status}",
                self.program,
                self.pid()
            );
        }
        send_signal(self.child.id(), sig)
            .with_context(|| format!("sending signal {sig} to {}", self.program))
    }

    /// Sends `SIGTERM`; combine with [`ChildGuard::wait_timeout`] to check
    /// that the process shuts down cleanly and in time.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::TERM.as_raw())
    }

    /// Sends `SIGKILL` and reaps the process (a no-op if it already
    /// exited). Simulates a crash.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if self.try_status().is_some() {
            return Ok(());
        }
        self.child
            .kill()
            .with_context(|| format!("killing {} (pid {})", self.program, self.pid()))?;
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {} (pid {})", self.program, self.pid()))?;
        self.status = Some(status);
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit.
    ///
    /// Returns its exit status, or `None` if it is still running (or its
    /// state cannot be queried, which only happens if someone else reaped
    /// it).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_child(&mut self.child, timeout).ok().flatten();
        }
        self.status
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.wait_timeout(Duration::ZERO)
    }

    /// Path of the file receiving the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has written to stdout and stderr so far
    /// (invalid UTF-8 replaced), for assertions and failure messages.
    pub fn log_contents(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Waits until the output contains `needle`.
    ///
    /// Fails early if the process exits first, and the error includes the
    /// whole output so a failing test explains itself.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_contents().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_status() {
                // It may have printed the line just before exiting.
                if self.log_contents().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "{} exited with {status} before printing {needle:?}; output:\n{}",
                    self.program,
                    self.log_contents()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {} to print {needle:?}; output:\n{}",
                    self.program,
                    self.log_contents()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Errors cannot be reported from Drop; kill() already tolerates a
        // process that exited on its own.
        let _ = self.kill();
    }
}

/// Checks that mosquitto and the PostgreSQL server binaries are installed,
/// with an error that says how to install them.
///
/// Call it first in a test to turn a confusing spawn error into an
/// actionable message; the service starters call it implicitly.
pub fn require_binaries() -> anyhow::Result<()> {
    mosquitto_binary()?;
    pg_bindir()?;
    Ok(())
}

/// Path of the `mosquitto` broker binary.
///
/// `SITEWATCH_MOSQUITTO` overrides the search; otherwise `PATH` is searched,
/// then `/usr/sbin` and `/usr/local/sbin`, which are not on a non-root
/// user's `PATH` on Debian.
pub fn mosquitto_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SITEWATCH_MOSQUITTO") {
        let path = PathBuf::from(path);
        if !is_executable(&path) {
            bail!(
                "SITEWATCH_MOSQUITTO={} is not an executable file; {INSTALL_HINT}",
                path.display()
            );
        }
        return Ok(path);
    }
    find_executable("mosquitto", &["/usr/sbin", "/usr/local/sbin"]).with_context(|| {
        format!("mosquitto binary not found in PATH, /usr/sbin or /usr/local/sbin; {INSTALL_HINT}")
    })
}

/// Directory holding the PostgreSQL server binaries (`initdb`, `postgres`,
/// `pg_isready`, `psql`).
///
/// On Debian these are in `/usr/lib/postgresql/<major>/bin`, not on `PATH`.
/// Search order: `SITEWATCH_PG_BINDIR`, `pg_config --bindir`, the newest
/// `/usr/lib/postgresql/*/bin`, then the directory of `initdb` on `PATH`.
/// The result is cached for the life of the process.
pub fn pg_bindir() -> anyhow::Result<PathBuf> {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| find_pg_bindir().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_pg_bindir() -> anyhow::Result<PathBuf> {
    let is_server_bindir = |dir: &Path| {
        ["initdb", "postgres", "pg_isready", "psql"]
            .iter()
            .all(|bin| is_executable(&dir.join(bin)))
    };
    if let Some(dir) = std::env::var_os("SITEWATCH_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if !is_server_bindir(&dir) {
            bail!(
                "SITEWATCH_PG_BINDIR={} does not contain initdb, postgres, pg_isready and psql; \
                 {INSTALL_HINT}",
                dir.display()
            );
        }
        return Ok(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if is_server_bindir(&dir) {
                return Ok(dir);
            }
        }
    }
    // Debian layout; pick the highest major version that has a server.
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, dir)| is_server_bindir(dir))
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.pop() {
        return Ok(dir);
    }
    if let Some(dir) =
        find_executable("initdb", &[]).and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if is_server_bindir(&dir) {
            return Ok(dir);
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, postgres, pg_isready, psql) not found via \
         SITEWATCH_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin or PATH; {INSTALL_HINT}"
    )
}

fn find_executable(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether we run as root, where initdb/postgres refuse to run and
/// mosquitto switches users unless told otherwise.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Looks up `(uid, gid)` of a local system user in `/etc/passwd`.
pub(crate) fn system_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            let uid = fields[2]
                .parse()
                .with_context(|| format!("bad uid for user {name} in /etc/passwd"))?;
            let gid = fields[3]
                .parse()
                .with_context(|| format!("bad gid for user {name} in /etc/passwd"))?;
            return Ok((uid, gid));
        }
    }
    bail!("user {name:?} not found in /etc/passwd")
}

/// Opens (creating, appending) a log file and returns two handles to it,
/// for a child's stdout and stderr.
pub(crate) fn open_log(path: &Path) -> anyhow::Result<(File, File)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))?;
    let clone = file
        .try_clone()
        .with_context(|| format!("duplicating log file handle {}", path.display()))?;
    Ok((file, clone))
}

/// Reads a log file, replacing invalid UTF-8; a missing file reads as "".
pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Current length of a file (0 if missing): where a restarted service's
/// new log output begins.
pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Log output written after byte `offset`.
pub(crate) fn read_lossy_from(path: &Path, offset: u64) -> String {
    let all = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
    String::from_utf8_lossy(&all[start..]).into_owned()
}

/// Sends a signal by number to a pid.
pub(crate) fn send_signal(pid: u32, sig: i32) -> anyhow::Result<()> {
    let signal =
        Signal::from_named_raw(sig).with_context(|| format!("unsupported signal number {sig}"))?;
    let raw = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
    let pid_t = Pid::from_raw(raw).with_context(|| format!("invalid pid {pid}"))?;
    rustix::process::kill_process(pid_t, signal)
        .map_err(io::Error::from)
        .with_context(|| format!("kill({pid}, {sig})"))
}

/// Polls `child` until it exits or `timeout` passes.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig`, waits up to `timeout`, then falls back to `SIGKILL`.
/// Always reaps the child.
pub(crate) fn stop_child(
    child: &mut Child,
    sig: Signal,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child
        .try_wait()
        .with_context(|| format!("checking {what}"))?
    {
        return Ok(status);
    }
    send_signal(child.id(), sig.as_raw()).with_context(|| format!("stopping {what}"))?;
    if let Some(status) =
        wait_child(child, timeout).with_context(|| format!("waiting for {what}"))?
    {
        return Ok(status);
    }
    child
        .kill()
        .with_context(|| format!("killing {what} after {timeout:?}"))?;
    child.wait().with_context(|| format!("waiting for {what}"))
}

/// One `/proc/<pid>/stat` entry: state letter and parent pid.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may contain spaces and parens.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Pids of the direct children of `parent`, from `/proc`.
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some((_, ppid)) if ppid == parent))
        .collect()
}

/// Whether `pid` is a live (not zombie, not dead) process. Zombies count
/// as gone: they hold no resources, and in containers whose init does not
/// reap them they never disappear.
pub(crate) fn is_alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Removes every environment variable starting with `PG`, so that a
/// developer's `PGHOST`, `PGSSLMODE`, `PGOPTIONS`… cannot redirect or
/// break the commands we run against our private server.
pub(crate) fn clear_pg_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_user_finds_root() {
        assert_eq!(system_user("root").expect("root exists"), (0, 0));
        assert!(system_user("no-such-user-sitewatch").is_err());
    }

    #[test]
    fn proc_stat_of_self() {
        let me = std::process::id();
        assert!(is_alive(me));
        let (_, ppid) = proc_stat(me).expect("own stat");
        assert!(children_of(ppid).contains(&me));
    }

    #[test]
    fn child_guard_basics() {
        let mut guard = ChildGuard::spawn(
            Command::new("sh").args(["-c", "echo hello; echo oops >&2; sleep 30"]),
        )
        .expect("spawn sh");
        guard
            .wait_for_log("oops", Duration::from_secs(5))
            .expect("stderr captured");
        assert!(guard.log_contents().contains("hello"));
        assert!(guard.try_status().is_none());
        guard.terminate().expect("SIGTERM");
        let status = guard
            .wait_timeout(Duration::from_secs(5))
            .expect("exits on SIGTERM");
        assert!(!status.success());
        assert!(
            guard.signal(Signal::TERM.as_raw()).is_err(),
            "exited process must not be signalled"
        );
        guard.kill().expect("kill after exit is a no-op");
    }

    #[test]
    fn child_guard_drop_kills_and_removes_log() {
        let guard = ChildGuard::spawn(Command::new("sleep").arg("30")).expect("spawn sleep");
        let pid = guard.pid();
        let log_dir = guard.log_path().parent().expect("dir").to_path_buf();
        assert!(is_alive(pid));
        drop(guard);
        assert!(!is_alive(pid));
        assert!(!log_dir.exists());
    }

    #[test]
    fn child_guard_wait_for_log_reports_early_exit() {
        let mut guard =
            ChildGuard::spawn(Command::new("sh").args(["-c", "echo bye; exit 3"])).expect("spawn");
        let err = guard
            .wait_for_log("never", Duration::from_secs(5))
            .expect_err("exits first");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("exit status: 3") && msg.contains("bye"),
            "{msg}"
        );
    }
}
