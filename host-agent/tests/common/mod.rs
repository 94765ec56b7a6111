//! The agent's test rig: a CA and certificates made with rcgen, an agent configuration with a
//! datastore and an image library in a scratch directory, the agent served in this process,
//! and HTTPS clients with and without the broker's certificate.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tessera_agent::config::{AgentConfig, DatastoreConfig, TlsConfig};

pub struct Pki {
    pub dir: PathBuf,
    pub ca: rcgen::Certificate,
    pub ca_key: KeyPair,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let ca = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), ca.pem()).unwrap();
        Self {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
        }
    }

    /// A certificate and key signed by this CA, written as NAME.pem and NAME.key.
    pub fn issue(&self, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

pub struct Rig {
    pub dir: PathBuf,
    pub ds: PathBuf,
    pub cfg: AgentConfig,
    pub client: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // VMMs outlive their agent by design: a test that failed half-way must not leave any.
        for e in std::fs::read_dir(self.dir.join("state/vms"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(pid) = std::fs::read_to_string(e.path().join("pid")) {
                let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
            }
        }
        // KEEP=1 keeps the state directory and logs for a post-mortem.
        if std::env::var_os("KEEP").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn client(ca: &Path, cert: Option<(&Path, &Path)>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match cert {
        Some((c, k)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn vmm_binary() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/tessera-vmm");
    if !bin.exists() || !bin.with_file_name("tessera-display").exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "tessera-vmm", "-p", "tessera-display"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    bin
}

pub fn rig(name: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("tessera-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ds = dir.join("ds1");
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::create_dir_all(dir.join("library")).unwrap();
    let pki = Pki::new(&dir, "ca");
    let (cert, key) = pki.issue("agent", true);
    let (bcert, bkey) = pki.issue("broker", false);
    let cfg = AgentConfig {
        name: Some("test-host".into()),
        library: dir.join("library"),
        console_log_max_mib: 16,
        guest_shutdown_timeout_secs: 60,
        listen: "127.0.0.1:0".into(),
        state_dir: dir.join("state"),
        vmm: Some(vmm_binary()),
        datastores: vec![DatastoreConfig {
            name: "ds1".into(),
            path: ds.clone(),
        }],
        tls: Some(TlsConfig {
            cert,
            key,
            client_ca: dir.join("ca.pem"),
        }),
        display: Default::default(),
    };
    let client = client(&dir.join("ca.pem"), Some((&bcert, &bkey)));
    Rig {
        dir,
        ds,
        cfg,
        client,
    }
}

/// Starts the agent; returns its base URL and the task (abort it to "stop the agent").
pub async fn start(cfg: &AgentConfig) -> (String, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let cfg = cfg.clone();
    let task = tokio::spawn(async move {
        tessera_agent::serve(cfg, Some(tx)).await.unwrap();
    });
    let addr = rx.await.unwrap();
    (format!("https://127.0.0.1:{}", addr.port()), task)
}
