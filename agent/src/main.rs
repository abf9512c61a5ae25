//! `sitewatch-agent` binary: argument parsing, logging, runtime and signals.
//!
//! Everything else lives in the library (`sitewatch_agent::run`), so tests
//! can run the agent in-process with their own shutdown future.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use sitewatch_agent::config::Config;
use tokio::signal::unix::{signal, SignalKind};

/// Hard limit for a graceful shutdown after the first SIGTERM/SIGINT;
/// past it the process exits anyway (a hung task cannot keep it alive).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);

/// `EX_CONFIG` (sysexits.h): the config is invalid; restarting will not
/// help (`RestartPreventExitStatus=78` in the systemd unit).
const EX_CONFIG: u8 = 78;

/// Blocking threads: one per mount probe (at most 16, a stuck one is never
/// doubled) plus DNS lookups.
const MAX_BLOCKING_THREADS: usize = 24;

/// `--version`: the crate version, the commit and the target triple
/// (`build.rs`), so a field report names the exact build.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SITEWATCH_BUILD_COMMIT"),
    ", ",
    env!("SITEWATCH_BUILD_TARGET"),
    ")"
);

mod args;

use args::Command;

fn main() -> ExitCode {
    let cli = match args::parse_env(LONG_VERSION) {
        Ok(cli) => cli,
        Err(exit) => return exit.print(),
    };
    let allow_exposed = cli.allow_insecure_permissions || sitewatch_agent::perms::allowed_by_env();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config, allow_exposed),
        Command::Check { online } => check(&cli.config, online, allow_exposed),
        Command::Probe(args) => ExitCode::from(sitewatch_agent::sources::rtsp::cli::main(
            &args,
            &cli.config,
            &mut std::io::stdout(),
        )),
        Command::Discover(args) => ExitCode::from(sitewatch_agent::discover::main(
            &args,
            &mut std::io::stdout(),
        )),
        Command::Cleanup { dry_run, yes } => cleanup(&cli.config, dry_run || !yes),
        Command::Smart { device, kind, json } => ExitCode::from(
            sitewatch_agent::sources::smart::cli::run(device.as_deref(), kind, json),
        ),
        Command::Status { json, file } => ExitCode::from(sitewatch_agent::status::main(
            &cli.config,
            file.as_deref(),
            json,
            &mut std::io::stdout(),
        )),
        Command::Once => once(&cli.config),
    }
}

/// `once`: one round of every source, printed (notes on stderr).
fn once(path: &Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            print!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(sitewatch_agent::once::main(&cfg, &mut std::io::stdout()))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// Secret-holding files every user can read (see `perms`), as lines.
fn exposed_secrets(path: &Path, cfg: &Config) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    sitewatch_agent::perms::exposed(path, &text, cfg)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn check(path: &Path, online: bool, allow_exposed: bool) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            print!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    let exposed = exposed_secrets(path, &cfg);
    if !exposed.is_empty() {
        let label = if allow_exposed { "warning" } else { "problem" };
        for e in &exposed {
            println!("{label}: {e}");
        }
        if !allow_exposed {
            return ExitCode::FAILURE;
        }
    }
    println!("OK: {}: {}", cfg.origin, cfg.summary());
    if !online {
        return ExitCode::SUCCESS;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ok = sitewatch_agent::spawn::block_on(
        &rt,
        sitewatch_agent::check::online(&cfg, &mut std::io::stdout()),
    );
    // A disk probe may still hang on a dead NFS server: do not wait.
    rt.shutdown_background();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One cleanup pass by hand; exit status 1 if a root could not be used or
/// a file could not be deleted.
fn cleanup(path: &Path, dry_run: bool) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            print!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    let Some(c) = cfg.sources.cleanup else {
        println!("{}: no [cleanup] table; nothing to do.", cfg.origin);
        return ExitCode::FAILURE;
    };
    let mut ok = true;
    for o in sitewatch_agent::sources::cleanup::pass(&c, dry_run, &|| false) {
        println!("{}", o.describe());
        ok &= match &o.result {
            Ok(r) => r.as_ref().is_none_or(|r| r.errors.total == 0),
            Err(_) => false,
        };
    }
    if dry_run {
        println!("Dry run: nothing was deleted. Run `sitewatch-agent cleanup --yes` to delete.");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Logs go to stderr (journald / OpenWrt logd capture it). The filter is
/// `RUST_LOG` if set, else `[log] level`, else `info`; the syntax is
/// `level` or `level,target=level,...` (tracing-subscriber `Targets`).
///
/// Returns the setter for reloads of `[log] level` (refused while
/// `RUST_LOG` is set: the environment wins).
fn init_logging(cfg: &Config) -> sitewatch_agent::SetLogLevel {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let (spec, from_env) = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => (s, true),
        _ => (
            cfg.log_level.clone().unwrap_or_else(|| "info".into()),
            false,
        ),
    };
    let (targets, bad) = match spec.parse::<Targets>() {
        Ok(t) => (t, false),
        Err(_) => (Targets::new().with_default(LevelFilter::INFO), true),
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(targets);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .with(filter)
        .init();
    if bad && from_env {
        tracing::warn!(rust_log = %spec, "RUST_LOG is not a valid filter; using info");
    }
    Box::new(move |level: Option<&str>| {
        if from_env {
            return Err("RUST_LOG is set and wins over [log] level".into());
        }
        let spec = level.unwrap_or("info");
        let targets = spec
            .parse::<Targets>()
            .map_err(|e| format!("`{spec}` is not a valid filter: {e}"))?;
        handle
            .reload(targets)
            .map_err(|e| format!("cannot switch the log filter: {e}"))?;
        tracing::info!(level = spec, "Log level changed");
        Ok(())
    })
}

fn run(path: &Path, allow_exposed: bool) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            eprint!("{problems}");
            eprintln!(
                "Fix these, then try `sitewatch-agent check --config {}`.",
                path.display()
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    let exposed = exposed_secrets(path, &cfg);
    if !exposed.is_empty() && !allow_exposed {
        for e in &exposed {
            eprintln!("error: {e}");
        }
        return ExitCode::from(EX_CONFIG);
    }
    let set_log_level = init_logging(&cfg);
    for e in &exposed {
        tracing::warn!("{e} (allowed by --allow-insecure-permissions)");
    }
    // Before any thread starts: the descriptors belong to us from here.
    let inherited = match sitewatch_agent::sources::syslog::Inherited::from_env() {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(err = %e, "Cannot use the sockets passed by systemd (LISTEN_FDS)");
            sitewatch_agent::sources::syslog::Inherited::default()
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(err = %e, "Cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = sitewatch_agent::spawn::block_on(&rt, async {
        let shutdown = shutdown_signal()?;
        let reload = reload_requests()?;
        let extras = sitewatch_agent::Extras {
            config_path: Some(path.to_owned()),
            reload: Some(reload),
            set_log_level: Some(set_log_level),
            inherited,
            watchdog: true,
        };
        sitewatch_agent::run_with(cfg, shutdown, extras).await
    });
    // Do not wait for blocking threads: one may be stuck in statvfs on a
    // hung NFS mount.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(err = %format!("{e:#}"), "Agent stopped with an error");
            if e.downcast_ref::<sitewatch_agent::SetupError>().is_some() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// One message per SIGHUP (several pending ones fold into one reload).
fn reload_requests() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use anyhow::Context as _;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    sitewatch_agent::spawn::spawn(async move {
        while hup.recv().await.is_some() {
            // Full: a reload is already pending, which reads the file anew.
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

/// A future that completes on the first SIGTERM or SIGINT. After that, a
/// second signal or [`SHUTDOWN_DEADLINE`] ends the process at once.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use anyhow::Context as _;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "Shutting down");
        sitewatch_agent::spawn::spawn(async move {
            let forced = tokio::select! {
                _ = term.recv() => "second signal",
                _ = int.recv() => "second signal",
                () = tokio::time::sleep(SHUTDOWN_DEADLINE) => "shutdown deadline",
            };
            tracing::warn!("Exiting at once ({forced})");
            std::process::exit(1);
        });
    })
}
