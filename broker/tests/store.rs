//! The broker's store on both engines it supports: every scenario runs on a fresh SQLite file
//! and on a fresh PostgreSQL database (tests/broker/pg-env.sh, started here when PostgreSQL is
//! installed and TESSERA_TEST_POSTGRES is not set).

mod common;

use std::collections::HashSet;

use common::postgres_database;

use tessera_broker::store::accounts::SignInError;
use tessera_broker::store::desktops::{AssignOutcome, DesktopState};
use tessera_broker::store::events::Event;
use tessera_broker::store::pools::{Assignment, CloneKind, PoolSpec, PowerPolicy, Principal};
use tessera_broker::store::sessions::{EndReason, TokenLifetime};
use tessera_broker::store::{new_id, Store, StoreError};

/// A fresh store on each available engine.
async fn stores(name: &str) -> Vec<Store> {
    let path = std::env::temp_dir().join(format!("tessera-store-{name}-{}.db", new_id()));
    let mut v = vec![Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()];
    if let Some(url) = postgres_database().await {
        v.push(Store::open(&url).await.unwrap());
    }
    v
}

fn spec(assignment: Assignment) -> PoolSpec {
    PoolSpec {
        name: "fin".into(),
        display_name: "Finance".into(),
        image: "gold".into(),
        image_version: 1,
        assignment,
        clone_kind: CloneKind::Linked,
        naming: "fin-{n:03}".into(),
        min_desktops: 0,
        max_desktops: 50,
        spare_desktops: 1,
        power_policy: PowerPolicy::AlwaysOn,
        refresh_on_logoff: assignment == Assignment::Floating,
        vcpus: 2,
        memory_mib: 2048,
    }
}

async fn pool(s: &Store, a: Assignment) -> tessera_broker::store::pools::Pool {
    s.create_image("gold", "/ds/gold.qcow2", 10 << 30, None, None, None)
        .await
        .unwrap();
    s.create_pool(&spec(a)).await.unwrap()
}

/// Makes `n` desktops on a host and brings them to ready.
async fn ready_desktops(s: &Store, p: &tessera_broker::store::pools::Pool, n: usize) {
    let host = s
        .register_host("host-1", "https://host-1:8443")
        .await
        .unwrap();
    for _ in 0..n {
        let d = s.new_desktop(p).await.unwrap();
        let d = s
            .set_placement(&d, &host, &format!("/ds/{}.qcow2", d.name))
            .await
            .unwrap();
        s.transition(&d, DesktopState::Ready).await.unwrap();
    }
}

#[tokio::test]
async fn pools_images_and_entitlements() {
    for s in stores("pools").await {
        let p = pool(&s, Assignment::Floating).await;
        let again = s.pool_by_name("fin").await.unwrap();
        assert_eq!(again, p);
        // An image that boots UEFI firmware instead of a kernel.
        let v = s.image_version(&p.image_id, 1).await.unwrap();
        assert_eq!((v.kernel, v.firmware), (None, None));
        s.set_image_firmware(&p.image_id, 1, "OVMF_CODE_4M.fd")
            .await
            .unwrap();
        let v = s.image_version(&p.image_id, 1).await.unwrap();
        assert_eq!(v.firmware.as_deref(), Some("OVMF_CODE_4M.fd"));
        assert!(matches!(
            s.set_image_firmware(&p.image_id, 9, "x.fd").await,
            Err(StoreError::NotFound(_))
        ));
        // A Windows 11 image: Hyper-V and a TPM for its desktops.
        assert!(!v.hyperv && !v.tpm, "off by default");
        s.set_image_devices(&p.image_id, 1, true, true)
            .await
            .unwrap();
        let v = s.image_version(&p.image_id, 1).await.unwrap();
        assert!(v.hyperv && v.tpm);
        s.set_image_devices(&p.image_id, 1, false, true)
            .await
            .unwrap();
        let v = s.image_version(&p.image_id, 1).await.unwrap();
        assert!(!v.hyperv && v.tpm);
        assert!(matches!(
            s.set_image_devices(&p.image_id, 9, true, true).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.pool_by_name("nope").await,
            Err(StoreError::NotFound(_))
        ));
        // A pool on an image that does not exist, and a bad pattern, are refused.
        let mut bad = spec(Assignment::Floating);
        bad.name = "other".into();
        bad.image = "missing".into();
        assert!(matches!(
            s.create_pool(&bad).await,
            Err(StoreError::NotFound(_))
        ));
        bad.image = "gold".into();
        bad.naming = "no-index".into();
        assert!(matches!(
            s.create_pool(&bad).await,
            Err(StoreError::Invalid(_))
        ));
        // Duplicate names hit the unique constraint.
        assert!(s.create_pool(&spec(Assignment::Floating)).await.is_err());

        let group = "CN=vdi-users,OU=Groups,DC=vdi,DC=test";
        s.entitle(
            &p.id,
            &Principal::Group {
                directory: "vdi".into(),
                dn: group.into(),
            },
        )
        .await
        .unwrap();
        s.entitle(
            &p.id,
            &Principal::Group {
                directory: "vdi".into(),
                dn: group.into(),
            },
        )
        .await
        .unwrap();
        s.entitle(
            &p.id,
            &Principal::Local {
                name: "demo".into(),
            },
        )
        .await
        .unwrap();
        let alice = "CN=Alice,OU=People,DC=vdi,DC=test";
        let via_group = s
            .entitled_pools(Some("vdi"), alice, &[group.to_ascii_uppercase()])
            .await
            .unwrap();
        assert_eq!(via_group, ["fin"]);
        assert!(s
            .entitled_pools(Some("vdi"), alice, &[])
            .await
            .unwrap()
            .is_empty());
        assert!(s
            .entitled_pools(Some("other"), alice, &[group.into()])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.entitled_pools(None, "demo", &[]).await.unwrap(), ["fin"]);
        assert!(s
            .entitled_pools(None, "alice", &[])
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn desktop_names_and_state_machine() {
    for s in stores("names").await {
        let p = pool(&s, Assignment::Floating).await;
        // Concurrent provisioning gets distinct names in order.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (s, p) = (s.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                s.new_desktop(&p).await.unwrap().name
            }));
        }
        let mut names = Vec::new();
        for t in tasks {
            names.push(t.await.unwrap());
        }
        names.sort();
        let want: Vec<String> = (1..=20).map(|i| format!("fin-{i:03}")).collect();
        assert_eq!(names, want);

        let d = s.desktops_of(&p.id).await.unwrap().remove(0);
        assert_eq!(d.state, DesktopState::Provisioning);
        let ready = s.transition(&d, DesktopState::Ready).await.unwrap();
        assert_eq!(ready.generation, d.generation + 1);
        // A stale copy loses: someone else moved it first.
        assert!(matches!(
            s.transition(&d, DesktopState::Error).await,
            Err(StoreError::Conflict(_))
        ));
        // The state machine refuses impossible moves.
        assert!(matches!(
            s.transition(&ready, DesktopState::Connected).await,
            Err(StoreError::Invalid(_))
        ));
        let failed = s.fail(&ready, "disk full").await.unwrap();
        assert_eq!((failed.state, failed.attempts), (DesktopState::Error, 1));
        assert_eq!(failed.error.as_deref(), Some("disk full"));
        let deleting = s.transition(&failed, DesktopState::Deleting).await.unwrap();
        assert!(
            s.forget_desktop(&failed).await.is_err(),
            "not yet deleting in that copy"
        );
        s.forget_desktop(&deleting).await.unwrap();
        assert_eq!(s.desktops_of(&p.id).await.unwrap().len(), 19);
    }
}

#[tokio::test]
async fn no_desktop_is_ever_given_twice() {
    for s in stores("assign").await {
        let p = pool(&s, Assignment::Floating).await;
        ready_desktops(&s, &p, 3).await;
        // Ten users race for three desktops.
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (s, p) = (s.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                s.assign(&p, &format!("user{i}")).await.unwrap()
            }));
        }
        let mut got = Vec::new();
        let mut none = 0;
        for t in tasks {
            match t.await.unwrap() {
                AssignOutcome::New(d) => got.push(d),
                AssignOutcome::NoneFree => none += 1,
                AssignOutcome::Existing(d) => panic!("unexpected existing {d:?}"),
            }
        }
        assert_eq!((got.len(), none), (3, 7));
        let ids: HashSet<_> = got.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids.len(), 3, "a desktop was given twice");
        // Asking again returns the same desktop.
        let d0 = &got[0];
        let user = d0.assigned_user.clone().unwrap();
        match s.assign(&p, &user).await.unwrap() {
            AssignOutcome::Existing(d) => assert_eq!(d.id, d0.id),
            other => panic!("{other:?}"),
        }
        // Floating + refresh on logoff: back through refreshing, free for others.
        let released = s.release(&p, d0).await.unwrap();
        assert_eq!(released.state, DesktopState::Refreshing);
        assert_eq!(released.assigned_user, None);
        let fresh = s.transition(&released, DesktopState::Ready).await.unwrap();
        match s.assign(&p, "user-late").await.unwrap() {
            AssignOutcome::New(d) => assert_eq!(d.id, fresh.id),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn dedicated_desktops_stay_with_their_user() {
    for s in stores("dedicated").await {
        let p = pool(&s, Assignment::Dedicated).await;
        ready_desktops(&s, &p, 2).await;
        let AssignOutcome::New(d) = s.assign(&p, "alice").await.unwrap() else {
            panic!()
        };
        let after = s.release(&p, &d).await.unwrap();
        assert_eq!(after.assigned_user.as_deref(), Some("alice"));
        assert_eq!(after.state, DesktopState::Running);
        match s.assign(&p, "alice").await.unwrap() {
            AssignOutcome::Existing(e) => assert_eq!(e.id, d.id),
            other => panic!("{other:?}"),
        }
        let AssignOutcome::New(b) = s.assign(&p, "bob").await.unwrap() else {
            panic!()
        };
        assert_ne!(b.id, d.id);
        assert_eq!(
            s.assign(&p, "carol").await.unwrap(),
            AssignOutcome::NoneFree
        );
    }
}

#[tokio::test]
async fn local_accounts_hash_and_lock_out() {
    for s in stores("accounts").await {
        s.create_local_account("demo", "Demo User", "Demo!Passw0rd", false)
            .await
            .unwrap();
        assert!(s
            .create_local_account("demo", "x", "Another!Pass1", false)
            .await
            .is_err());
        assert!(matches!(
            s.create_local_account("short", "", "abc", false).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.create_local_account("bad name", "", "Long!Enough1", false)
                .await,
            Err(StoreError::Invalid(_))
        ));
        let a = s.sign_in_local("demo", "Demo!Passw0rd").await.unwrap();
        assert_eq!((a.name.as_str(), a.is_admin), ("demo", false));
        assert!(matches!(
            s.sign_in_local("demo", "").await,
            Err(SignInError::InvalidCredentials)
        ));
        assert!(matches!(
            s.sign_in_local("nobody", "x").await,
            Err(SignInError::InvalidCredentials)
        ));
        for _ in 0..5 {
            assert!(matches!(
                s.sign_in_local("demo", "wrong").await,
                Err(SignInError::InvalidCredentials)
            ));
        }
        // Locked: even the right password is refused until the lockout ends or an admin lifts it.
        assert!(matches!(
            s.sign_in_local("demo", "Demo!Passw0rd").await,
            Err(SignInError::Locked { minutes: 15 })
        ));
        s.unlock_local("demo").await.unwrap();
        s.sign_in_local("demo", "Demo!Passw0rd").await.unwrap();
        s.set_local_disabled("demo", true).await.unwrap();
        assert!(matches!(
            s.sign_in_local("demo", "Demo!Passw0rd").await,
            Err(SignInError::Disabled)
        ));
        assert!(matches!(
            s.sign_in_local("demo", "wrong").await,
            Err(SignInError::InvalidCredentials)
        ));
        assert!(matches!(
            s.unlock_local("nobody").await,
            Err(StoreError::NotFound(_))
        ));
    }
}

/// Whether the account is locked now (read straight from the table).
async fn locked(s: &Store, name: &str) -> bool {
    let row = sqlx::query(&s.sql("SELECT locked_until FROM local_accounts WHERE name = $1"))
        .bind(name)
        .fetch_one(s.pool())
        .await
        .unwrap();
    sqlx::Row::try_get::<Option<i64>, _>(&row, 0)
        .unwrap()
        .is_some()
}

/// 49 wrong passwords at once, then the right one while they are still being checked: the
/// lockout is counted before argon2 runs, so at most the threshold of them is checked, and the
/// right password is refused as locked.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_guesses_reach_argon2_at_most_the_threshold() {
    use tessera_broker::store::accounts::LOCKOUT_THRESHOLD;
    for s in stores("storm").await {
        s.create_local_account("storm", "", "Storm!Passw0rd", true)
            .await
            .unwrap();
        let before = s.password_checks();
        let wrong: Vec<_> = (0..49)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.sign_in_local("storm", &format!("guess-{i}")).await })
            })
            .collect();
        let t0 = std::time::Instant::now();
        while !locked(&s, "storm").await {
            assert!(
                t0.elapsed().as_secs() < 60,
                "the guesses never locked the account"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let right = s.sign_in_local("storm", "Storm!Passw0rd").await;
        assert!(
            matches!(right, Err(SignInError::Locked { .. })),
            "the right password while locked: {right:?}"
        );
        let (mut invalid, mut locked_out) = (0, 0);
        for t in wrong {
            match t.await.unwrap() {
                Err(SignInError::InvalidCredentials) => invalid += 1,
                Err(SignInError::Locked { .. }) => locked_out += 1,
                other => panic!("a guess: {other:?}"),
            }
        }
        let checked = s.password_checks() - before;
        assert_eq!(invalid, LOCKOUT_THRESHOLD, "{:?}", s.backend());
        assert_eq!(locked_out, 49 - LOCKOUT_THRESHOLD);
        assert_eq!(
            checked,
            LOCKOUT_THRESHOLD as u64,
            "argon2 runs: {:?}",
            s.backend()
        );
        // Names are one account whatever their case.
        assert_eq!(
            s.local_account_name("STORM").await.unwrap().as_deref(),
            Some("storm")
        );
        assert!(matches!(
            s.create_local_account("Storm", "", "Another!Passw0rd", false)
                .await,
            Err(StoreError::Conflict(_))
        ));
    }
}

#[tokio::test]
async fn temporary_local_passwords_must_be_changed_first() {
    for s in stores("password-change").await {
        s.create_local_account("temp", "Temp", "Temp!Passw0rd", false)
            .await
            .unwrap();
        s.set_local_must_change("temp", true).await.unwrap();
        // Only the right password learns that it must change.
        assert!(matches!(
            s.sign_in_local("temp", "wrong").await,
            Err(SignInError::InvalidCredentials)
        ));
        assert!(matches!(
            s.sign_in_local("temp", "Temp!Passw0rd").await,
            Err(SignInError::MustChangePassword)
        ));
        assert!(matches!(
            s.change_local_password("temp", "wrong", "New!Passw0rd")
                .await,
            Err(SignInError::InvalidCredentials)
        ));
        for refused in ["short", "Temp!Passw0rd"] {
            assert!(matches!(
                s.change_local_password("temp", "Temp!Passw0rd", refused)
                    .await,
                Err(SignInError::PasswordRejected(_))
            ));
        }
        s.change_local_password("temp", "Temp!Passw0rd", "New!Passw0rd")
            .await
            .unwrap();
        assert_eq!(
            s.sign_in_local("temp", "New!Passw0rd").await.unwrap().name,
            "temp"
        );
        assert!(matches!(
            s.sign_in_local("temp", "Temp!Passw0rd").await,
            Err(SignInError::InvalidCredentials)
        ));
        assert!(matches!(
            s.set_local_must_change("nobody", true).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn hosts_register_report_and_expire() {
    for s in stores("hosts").await {
        let a = s.register_host("a", "https://a:8443").await.unwrap();
        let b = s.register_host("b", "https://b:8443").await.unwrap();
        assert_eq!(s.register_host("a", "https://a2:8443").await.unwrap(), a);
        assert!(
            s.hosts_by_free_memory().await.unwrap().is_empty(),
            "joining hosts take no desktops"
        );
        let cap = |free: i64| tessera_broker::store::hosts::Capacity {
            cpus: 16,
            memory_total: 64 << 30,
            memory_free: free,
            datastores: vec![("ds1".into(), "/srv/ds1".into(), 1 << 40, 1 << 39)],
        };
        s.heartbeat(&a, &cap(8 << 30)).await.unwrap();
        s.heartbeat(&b, &cap(32 << 30)).await.unwrap();
        s.heartbeat(&b, &cap(30 << 30)).await.unwrap();
        let order: Vec<String> = s
            .hosts_by_free_memory()
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(order, ["b", "a"]);
        assert!(matches!(
            s.heartbeat("nope", &cap(1)).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.expire_hosts(-1_000).await.unwrap(), 2);
        assert!(s.hosts_by_free_memory().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn events_are_kept_in_order() {
    for s in stores("events").await {
        for (i, action) in ["logon", "provision", "logon"].iter().enumerate() {
            s.record(&Event {
                at: 1_000 + i as i64,
                actor: "alice".into(),
                action: action.to_string(),
                target: "fin-001".into(),
                outcome: "ok".into(),
                duration_ms: Some(12),
                detail: String::new(),
            })
            .await
            .unwrap();
        }
        let all = s.events(None, 10).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].at, 1_002, "newest first");
        let logons = s.events(Some("logon"), 10).await.unwrap();
        assert_eq!(logons.len(), 2);
        assert!(logons.iter().all(|e| e.action == "logon"));
    }
}

#[tokio::test]
async fn admin_tokens_expire_and_messages_are_delivered_once() {
    for s in stores("admin").await {
        let (live, _) = s.open_admin_token("boss", 60_000).await.unwrap();
        let (old, _) = s.open_admin_token("boss", -1).await.unwrap();
        assert_eq!(
            s.authorize_admin(&live).await.unwrap().as_deref(),
            Some("boss")
        );
        assert_eq!(s.authorize_admin(&old).await.unwrap(), None, "expired");
        assert_eq!(s.authorize_admin("forged").await.unwrap(), None);
        s.revoke_admin_token(&live).await.unwrap();
        assert_eq!(s.authorize_admin(&live).await.unwrap(), None, "revoked");

        let p = pool(&s, Assignment::Floating).await;
        ready_desktops(&s, &p, 1).await;
        let d = &s.desktops_of(&p.id).await.unwrap()[0];
        let first = s.open_session(&d.id, "alice", "10.0.0.9").await.unwrap();
        assert!(first.replaced.is_empty());
        let (session, token) = (first.session, first.token);
        assert_eq!(s.live_sessions().await.unwrap().len(), 1);
        assert!(matches!(
            s.post_message(&session.id, "boss", "loud", "hi").await,
            Err(StoreError::Invalid(_))
        ));
        let long = "x".repeat(tessera_broker::store::admin::MAX_MESSAGE + 1);
        assert!(s
            .post_message(&session.id, "boss", "info", &long)
            .await
            .is_err());
        for body in ["first", "second"] {
            s.post_message(&session.id, "boss", "info", body)
                .await
                .unwrap();
        }
        let got = s.take_messages(&session.id).await.unwrap();
        assert_eq!(
            got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["first", "second"]
        );
        assert!(s.take_messages(&session.id).await.unwrap().is_empty());

        // A reconnect replaces the session; the old one says why and takes no messages.
        let next = s.open_session(&d.id, "alice", "10.0.0.9").await.unwrap();
        assert_eq!(
            next.replaced,
            std::slice::from_ref(&session.id),
            "its connections must go"
        );
        let next = next.session;
        let old = s
            .authorize_session(&session.id, &token, TokenLifetime::default())
            .await
            .unwrap()
            .unwrap();
        assert!(!old.is_live());
        assert_eq!(old.end_reason.as_deref(), Some("replaced"));
        assert!(matches!(
            s.post_message(&session.id, "boss", "info", "late").await,
            Err(StoreError::NotFound(_))
        ));
        s.end_session(&next.id, EndReason::Admin).await.unwrap();
        assert!(s.end_session(&next.id, EndReason::Admin).await.is_err());
        assert!(s.live_sessions().await.unwrap().is_empty());
    }
}

/// A session token dies after its idle time without use, and after its absolute lifetime
/// however much it is used.
#[tokio::test]
async fn session_tokens_have_an_idle_and_an_absolute_lifetime() {
    use std::time::Duration;
    for s in stores("token-lifetime").await {
        let p = pool(&s, Assignment::Floating).await;
        ready_desktops(&s, &p, 2).await;
        let ds = s.desktops_of(&p.id).await.unwrap();
        // Margins wide enough for a loaded machine: each use comes 250 ms after the last
        // (plus the query's own time) against a 1 s idle limit.
        let idle = TokenLifetime {
            idle: Duration::from_millis(1000),
            absolute: Duration::from_secs(3600),
        };
        let a = s.open_session(&ds[0].id, "alice", "t").await.unwrap();
        for _ in 0..6 {
            // Used every 250 ms: alive well past its idle time.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let ok = s.authorize_session(&a.session.id, &a.token, idle).await;
            assert!(ok.unwrap().is_some(), "{:?}", s.backend());
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let gone = s.authorize_session(&a.session.id, &a.token, idle).await;
        assert!(gone.unwrap().is_none(), "idle too long: {:?}", s.backend());

        let absolute = TokenLifetime {
            idle: Duration::from_secs(3600),
            absolute: Duration::from_millis(1000),
        };
        let b = s.open_session(&ds[1].id, "bob", "t").await.unwrap();
        let ok = s.authorize_session(&b.session.id, &b.token, absolute).await;
        assert!(ok.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let gone = s.authorize_session(&b.session.id, &b.token, absolute).await;
        assert!(
            gone.unwrap().is_none(),
            "past its lifetime: {:?}",
            s.backend()
        );
    }
}
