//! Config reload (SIGHUP): re-read and validate the config with the same
//! loader as at start; keep running with the old one (and say why) if it
//! is invalid, else apply only what changed.
//!
//! | changed | effect |
//! |---|---|
//! | `site_id` | refused: "restart required" (the old config stays) |
//! | `[log] level` | new filter at once (unless `RUST_LOG` is set) |
//! | a source's section (`[heartbeat]`, `[disk]`, `[rtsp]`, `[cleanup]`, `[smart]`, …) | the [`Supervisor`] restarts that source with the new settings (or starts or stops it) |
//! | `[syslog]` | the receiver takes it in place: new policy for the next line; only listeners whose address changed are closed/bound; sockets from systemd are never closed |
//! | `[outbox]`, `[status]` | kept until a restart (logged) |
//! | `[mqtt]` or the *contents* of its password, CA, certificate or key files | reconnect (new session and birth; same boot, sequence continues) |
//!
//! Every outcome is logged and returned as one line for systemd's
//! `STATUS=`.

use std::path::Path;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::sources::Supervisor;
use crate::uplink::mqtt;

/// The log filter setter, borrowed.
type SetLogLevelFn = dyn Fn(Option<&str>) -> Result<(), String> + Send;

/// Re-reads `path` and applies it over `current`. Returns a status line.
pub(crate) async fn apply(
    path: &Path,
    current: &mut Config,
    mqtt_print: &mut u64,
    sources: &mut Supervisor,
    reconf_tx: &mpsc::Sender<mqtt::Reconfigure>,
    set_log_level: Option<&SetLogLevelFn>,
) -> String {
    tracing::info!(config = %path.display(), "Reloading the config (SIGHUP)");
    let mut new = match Config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems.list {
                tracing::error!(config = %path.display(), "Config problem: {p}");
            }
            tracing::error!(
                problems = problems.list.len(),
                "Reload refused: the new config is invalid; still running with the previous one"
            );
            return format!(
                "Reload refused: {} problem(s) in {}; running with the previous config",
                problems.list.len(),
                path.display()
            );
        }
    };
    if new.site_id != current.site_id {
        tracing::error!(
            old = %current.site_id,
            new = %new.site_id,
            "Reload refused: site_id changed; restart required (still running as the old site)"
        );
        return format!(
            "Reload refused: site_id changed ({} -> {}); restart required",
            current.site_id, new.site_id
        );
    }
    if new.outbox != current.outbox {
        // The outbox (and its disk directory) lives for the whole process.
        tracing::warn!("[outbox] settings changed; they apply after a restart");
        new.outbox = current.outbox.clone();
    }
    if new.status != current.status {
        // The status writer keeps its file for the whole process.
        tracing::warn!("[status] settings changed; they apply after a restart");
        new.status = current.status.clone();
    }
    // Broker files first: nothing is changed if they cannot be read.
    let print = match mqtt::fingerprint(&new) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(err = %format!("{e:#}"), "Reload refused; still running with the previous config");
            return format!("Reload refused: {e:#}");
        }
    };
    let mut changed = Vec::new();
    if print != *mqtt_print {
        match mqtt::options(&new, new.client_id()).and_then(|o| Ok((o, mqtt::target(&new)?))) {
            Ok((options, target)) => {
                if reconf_tx
                    .send(mqtt::Reconfigure { options, target })
                    .await
                    .is_ok()
                {
                    *mqtt_print = print;
                    changed.push("mqtt");
                } else {
                    tracing::error!("The MQTT uplink is gone; new broker settings not applied");
                }
            }
            Err(e) => {
                tracing::error!(err = %format!("{e:#}"), "Reload: new MQTT settings not applied");
                return format!("Reload refused: {e:#}");
            }
        }
    }
    if new.log_level != current.log_level {
        if let Some(set) = set_log_level {
            match set(new.log_level.as_deref()) {
                Ok(()) => changed.push("log level"),
                Err(why) => tracing::warn!("Log level not changed: {why}"),
            }
        }
    }
    changed.extend(sources.reload(&current.sources, &new.sources).await);
    *current = new;
    let line = if changed.is_empty() {
        "Config reloaded; nothing changed".to_owned()
    } else {
        format!("Config reloaded; applied: {}", changed.join(", "))
    };
    tracing::info!("{line}");
    line
}
