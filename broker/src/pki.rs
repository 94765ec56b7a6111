//! A certificate authority in a directory. The broker runs two ([`crate::server`]): the API
//! CA (`pki/`), which signs the certificate clients see on the API, and the host CA
//! (`pki/hosts/`), which signs each agent's server certificate (for a lifetime, with a random
//! serial that a CRL can name) and the broker's client certificate toward agents. A host
//! certificate can then never pass for the broker's API, and the host CA's key signs nothing
//! a user's client trusts. ECDSA P-256 through rcgen; keys are 0600 from their first byte.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// For signing only: rcgen rebuilds the CA certificate from the file's parameters and
    /// re-signs it, so its bytes differ from the file's (ECDSA signatures are randomised).
    ca: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as distributed (`ca.pem`): what peers trust and tokens pin.
    ca_pem: String,
    ca_sha256: String,
}

fn fingerprint(path: &Path, pem: &str) -> Result<String, PkiError> {
    tessera_agent::join::ca_fingerprint(pem)
        .map_err(|e| PkiError::Io(path.to_path_buf(), std::io::Error::other(e.to_string())))
}

/// Keys are 0600 from their first byte ([`tessera_agent::files`]).
fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    tessera_agent::files::write_file(path, text.as_bytes(), secret)
        .map_err(|e| PkiError::Io(path.to_path_buf(), e))
}

/// A host certificate the CA signed.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The certificate (PEM).
    pub pem: String,
    /// Its serial number (hex): what a revocation names.
    pub serial: String,
    /// When it expires (Unix ms).
    pub not_after_ms: i64,
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A random positive 128-bit serial number, as hex and as rcgen's type.
fn random_serial() -> Result<(String, rcgen::SerialNumber), PkiError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        PkiError::Io(
            PathBuf::from("/dev/urandom"),
            std::io::Error::other(e.to_string()),
        )
    })?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    let hex = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok((hex, rcgen::SerialNumber::from_slice(&b)))
}

fn serial_bytes(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (the broker's API, an agent).
    Server,
    /// A TLS client (the broker toward agents).
    Client,
}

/// A leaf certificate's parameters: `names` (DNS names or IP addresses) as SANs.
fn params_for(name: &str, names: &[String], usage: Usage) -> Result<CertificateParams, PkiError> {
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
    Ok(p)
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
            let ca_pem = read(&cert_path)?;
            let params = CertificateParams::from_ca_cert_pem(&ca_pem)?;
            let ca = params.self_signed(&key)?;
            return Ok(Self {
                dir: dir.to_path_buf(),
                ca,
                key,
                ca_sha256: fingerprint(&cert_path, &ca_pem)?,
                ca_pem,
            });
        }
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "Tessera CA");
        let ca = p.self_signed(&key)?;
        write(&key_path, &key.serialize_pem(), true)?;
        let ca_pem = ca.pem();
        write(&cert_path, &ca_pem, false)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ca,
            key,
            ca_sha256: fingerprint(&cert_path, &ca_pem)?,
            ca_pem,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// SHA-256 of the CA certificate's DER, hex: what join tokens pin.
    pub fn ca_fingerprint(&self) -> String {
        self.ca_sha256.clone()
    }

    /// Signs a host's certificate request (PEM) for `names` as a TLS server named `name`,
    /// valid for `lifetime` from now. Only the request's public key is used: names, usages,
    /// serial and dates are the broker's choice.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        name: &str,
        names: &[String],
        lifetime: Duration,
    ) -> Result<Signed, PkiError> {
        let until = SystemTime::now() + lifetime;
        self.sign_request_until(csr_pem, name, names, until)
    }

    /// [`Self::sign_request`], valid until `not_after` (in the past: for tests of expiry).
    pub fn sign_request_until(
        &self,
        csr_pem: &str,
        name: &str,
        names: &[String],
        not_after: SystemTime,
    ) -> Result<Signed, PkiError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut p = params_for(name, names, Usage::Server)?;
        let (serial, number) = random_serial()?;
        p.serial_number = Some(number);
        // A little slack for clocks that disagree.
        let now = SystemTime::now();
        p.not_before = (now.min(not_after) - Duration::from_secs(300)).into();
        p.not_after = not_after.into();
        csr.params = p;
        Ok(Signed {
            pem: csr.signed_by(&self.ca, &self.key)?.pem(),
            serial,
            not_after_ms: unix_ms(not_after),
        })
    }

    /// A CRL (DER) naming `revoked` (serial hex, when revoked in Unix ms), signed by this CA,
    /// valid for a week (the broker makes a new one at every host poll).
    pub fn crl(&self, revoked: &[(String, i64)]) -> Result<Vec<u8>, PkiError> {
        let now = SystemTime::now();
        let at = |ms: i64| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, ms)| {
                Some(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&serial_bytes(serial)?),
                    revocation_time: at(*ms).into(),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: (now - Duration::from_secs(300)).into(),
            next_update: (now + Duration::from_secs(7 * 86_400)).into(),
            crl_number: rcgen::SerialNumber::from(unix_ms(now).max(1) as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.ca, &self.key)?.der().to_vec())
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
        let cert = params_for(name, names, usage)?.signed_by(&key, &self.ca, &self.key)?;
        write(&k, &key.serialize_pem(), true)?;
        write(&c, &cert.pem(), false)?;
        Ok((c, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

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
        // What peers trust and tokens pin is the file, in every process that opens the CA.
        assert_eq!(again.ca_pem(), ca1);
        assert_eq!(again.ca_fingerprint(), pki.ca_fingerprint());
        let before = std::fs::read_to_string(&c).unwrap();
        again.issue("agent-1", &[], Usage::Server).unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), before);
        // The re-loaded CA still signs certificates a verifier accepts (checked by the
        // end-to-end tests that run agents with them).
        again
            .issue("agent-2", &["localhost".into()], Usage::Server)
            .unwrap();
        // A key file left readable (say, by a restore), opened by somebody before the key is
        // made anew: the new key never reaches that reader, and is 0600 from its first byte.
        let stale = dir.join("agent-3.key");
        std::fs::write(&stale, "stale").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut reader = std::fs::File::open(&stale).unwrap();
        again.issue("agent-3", &[], Usage::Server).unwrap();
        let mut seen = String::new();
        reader.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "stale");
        assert_eq!(
            std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
