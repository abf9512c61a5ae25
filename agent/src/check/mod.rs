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
//! - `row`: [`Row`] and [`Verdict`], a leaf.
//! - `table`: [`print_table`].
//!
//! Then every source's own rows, in registry order: each source folder
//! has a `check.rs` (`crate::sources`, [`Source::check`](crate::sources::Source::check)).

use std::io::Write;

use crate::config::Config;

mod broker;
mod cert;
mod clock;
pub mod row;
mod table;

pub use broker::{connect, STEP_TIMEOUT};
pub use cert::validity;
pub use clock::rows as clock_rows;
pub(crate) use row::row;
pub use row::{Row, Verdict};
pub use table::print_table;

/// Runs every check and prints the table to `out`. Returns `false` when
/// any row failed.
pub async fn online(cfg: &Config, out: &mut impl Write) -> bool {
    let mut rows = clock::rows(cfg, std::time::SystemTime::now());
    rows.extend(broker::rows(cfg).await);
    rows.extend(cfg.sources.check().await);
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
