//! Refuses secrets that other users can read.
//!
//! A gateway is a shared box (installers' shells, other daemons). If the
//! config holds a password inline, or a password or private key file is
//! readable by every user, the agent will not start (and `check` says so)
//! unless told to with `--allow-insecure-permissions` or
//! `SITEWATCH_ALLOW_INSECURE_PERMISSIONS=1`. Group-readable is fine: the
//! packaged layout is `root:sitewatch 0640`.
//!
//! A config without inline secrets may be world-readable: it holds no
//! secret, and keeping configs shareable is why `password_file` exists.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::config::Config;

/// Environment variable that allows exposed secrets (`1`/`true`/`yes`).
pub const ENV_ALLOW: &str = "SITEWATCH_ALLOW_INSECURE_PERMISSIONS";

/// A file holding a secret that users other than owner and group can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// The file.
    pub path: PathBuf,
    /// What secret it holds, in plain words.
    pub holds: &'static str,
    /// Its permission bits.
    pub mode: u32,
}

impl std::fmt::Display for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} holds {} and every user on this machine can read it (mode {:04o}); run `chmod 600 {}` \
             (or `chown root:sitewatch {} && chmod 640 {}`), or start with --allow-insecure-permissions",
            self.path.display(),
            self.holds,
            self.mode & 0o7777,
            self.path.display(),
            self.path.display(),
            self.path.display(),
        )
    }
}

/// Whether the environment allows exposed secrets.
pub fn allowed_by_env() -> bool {
    std::env::var(ENV_ALLOW)
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

#[derive(Deserialize, Default)]
struct InlineProbe {
    #[serde(default)]
    mqtt: Option<MqttProbe>,
    #[serde(default)]
    rtsp: Option<RtspProbe>,
}
#[derive(Deserialize, Default)]
struct MqttProbe {
    #[serde(default)]
    password: Option<IgnoredAny>,
}
#[derive(Deserialize, Default)]
struct RtspProbe {
    #[serde(default)]
    camera: Vec<CameraProbe>,
}
#[derive(Deserialize, Default)]
struct CameraProbe {
    #[serde(default)]
    password: Option<IgnoredAny>,
    #[serde(default)]
    password_file: Option<PathBuf>,
}

/// Camera password files named in a config text (pure).
pub fn camera_password_files(config_text: &str) -> Vec<PathBuf> {
    let probe: InlineProbe = toml::from_str(config_text).unwrap_or_default();
    probe
        .rtsp
        .map(|r| {
            r.camera
                .into_iter()
                .filter_map(|c| c.password_file)
                .collect()
        })
        .unwrap_or_default()
}

/// What inline secrets a config text holds (pure).
pub fn inline_secrets(config_text: &str) -> Option<&'static str> {
    let probe: InlineProbe = toml::from_str(config_text).unwrap_or_default();
    let mqtt = probe.mqtt.is_some_and(|m| m.password.is_some());
    let cams = probe
        .rtsp
        .is_some_and(|r| r.camera.iter().any(|c| c.password.is_some()));
    match (mqtt, cams) {
        (true, true) => Some("the broker password and camera passwords"),
        (true, false) => Some("the broker password"),
        (false, true) => Some("camera passwords"),
        (false, false) => None,
    }
}

fn world_accessible(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o007 != 0).then_some(mode)
}

/// Every secret-holding file of this config that others can read: the
/// config itself when it has inline secrets, password files, the client key.
/// Files that cannot be read are left to config validation.
pub fn exposed(config_path: &Path, config_text: &str, cfg: &Config) -> Vec<Exposed> {
    let mut out = Vec::new();
    let mut check = |path: &Path, holds: &'static str| {
        if let Some(mode) = world_accessible(path) {
            out.push(Exposed {
                path: path.to_owned(),
                holds,
                mode,
            });
        }
    };
    if let Some(holds) = inline_secrets(config_text) {
        check(config_path, holds);
    }
    if let Some(p) = &cfg.mqtt.password_file {
        check(p, "the broker password");
    }
    if let Some(p) = &cfg.mqtt.client_key_file {
        check(p, "the TLS client private key");
    }
    for p in camera_password_files(config_text) {
        check(&p, "a camera password");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secrets_are_found_by_section() {
        assert_eq!(
            inline_secrets("site_id = \"a\"\n[mqtt]\nurl = \"x\"\n"),
            None
        );
        assert_eq!(
            inline_secrets("[mqtt]\npassword = \"p\"\n"),
            Some("the broker password")
        );
        assert_eq!(
            inline_secrets("[[rtsp.camera]]\nname = \"a\"\npassword = \"p\"\n"),
            Some("camera passwords")
        );
        assert_eq!(
            camera_password_files(
                "[[rtsp.camera]]\nname = \"a\"\npassword_file = \"/etc/c.pass\"\n"
            ),
            vec![PathBuf::from("/etc/c.pass")]
        );
        // Invalid TOML is validation's business, not a secret.
        assert_eq!(inline_secrets("[mqtt\npassword = 1"), None);
    }
}
