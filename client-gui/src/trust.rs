//! Which broker certificates the client trusts: the system's roots, an administrator's CA, and
//! certificates the user accepted by fingerprint. An untrusted certificate is never accepted
//! silently: the verifier refuses it and records its fingerprint, so that the client can show
//! it and ask (as a browser does), and a "yes" pins that exact certificate for that broker.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// Why trust could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The administrator's CA file holds no usable certificate.
    #[error("the CA file holds no PEM certificate: {0}")]
    BadCa(String),
    /// No root at all (no system roots and no CA).
    #[error("no trusted certificate authority: the system has none and no CA file was given")]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// `SHA256 AB:CD:...`, the form users compare with what the administrator tells them.
pub fn fingerprint(cert: &[u8]) -> String {
    let hex: Vec<String> = Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    format!("SHA256 {}", hex.join(":"))
}

/// What to trust.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// PEM certificates of an administrator's CA (added to the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// Fingerprints (as [`fingerprint`] writes them) of certificates the user accepted.
    pub accepted: Vec<String>,
}

/// The verifier: web PKI over the roots, or an accepted fingerprint.
#[derive(Debug)]
pub struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    accepted: Vec<String>,
    /// The fingerprint of the last certificate refused.
    refused: Arc<Mutex<Option<String>>>,
}

impl Verifier {
    /// A verifier for `trust`; refused certificates' fingerprints land in `refused`.
    pub fn new(
        trust: &Trust,
        provider: Arc<CryptoProvider>,
        refused: Arc<Mutex<Option<String>>>,
    ) -> Result<Self, TrustError> {
        let mut roots = RootCertStore::empty();
        // A missing or unreadable system store is not fatal: the CA file may be enough.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(pem) = &trust.ca_pem {
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TrustError::BadCa(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| TrustError::BadCa(e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                return Err(TrustError::BadCa("no CERTIFICATE block".into()));
            }
        }
        if roots.is_empty() {
            return Err(TrustError::NoRoots);
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TrustError::Tls(e.to_string()))?;
        Ok(Self {
            inner,
            accepted: trust.accepted.clone(),
            refused,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if self.accepted.contains(&fp) {
            // The user accepted this exact certificate; the handshake's signature checks
            // (below) still prove the server holds its key.
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .inspect_err(|_| {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_colon_separated_sha256() {
        let fp = fingerprint(b"abc");
        assert!(fp.starts_with("SHA256 BA:78:16:BF:"), "{fp}");
        assert_eq!(fp.len(), "SHA256 ".len() + 32 * 3 - 1);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let trust = Trust {
            ca_pem: Some(b"not a certificate".to_vec()),
            accepted: vec![],
        };
        let e = Verifier::new(&trust, provider, Default::default()).unwrap_err();
        assert!(matches!(e, TrustError::BadCa(_)), "{e}");
    }
}
