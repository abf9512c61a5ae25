//! Turns connection errors into plain words for field installers.
//!
//! Shared by the daemon's log lines and `sitewatch-agent check --connect`,
//! so both say the same thing ("TLS: server certificate not trusted by
//! ca_file /etc/sitewatch/ca.pem"). Pure: looks at error values only.

use std::fmt;
use std::io;
use std::path::Path;

use rumqttc::{ConnectReturnCode, ConnectionError};
use rustls::{AlertDescription, CertificateError};

/// Which step of connecting failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Resolving the broker host name.
    Dns,
    /// Opening the TCP connection.
    Tcp,
    /// The TLS handshake (certificates).
    Tls,
    /// The MQTT CONNECT exchange (credentials, client id).
    Mqtt,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Dns => "DNS",
            Step::Tcp => "TCP",
            Step::Tls => "TLS",
            Step::Mqtt => "MQTT",
        })
    }
}

/// What we know about the broker, to name things in messages.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Broker host as configured.
    pub host: &'a str,
    /// Broker port.
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
    /// `mqtt.ca_file`, if set.
    pub ca_file: Option<&'a Path>,
    /// `mqtt.client_cert_file`, if set.
    pub client_cert: Option<&'a Path>,
    /// `mqtt.username`, if set.
    pub username: Option<&'a str>,
    /// MQTT client id.
    pub client_id: &'a str,
}

/// A failed step and what to tell the installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The step that failed.
    pub step: Step,
    /// One sentence, plain words.
    pub words: String,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.words)
    }
}

fn diag(step: Step, words: impl Into<String>) -> Diagnosis {
    Diagnosis {
        step,
        words: words.into(),
    }
}

/// Explains a rumqttc connection error.
pub fn connection_error(e: &ConnectionError, t: &Target<'_>) -> Diagnosis {
    match e {
        ConnectionError::ConnectionRefused(code) => refused(*code, t),
        ConnectionError::NetworkTimeout => diag(
            Step::Tcp,
            format!(
                "no complete answer from {}:{} in time (a firewall dropping packets, a wrong \
                 port, or a very slow link)",
                t.host, t.port
            ),
        ),
        ConnectionError::FlushTimeout => diag(
            Step::Mqtt,
            format!("{}:{} stopped accepting data", t.host, t.port),
        ),
        _ => any_error(e, t),
    }
}

/// Explains any error by looking for a rustls or I/O error in its chain.
pub fn any_error(e: &(dyn std::error::Error + 'static), t: &Target<'_>) -> Diagnosis {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_err: Option<&io::Error> = None;
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return tls_error(tls, t);
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return tls_error(tls, t);
            }
            io_err.get_or_insert(io);
        }
        if let Some(rumqttc::StateError::ConnectionAborted) =
            err.downcast_ref::<rumqttc::StateError>()
        {
            return closed_early(t);
        }
        cur = err.source();
    }
    match io_err {
        Some(io) => io_error(io, t),
        None => diag(Step::Mqtt, e.to_string()),
    }
}

/// Explains why an established connection ended, in plain words.
pub fn lost_connection(e: &ConnectionError) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(state) = err.downcast_ref::<rumqttc::StateError>() {
            match state {
                rumqttc::StateError::ConnectionAborted => {
                    return "the broker closed the connection".into()
                }
                rumqttc::StateError::AwaitPingResp => {
                    return "the broker stopped answering keep-alive pings (dead link?)".into()
                }
                _ => {}
            }
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => return "the broker closed the connection".into(),
                io::ErrorKind::TimedOut => return "the network link timed out".into(),
                _ => {}
            }
        }
        cur = err.source();
    }
    match e {
        ConnectionError::FlushTimeout => "the broker stopped accepting data".into(),
        other => other.to_string(),
    }
}

fn closed_early(t: &Target<'_>) -> Diagnosis {
    if t.tls {
        diag(
            Step::Mqtt,
            format!(
                "{}:{} closed the connection before answering CONNECT (with mutual TLS this \
                 usually means our client certificate was not accepted)",
                t.host, t.port
            ),
        )
    } else {
        diag(
            Step::Mqtt,
            format!(
                "{}:{} closed the connection before answering (if that port expects TLS, use \
                 an mqtts:// URL)",
                t.host, t.port
            ),
        )
    }
}

/// Explains an I/O error from connecting.
pub fn io_error(io: &io::Error, t: &Target<'_>) -> Diagnosis {
    let text = io.to_string();
    if text.contains("lookup address") || text.contains("resolve") {
        return diag(Step::Dns, format!("cannot resolve {}: {text}", t.host));
    }
    match io.kind() {
        io::ErrorKind::ConnectionRefused => diag(
            Step::Tcp,
            format!(
                "connection to {}:{} refused: nothing listens on that port (is the broker \
                 running, is the port right?)",
                t.host, t.port
            ),
        ),
        io::ErrorKind::TimedOut => diag(
            Step::Tcp,
            format!("connection to {}:{} timed out", t.host, t.port),
        ),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => diag(
            Step::Tcp,
            format!("no route to {}:{} ({text})", t.host, t.port),
        ),
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => closed_early(t),
        _ => diag(
            if t.tls { Step::Tls } else { Step::Tcp },
            format!("{}:{}: {text}", t.host, t.port),
        ),
    }
}

fn trust_source(t: &Target<'_>) -> String {
    match t.ca_file {
        Some(ca) => format!("ca_file {}", ca.display()),
        None => "the system trust store (no ca_file set)".to_owned(),
    }
}

/// Explains a rustls error.
pub fn tls_error(e: &rustls::Error, t: &Target<'_>) -> Diagnosis {
    use rustls::Error as E;
    let words = match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "server certificate not trusted by {} (it was signed by a different CA)",
                trust_source(t)
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "server certificate is not valid for the name `{}`; use the host name the \
                     certificate was issued for in mqtt.url",
                    t.host
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "server certificate has expired (or this machine's clock is wrong)".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "server certificate is not valid yet (is this machine's clock right?)".to_owned()
            }
            CertificateError::Revoked => "server certificate has been revoked".to_owned(),
            other => format!("server certificate rejected: {other:?}"),
        },
        E::AlertReceived(alert) => alert_words(*alert, t),
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => format!(
            "{}:{} did not answer with TLS (is it a plain MQTT port? then use mqtt://)",
            t.host, t.port
        ),
        E::NoCertificatesPresented => "the broker sent no certificate".to_owned(),
        other => format!("TLS handshake failed: {other}"),
    };
    diag(Step::Tls, words)
}

fn alert_words(alert: AlertDescription, t: &Target<'_>) -> String {
    let ours = match t.client_cert {
        Some(c) => format!("our client certificate ({})", c.display()),
        None => "the connection".to_owned(),
    };
    match alert {
        AlertDescription::CertificateRequired => {
            "the broker requires a client certificate: set mqtt.client_cert_file and \
             mqtt.client_key_file"
                .to_owned()
        }
        // A revoked certificate is not fixed by checking the CA or the
        // clock: the gateway needs a new one (scripts/issue-cert.sh).
        AlertDescription::CertificateRevoked => format!(
            "the broker says {ours} was revoked (TLS alert CertificateRevoked): this gateway \
             needs a newly issued certificate (scripts/issue-cert.sh site SITE_ID); a revoked \
             one never works again"
        ),
        AlertDescription::UnknownCA
        | AlertDescription::BadCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateExpired
        | AlertDescription::AccessDenied
        | AlertDescription::DecryptError => format!(
            "the broker rejected {ours} (TLS alert {alert:?}); it must be signed by a CA the \
             broker trusts, be an X.509 v3 client certificate, and be unexpired"
        ),
        AlertDescription::HandshakeFailure | AlertDescription::ProtocolVersion => format!(
            "the broker refused the TLS handshake (alert {alert:?}): no common TLS version or \
             cipher, or it wanted a client certificate"
        ),
        other => format!("the broker aborted TLS (alert {other:?})"),
    }
}

fn refused(code: ConnectReturnCode, t: &Target<'_>) -> Diagnosis {
    let who = match t.username {
        Some(u) => format!(" for user `{u}`"),
        None => " (no username configured)".to_owned(),
    };
    let words = match code {
        ConnectReturnCode::BadUserNamePassword => {
            format!("broker refused: bad username or password{who}")
        }
        ConnectReturnCode::NotAuthorized => format!(
            "broker refused: not authorized{who}; check the credentials and the broker's \
             access rules for client id `{}`",
            t.client_id
        ),
        ConnectReturnCode::BadClientId => {
            format!("broker refused the client id `{}`", t.client_id)
        }
        ConnectReturnCode::ServiceUnavailable => {
            "broker refused: service unavailable (overloaded or shutting down)".to_owned()
        }
        ConnectReturnCode::RefusedProtocolVersion => {
            "broker refused MQTT 3.1.1 (protocol version)".to_owned()
        }
        ConnectReturnCode::Success => "broker accepted".to_owned(),
    };
    diag(Step::Mqtt, words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target {
            host: "broker.example.com",
            port: 8883,
            tls: true,
            ca_file: Some(Path::new("/etc/sitewatch/ca.pem")),
            client_cert: Some(Path::new("/etc/sitewatch/site.pem")),
            username: Some("lokasi1"),
            client_id: "sitewatch-agent-lokasi1",
        }
    }

    #[test]
    fn refused_credentials() {
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        let d = connection_error(&e, &target());
        assert_eq!(d.step, Step::Mqtt);
        assert_eq!(
            d.to_string(),
            "MQTT: broker refused: bad username or password for user `lokasi1`"
        );
    }

    #[test]
    fn untrusted_server_certificate_through_io_error() {
        // tokio-rustls wraps rustls errors in io::Error(InvalidData).
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let e = ConnectionError::Tls(rumqttc::TlsError::Io(io));
        let d = connection_error(&e, &target());
        assert_eq!(d.step, Step::Tls);
        assert!(
            d.words
                .contains("not trusted by ca_file /etc/sitewatch/ca.pem"),
            "{d}"
        );
    }

    #[test]
    fn rejected_client_certificate_after_handshake() {
        // TLS 1.3: the alert arrives when reading CONNACK.
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let e = ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::Error::Io(io),
        ));
        let d = connection_error(&e, &target());
        assert_eq!(d.step, Step::Tls);
        assert!(
            d.words
                .contains("rejected our client certificate (/etc/sitewatch/site.pem)"),
            "{d}"
        );
    }

    #[test]
    fn revoked_client_certificate_says_a_new_one_is_needed() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRevoked),
        );
        let e = ConnectionError::Tls(rumqttc::TlsError::Io(io));
        let d = connection_error(&e, &target());
        assert_eq!(d.step, Step::Tls);
        assert!(
            d.words.contains("/etc/sitewatch/site.pem) was revoked")
                && d.words.contains("newly issued certificate")
                && !d.words.contains("unexpired"),
            "{d}"
        );
    }

    #[test]
    fn lost_connection_words() {
        let e = ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted);
        assert_eq!(lost_connection(&e), "the broker closed the connection");
        let e = ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp);
        assert!(lost_connection(&e).contains("keep-alive"));
        let e = ConnectionError::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(lost_connection(&e), "the broker closed the connection");
    }

    #[test]
    fn tcp_and_dns() {
        let t = target();
        let d = connection_error(
            &ConnectionError::Io(io::Error::from(io::ErrorKind::ConnectionRefused)),
            &t,
        );
        assert_eq!(d.step, Step::Tcp);
        assert!(d.words.contains("refused"), "{d}");
        let d = io_error(
            &io::Error::other("failed to lookup address information: Name or service not known"),
            &t,
        );
        assert_eq!(d.step, Step::Dns);
        assert!(
            d.words.starts_with("cannot resolve broker.example.com"),
            "{d}"
        );
    }
}
