//! Fuzzes the broker's HTTP API behind the connection: any method, path, bearer token,
//! Upgrade header and JSON body reach the router (client, admin and host-join routes), its
//! extractors and handlers, against a real SQLite store with a local administrator and user.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tessera_broker::api::{router, AppState};
use tessera_broker::logon::Logon;
use tessera_broker::store::Store;
use tower::ServiceExt;

struct Rig {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = std::env::temp_dir().join(format!("tessera-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let app = rt.block_on(async {
            let store = Store::open(&format!("sqlite://{}", dir.join("b.db").display()))
                .await
                .expect("store");
            store
                .create_local_account("admin", "Admin", "Adm1n!Passw0rd", true)
                .await
                .expect("admin");
            store
                .create_local_account("demo", "Demo", "Dem0!Passw0rd", false)
                .await
                .expect("demo");
            let logon = Logon::new(store.clone(), None, reqwest_client());
            router(Arc::new(AppState::new(logon, store)))
        });
        Rig { rt, app }
    })
}

fn reqwest_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

const METHODS: [&str; 5] = ["GET", "POST", "DELETE", "PUT", "PATCH"];
const PATHS: [&str; 16] = [
    "/api/v1/sessions",
    "/api/v1/sessions/{}",
    "/api/v1/sessions/{}/disconnect",
    "/api/v1/sessions/{}/ticket",
    "/api/v1/sessions/{}/vv",
    "/api/v1/sessions/{}/tunnel",
    "/api/v1/sessions/{}/restart",
    "/api/v1/desktops",
    "/api/v1/desktops/{}/logoff",
    "/api/v1/password",
    "/api/v1/domains",
    "/api/v1/admin/tokens",
    "/api/v1/admin/sessions/{}/messages",
    "/api/v1/admin/join-tokens",
    "/api/v1/hosts/join",
    "/metrics",
];

/// The next field of the input: bytes up to a NUL.
fn field<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let cut = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (f, rest) = data.split_at(cut);
    *data = rest.get(1..).unwrap_or(&[]);
    f
}

fuzz_target!(|data: &[u8]| {
    // [method][path][flags][segment\0][token\0][body]
    let [m, p, flags, ref tail @ ..] = *data else {
        return;
    };
    let mut rest = tail;
    let method = METHODS[usize::from(m) % METHODS.len()];
    let segment = String::from_utf8_lossy(field(&mut rest)).replace(['/', '?', '#'], "_");
    let path = PATHS[usize::from(p) % PATHS.len()].replace("{}", &segment);
    let token = String::from_utf8_lossy(field(&mut rest)).into_owned();
    let body = rest.to_vec();
    let mut req = Request::builder()
        .method(method)
        .uri(&path)
        .header("content-type", "application/json");
    if flags & 1 != 0 {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if flags & 2 != 0 {
        req = req
            .header("upgrade", "tessera-display")
            .header("connection", "upgrade");
    }
    let Ok(mut req) = req.body(Body::from(body)) else {
        return;
    };
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let r = rig();
    let _ = r.rt.block_on(r.app.clone().oneshot(req));
});
