//! The real servers for the directory tests: a Samba AD DC and slapd, started by the project's
//! tests/directory/ldap-env.sh (once per test process) unless the environment already names
//! them (AD_URL and friends, from a sourced env file).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use tessera_directory::config::{self, Directory};

/// The variables of ldap-env.sh's env file.
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn get(&self, k: &str) -> String {
        self.0
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing from the LDAP test environment"))
    }
}

fn parse_env(text: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        // KEY=value KEY='value with !' ... (values have no spaces)
        for word in rest.split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                m.insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
    }
    m
}

/// The environment, or None with a loud SKIP (a failure when TESSERA_REQUIRE_DIRECTORY=1).
pub fn env(test: &str) -> Option<&'static Env> {
    static ENV: OnceLock<Result<Option<Env>, String>> = OnceLock::new();
    let e = ENV.get_or_init(|| {
        let keys = ["AD_URL", "AD_BASE", "OL_URL", "LDAP_TEST_CA"];
        if keys.iter().all(|k| std::env::var(k).is_ok()) {
            return Ok(Some(Env(std::env::vars().collect())));
        }
        let have = Path::new("/usr/sbin/samba").exists() && Path::new("/usr/sbin/slapd").exists();
        if !have {
            return Ok(None);
        }
        // The script's own default directory: a fresh environment replaces whatever a previous
        // run left there (Samba's ports allow one domain controller per machine).
        let dir = std::env::var("TESSERA_LDAP_DIR").unwrap_or_else(|_| "/tmp/tessera-ldap".into());
        let dir = std::path::PathBuf::from(dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/directory/ldap-env.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(&dir)
            .output()
            .expect("run ldap-env.sh");
        if !out.status.success() {
            return Err(format!(
                "ldap-env.sh up failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = std::fs::read_to_string(dir.join("env")).map_err(|e| e.to_string())?;
        Ok(Some(Env(parse_env(&text))))
    });
    let e = match e {
        Ok(e) => e,
        Err(why) => panic!("{test}: {why}"),
    };
    if e.is_none() {
        if std::env::var("TESSERA_REQUIRE_DIRECTORY").as_deref() == Ok("1") {
            panic!("{test}: Samba and slapd are required (TESSERA_REQUIRE_DIRECTORY=1) but not installed");
        }
        eprintln!(
            "\n*** SKIP {test}: samba and slapd are not installed (tests/directory/ldap-env.sh install); this test did NOT run ***\n"
        );
    }
    e.as_ref()
}

/// The AD directory as the broker would configure it.
pub fn ad_toml(e: &Env, extra: &str) -> String {
    format!(
        r#"
[[directory]]
name = "vdi"
kind = "ad"
urls = ["{url}"]
ca_file = "{ca}"
service_dn = "{svc}"
service_password = '{pw}'
user_base = "OU=VDI,{base}"
domains = ["VDI", "vdi.test"]
computer_ou = "OU=Desktops,OU=VDI,{base}"
connect_timeout_ms = 2000
operation_timeout_ms = 5000
{extra}
"#,
        url = e.get("AD_URL"),
        ca = e.get("LDAP_TEST_CA"),
        svc = e.get("AD_SVC_DN"),
        pw = e.get("AD_SVC_PW"),
        base = e.get("AD_BASE"),
    )
}

/// The OpenLDAP directory.
pub fn ldap_toml(e: &Env, extra: &str) -> String {
    format!(
        r#"
[[directory]]
name = "example"
kind = "ldap"
urls = ["{url}"]
ca_file = "{ca}"
service_dn = "{svc}"
service_password = '{pw}'
user_base = "{base}"
domains = ["example.org", "EXAMPLE"]
connect_timeout_ms = 2000
operation_timeout_ms = 5000
{extra}
"#,
        url = e.get("OL_URL"),
        ca = e.get("LDAP_TEST_CA"),
        svc = e.get("OL_SVC_DN"),
        pw = e.get("OL_SVC_PW"),
        base = e.get("OL_BASE"),
    )
}

pub fn one(toml: &str) -> Directory {
    config::parse(toml).expect("config").remove(0)
}

/// An admin connection (the tests' stand-in for the domain admin who changes the directory).
pub async fn admin(e: &Env, ad: bool) -> Ldap {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = tessera_directory::tls::load_roots(Path::new(&e.get("LDAP_TEST_CA"))).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let s = LdapConnSettings::new().set_config(std::sync::Arc::new(cfg));
    let (url, dn, pw) = if ad {
        (e.get("AD_URL"), e.get("AD_ADMIN_DN"), e.get("AD_ADMIN_PW"))
    } else {
        (e.get("OL_URL"), e.get("OL_ADMIN_DN"), e.get("OL_ADMIN_PW"))
    };
    let (conn, mut ldap) = LdapConnAsync::with_settings(s, &url).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&dn, &pw).await.unwrap().success().unwrap();
    ldap
}
