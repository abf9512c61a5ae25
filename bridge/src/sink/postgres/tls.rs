//! TLS to PostgreSQL with libpq's `sslmode` meanings, on rustls (the ring
//! provider, as for MQTT and Loki).
//!
//! tokio-postgres only knows `disable`, `prefer` and `require` and leaves
//! certificate checks to the TLS connector, so the five libpq modes map to
//! its mode plus a certificate verifier:
//!
//! | sslmode       | TLS                          | certificate check            |
//! |---------------|------------------------------|------------------------------|
//! | `disable`     | never                        | none                         |
//! | `prefer`      | if the server offers it      | none (libpq's default)       |
//! | `require`     | always                       | none, or as `verify-ca` when `sslrootcert` is set (libpq does the same) |
//! | `verify-ca`   | always                       | chain to `sslrootcert`       |
//! | `verify-full` | always                       | chain and host name          |
//!
//! Without `sslrootcert` the `verify-*` modes trust the system's CA store
//! (libpq's `sslrootcert=system`), which is what managed databases with
//! public certificates need. The URL may carry these parameters (as the
//! connection strings managed services hand out do); they are taken out
//! of it here because tokio-postgres rejects `verify-*`, `sslrootcert`,
//! `sslcert` and `sslkey`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// libpq's `sslmode`, all five of its values (`allow` is left out: it
/// downgrades, and libpq documents it as not useful for security).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, no certificate check.
    Prefer,
    /// Always TLS; the certificate is checked only if `sslrootcert` is set.
    Require,
    /// Always TLS; the certificate must chain to a trusted CA.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling.
    pub fn parse(s: &str) -> Result<SslMode, String> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err("\"allow\" is not supported (it prefers no TLS); use \
                            disable, prefer, require, verify-ca or verify-full"
                .into()),
            other => Err(format!(
                "{other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked at all with these
    /// settings (for the warning about unauthenticated remote databases).
    pub fn verifies(self, rootcert: bool) -> bool {
        match self {
            SslMode::Disable | SslMode::Prefer => false,
            SslMode::Require => rootcert,
            SslMode::VerifyCa | SslMode::VerifyFull => true,
        }
    }
}

/// Validated TLS settings for the database connection.
#[derive(Debug, Clone)]
pub struct PgTls {
    /// The mode in force.
    pub mode: SslMode,
    /// CA bundle (PEM); `None`: the system's trust store.
    pub rootcert: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that ask for one.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The rustls configuration, `None` for `disable`; built once while
    /// validating, so a bad CA file is a config problem, not a retry loop.
    pub config: Option<Arc<rustls::ClientConfig>>,
}

/// TLS parameters found in a connection string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UrlTls {
    /// `sslmode=`.
    pub sslmode: Option<String>,
    /// `sslrootcert=`.
    pub sslrootcert: Option<String>,
    /// `sslcert=`.
    pub sslcert: Option<String>,
    /// `sslkey=`.
    pub sslkey: Option<String>,
}

/// Takes the `ssl*` parameters out of a `postgresql://…?a=b&c=d` URL or a
/// `key=value …` string, returning the rest for tokio-postgres to parse.
/// Pure, so it is unit-tested on the shapes providers hand out.
pub fn split_url(url: &str) -> (String, UrlTls) {
    let mut tls = UrlTls::default();
    let mut take = |key: &str, value: &str| -> bool {
        let slot = match key {
            "sslmode" => &mut tls.sslmode,
            "sslrootcert" => &mut tls.sslrootcert,
            "sslcert" => &mut tls.sslcert,
            "sslkey" => &mut tls.sslkey,
            _ => return false,
        };
        *slot = Some(value.to_owned());
        true
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), tls);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k, &percent_decode(v))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, tls)
    } else {
        // key=value form: values with spaces are quoted, which no ssl*
        // value needs; anything else is passed through untouched.
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| match pair.split_once('=') {
                Some((k, v)) => !take(k, v.trim_matches('\'')),
                None => true,
            })
            .collect();
        (kept.join(" "), tls)
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds the rustls configuration for `mode`, reading the CA bundle and
/// the client certificate now.
pub fn build(
    mode: SslMode,
    rootcert: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verify = mode.verifies(rootcert.is_some());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("setting TLS protocol versions")?;
    let builder = if verify {
        let roots = Arc::new(root_store(rootcert)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .context("building the certificate verifier")?;
        let check_name = mode == SslMode::VerifyFull;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainVerifier { webpki, check_name }))
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertCheck { provider }))
    };
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                sitewatch_mqtt::load_certs(cert)?,
                sitewatch_mqtt::load_key(key)?,
            )
            .with_context(|| {
                format!(
                    "client certificate {} does not match key {}",
                    cert.display(),
                    key.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

fn root_store(rootcert: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match rootcert {
        Some(path) => {
            for cert in sitewatch_mqtt::load_certs(path)? {
                roots
                    .add(cert)
                    .with_context(|| format!("adding CA from {}", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            anyhow::ensure!(
                added > 0,
                "no sslrootcert set and no usable CA certificate in the system trust \
                 store (install ca-certificates or set postgres.sslrootcert)"
            );
        }
    }
    Ok(roots)
}

/// `verify-ca` and `verify-full`: the WebPKI chain check, with the name
/// check kept only for `verify-full`.
#[derive(Debug)]
struct ChainVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // WebPKI checks the chain before the name, so a name error
            // means the chain is good: what verify-ca asks for.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: encryption without
/// authentication, as libpq does. The handshake signatures are still
/// checked, so the session key belongs to whoever holds the certificate.
#[derive(Debug)]
struct NoCertCheck {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ssl_parameters_are_taken_out() {
        let (rest, tls) = split_url(
            "postgresql://u@db.example:5432/app?sslmode=verify-full&application_name=x\
             &sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(
            rest,
            "postgresql://u@db.example:5432/app?application_name=x"
        );
        assert_eq!(tls.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(tls.sslrootcert.as_deref(), Some("/etc/ca.pem"));

        let (rest, tls) = split_url("postgres://u@h/db?sslmode=require");
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(tls.sslmode.as_deref(), Some("require"));

        let (rest, tls) = split_url("host=h user=u sslmode=verify-ca sslkey='/k.pem' dbname=d");
        assert_eq!(rest, "host=h user=u dbname=d");
        assert_eq!(tls.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(tls.sslkey.as_deref(), Some("/k.pem"));

        let (rest, tls) = split_url("postgresql://u@h/db");
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(tls, UrlTls::default());
    }

    #[test]
    fn percent_decoding_is_bounded_at_the_end() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%"), "A%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("é%é"), "é%é");
    }

    #[test]
    fn modes_parse_and_verify_as_libpq() {
        for m in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(SslMode::parse(m.as_str()), Ok(m));
        }
        assert!(SslMode::parse("allow").is_err());
        assert!(SslMode::parse("verify_full").is_err());
        assert!(!SslMode::Require.verifies(false));
        assert!(SslMode::Require.verifies(true));
        assert!(!SslMode::Prefer.verifies(true));
    }
}
