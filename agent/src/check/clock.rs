//! Clock rows: the local clock against this binary's date and against the
//! validity dates of the configured CA and client certificates.

use super::cert::validity;
use super::{row, Row, Verdict};
use crate::config::Config;

/// Unix seconds of `t` (0 before 1970).
fn unix(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM UTC` for messages.
fn date(secs: i64) -> String {
    crate::sources::syslog::time::utc_minutes(secs)
}

/// Clock sanity: the local clock against this binary's date and against
/// the validity of the configured CA and client certificates.
pub fn rows(cfg: &Config, now: std::time::SystemTime) -> Vec<Row> {
    let now_s = unix(now);
    let mut rows = Vec::new();
    // The binary cannot be older than its own file: a clock before that is
    // wrong (boards without a battery start in 1970 or at the image date).
    let built = std::fs::metadata("/proc/self/exe")
        .and_then(|m| m.modified())
        .map(unix)
        .ok();
    match built {
        Some(b) if now_s + 86_400 < b => rows.push(row(
            "clock",
            Verdict::Failed,
            format!(
                "local clock says {}, before this agent was installed ({})",
                date(now_s),
                date(b)
            ),
            "set the time (enable NTP: timedatectl set-ntp true, or on OpenWrt \
             System > System > Time synchronization); TLS certificates are judged by this clock",
        )),
        _ => rows.push(row(
            "clock",
            Verdict::Ok,
            format!("local clock says {}", date(now_s)),
            "",
        )),
    }
    let files = [
        ("CA certificate", cfg.mqtt.ca_file.as_ref()),
        ("client certificate", cfg.mqtt.client_cert_file.as_ref()),
    ];
    for (what, path) in files {
        let Some(path) = path else { continue };
        let certs = match std::fs::read(path) {
            Ok(pem) => {
                use rustls::pki_types::pem::PemObject as _;
                rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .collect::<Vec<_>>()
            }
            Err(e) => {
                rows.push(row(
                    what,
                    Verdict::Failed,
                    format!("cannot read {}: {e}", path.display()),
                    "check the path and that the agent's user may read it",
                ));
                continue;
            }
        };
        for cert in &certs {
            let Some((nb, na)) = validity(cert.as_ref()) else {
                continue;
            };
            let name = format!("{what} {}", path.display());
            if now_s < nb {
                rows.push(row(
                    name,
                    Verdict::Failed,
                    format!(
                        "the local clock ({}) is before the certificate's start (notBefore {})",
                        date(now_s),
                        date(nb)
                    ),
                    "the clock is wrong: set the time (NTP), then check again",
                ));
            } else if now_s > na {
                rows.push(row(
                    name,
                    Verdict::Failed,
                    format!(
                        "the certificate expired on {} (local clock {})",
                        date(na),
                        date(now_s)
                    ),
                    "ask operations for a new certificate (or fix the clock if it is wrong)",
                ));
            } else if na - now_s < 30 * 86_400 {
                rows.push(row(
                    name,
                    Verdict::Warning,
                    format!("valid, but expires on {}", date(na)),
                    "ask operations for a renewed certificate soon",
                ));
            } else {
                rows.push(row(
                    name,
                    Verdict::Ok,
                    format!("valid until {}", date(na)),
                    "",
                ));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_print_as_utc_minutes() {
        assert_eq!(date(1_735_689_600), "2025-01-01 00:00 UTC");
        assert_eq!(date(253_402_300_799), "9999-12-31 23:59 UTC");
    }
}
