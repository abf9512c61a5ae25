//! Running a helper program (`smartctl`, `mmcli`) with a deadline and a
//! bound on what it prints, so a hung or chatty helper can neither block a
//! source nor fill the gateway's memory.

use std::io::Read as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Most bytes of a helper's stderr kept (its error message).
pub const MAX_STDERR_BYTES: usize = 1024;

/// What a helper program left.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// At most `max_bytes` + 1 bytes of stdout (more: the output was cut).
    pub stdout: Vec<u8>,
    /// At most [`MAX_STDERR_BYTES`] of stderr.
    pub stderr: Vec<u8>,
}

/// Runs `cmd` (its arguments set, stdin from /dev/null) until it exits or
/// `timeout` passes, then kills it. Keeps at most `max_bytes` + 1 bytes of
/// its stdout (a caller that gets more knows the output was cut) and the
/// start of its stderr. Blocking: call it from a blocking task.
pub fn output_bounded(
    mut cmd: Command,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Output, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("no output pipes".to_owned());
    };
    // Read on helper threads so a hung program cannot block past the
    // deadline; what is past the bound is drained, not kept, so the
    // program is never stuck on a full pipe.
    let read = |mut pipe: Box<dyn std::io::Read + Send>, limit: usize| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            (&mut pipe).take(limit as u64 + 1).read_to_end(&mut buf)?;
            std::io::copy(&mut pipe, &mut std::io::sink())?;
            Ok::<_, std::io::Error>(buf)
        })
    };
    let reader = read(Box::new(stdout), max_bytes);
    let err_reader = read(Box::new(stderr), MAX_STDERR_BYTES - 1);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    let stdout = reader
        .join()
        .map_err(|_| format!("reading {program} output failed"))?
        .map_err(|e| format!("reading {program} output: {e}"))?;
    let stderr = err_reader
        .join()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_and_a_hung_program_is_killed() {
        let mut c = Command::new("sh");
        c.args(["-c", "printf 'abcdef'; printf 'oops' >&2; exit 3"]);
        let o = output_bounded(c, Duration::from_secs(5), 4).expect("runs");
        assert_eq!(
            (o.status.code(), o.stdout.as_slice(), o.stderr.as_slice()),
            (Some(3), &b"abcde"[..], &b"oops"[..])
        );
        // A program that prints far more than the bound still finishes.
        let mut c = Command::new("sh");
        c.args(["-c", "head -c 1000000 /dev/zero; exit 0"]);
        let o = output_bounded(c, Duration::from_secs(5), 10).expect("runs");
        assert_eq!((o.status.code(), o.stdout.len()), (Some(0), 11));

        let mut c = Command::new("sleep");
        c.arg("30");
        let t = Instant::now();
        let e = output_bounded(c, Duration::from_millis(300), 10).expect_err("killed");
        assert!(e.contains("did not finish within 0 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));

        let e = output_bounded(
            Command::new("/nonexistent/mmcli"),
            Duration::from_secs(1),
            10,
        )
        .expect_err("missing");
        assert!(e.starts_with("cannot run /nonexistent/mmcli: "), "{e}");
    }
}
