//! Throwaway X.509 material for TLS and mutual-TLS tests.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A private CA with a server and a client certificate, plus an unrelated
/// "rogue" CA and client, written as PEM files.
///
/// Real certificates (X.509 v3 with CA basic constraints, key usages and
/// extended key usages) are needed because rustls rejects v1 and
/// self-signed leaf certificates; the rogue pair lets tests prove that a
/// client certificate from the wrong CA is refused. Keys are ECDSA P-256.
///
/// The server certificate is valid for `localhost` and `127.0.0.1`; both
/// client certificates have the common name [`TestCerts::CLIENT_CN`].
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The trusted CA certificate (`ca.pem`): clients' `cafile`, and the
    /// broker's trust anchor for client certificates.
    pub ca_cert: PathBuf,
    /// Server certificate for `localhost` / `127.0.0.1` (`server.pem`).
    pub server_cert: PathBuf,
    /// Server private key, PKCS#8 (`server.key`).
    pub server_key: PathBuf,
    /// Client certificate signed by the trusted CA (`client.pem`).
    pub client_cert: PathBuf,
    /// Client private key, PKCS#8 (`client.key`).
    pub client_key: PathBuf,
    /// The rogue CA certificate (`rogue-ca.pem`): trusting it instead of
    /// [`TestCerts::ca_cert`] must make the server certificate fail.
    pub rogue_ca_cert: PathBuf,
    /// Client certificate signed by the rogue CA (`rogue-client.pem`);
    /// must be refused by an mTLS listener.
    pub rogue_client_cert: PathBuf,
    /// Rogue client private key, PKCS#8 (`rogue-client.key`).
    pub rogue_client_key: PathBuf,
    /// PEM text of [`TestCerts::ca_cert`].
    pub ca_cert_pem: String,
    /// PEM text of [`TestCerts::server_cert`].
    pub server_cert_pem: String,
    /// PEM text of [`TestCerts::server_key`].
    pub server_key_pem: String,
    /// PEM text of [`TestCerts::client_cert`].
    pub client_cert_pem: String,
    /// PEM text of [`TestCerts::client_key`].
    pub client_key_pem: String,
    /// PEM text of [`TestCerts::rogue_ca_cert`].
    pub rogue_ca_cert_pem: String,
    /// PEM text of [`TestCerts::rogue_client_cert`].
    pub rogue_client_cert_pem: String,
    /// PEM text of [`TestCerts::rogue_client_key`].
    pub rogue_client_key_pem: String,
}

/// A generated certificate and its key, in PEM.
struct Pair {
    cert_pem: String,
    key_pem: String,
}

impl TestCerts {
    /// Common name of both client certificates (a site id, as the agent
    /// would present).
    pub const CLIENT_CN: &'static str = "site-test";

    /// Generates fresh material and writes it as PEM files into `dir`
    /// (which must exist; typically a `tempfile::TempDir` the test owns).
    pub fn generate(dir: &Path) -> anyhow::Result<TestCerts> {
        let (ca_pem, ca) = new_ca("sitewatch test CA")?;
        let server = new_leaf(
            &ca,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
        .context("generating the server certificate")?;
        let client = new_leaf(
            &ca,
            Self::CLIENT_CN,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .context("generating the client certificate")?;
        let (rogue_ca_pem, rogue_ca) = new_ca("sitewatch rogue CA")?;
        let rogue = new_leaf(
            &rogue_ca,
            Self::CLIENT_CN,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .context("generating the rogue client certificate")?;

        let write = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            // Private keys readable by their owner only, as a real
            // deployment has them (the agent refuses world-readable keys).
            if name.contains("key") {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("chmod {}", path.display()))?;
            }
            Ok(path)
        };
        Ok(TestCerts {
            ca_cert: write("ca.pem", &ca_pem)?,
            server_cert: write("server.pem", &server.cert_pem)?,
            server_key: write("server.key", &server.key_pem)?,
            client_cert: write("client.pem", &client.cert_pem)?,
            client_key: write("client.key", &client.key_pem)?,
            rogue_ca_cert: write("rogue-ca.pem", &rogue_ca_pem)?,
            rogue_client_cert: write("rogue-client.pem", &rogue.cert_pem)?,
            rogue_client_key: write("rogue-client.key", &rogue.key_pem)?,
            ca_cert_pem: ca_pem,
            server_cert_pem: server.cert_pem,
            server_key_pem: server.key_pem,
            client_cert_pem: client.cert_pem,
            client_key_pem: client.key_pem,
            rogue_ca_cert_pem: rogue_ca_pem,
            rogue_client_cert_pem: rogue.cert_pem,
            rogue_client_key_pem: rogue.key_pem,
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sitewatch tests");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn new_ca(common_name: &str) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate().with_context(|| format!("generating key for {common_name}"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .with_context(|| format!("self-signing {common_name}"))?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn new_leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<Pair> {
    let key = KeyPair::generate().with_context(|| format!("generating key for {common_name}"))?;
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .with_context(|| format!("certificate parameters for {common_name}"))?;
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    // Lets OpenSSL (mosquitto) and webpki pick the right issuer quickly.
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing {common_name}"))?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the first PEM block (base64 only, enough for our own output).
    fn pem_to_der(pem: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in body.bytes().filter(|&c| c != b'=') {
            let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    /// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] { INTEGER 2 } ... } }
    fn is_v3(der: &[u8]) -> bool {
        fn skip_header(der: &[u8]) -> &[u8] {
            let len_byte = der[1];
            let header = if len_byte & 0x80 == 0 {
                2
            } else {
                2 + (len_byte & 0x7f) as usize
            };
            &der[header..]
        }
        let tbs = skip_header(der);
        let inner = skip_header(tbs);
        inner.starts_with(&[0xa0, 0x03, 0x02, 0x01, 0x02])
    }

    #[test]
    fn generates_v3_certificates_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::generate(dir.path()).expect("generate");
        for pem in [
            &certs.ca_cert_pem,
            &certs.server_cert_pem,
            &certs.client_cert_pem,
            &certs.rogue_ca_cert_pem,
            &certs.rogue_client_cert_pem,
        ] {
            assert!(is_v3(&pem_to_der(pem)), "not X.509 v3:\n{pem}");
        }
        for (path, pem) in [
            (&certs.ca_cert, &certs.ca_cert_pem),
            (&certs.server_key, &certs.server_key_pem),
            (&certs.rogue_client_key, &certs.rogue_client_key_pem),
        ] {
            assert_eq!(&std::fs::read_to_string(path).expect("read"), pem);
        }
        assert!(certs.server_key_pem.contains("BEGIN PRIVATE KEY"));
        assert_ne!(certs.ca_cert_pem, certs.rogue_ca_cert_pem);
    }

    /// Cross-check with OpenSSL (what mosquitto uses) when it is installed.
    #[test]
    fn openssl_verifies_chains() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("openssl not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::generate(dir.path()).expect("generate");
        let verify = |ca: &Path, cert: &Path, purpose: &str| {
            std::process::Command::new("openssl")
                .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
                .arg(ca)
                .arg(cert)
                .output()
                .expect("run openssl")
                .status
                .success()
        };
        assert!(verify(&certs.ca_cert, &certs.server_cert, "sslserver"));
        assert!(verify(&certs.ca_cert, &certs.client_cert, "sslclient"));
        assert!(verify(
            &certs.rogue_ca_cert,
            &certs.rogue_client_cert,
            "sslclient"
        ));
        assert!(!verify(
            &certs.ca_cert,
            &certs.rogue_client_cert,
            "sslclient"
        ));
        assert!(!verify(
            &certs.rogue_ca_cert,
            &certs.server_cert,
            "sslserver"
        ));
    }
}
