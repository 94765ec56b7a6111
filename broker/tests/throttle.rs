//! Sign-in throttling under concurrency, through the broker's HTTP API: 49 wrong passwords at
//! once under every spelling of one user, then the right one while they are in flight. The
//! attempt is counted before the password is tried, so at most the limit of passwords is
//! checked, the right one is refused while the account is throttled, and a Samba user's
//! badPwdCount never reaches the domain's lockout threshold.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ldap3::Scope;
use tessera_broker::logon::{Logon, MAX_FAILURES};
use tessera_broker::store::{new_id, Store};
use tessera_directory::Directories;

/// Sends the wrong guesses at once (the user name cycling through `spellings`), waits until
/// one of them is refused as throttled (the limit is then spent), sends the right password,
/// and collects every status: (the right one's, the guesses').
async fn storm(
    url: &str,
    spellings: &[&str],
    right: (&str, &str),
) -> (reqwest::StatusCode, Vec<reqwest::StatusCode>) {
    let http = reqwest::Client::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..49 {
        let (http, url, tx) = (http.clone(), url.to_string(), tx.clone());
        let user = spellings[i % spellings.len()].to_string();
        tokio::spawn(async move {
            let body = serde_json::json!({ "user": user, "password": format!("guess-{i}") });
            let r = http.post(&url).json(&body).send().await.unwrap();
            let _ = tx.send(r.status());
        });
    }
    drop(tx);
    let mut statuses = Vec::new();
    let t0 = Instant::now();
    while !statuses.contains(&reqwest::StatusCode::TOO_MANY_REQUESTS) {
        let s = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("no answer to the guesses in 120 s")
            .expect("every guess answered and none was throttled");
        statuses.push(s);
    }
    eprintln!(
        "first throttled answer after {:?} ({} answers)",
        t0.elapsed(),
        statuses.len()
    );
    let body = serde_json::json!({ "user": right.0, "password": right.1 });
    let r = http.post(url).json(&body).send().await.unwrap().status();
    while let Some(s) = rx.recv().await {
        statuses.push(s);
    }
    (r, statuses)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_break_glass_admin_gets_at_most_the_limit_of_checks() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = std::env::temp_dir().join(format!("tessera-throttle-{}.db", new_id()));
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store
        .create_local_account("admin", "Administrator", "Adm1n!Passw0rd", true)
        .await
        .unwrap();
    let logon = Logon::new(store.clone(), None, reqwest::Client::new());
    let base = serve_api(logon, store.clone()).await;
    let http = reqwest::Client::new();

    let (right, guesses) = storm(
        &format!("{base}/api/v1/admin/tokens"),
        &["admin", " Admin", "ADMIN ", "aDmIn"],
        ("admin", "Adm1n!Passw0rd"),
    )
    .await;
    assert_eq!(right, reqwest::StatusCode::TOO_MANY_REQUESTS);
    let wrong = guesses.iter().filter(|s| s.as_u16() == 401).count();
    let throttled = guesses.iter().filter(|s| s.as_u16() == 429).count();
    assert_eq!(
        (wrong, throttled),
        (MAX_FAILURES, 49 - MAX_FAILURES),
        "{guesses:?}"
    );
    let checks = metric(
        &http,
        &base,
        "tessera_broker_password_checks_total{source=\"local\"}",
    )
    .await;
    assert_eq!(checks, MAX_FAILURES as u64, "argon2 runs");
    assert_eq!(
        metric(
            &http,
            &base,
            "tessera_broker_throttled_keys{throttle=\"account\"}"
        )
        .await,
        1,
        "every spelling is one account"
    );
    let _ = std::fs::remove_file(&path);
}

/// badPwdCount and lockoutTime of `dn`, read with the service account.
async fn bad_passwords(dirs: &Directories, dn: &str) -> (u32, u64) {
    let e = dirs.clients()[0]
        .search(
            dn,
            Scope::Base,
            "(objectClass=*)",
            &["badPwdCount", "lockoutTime"],
            1,
        )
        .await
        .unwrap();
    let get = |a: &str| {
        e[0].attrs
            .get(a)
            .and_then(|v| v.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("badPwdCount") as u32, get("lockoutTime"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_samba_user_is_never_locked_out_through_the_broker() {
    let Some(env) = ldap_env("throttle") else {
        return;
    };
    let g = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("{k} missing"));
    let parse = || ad_directories(&env);
    let dirs = Arc::new(parse());
    let lockout = dirs.clients()[0].lockout().await.unwrap().unwrap();
    assert_eq!(lockout.threshold, 3, "tests/directory/seed-ad.sh sets 3");
    let limit = (lockout.threshold - 1) as usize;
    let dn = format!("CN=Stormy,OU=People,OU=VDI,{}", g("AD_BASE"));
    // A clean start (a rerun within the observation window would find the last run's count).
    parse()
        .authenticate("stormy", "St0rmy!Passw0rd")
        .await
        .unwrap();
    assert_eq!(bad_passwords(&dirs, &dn).await.0, 0);

    let path = std::env::temp_dir().join(format!("tessera-throttle-ad-{}.db", new_id()));
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let logon = Logon::new(store.clone(), Some(dirs.clone()), reqwest::Client::new());
    let base = serve_api(logon, store).await;
    let (right, guesses) = storm(
        &format!("{base}/api/v1/sessions"),
        &["VDI\\stormy", "stormy@vdi.test", " Stormy", "vdi\\STORMY "],
        ("stormy@VDI.TEST", "St0rmy!Passw0rd"),
    )
    .await;
    assert_eq!(right, reqwest::StatusCode::TOO_MANY_REQUESTS);
    let wrong = guesses.iter().filter(|s| s.as_u16() == 401).count();
    assert_eq!(wrong, limit, "{guesses:?}");
    assert_eq!(
        guesses.iter().filter(|s| s.as_u16() == 429).count(),
        49 - limit
    );
    let binds = metric(
        &reqwest::Client::new(),
        &base,
        "tessera_broker_password_checks_total{source=\"directory\",directory=\"vdi\"}",
    )
    .await;
    assert_eq!(binds, limit as u64, "user binds");
    let (bad, locked_at) = bad_passwords(&dirs, &dn).await;
    assert!(
        bad < lockout.threshold && locked_at == 0,
        "badPwdCount {bad}, lockoutTime {locked_at}"
    );
    // Not locked: the right password works directly, and AD's count starts again.
    parse()
        .authenticate("stormy", "St0rmy!Passw0rd")
        .await
        .unwrap();
    assert_eq!(bad_passwords(&dirs, &dn).await.0, 0);
    let _ = std::fs::remove_file(&path);
}
