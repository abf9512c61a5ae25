//! `sitewatch-bridge`: parses arguments and hands over to the library.
//!
//! ```text
//! sitewatch-bridge --config /etc/sitewatch/bridge.toml          # run
//! sitewatch-bridge check --config /etc/sitewatch/bridge.toml    # validate only
//! sitewatch-bridge check --online --config ...                   # and reach each service
//! sitewatch-bridge migrate --config /etc/sitewatch/bridge.toml  # schema only
//! sitewatch-bridge forget camera SITE CAMERA --config ...        # retire a row
//! sitewatch-bridge retention [--apply] --config ...              # history kept, sizes
//! ```
//!
//! Exit status: 0 done (or stopped cleanly by SIGTERM/SIGINT); 1 failed
//! (also `check` finding problems, like the agent's `check`); 2 bad
//! arguments; 78 (`EX_CONFIG`) an invalid configuration for any command
//! but `check`, so that systemd stops restarting it
//! (`RestartPreventExitStatus=78` in systemd/sitewatch-bridge.service).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sitewatch_bridge::Config;

/// `EX_CONFIG` (sysexits.h): the configuration is invalid; restarting
/// will not help (`RestartPreventExitStatus=78` in the systemd unit), as
/// for the agent.
const EX_CONFIG: u8 = 78;

/// Exit statuses, for `--help`.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   done; the service stopped cleanly on SIGTERM/SIGINT
  1   failed (database refused, migration failed, shutdown timeout, ...);
      `check`: the configuration has problems
  2   bad command-line arguments
  78  the configuration is invalid (EX_CONFIG; every command but `check`):
      systemd does not restart it (RestartPreventExitStatus=78)";

/// Central consumer: sitewatch MQTT topics into PostgreSQL, and the sites'
/// syslog batches into Grafana Loki.
#[derive(Parser)]
#[command(name = "sitewatch-bridge", version, after_help = EXIT_STATUS_HELP)]
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
    /// any); opens no socket unless --online.
    Check {
        /// Then reach the broker, PostgreSQL (with TLS as configured) and
        /// Loki, step by step, and say what is wrong (exit status 1 if any
        /// step fails).
        #[arg(long)]
        online: bool,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Retire a site, camera, disk or reach target from the dashboards'
    /// "now" tables (history stays; it reappears if it reports again).
    /// Needs the schema owner's database account.
    Forget {
        #[command(subcommand)]
        what: ForgetWhat,
    },
    /// Print each history table's retention, partitions, oldest week kept
    /// and size. With --apply, first create and drop partitions as the
    /// running bridge does (needs the schema owner's database account).
    Retention {
        /// Run one partition maintenance round first.
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Subcommand)]
enum ForgetWhat {
    /// A decommissioned site, with its cameras, disks and reach targets.
    Site {
        /// Site id.
        site: String,
        /// Forget it even while it is online.
        #[arg(long)]
        force: bool,
    },
    /// A camera removed from a site's config.
    Camera {
        /// Site id.
        site: String,
        /// Camera name.
        camera: String,
    },
    /// A disk pulled from a site (device name, e.g. sda).
    Disk {
        /// Site id.
        site: String,
        /// Device name.
        device: String,
    },
    /// A LAN device removed from a site's [reach] (its target name).
    Target {
        /// Site id.
        site: String,
        /// Target name.
        target: String,
    },
}

/// `check --online`: one line per step, exit status 1 if any failed.
fn check_online(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sitewatch-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let steps = runtime.block_on(sitewatch_bridge::online::check(config));
    let mut failed = 0;
    for step in &steps {
        match &step.result {
            Ok(words) => println!("ok      {:<9} {words}", step.name),
            Err(words) => {
                failed += 1;
                println!("FAILED  {:<9} {words}", step.name);
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} step(s) failed", steps.len());
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(path) = args.config else {
        eprintln!("sitewatch-bridge: --config FILE is required");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("{p}");
            }
            eprintln!(
                "sitewatch-bridge: {} problem(s) in the configuration",
                problems.0.len()
            );
            // `check` reports problems with 1, like the agent's `check`;
            // anything else cannot run with this file.
            return if matches!(args.command, Some(Command::Check { .. })) {
                ExitCode::FAILURE
            } else {
                ExitCode::from(EX_CONFIG)
            };
        }
    };
    if let Some(Command::Check { online }) = args.command {
        if let Some(w) = config.postgres.tls_warning() {
            println!("warning: {w}");
        }
        println!("{}: ok", path.display());
        if !online {
            return ExitCode::SUCCESS;
        }
        return check_online(&config);
    }

    sitewatch_bridge::service::init_logging();
    if let Some(w) = config.postgres.tls_warning() {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sitewatch-bridge")
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
            Some(Command::Forget { what }) => {
                use sitewatch_bridge::forget::Forget;
                let what = match what {
                    ForgetWhat::Site { site, force } => Forget::Site { site, force },
                    ForgetWhat::Camera { site, camera } => Forget::Camera { site, camera },
                    ForgetWhat::Disk { site, device } => Forget::Disk { site, device },
                    ForgetWhat::Target { site, target } => Forget::Target { site, target },
                };
                let mut client = sitewatch_bridge::sink::postgres::connect(&config.postgres).await?;
                let done = sitewatch_bridge::forget::forget(&mut client, &what).await?;
                println!("{done}");
                Ok(())
            }
            Some(Command::Retention { apply }) => {
                use sitewatch_bridge::sink::postgres::retention;
                let text = retention::command(&config.postgres, &config.retention, apply).await?;
                print!("{text}");
                Ok(())
            }
            Some(Command::Migrate) => {
                let report = sitewatch_bridge::migrate_only(&config).await?;
                tracing::info!(applied = ?report.applied, current = report.current, "Schema is up to date.");
                Ok(())
            }
            _ => sitewatch_bridge::run(config, sitewatch_bridge::service::shutdown_signal("Second signal: exiting without finishing the current batch.")).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(err = %format!("{e:#}"), "sitewatch-bridge failed.");
            ExitCode::FAILURE
        }
    }
}
