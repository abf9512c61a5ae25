//! Config reload (SIGHUP): re-read and validate the config with the same
//! loader as at start; keep running with the old one (and say why) if it
//! is invalid, else apply only what changed.
//!
//! | changed | effect |
//! |---|---|
//! | `site_id` | refused: "restart required" (the old config stays) |
//! | `[log] level` | new filter at once (unless `RUST_LOG` is set) |
//! | `[heartbeat]`, `[disk]`, `[rtsp]`, `[cleanup]`, `[smart]` | that source restarts with the new settings |
//! | `[syslog]` | new policy for the next line; only listeners whose address changed are closed/bound; sockets from systemd are never closed |
//! | `[outbox]`, `[status]` | kept until a restart (logged) |
//! | `[mqtt]` or the *contents* of its password, CA, certificate or key files | reconnect (new session and birth; same boot, sequence continues) |
//!
//! Every outcome is logged and returned as one line for systemd's
//! `STATUS=`.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::uplink::mqtt;
use crate::{syslog, Sources};

/// The log filter setter, borrowed.
type SetLogLevelFn = dyn Fn(Option<&str>) -> Result<(), String> + Send;

/// Re-reads `path` and applies it over `current`. Returns a status line.
pub(crate) async fn apply(
    path: &Path,
    current: &mut Config,
    mqtt_print: &mut u64,
    sources: &mut Sources,
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
    if new.heartbeat != current.heartbeat {
        Sources::stop_task(&mut sources.heartbeat).await;
        sources.start_heartbeat(&new.heartbeat);
        changed.push("heartbeat");
    }
    if new.disk != current.disk {
        Sources::stop_task(&mut sources.disk).await;
        sources.start_disk(&new.disk);
        changed.push("disk");
    }
    if new.rtsp != current.rtsp {
        Sources::stop_task(&mut sources.rtsp).await;
        sources.start_rtsp(new.rtsp.as_ref());
        changed.push("rtsp");
    }
    if new.smart != current.smart {
        Sources::stop_task(&mut sources.smart).await;
        sources.start_smart(new.smart.as_ref());
        changed.push("smart");
    }
    if new.cleanup != current.cleanup {
        Sources::stop_task(&mut sources.cleanup).await;
        sources.start_cleanup(new.cleanup.as_ref());
        changed.push("cleanup");
    }
    if new.syslog != current.syslog {
        match (sources.syslog.as_mut(), new.syslog.clone()) {
            (Some(running), Some(cfg)) => running.update(cfg).await,
            (Some(_), None) => {
                if let Some(s) = sources.syslog.take() {
                    s.stop().await;
                }
            }
            (None, Some(cfg)) => {
                sources.syslog = Some(syslog::Syslog::start(
                    sources.publisher.clone(),
                    cfg,
                    Arc::clone(&sources.inherited),
                ));
            }
            (None, None) => {}
        }
        changed.push("syslog");
    }
    *current = new;
    let line = if changed.is_empty() {
        "Config reloaded; nothing changed".to_owned()
    } else {
        format!("Config reloaded; applied: {}", changed.join(", "))
    };
    tracing::info!("{line}");
    line
}
