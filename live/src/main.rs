//! `sitewatch-live`: parses arguments and hands over to the library.
//!
//! ```text
//! sitewatch-live --config /etc/sitewatch/live.toml           # run
//! sitewatch-live check --config /etc/sitewatch/live.toml     # validate only
//! sitewatch-live probe [--store] --config ...                 # one round now, a table
//! ```
//!
//! Exit status: 0 done (or stopped by SIGTERM/SIGINT); 1 failed (also
//! `check` finding problems, `probe` finding a camera not `ok`); 2 bad
//! arguments; 78 (`EX_CONFIG`) an invalid configuration for any command
//! but `check`, as for the bridge.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sitewatch_live::Config;

/// `EX_CONFIG` (sysexits.h): the configuration is invalid; restarting
/// will not help (`RestartPreventExitStatus=78`).
const EX_CONFIG: u8 = 78;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   done; the service stopped cleanly on SIGTERM/SIGINT
  1   failed; `check`: the configuration has problems; `probe`: a camera
      is not reachable
  2   bad command-line arguments
  78  the configuration is invalid (EX_CONFIG; every command but `check`)";

/// Centre-side camera reachability (DDNS name, port forward, RTSP account)
/// and live view (RTSP remuxed to fMP4/HLS for the browser)
/// for sitewatch sites.
#[derive(Parser)]
#[command(name = "sitewatch-live", version, after_help = EXIT_STATUS_HELP)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration and print every problem (exit status 1 if
    /// any); opens no socket.
    Check,
    /// Probe every configured camera once, now, and print a table (exit
    /// status 1 if any is not ok).
    Probe {
        /// Also store the results in PostgreSQL, as the service does.
        #[arg(long)]
        store: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(path) = args.config else {
        eprintln!("sitewatch-live: --config FILE is required");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("{p}");
            }
            eprintln!(
                "sitewatch-live: {} problem(s) in the configuration",
                problems.0.len()
            );
            return if matches!(args.command, Some(Command::Check)) {
                ExitCode::FAILURE
            } else {
                ExitCode::from(EX_CONFIG)
            };
        }
    };
    if let Some(Command::Check) = args.command {
        println!(
            "{}: ok ({} site(s), {} camera(s))",
            path.display(),
            config.sites.len(),
            config.cameras().count()
        );
        return ExitCode::SUCCESS;
    }
    sitewatch_bridge::service::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sitewatch-live")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(err = %e, "Cannot start the async runtime.");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Some(Command::Probe { store }) => probe_once(&config, store).await,
            _ => sitewatch_live::run(
                config,
                sitewatch_bridge::service::shutdown_signal("Second signal: exiting at once."),
            )
            .await
            .map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!(err = %format!("{e:#}"), "sitewatch-live failed.");
            ExitCode::FAILURE
        }
    }
}

/// `probe`: one round, a table on stdout; `Ok(false)` if any camera is
/// not ok.
async fn probe_once(config: &Config, store: bool) -> anyhow::Result<bool> {
    let mut client = if store {
        Some(sitewatch_live::prober::connect(config).await?)
    } else {
        None
    };
    let results = sitewatch_live::prober::round(config).await;
    let mut all_ok = true;
    println!(
        "{:<20} {:<16} {:<12} {:>7}  detail",
        "site", "camera", "class", "ms"
    );
    for (si, ci, o) in &results {
        let site = &config.sites[*si];
        let camera = &site.cameras[*ci];
        all_ok &= o.class == sitewatch_live::probe::Class::Ok;
        let note = match client.as_mut() {
            Some(c) => sitewatch_live::store::store(c, site, camera, o).await?,
            None => None,
        };
        println!(
            "{:<20} {:<16} {:<12} {:>7}  {}",
            site.id,
            camera.name,
            o.class.as_str(),
            o.duration.as_millis(),
            o.detail
        );
        if o.class != sitewatch_live::probe::Class::Ok {
            println!(
                "{:<20} {:<16} {:<12} {:>7}  → {}",
                "",
                "",
                "",
                "",
                o.class.advice()
            );
        }
        if let Some(note) = note {
            println!("{:<20} {:<16} {:<12} {:>7}  → {note}", "", "", "", "");
        }
    }
    Ok(all_ok)
}
