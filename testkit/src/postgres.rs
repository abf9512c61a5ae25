//! A private PostgreSQL cluster per test.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rustix::process::Signal;
use tempfile::TempDir;

use crate::process::{
    children_of, clear_pg_env, file_len, is_alive, is_root, open_log, pg_bindir, read_lossy,
    read_lossy_from, send_signal, system_user, wait_child,
};

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before we resort to `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh-port attempts when a port is stolen between picking and binding.
const PORT_ATTEMPTS: usize = 5;

/// A PostgreSQL server from a fresh `initdb`, private to one test.
///
/// The cluster lives in a temporary directory, listens on `127.0.0.1` on
/// a free port with `trust` authentication for user `postgres`, and skips
/// what only protects against an operating-system crash (`fsync=off`,
/// `full_page_writes=off`) because test data is thrown away anyway.
/// `synchronous_commit` stays on: with `fsync=off` it costs only a
/// `write()`, and without it a [`Postgres::kill`] could lose the last
/// commits, which would make crash tests of the bridge flaky. `Drop`
/// shuts the server down (immediate mode) and removes the directory.
///
/// initdb and postgres refuse to run as root, so when the test runs as
/// root they run as the `postgres` system user, which then owns the
/// directory. Client tools (`psql`, `pg_isready`) run as the current
/// user with `-U postgres`.
#[derive(Debug)]
pub struct Postgres {
    bindir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    /// `(uid, gid)` to run server processes as, when we are root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    // Last field: removed after Drop::drop has stopped the server.
    dir: TempDir,
}

impl Postgres {
    /// Creates a cluster with `initdb` and starts it, retrying with a
    /// fresh port if the chosen one is taken before the server binds it.
    pub fn start() -> anyhow::Result<Postgres> {
        let bindir = pg_bindir()?;
        let run_as = if is_root() {
            Some(system_user("postgres").context(
                "running as root, so initdb/postgres must run as the `postgres` system user \
                 (they refuse to run as root); install with: apt-get install postgresql",
            )?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-pg-")
            .tempdir()
            .context("creating a temporary directory for PostgreSQL")?;
        if let Some((uid, gid)) = run_as {
            check_traversable(dir.path(), uid, gid)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("chown {} to the postgres user", dir.path().display()))?;
        }
        let mut pg = Postgres {
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("postgres.log"),
            bindir,
            port: 0,
            run_as,
            child: None,
            dir,
        };
        pg.initdb()?;
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            pg.port = crate::free_ports(1)?
                .first()
                .copied()
                .context("free_ports returned no port")?;
            match pg.spawn_and_wait() {
                Ok(()) => return Ok(pg),
                Err(StartError::PortInUse(err)) => last_err = Some(err),
                Err(StartError::Other(err)) => return Err(err),
            }
        }
        let err = last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt made"));
        Err(err.context(format!(
            "postgres: ports kept being taken, gave up after {PORT_ATTEMPTS} attempts"
        )))
    }

    /// TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Connection URL for database `name` on this server (which need not
    /// exist yet).
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL, so tests sharing one
    /// server can each get a clean database.
    ///
    /// `name` is limited to ASCII letters, digits and `_` so that it
    /// needs no quoting in SQL or in the URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty()
            || name.len() > 63
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            bail!("invalid database name {name:?}: use 1-63 ASCII letters, digits or '_'");
        }
        self.psql(&format!("CREATE DATABASE \"{name}\""))
            .with_context(|| format!("creating database {name}"))?;
        Ok(self.database_url(name))
    }

    /// Runs SQL in database `postgres` with
    /// `psql -X -A -t -q -v ON_ERROR_STOP=1 -c SQL` and returns stdout
    /// without the trailing newline: unaligned, tuples only, one row per
    /// line, columns separated by `|`. Handy for assertions.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_db("postgres", sql)
    }

    /// Like [`Postgres::psql`], in database `database`.
    pub fn psql_db(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let psql = self.bindir.join("psql");
        let output = self
            .client(&psql)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.database_url(database))
            .arg("-c")
            .arg(sql)
            .output()
            .with_context(|| format!("running {}", psql.display()))?;
        let output = check(&output, || {
            format!("psql on port {} database {database}: {sql}", self.port)
        })?;
        Ok(output.trim_end_matches('\n').to_owned())
    }

    /// Pid of the postmaster, `None` after [`Postgres::stop`] or
    /// [`Postgres::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Path of the server log (initdb output, then postgres stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server log so far, across restarts.
    pub fn log_contents(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Clean shutdown ("fast" mode, `SIGINT`): disconnects clients,
    /// checkpoints and exits. Falls back to [`Postgres::kill`] after 30 s.
    /// No-op if not running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child.try_wait().context("checking postgres")?.is_none() {
            send_signal(child.id(), Signal::INT.as_raw()).context("stopping postgres")?;
            if wait_child(child, STOP_TIMEOUT)
                .context("waiting for postgres")?
                .is_none()
            {
                return self.kill();
            }
        }
        self.child = None;
        Ok(())
    }

    /// Crash: `SIGKILL` to the postmaster and all its server processes at
    /// once, as on power loss, then waits until they are all gone so that
    /// [`Postgres::restart`] can start (it then runs crash recovery).
    /// No-op if not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        if child.try_wait().context("checking postgres")?.is_none() {
            // Freeze the postmaster so it cannot fork while we collect
            // its children; once it dies they would be reparented and
            // hard to find.
            let _ = send_signal(pid, Signal::STOP.as_raw());
            let children = children_of(pid);
            for &c in &children {
                let _ = send_signal(c, Signal::KILL.as_raw());
            }
            child.kill().context("killing postgres")?;
            child.wait().context("waiting for killed postgres")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while children.iter().any(|&c| is_alive(c)) {
                if Instant::now() >= deadline {
                    bail!("postgres server processes {children:?} survived SIGKILL for 10 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory, e.g.
    /// after [`Postgres::kill`] to test crash recovery. A running server
    /// is stopped cleanly first. Fails (without trying other ports) if
    /// the port was taken meanwhile.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        match self.spawn_and_wait() {
            Ok(()) => Ok(()),
            Err(StartError::PortInUse(err) | StartError::Other(err)) => {
                Err(err.context("restarting postgres on its previous port"))
            }
        }
    }

    /// Turns TLS on with this certificate and key (PEM) and restarts on
    /// the same port. With `only_tls`, `pg_hba.conf` accepts TCP clients
    /// only over TLS (`hostssl`), as a managed database does; Unix-socket
    /// clients (psql here) still get in.
    pub fn enable_tls(&mut self, cert: &Path, key: &Path, only_tls: bool) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.data_dir.join(name);
            std::fs::copy(from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            // PostgreSQL refuses a key readable by others.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("chmod 600 {}", to.display()))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                    .with_context(|| format!("chown {} to postgres", to.display()))?;
            }
        }
        let conf = self.data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("reading {}", conf.display()))?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        if only_tls {
            let hba = self.data_dir.join("pg_hba.conf");
            std::fs::write(
                &hba,
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
                 hostssl all all ::1/128 trust\n",
            )
            .with_context(|| format!("writing {}", hba.display()))?;
        }
        self.restart()
    }

    /// A command for a server binary, as the `postgres` user if we are
    /// root, with locale C (English messages we can match) and no `PG*`
    /// environment.
    fn server_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        clear_pg_env(&mut cmd)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// A command for a client binary, as the current user.
    fn client(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        clear_pg_env(&mut cmd)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let initdb = self.bindir.join("initdb");
        let (stdout, stderr) = open_log(&self.log_path)?;
        let status = self
            .server_command(&initdb)
            .arg("-D")
            .arg(&self.data_dir)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .with_context(|| format!("running {}", initdb.display()))?;
        if !status.success() {
            let hint = if self.run_as.is_some() {
                format!(
                    " (it runs as the postgres user, which must be able to reach {})",
                    self.dir.path().display()
                )
            } else {
                String::new()
            };
            bail!(
                "{} failed with {status}{hint}\n--- {} ---\n{}",
                initdb.display(),
                self.log_path.display(),
                self.log_contents()
            );
        }
        Ok(())
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let postgres = self.bindir.join("postgres");
        let log_offset = file_len(&self.log_path);
        let (stdout, stderr) = open_log(&self.log_path).map_err(StartError::Other)?;
        let child = self
            .server_command(&postgres)
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", postgres.display()))
            .map_err(StartError::Other)?;
        let pid = child.id();
        self.child = Some(child);
        let result = self.wait_ready();
        if result.is_err() {
            let _ = self.kill();
        }
        result.map_err(|err| {
            let new_log = read_lossy_from(&self.log_path, log_offset);
            let err = anyhow::anyhow!(
                "postgres (pid {pid}, port {}, data {}) did not start: {err:#}\n\
                 --- postgres log ---\n{new_log}",
                self.port,
                self.data_dir.display(),
            );
            if new_log.contains("Address already in use") {
                StartError::PortInUse(err)
            } else {
                StartError::Other(err)
            }
        })
    }

    /// Ready means: our postmaster is alive, its `postmaster.pid` says
    /// `ready` (so the server answering is ours, not whoever may have
    /// stolen the port), and `pg_isready` succeeds over TCP.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pg_isready = self.bindir.join("pg_isready");
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            let child = self.child.as_mut().context("postgres not spawned")?;
            let pid = child.id();
            if let Some(status) = wait_child(child, Duration::ZERO)? {
                self.child = None;
                bail!("postgres exited with {status}");
            }
            // Lines: pid, datadir, start time, port, socket dir, listen
            // address, shmem key, status.
            let lock = std::fs::read_to_string(&pid_file).unwrap_or_default();
            let lines: Vec<&str> = lock.lines().collect();
            let ours_and_ready = lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
                && lines.get(7).map(|l| l.trim()) == Some("ready");
            if ours_and_ready {
                let ok = self
                    .client(&pg_isready)
                    .args(["-q", "-t", "2", "-h", "127.0.0.1", "-U", "postgres", "-p"])
                    .arg(self.port.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .with_context(|| format!("running {}", pg_isready.display()))?
                    .success();
                if ok {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {READY_TIMEOUT:?} waiting for postgres to accept connections"
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// After a crash ([`Postgres::kill`]) the postmaster leaves its small
    /// System V shared memory segment behind; a restart would clean it up,
    /// but if the handle is dropped instead we remove it so test runs do
    /// not leak kernel objects. Best effort.
    fn remove_stale_shmem(&self) {
        let lock =
            std::fs::read_to_string(self.data_dir.join("postmaster.pid")).unwrap_or_default();
        let Some(shmid) = lock
            .lines()
            .nth(6)
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|id| id.parse::<u64>().ok())
        else {
            return;
        };
        let _ = Command::new("ipcrm")
            .args(["-m", &shmid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT): no checkpoint, but unlike SIGKILL
        // the postmaster stops its server processes before exiting and
        // removes its shared memory segment. Fall back to killing the
        // whole set of processes if that does not work.
        if let Some(child) = self.child.as_mut() {
            let exited = matches!(child.try_wait(), Ok(Some(_)))
                || (send_signal(child.id(), Signal::QUIT.as_raw()).is_ok()
                    && matches!(wait_child(child, Duration::from_secs(10)), Ok(Some(_))));
            if exited {
                self.child = None;
            } else {
                let _ = self.kill();
            }
        }
        self.remove_stale_shmem();
    }
}

enum StartError {
    /// The port was taken: worth retrying with another port.
    PortInUse(anyhow::Error),
    Other(anyhow::Error),
}

/// Fails with advice if user `uid`/`gid` cannot reach `dir` (e.g. `TMPDIR`
/// under `/root`), which would otherwise surface as a bare
/// "Permission denied" from spawning initdb as the postgres user.
fn check_traversable(dir: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)
            .with_context(|| format!("reading permissions of {}", ancestor.display()))?;
        let mode = meta.mode();
        let exec_bit = if meta.uid() == uid {
            0o100
        } else if meta.gid() == gid {
            0o010
        } else {
            0o001
        };
        if mode & exec_bit == 0 {
            bail!(
                "PostgreSQL must run as the postgres user (we are root), which cannot enter {} \
                 (mode {:o}); point TMPDIR at a directory it can reach, e.g. /tmp",
                ancestor.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}

/// Turns a failed client run into an error carrying its stderr.
fn check(output: &Output, what: impl FnOnce() -> String) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "{} failed with {}: {}",
            what(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    #[test]
    fn taken_port_is_reported_as_port_in_use() {
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let taken = squatter.local_addr().expect("addr").port();
        let mut pg = Postgres::start().expect("start postgres");
        pg.stop().expect("stop");
        pg.port = taken;
        match pg.spawn_and_wait() {
            Err(StartError::PortInUse(err)) => {
                let msg = format!("{err:#}");
                assert!(msg.contains("postgres exited with"), "{msg}");
                assert!(msg.contains("Address already in use"), "{msg}");
            }
            Err(StartError::Other(err)) => panic!("wrong classification: {err:#}"),
            Ok(()) => panic!("started on a taken port"),
        }
        assert!(pg.pid().is_none());
    }
}
