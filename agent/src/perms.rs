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

use toml::de::DeValue;

use crate::config::{Config, Doc};

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

/// Password files named in a config text at `section.password_file`
/// (`[[rtsp.camera]]` entries, `[ups]`), with what each holds (pure; a
/// text that does not parse names none: validation reports it).
pub fn password_files(config_text: &str) -> Vec<(PathBuf, &'static str)> {
    let Ok(doc) = Doc::parse(config_text) else {
        return Vec::new();
    };
    let file = |v: &DeValue<'_>| {
        v.get("password_file")?
            .get_ref()
            .as_str()
            .map(PathBuf::from)
    };
    let mut out: Vec<(PathBuf, &'static str)> = doc
        .get(&["rtsp", "camera"])
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| file(c.get_ref()))
        .map(|p| (p, "a camera password"))
        .collect();
    if let Some(p) = doc.get(&["ups"]).and_then(file) {
        out.push((p, "the UPS password"));
    }
    out
}

/// What inline secrets a config text holds (pure).
pub fn inline_secrets(config_text: &str) -> Option<&'static str> {
    let Ok(doc) = Doc::parse(config_text) else {
        return None;
    };
    let mqtt = doc.get(&["mqtt", "password"]).is_some();
    let cams = doc
        .get(&["rtsp", "camera"])
        .and_then(|c| c.as_array())
        .is_some_and(|cams| cams.iter().any(|c| c.get_ref().get("password").is_some()));
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
    for (p, holds) in password_files(config_text) {
        check(&p, holds);
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
            password_files(
                "[[rtsp.camera]]\nname = \"a\"\npassword_file = \"/etc/c.pass\"\n\
                 [[rtsp.camera]]\nname = \"b\"\n\
                 [ups]\nusername = \"mon\"\npassword_file = \"/etc/ups.pass\"\n"
            ),
            vec![
                (PathBuf::from("/etc/c.pass"), "a camera password"),
                (PathBuf::from("/etc/ups.pass"), "the UPS password"),
            ]
        );
        // Invalid TOML is validation's business, not a secret.
        assert_eq!(inline_secrets("[mqtt\npassword = 1"), None);
    }
}
