//! What the centre's long-running services share (`sitewatch-bridge` and
//! `sitewatch-live`, which links this crate for the schema and
//! `[postgres]`): logging to stderr for the journal, and the shutdown
//! signal.

/// Logs to stderr (the journal adds time and unit), filtered by
/// `RUST_LOG`, `info` by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on the first SIGTERM or SIGINT, so the service can finish
/// what it holds; a second one exits at once (status 130), after logging
/// `second` (what is given up).
pub async fn shutdown_signal(second: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("{second}");
        std::process::exit(130);
    });
}
