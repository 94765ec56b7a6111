//! How the broker verifies agents: their certificates must chain to the host CA, be within
//! their validity, and not be named by the host CA's current CRL (a host that re-joined, or
//! that an administrator revoked). rustls checks the chain and the dates; webpki checks the
//! CRL. The CRL changes while the broker runs, and reqwest clients are built once and shared:
//! this verifier keeps the current webpki verifier behind a lock and swaps it when the CRL
//! changes ([`HostTrust::set_crl`]).

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The host CA, and the revocations the broker knows of.
#[derive(Debug)]
pub struct HostTrust {
    roots: Arc<RootCertStore>,
    current: RwLock<Arc<WebPkiServerVerifier>>,
}

fn build(
    roots: &Arc<RootCertStore>,
    crl: Option<Vec<u8>>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::client::VerifierBuilderError> {
    let b = WebPkiServerVerifier::builder_with_provider(
        roots.clone(),
        Arc::new(rustls::crypto::ring::default_provider()),
    );
    match crl {
        Some(der) => b
            .with_crls([CertificateRevocationListDer::from(der)])
            .only_check_end_entity_revocation()
            .build(),
        None => b.build(),
    }
}

impl HostTrust {
    /// Trusts agents certified by `roots`, none revoked yet.
    pub fn new(roots: RootCertStore) -> Result<Arc<Self>, rustls::client::VerifierBuilderError> {
        let roots = Arc::new(roots);
        let current = RwLock::new(build(&roots, None)?);
        Ok(Arc::new(Self { roots, current }))
    }

    /// From now on, refuses the certificates `crl` (DER, signed by the host CA) names.
    pub fn set_crl(&self, crl: Vec<u8>) -> Result<(), rustls::client::VerifierBuilderError> {
        let v = build(&self.roots, Some(crl))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = v;
        Ok(())
    }

    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ServerCertVerifier for HostTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}
