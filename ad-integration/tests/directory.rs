//! tessera-directory against real servers: a Samba AD domain controller and OpenLDAP slapd,
//! both seeded by tests/directory/. Each test uses its own users, so that lockouts and group
//! changes in one never change another's outcome.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use ldap3::Mod;
use tessera_directory::config;
use tessera_directory::error::DirectoryError as E;
use tessera_directory::login;
use tessera_directory::sync::{SyncEngine, SyncEvent};
use tessera_directory::{Directories, DirectoryClient};

const ALICE_PW: &str = "Al1ce!Passw0rd";
const USER_PW: &str = "Us3r!Passw0rd";

fn names(id: &tessera_directory::Identity) -> Vec<&str> {
    id.groups.iter().map(|g| g.name.as_str()).collect()
}

#[tokio::test]
async fn ad_sign_in_in_all_three_forms_with_nested_groups() {
    let Some(e) = env("ad_sign_in") else { return };
    let dirs = Directories::new(vec![one(&ad_toml(e, ""))]).unwrap();
    for login in ["alice", "alice@vdi.test", "VDI\\alice", "vdi\\ALICE"] {
        let id = dirs.authenticate(login, ALICE_PW).await.unwrap();
        assert_eq!(
            id.dn,
            format!("CN=Alice Liddell,OU=People,OU=VDI,{}", e.get("AD_BASE"))
        );
        assert_eq!(id.login, "alice");
        assert_eq!(id.upn.as_deref(), Some("alice@vdi.test"));
        assert_eq!(id.display_name.as_deref(), Some("Alice Liddell"));
        assert_eq!(id.mail.as_deref(), Some("alice@vdi.test"));
        assert_eq!(id.guid.as_ref().map(String::len), Some(36));
        assert!(
            id.sid.as_deref().unwrap().starts_with("S-1-5-21-"),
            "{:?}",
            id.sid
        );
        // alice is in vdi-engineering, which is in vdi-users and vdi-gpu.
        assert_eq!(names(&id), ["vdi-engineering", "vdi-gpu", "vdi-users"]);
    }
    // A DN with ',' and '()' in it, escaped inside the in-chain filter.
    let bob = dirs.authenticate("bob", "B0b!Passw0rd").await.unwrap();
    assert_eq!(names(&bob), ["vdi-gpu"]);
    // Looked up again by DN (how an administrator's token is re-checked): the same groups;
    // a disabled account and a DN nobody has are no one.
    let base = e.get("AD_BASE");
    let again = dirs
        .user_by_dn(&format!("CN=Alice Liddell,OU=People,OU=VDI,{base}"))
        .await
        .unwrap()
        .expect("alice by DN");
    assert_eq!(names(&again), ["vdi-engineering", "vdi-gpu", "vdi-users"]);
    for nobody in [
        format!("CN=Carol,OU=People,OU=VDI,{base}"),
        format!("CN=Nobody,OU=People,OU=VDI,{base}"),
        "CN=Elsewhere,DC=example,DC=org".to_string(),
    ] {
        assert!(
            dirs.user_by_dn(&nobody).await.unwrap().is_none(),
            "{nobody}"
        );
    }
    // StartTLS on 389 works the same.
    let toml = ad_toml(e, "").replace(&e.get("AD_URL"), &e.get("AD_STARTTLS_URL"));
    let dirs = Directories::new(vec![one(&toml)]).unwrap();
    assert_eq!(
        dirs.authenticate("alice", ALICE_PW).await.unwrap().login,
        "alice"
    );
}

#[tokio::test]
async fn ad_bind_sub_codes_become_distinct_errors() {
    let Some(e) = env("ad_sub_codes") else { return };
    let dirs = Directories::new(vec![one(&ad_toml(e, ""))]).unwrap();
    type Case = (&'static str, &'static str, fn(&E) -> bool);
    let cases: [Case; 8] = [
        ("carol", "Car0l!Passw0rd", |e| {
            matches!(e, E::AccountDisabled)
        }),
        ("dave", USER_PW, |e| matches!(e, E::PasswordMustChange)),
        ("erin", USER_PW, |e| matches!(e, E::AccountExpired)),
        ("frank", USER_PW, |e| matches!(e, E::LogonHours)),
        ("grace", USER_PW, |e| matches!(e, E::Workstation)),
        ("ivan", USER_PW, |e| matches!(e, E::PasswordExpired)),
        ("walter", "wrong", |e| matches!(e, E::InvalidCredentials)),
        ("nosuchuser", "x", |e| matches!(e, E::InvalidCredentials)),
    ];
    for (user, pw, want) in cases {
        let err = dirs.authenticate(user, pw).await.unwrap_err();
        assert!(want(&err), "{user}: {err:?}");
        assert!(err.is_user_error());
    }
    // Lockout: three wrong passwords, then even the right one is refused as locked out.
    for _ in 0..3 {
        let err = dirs.authenticate("larry", "wrong").await.unwrap_err();
        assert!(matches!(err, E::InvalidCredentials), "{err:?}");
    }
    let err = dirs.authenticate("larry", USER_PW).await.unwrap_err();
    assert!(matches!(err, E::AccountLocked), "{err:?}");
}

#[tokio::test]
async fn empty_passwords_and_injection_attempts_are_refused() {
    let Some(e) = env("injection") else { return };
    let dirs = Directories::new(vec![one(&ad_toml(e, "")), one(&ldap_toml(e, ""))]).unwrap();
    assert!(matches!(
        dirs.authenticate("alice", "").await,
        Err(E::EmptyPassword)
    ));
    let client = &dirs.clients()[0];
    assert!(matches!(
        client.verify_password("", ALICE_PW).await,
        Err(E::InvalidCredentials)
    ));
    assert!(matches!(
        client
            .verify_password("CN=Alice Liddell,OU=People,OU=VDI,DC=vdi,DC=test", "")
            .await,
        Err(E::EmptyPassword)
    ));
    for hostile in [
        "*",
        "a*",
        "*)(sAMAccountName=alice",
        "alice)(|(objectClass=*",
        "*)(uid=*))(|(uid=*",
        "alice\\2a",
    ] {
        let r = dirs.authenticate(hostile, ALICE_PW).await;
        assert!(
            matches!(
                r,
                Err(E::InvalidCredentials) | Err(E::BadLogin(_)) | Err(E::UnknownDomain(_))
            ),
            "{hostile:?}: {r:?}"
        );
        for c in dirs.clients() {
            let l = login::parse(hostile).unwrap();
            assert!(c.find_user(&l).await.unwrap().is_none(), "{hostile:?}");
            assert!(
                c.search_users(hostile, 10).await.unwrap().is_empty(),
                "{hostile:?}"
            );
        }
    }
    assert!(matches!(
        dirs.authenticate("alice\n", ALICE_PW).await,
        Err(E::BadLogin(_))
    ));
    assert!(matches!(
        dirs.authenticate("X\\alice", ALICE_PW).await,
        Err(E::UnknownDomain(_))
    ));
}

#[tokio::test]
async fn several_directories_route_by_domain() {
    let Some(e) = env("routing") else { return };
    let dirs = Directories::new(vec![one(&ad_toml(e, "")), one(&ldap_toml(e, ""))]).unwrap();
    assert_eq!(
        dirs.authenticate("VDI\\alice", ALICE_PW)
            .await
            .unwrap()
            .directory,
        "vdi"
    );
    let id = dirs
        .authenticate("alice@example.org", ALICE_PW)
        .await
        .unwrap();
    assert_eq!(id.directory, "example");
    assert_eq!(
        id.dn,
        format!("uid=alice,{}", "ou=people,dc=example,dc=org")
    );
    // A bare name tries the directories in order: the AD one has alice.
    assert_eq!(
        dirs.authenticate("alice", ALICE_PW)
            .await
            .unwrap()
            .directory,
        "vdi"
    );
    // walter exists in both; EXAMPLE\walter is the LDAP one.
    assert_eq!(
        dirs.authenticate("EXAMPLE\\walter", USER_PW)
            .await
            .unwrap()
            .directory,
        "example"
    );
}

#[tokio::test]
async fn openldap_nested_groups_by_member_of_and_by_walk() {
    let Some(e) = env("openldap") else { return };
    for extra in ["", "nested_groups = \"walk\""] {
        let c = DirectoryClient::new(one(&ldap_toml(e, extra))).unwrap();
        let l = login::parse("alice").unwrap();
        let id = c.authenticate_login(&l, ALICE_PW).await.unwrap();
        assert_eq!(
            names(&id),
            ["vdi-engineering", "vdi-gpu", "vdi-users"],
            "{extra}"
        );
        assert_eq!(id.guid.as_ref().map(String::len), Some(36));
        assert_eq!(id.sid, None);
        let bob = c
            .authenticate_login(&login::parse("bob").unwrap(), "B0b!Passw0rd")
            .await
            .unwrap();
        assert_eq!(names(&bob), ["vdi-gpu"], "{extra}");
        let err = c
            .authenticate_login(&login::parse("walter").unwrap(), "wrong")
            .await
            .unwrap_err();
        assert!(matches!(err, E::InvalidCredentials), "{err:?}");
        let members = c
            .group_members(&format!("cn=vdi-users,ou=groups,{}", e.get("OL_BASE")), 100)
            .await
            .unwrap();
        assert_eq!(
            members.iter().map(|u| u.login.as_str()).collect::<Vec<_>>(),
            ["alice"],
            "{extra}"
        );
    }
}

#[tokio::test]
async fn tls_is_verified_and_servers_fail_over_within_the_timeout() {
    let Some(e) = env("tls_failover") else { return };
    // A CA that did not sign the server's certificate.
    let toml = ad_toml(e, "").replace(&e.get("LDAP_TEST_CA"), &e.get("LDAP_TEST_OTHER_CA"));
    let c = DirectoryClient::new(one(&toml)).unwrap();
    let err = c.connect().await.unwrap_err().to_string();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    // Plain LDAP is refused at load unless a lab allows it.
    let plain = ad_toml(e, "starttls = false").replace(&e.get("AD_URL"), &e.get("AD_STARTTLS_URL"));
    assert!(config::parse(&plain)
        .unwrap_err()
        .to_string()
        .contains("in clear"));

    // First a port nobody listens on, then a server that accepts and never answers, then the
    // real one: the sign-in still succeeds, within the connect timeouts.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("ldaps://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let urls = format!(
        "urls = [\"ldaps://127.0.0.1:1\", \"{silent_url}\", \"{}\"]",
        e.get("AD_URL")
    );
    let toml = ad_toml(e, "")
        .replace(&format!("urls = [\"{}\"]", e.get("AD_URL")), &urls)
        .replace("connect_timeout_ms = 2000", "connect_timeout_ms = 700");
    let dirs = Directories::new(vec![one(&toml)]).unwrap();
    let t = Instant::now();
    let id = dirs.authenticate("alice", ALICE_PW).await.unwrap();
    assert_eq!(id.login, "alice");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Every server down: a clear error naming each, not a hang.
    let down = format!("urls = [\"ldaps://127.0.0.1:1\", \"{silent_url}\"]");
    let toml = ad_toml(e, "")
        .replace(&format!("urls = [\"{}\"]", e.get("AD_URL")), &down)
        .replace("connect_timeout_ms = 2000", "connect_timeout_ms = 700");
    let dirs = Directories::new(vec![one(&toml)]).unwrap();
    let err = dirs.authenticate("alice", ALICE_PW).await.unwrap_err();
    match err {
        E::Unavailable { tried, .. } => {
            assert!(
                tried.contains("127.0.0.1:1") && tried.contains(&silent_url),
                "{tried}"
            )
        }
        other => panic!("{other:?}"),
    }
    drop(silent);
}

#[tokio::test]
async fn lookups_page_and_survive_search_references() {
    let Some(e) = env("lookups") else { return };
    // The domain root as the base: AD answers subtree searches there with search references.
    let toml = ad_toml(e, "page_size = 7").replace(
        &format!("user_base = \"OU=VDI,{}\"", e.get("AD_BASE")),
        &format!("user_base = \"{}\"", e.get("AD_BASE")),
    );
    let c = DirectoryClient::new(one(&toml)).unwrap();
    let users = c.search_users("user", 1000).await.unwrap();
    assert_eq!(users.len(), 30, "{users:?}");
    let all = c.search_users("", 1000).await.unwrap();
    assert!(all.iter().any(|u| u.login == "alice"));
    assert!(all.iter().any(|u| u.login == "carol" && !u.enabled));
    let limited = c.search_users("", 5).await.unwrap();
    assert_eq!(limited.len(), 5);
    let groups = c.search_groups("vdi-", 100).await.unwrap();
    let gn: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    for g in [
        "vdi-big",
        "vdi-engineering",
        "vdi-gpu",
        "vdi-sync",
        "vdi-users",
    ] {
        assert!(gn.contains(&g), "{gn:?}");
    }
    let big = c.find_group("vdi-big").await.unwrap();
    assert_eq!(c.group_members(&big.dn, 1000).await.unwrap().len(), 30);
    let users_group = c.find_group("vdi-users").await.unwrap();
    let m = c.group_members(&users_group.dn, 1000).await.unwrap();
    assert_eq!(
        m.iter().map(|u| u.login.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );
    assert!(matches!(
        c.find_group("no-such-group").await,
        Err(E::NotFound(_))
    ));
    assert!(matches!(
        c.find_group(&format!("CN=nope,{}", e.get("AD_BASE"))).await,
        Err(E::NotFound(_))
    ));
}

async fn set_members(admin: &mut ldap3::Ldap, group: &str, op: Mod<String>) {
    admin
        .modify(group, vec![op])
        .await
        .unwrap()
        .success()
        .unwrap();
}

fn has(events: &[SyncEvent], pred: impl Fn(&SyncEvent) -> bool) -> bool {
    events.iter().any(pred)
}

#[tokio::test]
async fn ad_sync_reports_membership_status_and_deletion() {
    let Some(e) = env("ad_sync") else { return };
    let base = e.get("AD_BASE");
    let sync_group = format!("CN=vdi-sync,OU=Groups,OU=VDI,{base}");
    let zoe = format!("CN=Zoe,OU=People,OU=VDI,{base}");
    let eng = format!("CN=vdi-engineering,OU=Groups,OU=VDI,{base}");
    let c = DirectoryClient::new(one(&ad_toml(e, ""))).unwrap();
    let mut engine = SyncEngine::new(
        &c,
        &["vdi-sync".into(), "vdi-users".into()],
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let first = engine.poll().await.unwrap();
    assert!(
        has(
            &first,
            |ev| matches!(ev, SyncEvent::UserAdded { user, group } if user.login == "alice" && group.contains("vdi-users"))
        ),
        "{first:?}"
    );
    assert!(engine.poll().await.unwrap().is_empty(), "nothing changed");

    let mut admin = admin(e, true).await;
    set_members(
        &mut admin,
        &sync_group,
        Mod::Add("member".into(), HashSet::from([zoe.clone()])),
    )
    .await;
    let ev = engine.poll().await.unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(
        matches!(&ev[0], SyncEvent::UserAdded { user, group } if user.login == "zoe" && *group == sync_group)
    );

    // Nesting: vdi-engineering (alice) joins vdi-sync.
    set_members(
        &mut admin,
        &sync_group,
        Mod::Add("member".into(), HashSet::from([eng.clone()])),
    )
    .await;
    let ev = engine.poll().await.unwrap();
    assert!(
        has(
            &ev,
            |x| matches!(x, SyncEvent::UserAdded { user, group } if user.login == "alice" && *group == sync_group)
        ),
        "{ev:?}"
    );

    // Disable and enable zoe (a user-only change: the targeted path).
    admin
        .modify(
            &zoe,
            vec![Mod::Replace(
                "userAccountControl".to_string(),
                HashSet::from(["514".to_string()]),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let ev = engine.poll().await.unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(matches!(&ev[0], SyncEvent::UserDisabled { user } if user.login == "zoe"));
    admin
        .modify(
            &zoe,
            vec![Mod::Replace(
                "userAccountControl".to_string(),
                HashSet::from(["512".to_string()]),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let ev = engine.poll().await.unwrap();
    assert!(
        matches!(&ev[..], [SyncEvent::UserEnabled { user }] if user.login == "zoe"),
        "{ev:?}"
    );

    // Removed from the group.
    set_members(
        &mut admin,
        &sync_group,
        Mod::Delete("member".into(), HashSet::from([zoe.clone()])),
    )
    .await;
    let ev = engine.poll().await.unwrap();
    assert!(
        matches!(&ev[..], [SyncEvent::UserRemoved { user, .. }] if user.login == "zoe"),
        "{ev:?}"
    );

    // A user in the group is deleted.
    let tmp = format!("CN=Temp Sync,OU=People,OU=VDI,{base}");
    let attrs = vec![
        (
            "objectClass".to_string(),
            HashSet::from(["user".to_string()]),
        ),
        (
            "sAMAccountName".to_string(),
            HashSet::from(["tmpsync".to_string()]),
        ),
    ];
    admin.add(&tmp, attrs).await.unwrap().success().unwrap();
    set_members(
        &mut admin,
        &sync_group,
        Mod::Add("member".into(), HashSet::from([tmp.clone()])),
    )
    .await;
    let ev = engine.poll().await.unwrap();
    assert!(
        has(
            &ev,
            |x| matches!(x, SyncEvent::UserAdded { user, .. } if user.login == "tmpsync")
        ),
        "{ev:?}"
    );
    admin.delete(&tmp).await.unwrap().success().unwrap();
    let ev = engine.poll().await.unwrap();
    assert!(
        has(
            &ev,
            |x| matches!(x, SyncEvent::UserDeleted { user } if user.login == "tmpsync")
        ),
        "{ev:?}"
    );
    assert!(
        has(
            &ev,
            |x| matches!(x, SyncEvent::UserRemoved { user, .. } if user.login == "tmpsync")
        ),
        "{ev:?}"
    );
    assert!(engine.poll().await.unwrap().is_empty());

    // Leave the group as the seed made it for later runs against the same servers.
    set_members(
        &mut admin,
        &sync_group,
        Mod::Delete("member".into(), HashSet::from([eng])),
    )
    .await;
}

#[tokio::test]
async fn openldap_sync_by_modify_timestamp() {
    let Some(e) = env("ldap_sync") else { return };
    let base = e.get("OL_BASE");
    let group = format!("cn=vdi-sync,ou=groups,{base}");
    let zoe = format!("uid=zoe,ou=people,{base}");
    let c = DirectoryClient::new(one(&ldap_toml(e, ""))).unwrap();
    let mut engine = SyncEngine::new(&c, &["vdi-sync".into()], Duration::from_secs(3600))
        .await
        .unwrap();
    let first = engine.poll().await.unwrap();
    assert!(
        has(
            &first,
            |x| matches!(x, SyncEvent::UserAdded { user, .. } if user.login == "svc-vdi")
        ),
        "{first:?}"
    );
    let mut admin = admin(e, false).await;
    set_members(
        &mut admin,
        &group,
        Mod::Add("member".into(), HashSet::from([zoe.clone()])),
    )
    .await;
    let ev = engine.poll().await.unwrap();
    assert!(
        matches!(&ev[..], [SyncEvent::UserAdded { user, .. }] if user.login == "zoe"),
        "{ev:?}"
    );
    assert!(
        engine.poll().await.unwrap().is_empty(),
        "overlapping windows give no duplicates"
    );
    set_members(
        &mut admin,
        &group,
        Mod::Delete("member".into(), HashSet::from([zoe])),
    )
    .await;
    let ev = engine.poll().await.unwrap();
    assert!(
        matches!(&ev[..], [SyncEvent::UserRemoved { user, .. }] if user.login == "zoe"),
        "{ev:?}"
    );
    // Deleted: a user added, then removed from the tree.
    let tmp = format!("uid=tmpsync,ou=people,{base}");
    let attrs = vec![
        (
            "objectClass".to_string(),
            HashSet::from(["inetOrgPerson".to_string()]),
        ),
        ("uid".to_string(), HashSet::from(["tmpsync".to_string()])),
        ("cn".to_string(), HashSet::from(["Temp".to_string()])),
        ("sn".to_string(), HashSet::from(["Temp".to_string()])),
    ];
    admin.add(&tmp, attrs).await.unwrap().success().unwrap();
    set_members(
        &mut admin,
        &group,
        Mod::Add("member".into(), HashSet::from([tmp.clone()])),
    )
    .await;
    assert_eq!(engine.poll().await.unwrap().len(), 1);
    admin.delete(&tmp).await.unwrap().success().unwrap();
    set_members(
        &mut admin,
        &group,
        Mod::Delete("member".into(), HashSet::from([tmp])),
    )
    .await;
    let ev = engine.poll().await.unwrap();
    assert!(
        has(
            &ev,
            |x| matches!(x, SyncEvent::UserDeleted { user } if user.login == "tmpsync")
        ),
        "{ev:?}"
    );
}

/// Binds as a computer account with its password.
async fn machine_bind(e: &Env, name: &str, password: &str) -> Result<(), E> {
    let toml = ad_toml(e, "");
    let c = DirectoryClient::new(one(&toml)).unwrap();
    let dn = format!("CN={name},OU=Desktops,OU=VDI,{}", e.get("AD_BASE"));
    c.verify_password(&dn, password).await
}

#[tokio::test]
async fn computer_accounts_for_clones() {
    let Some(e) = env("computers") else { return };
    let c = DirectoryClient::new(one(&ad_toml(e, ""))).unwrap();
    let name = format!("tc-{}", std::process::id() % 100_000);
    let _ = c.delete_computer(&name).await;
    let a = c.create_or_reuse_computer(&name).await.unwrap();
    assert!(a.created);
    assert_eq!(a.sam_account_name, format!("{name}$"));
    assert_eq!(a.dns_host_name, format!("{name}.vdi.test"));
    machine_bind(e, &name, &a.password).await.unwrap();

    // AD keeps accepting a machine's previous password (its secure channel may lag); the one
    // before that is gone.
    let p2 = c.reset_computer_password(&name).await.unwrap();
    let p3 = c.reset_computer_password(&name).await.unwrap();
    assert!(p2 != a.password && p3 != p2);
    machine_bind(e, &name, &p3).await.unwrap();
    assert!(matches!(
        machine_bind(e, &name, &a.password).await,
        Err(E::InvalidCredentials)
    ));
    let p2 = p3;
    c.set_computer_enabled(&name, false).await.unwrap();
    assert!(matches!(
        machine_bind(e, &name, &p2).await,
        Err(E::AccountDisabled)
    ));
    c.set_computer_enabled(&name, true).await.unwrap();
    machine_bind(e, &name, &p2).await.unwrap();

    // Reuse: creating it again keeps the account and gives it a fresh password.
    let again = c.create_or_reuse_computer(&name).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.dn, a.dn);
    machine_bind(e, &name, &again.password).await.unwrap();

    c.delete_computer(&name).await.unwrap();
    assert!(c.find_computer(&name).await.unwrap().is_none());
    assert!(matches!(
        c.delete_computer(&name).await,
        Err(E::NotFound(_))
    ));
    // The seeded account is reused, not duplicated.
    let seeded = c.create_or_reuse_computer("vdi-lc-001").await.unwrap();
    assert!(!seeded.created);
    machine_bind(e, "vdi-lc-001", &seeded.password)
        .await
        .unwrap();
    // Bad names never reach the directory; LDAP directories have no computer accounts.
    assert!(c.create_or_reuse_computer("bad*name").await.is_err());
    let l = DirectoryClient::new(one(&ldap_toml(e, ""))).unwrap();
    assert!(matches!(
        l.create_or_reuse_computer("x1").await,
        Err(E::NeedsAd(_))
    ));
}

#[tokio::test]
async fn diagnostics_command_walks_every_step() {
    let Some(e) = env("diagnostics") else { return };
    let dir = std::env::temp_dir().join(format!("tessera-dir-diag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("directories.toml");
    // A dead server first: the report shows it failed and the next one answered.
    let toml = ad_toml(e, "").replace(
        &format!("urls = [\"{}\"]", e.get("AD_URL")),
        &format!("urls = [\"ldaps://127.0.0.1:1\", \"{}\"]", e.get("AD_URL")),
    );
    std::fs::write(&cfg, toml).unwrap();
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tessera-directory"))
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&["test", "--user", "VDI\\alice"], "Al1ce!Passw0rd\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "connect ldaps://127.0.0.1:1: FAILED",
        "connect ldaps://127.0.0.1:636: ok",
        "TLS: subject CN=localhost, issuer CN=Tessera test CA",
        "service bind as svc-vdi@vdi.test",
        "find VDI\\alice: CN=Alice Liddell",
        "authenticate VDI\\alice: ok",
        "groups (3): vdi-engineering, vdi-gpu, vdi-users",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert!(
        !text.contains("Al1ce!Passw0rd"),
        "the password must not be echoed"
    );
    let bad = run(&["test", "--user", "carol"], "Car0l!Passw0rd\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("FAILED: the account is disabled"));
    let members = run(&["members", "vdi-users"], "");
    assert!(String::from_utf8_lossy(&members.stdout).contains("alice"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn users_change_their_own_must_change_password() {
    let Some(e) = env("password_change") else {
        return;
    };
    // Unique per run: AD keeps a password history, and a warm domain remembers earlier runs.
    let new_pw = format!(
        "N3w!Pw-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    // AD: the admin resets mona to must-change (773), as a help desk would.
    let mut ldap = admin(e, true).await;
    let dn = format!("CN=Mona,OU=People,OU=VDI,{}", e.get("AD_BASE"));
    let upw: Vec<u8> = format!("\"{USER_PW}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mods = vec![
        Mod::Replace(b"unicodePwd".to_vec(), HashSet::from([upw])),
        Mod::Replace(b"pwdLastSet".to_vec(), HashSet::from([b"0".to_vec()])),
    ];
    ldap.modify(&dn, mods).await.unwrap().success().unwrap();
    let dirs = Directories::new(vec![one(&ad_toml(e, "")), one(&ldap_toml(e, ""))]).unwrap();
    let err = dirs.authenticate("VDI\\mona", USER_PW).await.unwrap_err();
    assert!(matches!(err, E::PasswordMustChange), "{err:?}");
    // A wrong old password and a password the domain's policy refuses change nothing.
    let err = dirs
        .change_password("VDI\\mona", "Wr0ng!Passw0rd", &new_pw)
        .await
        .unwrap_err();
    assert!(matches!(err, E::InvalidCredentials), "{err:?}");
    let err = dirs
        .change_password("VDI\\mona", USER_PW, "ab1")
        .await
        .unwrap_err();
    assert!(matches!(err, E::PasswordRejected), "{err:?}");
    let err = dirs.authenticate("VDI\\mona", USER_PW).await.unwrap_err();
    assert!(matches!(err, E::PasswordMustChange), "{err:?}");
    // The change, over the service connection (mona herself cannot bind yet).
    dirs.change_password("VDI\\mona", USER_PW, &new_pw)
        .await
        .unwrap();
    let id = dirs.authenticate("VDI\\mona", &new_pw).await.unwrap();
    assert_eq!(id.login, "mona");
    // (The old password is not checked here: AD and Samba keep accepting it for an hour after
    // a change, "old password allowed period", so that other sessions catch up.)

    // OpenLDAP: the user binds and sends RFC 3062's Password Modify.
    let mut ldap = admin(e, false).await;
    let mods = vec![Mod::Replace(
        b"userPassword".to_vec(),
        HashSet::from([USER_PW.as_bytes().to_vec()]),
    )];
    let dn = format!("uid=mona,ou=people,{}", e.get("OL_BASE"));
    ldap.modify(&dn, mods).await.unwrap().success().unwrap();
    let ol = &dirs.clients()[1];
    let mona = login::parse("mona").unwrap();
    let err = ol
        .change_password(&mona, "Wr0ng!Passw0rd", &new_pw)
        .await
        .unwrap_err();
    assert!(matches!(err, E::InvalidCredentials), "{err:?}");
    ol.change_password(&mona, USER_PW, &new_pw).await.unwrap();
    assert_eq!(
        ol.authenticate_login(&mona, &new_pw).await.unwrap().login,
        "mona"
    );
    assert!(matches!(
        ol.authenticate_login(&mona, USER_PW).await,
        Err(E::InvalidCredentials)
    ));
    assert_eq!(dirs.domains(), ["VDI", "example.org"]);
}
