//! The client's sign-in, errors and pool list, driven through its real UI (egui_kittest, no
//! display needed) against a real broker served over HTTPS in this test: its store on SQLite,
//! local accounts, pools and entitlements.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use tessera_broker::api::{router, AppState};
use tessera_broker::logon::Logon;
use tessera_broker::store::desktops::DesktopState;
use tessera_broker::store::pools::Principal;
use tessera_broker::store::Store;
use tessera_client::settings::Settings;
use tessera_client::{App, Screen};

struct Broker {
    address: String,
    ca_pem: String,
    dir: PathBuf,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

/// One broker for most tests: alice is entitled to two pools, bob to none, dave is disabled,
/// erin's password is temporary, fay holds a desktop (erin and fay have both pools too).
fn broker() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(|| runtime().block_on(start_broker("local", None)))
}

/// A broker with two directories, CORP and LAB, whose servers are down.
fn broker_with_directories() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let toml = ["corp", "lab"]
            .map(|name| {
                format!(
                    "[[directory]]\nname = \"{name}\"\nkind = \"ad\"\n\
                     urls = [\"ldaps://127.0.0.1:{port}\"]\nservice_dn = \"svc@{name}\"\n\
                     service_password = \"x\"\nuser_base = \"DC={name}\"\n\
                     domains = [\"{}\"]\nconnect_timeout_ms = 2000\n",
                    name.to_uppercase()
                )
            })
            .join("\n");
        let dirs =
            tessera_directory::Directories::new(tessera_directory::config::parse(&toml).unwrap())
                .unwrap();
        runtime().block_on(start_broker("directories", Some(Arc::new(dirs))))
    })
}

async fn start_broker(
    name: &str,
    directories: Option<Arc<tessera_directory::Directories>>,
) -> Broker {
    let dir =
        std::env::temp_dir().join(format!("tessera-client-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("broker.db").display()))
        .await
        .unwrap();
    for (name, pw) in [
        ("alice", "alice-password"),
        ("bob", "bob-password"),
        ("dave", "dave-password"),
        ("erin", "erin-temporary"),
        ("fay", "fay-password"),
        ("gus", "gus-password"),
    ] {
        store
            .create_local_account(name, name, pw, false)
            .await
            .unwrap();
    }
    store.set_local_disabled("dave", true).await.unwrap();
    // Gus mistyped his password until the account locked.
    for _ in 0..tessera_broker::store::accounts::LOCKOUT_THRESHOLD {
        assert!(store.sign_in_local("gus", "guess").await.is_err());
    }
    store.set_local_must_change("erin", true).await.unwrap();
    store
        .create_image(
            "gold",
            "/nonexistent/gold.qcow2",
            64 << 20,
            None,
            None,
            None,
        )
        .await
        .unwrap();
    for (name, display) in [("fin", "Finance"), ("dev", "Developers")] {
        let spec = tessera_broker::store::pools::PoolSpec {
            name: name.into(),
            display_name: display.into(),
            image: "gold".into(),
            image_version: 1,
            assignment: tessera_broker::store::pools::Assignment::Floating,
            clone_kind: tessera_broker::store::pools::CloneKind::Linked,
            naming: format!("{name}-{{n:02}}"),
            min_desktops: 0,
            max_desktops: 2,
            spare_desktops: 0,
            power_policy: tessera_broker::store::pools::PowerPolicy::AlwaysOn,
            refresh_on_logoff: true,
            vcpus: 1,
            memory_mib: 64,
        };
        let pool = store.create_pool(&spec).await.unwrap();
        for user in ["alice", "erin", "fay"] {
            store
                .entitle(&pool.id, &Principal::Local { name: user.into() })
                .await
                .unwrap();
        }
    }

    // fay holds a desktop of fin, on a host that is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = store
        .register_host("down", &format!("https://{}", dead.local_addr().unwrap()))
        .await
        .unwrap();
    drop(dead);
    let fin = store.pool_by_name("fin").await.unwrap();
    let d = store.new_desktop(&fin).await.unwrap();
    let d = store
        .set_placement(&d, &host, "/nonexistent/fin-01.qcow2")
        .await
        .unwrap();
    store.transition(&d, DesktopState::Running).await.unwrap();
    store.assign(&fin, "fay").await.unwrap();

    // A CA of its own: the client trusts it only when told (the CA file, or by fingerprint).
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test broker CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.pem().into_bytes(),
        key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let http = reqwest::Client::new();
    let logon = Logon::new(store.clone(), directories, http);
    let state = Arc::new(AppState::new(logon, store));
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .serve(router(state).into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap()
    });
    Broker {
        address: format!("127.0.0.1:{}", addr.port()),
        ca_pem: ca.pem(),
        dir,
    }
}

fn harness(app: App) -> Harness<'static, App> {
    Harness::builder()
        .with_size(egui::vec2(720.0, 480.0))
        .build_ui_state(|ui, app: &mut App| app.ui_root(ui), app)
}

/// A client whose settings trust the test broker's CA (or not).
fn client(trust_ca: bool, name: &str) -> (App, PathBuf) {
    client_of(broker(), trust_ca, name)
}

fn client_of(b: &Broker, trust_ca: bool, name: &str) -> (App, PathBuf) {
    let path = b.dir.join(format!("{name}/client.toml"));
    let mut settings = Settings {
        broker: b.address.clone(),
        ..Default::default()
    };
    if trust_ca {
        let ca = b.dir.join("ca.pem");
        std::fs::write(&ca, &b.ca_pem).unwrap();
        settings.ca_file = Some(ca);
    }
    (App::new(settings, Some(path.clone())), path)
}

fn type_into(h: &mut Harness<'static, App>, label: &str, text: &str) {
    h.get_by_label(label).click();
    h.run();
    h.get_by_label(label).type_text(text);
    h.run();
}

/// Clicks `button` and steps the UI until the broker has answered.
fn press_and_wait(h: &mut Harness<'static, App>, button: &str) {
    h.get_by_label(button).click();
    wait_for_broker(h);
}

/// Steps the UI until the broker has answered what it was asked.
fn wait_for_broker(h: &mut Harness<'static, App>) {
    h.step();
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.state().busy() {
        assert!(
            Instant::now() < deadline,
            "the broker did not answer in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    h.run();
}

fn sign_in(h: &mut Harness<'static, App>, user: &str, password: &str) {
    type_into(h, "User name", user);
    type_into(h, "Password", password);
    press_and_wait(h, "Sign in");
}

fn error(h: &Harness<'static, App>) -> String {
    h.state().error.clone().unwrap_or_default()
}

#[test]
fn alice_signs_in_and_sees_her_pools() {
    let (app, path) = client(true, "alice");
    let mut h = harness(app);
    sign_in(&mut h, "alice", "alice-password");
    assert!(
        matches!(&h.state().screen, Screen::ChoosePool(p) if p.len() == 2),
        "error: {:?}",
        h.state().error
    );
    h.get_by_label("Connect to fin");
    h.get_by_label("Connect to dev");
    assert!(
        h.state().password.is_empty(),
        "the password stayed in the form"
    );
    // The broker and the user are remembered; the password never is.
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(
        saved.contains("alice") && saved.contains(&broker().address),
        "{saved}"
    );
    assert!(!saved.contains("alice-password"));
    // Sign out goes back to the form.
    h.get_by_label("Sign out").click();
    h.run();
    assert!(matches!(h.state().screen, Screen::SignIn));
}

#[test]
fn a_remembered_user_types_the_password_straight_away() {
    let b = broker();
    let ca = b.dir.join("ca.pem");
    std::fs::write(&ca, &b.ca_pem).unwrap();
    let settings = Settings {
        broker: b.address.clone(),
        user: "alice".into(),
        ca_file: Some(ca),
        ..Default::default()
    };
    let mut h = harness(App::new(settings, None));
    h.run();
    // No click: the keys go to the password field.
    h.event(egui::Event::Text("alice-password".into()));
    h.key_press(egui::Key::Enter);
    wait_for_broker(&mut h);
    assert!(
        matches!(&h.state().screen, Screen::ChoosePool(p) if p.len() == 2),
        "password {:?}, error {:?}",
        h.state().password,
        h.state().error
    );
}

#[test]
fn the_desktop_list_shows_states_restarts_and_logs_off() {
    let mut h = harness(client(true, "fay").0);
    sign_in(&mut h, "fay", "fay-password");
    let Screen::ChoosePool(list) = &h.state().screen else {
        panic!("no desktop list; error {:?}", h.state().error);
    };
    assert_eq!(list.len(), 2);
    h.get_by_label("Finance (fin)");
    h.get_by_label("fin-01: running");
    h.get_by_label("available");
    assert!(h.query_by_label("Restart dev").is_none());
    // Its host is down: the restart says so, and the list stays.
    press_and_wait(&mut h, "Restart fin");
    assert!(matches!(h.state().screen, Screen::ChoosePool(_)));
    let e = error(&h);
    assert!(
        e.contains("host is unavailable") && e.ends_with("Try again in a few minutes."),
        "{e}"
    );
    // Log off: the desktop goes back to the pool, and the fresh list says so.
    press_and_wait(&mut h, "Log off fin");
    let Screen::ChoosePool(list) = &h.state().screen else {
        panic!("no desktop list; error {:?}", h.state().error);
    };
    assert!(list.iter().all(|d| d.desktop.is_none()), "{list:?}");
    assert_eq!(h.state().error, None);
    assert!(h.query_by_label("Restart fin").is_none());
}

#[test]
fn refusals_are_explained() {
    let (app, _) = client(true, "refusals");
    let mut h = harness(app);
    sign_in(&mut h, "alice", "wrong");
    assert_eq!(error(&h), "Sign-in refused: wrong user name or password.");
    h.get_by_label(&error(&h));
    assert!(h.state().password.is_empty());

    let mut h = harness(client(true, "refusals").0);
    sign_in(&mut h, "bob", "bob-password");
    assert!(error(&h).contains("not entitled"), "{}", error(&h));
    assert!(error(&h).ends_with("Ask your administrator for access."));

    let mut h = harness(client(true, "refusals").0);
    sign_in(&mut h, "dave", "dave-password");
    assert_eq!(
        error(&h),
        "Sign-in refused: the account is disabled. Your help desk can unlock or enable it."
    );

    let mut h = harness(client(true, "refusals").0);
    sign_in(&mut h, "gus", "gus-password");
    let e = error(&h);
    assert!(
        e.starts_with("Sign-in refused: the account is locked out")
            && e.ends_with("Your help desk can unlock or enable it."),
        "{e}"
    );

    let mut h = harness(client(true, "refusals").0);
    sign_in(&mut h, "", "x");
    assert_eq!(error(&h), "enter your user name");
}

#[test]
fn an_unreachable_broker_and_a_bad_address_are_explained() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut app, _) = client(true, "unreachable");
    app.broker_address = format!("127.0.0.1:{port}");
    let mut h = harness(app);
    sign_in(&mut h, "alice", "alice-password");
    let e = error(&h);
    assert!(
        e.starts_with(&format!(
            "Cannot reach the broker at https://127.0.0.1:{port}"
        )) && e.contains("refused"),
        "{e}"
    );

    let (mut app, _) = client(true, "unreachable");
    app.broker_address = "http://vdi.example.com".into();
    let mut h = harness(app);
    sign_in(&mut h, "alice", "alice-password");
    assert!(error(&h).contains("over HTTPS"), "{}", error(&h));
}

#[test]
fn an_untrusted_certificate_is_shown_and_only_used_once_accepted() {
    let (app, path) = client(false, "untrusted");
    let mut h = harness(app);
    sign_in(&mut h, "alice", "alice-password");
    let Screen::Untrusted { fingerprint } = &h.state().screen else {
        panic!("no certificate question; error {:?}", h.state().error);
    };
    let fingerprint = fingerprint.clone();
    assert!(fingerprint.starts_with("SHA256 "), "{fingerprint}");
    h.get_by_label(&fingerprint);

    // Cancel: nothing is remembered, the form says why.
    h.get_by_label("Cancel").click();
    h.run();
    assert!(matches!(h.state().screen, Screen::SignIn));
    assert!(error(&h).contains("not accepted"));
    assert!(!path.exists() || !std::fs::read_to_string(&path).unwrap().contains("SHA256"));

    // Again (the user name is still there), and accept: the sign-in goes through with the
    // password typed before the question.
    assert_eq!(h.state().user, "alice");
    type_into(&mut h, "Password", "alice-password");
    press_and_wait(&mut h, "Sign in");
    assert!(matches!(h.state().screen, Screen::Untrusted { .. }));
    press_and_wait(&mut h, "Trust this certificate");
    assert!(
        matches!(h.state().screen, Screen::ChoosePool(_)),
        "error: {:?}",
        h.state().error
    );
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(saved.contains(&fingerprint), "{saved}");

    // A new client with those settings is not asked again.
    let settings = Settings::load(&path).unwrap();
    let mut h = harness(App::new(settings, None));
    assert_eq!(h.state().user, "alice", "the user name was not remembered");
    type_into(&mut h, "Password", "alice-password");
    press_and_wait(&mut h, "Sign in");
    assert!(
        matches!(h.state().screen, Screen::ChoosePool(_)),
        "error: {:?}",
        h.state().error
    );
}

#[test]
fn a_temporary_password_is_changed_first_then_used() {
    let (app, _) = client(true, "erin");
    let mut h = harness(app);
    sign_in(&mut h, "erin", "erin-temporary");
    let Screen::ChangePassword(why) = &h.state().screen else {
        panic!("no change-password form; error {:?}", h.state().error);
    };
    assert_eq!(
        why,
        "The password must be changed before the first sign-in. Choose a new password."
    );
    // The password just typed is the current one.
    assert_eq!(h.state().password, "erin-temporary");

    // Checked here: the two new ones differ.
    type_into(&mut h, "New password", "erin-new-1");
    type_into(&mut h, "Confirm new password", "erin-new-2");
    h.get_by_label("Change password").click();
    h.run();
    assert_eq!(error(&h), "The new passwords do not match.");
    assert!(matches!(h.state().screen, Screen::ChangePassword(_)));

    // Checked by the broker: too short. Said on the same form.
    h.state_mut().new_password.clear();
    h.state_mut().confirm_password.clear();
    type_into(&mut h, "New password", "short");
    type_into(&mut h, "Confirm new password", "short");
    press_and_wait(&mut h, "Change password");
    assert!(
        matches!(h.state().screen, Screen::ChangePassword(_)),
        "error: {:?}",
        h.state().error
    );
    assert_eq!(
        error(&h),
        "The new password is refused: it must have at least 8 characters."
    );

    // A good one: changed, then signed in with it (erin has two pools).
    type_into(&mut h, "New password", "erin-new-password");
    type_into(&mut h, "Confirm new password", "erin-new-password");
    press_and_wait(&mut h, "Change password");
    assert!(
        matches!(&h.state().screen, Screen::ChoosePool(p) if p.len() == 2),
        "error: {:?}",
        h.state().error
    );
    assert!(h.state().password.is_empty() && h.state().new_password.is_empty());

    // The temporary password is gone.
    let mut h = harness(client(true, "erin").0);
    sign_in(&mut h, "erin", "erin-temporary");
    assert_eq!(error(&h), "Sign-in refused: wrong user name or password.");
}

#[test]
fn the_domain_picker_offers_the_brokers_domains() {
    // The local-accounts broker offers none: no picker.
    let mut h = harness(client(true, "no-domains").0);
    h.run();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.state().domains_pending() {
        assert!(Instant::now() < deadline, "no answer about domains");
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    assert!(h.state().domains.is_empty());
    assert!(h.query_by_label("Domain").is_none());

    let (app, _) = client_of(broker_with_directories(), true, "domains");
    let mut h = harness(app);
    h.run();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.state().domains.is_empty() {
        assert!(Instant::now() < deadline, "the picker never came");
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    assert_eq!(h.state().domains, ["CORP", "LAB"]);
    assert_eq!(h.state().domain, "CORP");
    h.get_by_label("Domain").click();
    h.run();
    h.get_by_label("LAB").click();
    h.run();
    assert_eq!(h.state().domain, "LAB");
    type_into(&mut h, "User name", "carol");
    assert_eq!(h.state().login_name(), "LAB\\carol");
    // A typed domain wins over the picker.
    h.state_mut().user = "carol@corp".into();
    assert_eq!(h.state().login_name(), "carol@corp");
    h.state_mut().user = "carol".into();
    // LAB's servers are down: the sign-in went to LAB's directory, and says so.
    type_into(&mut h, "Password", "carol-password");
    press_and_wait(&mut h, "Sign in");
    let e = error(&h);
    assert!(
        e.contains("directory lab") && e.ends_with("Try again in a few minutes."),
        "{e}"
    );
}
