//! TLS for LDAP: rustls with the configured CA bundle (or the system's roots), and a readable
//! summary of the server's certificate for the diagnostics command.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Reads a PEM bundle into a root store; an empty or unreadable bundle is an error.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("CA file {}: {e}", path.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {} holds no certificate", path.display()));
    }
    Ok(roots)
}

/// Installs ring as rustls's process-wide provider if none is, so that ldap3's
/// `ClientConfig::builder()` cannot panic when another crate brings a second provider.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client configuration for a directory: its CA bundle, or None for ldap3's default
/// (the system's roots).
pub fn client_config(ca_file: Option<&Path>) -> Result<Option<Arc<ClientConfig>>, String> {
    install_provider();
    let Some(path) = ca_file else {
        return Ok(None);
    };
    let roots = load_roots(path)?;
    let cfg = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(cfg)))
}

/// "subject ..., issuer ..., valid until ..., names ..." of a DER certificate.
pub fn describe_certificate(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let names = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!(
                "subject {}, issuer {}, valid {} to {}, names [{}]",
                cert.subject(),
                cert.issuer(),
                cert.validity().not_before,
                cert.validity().not_after,
                names
            )
        }
        Err(e) => format!("unparsable certificate ({e})"),
    }
}
