//! `sitewatch-agent check --online` (alias `--connect`): the installer's
//! commissioning check. [`online`] prints one table — check | result |
//! what to do — covering the clock against the certificates, the broker
//! step by step ([`connect`]: DNS, TCP, TLS handshake, MQTT CONNECT), every
//! configured disk and syslog port, every camera, every disk SMART reads
//! and every cleanup root. Plain words, for the installer standing next to
//! the router.
//!
//! # Layout
//!
//! One file per part of the table; [`online`] runs them in order:
//!
//! - `clock`: the local clock against the install date and the
//!   certificates' validity (read by `cert`).
//! - `broker`: [`connect`], the broker step by step, and its rows.
//! - One file per capability, each with its `rows(cfg)`: `disk`,
//!   `syslog`, `rtsp` (cameras), `smart`, `cleanup`.
//! - `table`: [`print_table`].

use std::io::Write;

use crate::config::Config;

mod broker;
mod cert;
mod cleanup;
mod clock;
mod disk;
mod rtsp;
mod smart;
mod syslog;
mod table;

pub use broker::{connect, STEP_TIMEOUT};
pub use cert::validity;
pub use clock::rows as clock_rows;
pub use syslog::rows as syslog_rows;
pub use table::print_table;

/// A row's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Works.
    Ok,
    /// Broken: the agent will not do its job until fixed.
    Failed,
    /// Works, but worth a look.
    Warning,
}

/// One row of the commissioning table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What was checked.
    pub check: String,
    /// Verdict.
    pub verdict: Verdict,
    /// What was found, plain words.
    pub result: String,
    /// What to do (empty when nothing).
    pub todo: String,
}

/// A [`Row`], for the row builders' brevity.
fn row(
    check: impl Into<String>,
    verdict: Verdict,
    result: impl Into<String>,
    todo: impl Into<String>,
) -> Row {
    Row {
        check: check.into(),
        verdict,
        result: result.into(),
        todo: todo.into(),
    }
}

/// Runs every check and prints the table to `out`. Returns `false` when
/// any row failed.
pub async fn online(cfg: &Config, out: &mut impl Write) -> bool {
    let mut rows = clock::rows(cfg, std::time::SystemTime::now());
    rows.extend(broker::rows(cfg).await);
    rows.extend(disk::rows(cfg).await);
    rows.extend(syslog::rows(cfg));
    rows.extend(rtsp::rows(cfg).await);
    rows.extend(smart::rows(cfg).await);
    rows.extend(cleanup::rows(cfg).await);
    print_table(out, &rows);
    let failed = rows.iter().filter(|r| r.verdict == Verdict::Failed).count();
    let _ = if failed == 0 {
        writeln!(out, "\nAll checks passed: this site is ready.")
    } else {
        writeln!(
            out,
            "\n{failed} check(s) FAILED: fix them (see \"what to do\"), then run this again."
        )
    };
    failed == 0
}
