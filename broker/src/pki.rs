//! The broker's certificate authority: it signs the broker's server certificate (clients
//! verify it), the broker's client certificate (agents accept only it), and each agent's
//! server certificate (the broker verifies agents against the same CA). ECDSA P-256 through
//! rcgen; keys are written with mode 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

/// Errors of the CA.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Files.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Certificate generation or parsing.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// The CA in a directory (`ca.pem`, `ca.key`).
pub struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    key: KeyPair,
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|e| PkiError::Io(path.to_path_buf(), e))?;
    if secret {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| PkiError::Io(path.to_path_buf(), e))?;
    }
    Ok(())
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (the broker's API, an agent).
    Server,
    /// A TLS client (the broker toward agents).
    Client,
}

impl Pki {
    /// Opens the CA in `dir`, creating it on first use.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::Io(dir.to_path_buf(), e))?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let read =
                |p: &Path| std::fs::read_to_string(p).map_err(|e| PkiError::Io(p.to_path_buf(), e));
            let key = KeyPair::from_pem(&read(&key_path)?)?;
            let params = CertificateParams::from_ca_cert_pem(&read(&cert_path)?)?;
            let ca = params.self_signed(&key)?;
            return Ok(Self {
                dir: dir.to_path_buf(),
                ca,
                key,
            });
        }
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "Tessera CA");
        let ca = p.self_signed(&key)?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &ca.pem(), false)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ca,
            key,
        })
    }

    /// The CA certificate's path.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `NAME.pem` and `NAME.key` in the CA's directory, for `names` (DNS names or IP
    /// addresses); an existing pair is kept. Returns (certificate, key) paths.
    pub fn issue(
        &self,
        name: &str,
        names: &[String],
        usage: Usage,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        if c.exists() && k.exists() {
            return Ok((c, k));
        }
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        for n in names {
            p.subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(n.clone().try_into()?),
                });
        }
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let cert = p.signed_by(&key, &self.ca, &self.key)?;
        write(&k, &key.serialize_pem(), true)?;
        write(&c, &cert.pem(), false)?;
        Ok((c, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_signs() {
        let dir = std::env::temp_dir().join(format!("tessera-pki-{}", crate::store::new_id()));
        let pki = Pki::open(&dir).unwrap();
        let ca1 = std::fs::read_to_string(pki.ca_path()).unwrap();
        let (c, k) = pki
            .issue(
                "agent-1",
                &["localhost".into(), "127.0.0.1".into()],
                Usage::Server,
            )
            .unwrap();
        assert!(std::fs::read_to_string(&c)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Reopened: the same CA, and existing certificates are kept.
        let again = Pki::open(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(again.ca_path()).unwrap(), ca1);
        let before = std::fs::read_to_string(&c).unwrap();
        again.issue("agent-1", &[], Usage::Server).unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), before);
        // The re-loaded CA still signs certificates a verifier accepts (checked by the
        // end-to-end tests that run agents with them).
        again
            .issue("agent-2", &["localhost".into()], Usage::Server)
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
