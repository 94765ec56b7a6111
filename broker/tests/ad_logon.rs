//! The logon path against the real Samba AD domain: alice, a member of vdi-users through the
//! nested group vdi-engineering, signs in as VDI\alice, gets a linked clone that the agent
//! created and started, logs off, and the floating desktop is refreshed onto a fresh overlay.
//! carol (disabled) is refused with AD's reason, and bob (not in vdi-users) is not entitled.
//! alice, a member of the group the broker lists as administrators, may use the admin API;
//! bob may not.

mod common;

use std::sync::Arc;

use common::*;
use tessera_broker::logon::{Denial, Logon, LogonError, LogonOutcome};
use tessera_broker::store::desktops::DesktopState;
use tessera_broker::store::pools::Principal;
use tessera_broker::store::sessions::EndReason;

#[tokio::test(flavor = "multi_thread")]
async fn an_ad_user_of_a_nested_group_gets_a_desktop_and_it_is_refreshed_at_logoff() {
    if !kvm() {
        return;
    }
    let Some(env) = ldap_env("ad_logon") else {
        return;
    };
    let g = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("{k} missing"));
    let dirs = Arc::new(ad_directories(&env));

    let mut r = rig("ad-logon").await;
    let mut s = spec();
    s.min_desktops = 1;
    let pool = r.store.create_pool(&s).await.unwrap();
    let group = format!("CN=vdi-users,OU=Groups,OU=VDI,{}", g("AD_BASE"));
    r.store
        .entitle(
            &pool.id,
            &Principal::Group {
                directory: "vdi".into(),
                dn: group,
            },
        )
        .await
        .unwrap();
    r.reconciler.pass().await.unwrap();
    // Administrators: members of vdi-engineering (alice, directly).
    let admins = format!("CN=vdi-engineering,OU=Groups,OU=VDI,{}", g("AD_BASE"));
    let logon = Logon::new(r.store.clone(), Some(dirs), r.http.clone()).with_admins(vec![admins]);

    let LogonOutcome::Granted(granted) = logon
        .logon("VDI\\alice", "Al1ce!Passw0rd", None, "test")
        .await
        .unwrap()
    else {
        panic!("alice should get a desktop")
    };
    assert_eq!(granted.pool, "fin");
    let vm = r.agent.vm(&granted.desktop).await.unwrap().unwrap();
    assert_eq!(vm.state, "running");
    let disk = r.ds.join(format!("{}.qcow2", granted.desktop));
    assert!(disk.exists(), "the agent made the linked clone");
    let d = r.store.desktops_of(&pool.id).await.unwrap();
    let mine = d.iter().find(|d| d.name == granted.desktop).unwrap();
    assert_eq!(
        mine.assigned_user.as_deref(),
        Some(format!("CN=Alice Liddell,OU=People,OU=VDI,{}", g("AD_BASE")).as_str())
    );

    // The session wrote into the overlay; logoff refreshes it.
    {
        let ds = tessera_storage::Datastore::new(&r.ds).unwrap();
        let img =
            tessera_storage::Disk::open(&ds, &disk, tessera_storage::Format::Qcow2, true).unwrap();
        img.write(&vec![0x42; 2 << 20], 0).unwrap();
        img.flush().unwrap();
    }
    let used = std::fs::metadata(&disk).unwrap().len();
    logon
        .logoff(&granted.session_id, EndReason::Logoff)
        .await
        .unwrap();
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.refreshed, 1, "{report:?}");
    let fresh = std::fs::metadata(&disk).unwrap().len();
    assert!(
        fresh < used && fresh < 1 << 20,
        "overlay replaced: {used} -> {fresh} bytes"
    );
    let after = r.store.desktops_of(&pool.id).await.unwrap();
    assert!(after
        .iter()
        .all(|d| d.assigned_user.is_none() && d.state == DesktopState::Running));

    // AD's reasons reach the user; a user outside the group is not entitled.
    match logon.logon("carol", "Car0l!Passw0rd", None, "t").await {
        Err(LogonError::Denied(Denial::AccountDisabled, m)) => {
            assert!(m.contains("disabled"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // A password that must change gets its own code (the client's change-password form).
    let e = logon
        .logon("dave", "Us3r!Passw0rd", None, "t")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "password_must_change", "{e:?}");
    assert!(matches!(
        logon.logon("bob", "B0b!Passw0rd", None, "t").await,
        Err(LogonError::NotEntitled(_))
    ));

    // The admin API's sign-in: a member of the listed group is an administrator, others not.
    let name = logon
        .admin_sign_in("VDI\\alice", "Al1ce!Passw0rd")
        .await
        .unwrap();
    assert!(name.starts_with("CN=Alice Liddell,"), "{name}");
    assert!(matches!(
        logon.admin_sign_in("bob", "B0b!Passw0rd").await,
        Err(LogonError::NotAdministrator)
    ));
}
