//! Syslog rows: can every configured receiver address be bound?

use super::SyslogConfig;
use crate::check::{row, Row, Verdict};

/// Tries to bind every configured syslog address (then closes it again).
pub fn rows(cfg: Option<&SyslogConfig>) -> Vec<Row> {
    let Some(sys) = cfg else {
        return vec![row(
            "syslog",
            Verdict::Ok,
            "receiver off (no [syslog] table)",
            "",
        )];
    };
    let mut rows = Vec::new();
    let addrs = sys
        .udp
        .iter()
        .map(|a| ("UDP", *a))
        .chain(sys.tcp.iter().map(|a| ("TCP", *a)));
    for (proto, addr) in addrs {
        let res = if proto == "UDP" {
            std::net::UdpSocket::bind(addr).map(drop)
        } else {
            std::net::TcpListener::bind(addr).map(drop)
        };
        let name = format!("syslog {proto} {addr}");
        rows.push(match res {
            Ok(()) => row(name, Verdict::Ok, "port can be bound", ""),
            Err(e) => {
                let todo = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => format!(
                        "ports below 1024 need CAP_NET_BIND_SERVICE (or systemd socket \
                         activation, sitewatch-agent-syslog.socket); or use port {}",
                        crate::sources::syslog::config::UNPRIVILEGED_PORT
                    ),
                    std::io::ErrorKind::AddrInUse => format!(
                        "another program listens there{}: stop it or choose another port \
                         (is the agent itself already running? then this is expected)",
                        port_owner_hint(addr.port())
                    ),
                    std::io::ErrorKind::AddrNotAvailable => {
                        "this machine has no such address: fix [syslog] udp/tcp".to_owned()
                    }
                    _ => "see the result".to_owned(),
                };
                row(name, Verdict::Failed, format!("cannot listen: {e}"), todo)
            }
        });
    }
    rows
}

/// A guess at who holds a syslog port, from the usual suspects' names.
fn port_owner_hint(port: u16) -> String {
    if port != 514 {
        return String::new();
    }
    for name in ["rsyslogd", "syslog-ng", "logd", "syslogd"] {
        let running = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name)
            });
        if running {
            return format!(" (probably {name}, which is running)");
        }
    }
    String::new()
}
