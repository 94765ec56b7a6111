//! Mutual TLS for the agent's API: the agent proves itself with its certificate, and accepts
//! only clients (the broker) whose certificate the configured CA signed.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsConfig;

/// The server configuration for `tls`.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| format!("{}: {e}", tls.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("{}: {e}", tls.key.display()))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&tls.client_ca)
        .map_err(|e| format!("{}: {e}", tls.client_ca.display()))?
    {
        roots
            .add(c.map_err(|e| format!("{}: {e}", tls.client_ca.display()))?)
            .map_err(|e| format!("{}: {e}", tls.client_ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("client CA: {e}"))?;
    let cfg = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("agent certificate: {e}"))?;
    Ok(Arc::new(cfg))
}
