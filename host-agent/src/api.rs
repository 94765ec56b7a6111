//! The agent's HTTPS API, called by the broker (mutual TLS): capacity, disks in datastores,
//! and VMs.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | /api/v1/host | capacity: CPUs, memory, datastore space |
//! | GET | /api/v1/datastores/{ds}/disks | the images in a datastore |
//! | POST | /api/v1/datastores/{ds}/disks | `{"name", "base"}`: a linked clone of base |
//! | POST | /api/v1/datastores/{ds}/imports | `{"name", "source"}`: copy a base image in |
//! | DELETE | /api/v1/datastores/{ds}/disks/{name} | delete (refused while in use or a base) |
//! | GET | /api/v1/vms | every VM with its state |
//! | PUT | /api/v1/vms/{name} | define (or redefine a stopped) VM |
//! | GET | /api/v1/vms/{name} | one VM |
//! | POST | /api/v1/vms/{name}/start | power on |
//! | POST | /api/v1/vms/{name}/stop | `{"force", "timeout_secs"}`, both optional: the ACPI power button, the guest's shutdown awaited, then power-off; answers the status with `outcome` |
//! | PUT | /api/v1/vms/{name}/display/ticket | `{"ticket", "lifetime_secs"}`: the one-time SPICE ticket |
//! | POST | /api/v1/vms/{name}/display/disconnect | clears the ticket and cuts the connected client off (its session ended) |
//! | DELETE | /api/v1/vms/{name} | remove a stopped VM's definition |
//! | GET | /metrics | Prometheus text: VMs by state, memory, datastore space |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::capacity;
use crate::disks::{self, DiskError};
use crate::vms::{StopReply, StopRequest, Supervisor, VmError, VmSpec};

/// An error as the API answers it: a status and `{"error": "..."}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<VmError> for ApiError {
    fn from(e: VmError) -> Self {
        let status = match &e {
            VmError::NotFound(_) => StatusCode::NOT_FOUND,
            VmError::Invalid(_) => StatusCode::BAD_REQUEST,
            VmError::State(_) => StatusCode::CONFLICT,
            VmError::Disk(d) => return Self::from_disk(d, e.to_string()),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

impl From<DiskError> for ApiError {
    fn from(e: DiskError) -> Self {
        let msg = e.to_string();
        Self::from_disk(&e, msg)
    }
}

impl ApiError {
    fn from_disk(e: &DiskError, msg: String) -> Self {
        let status = match e {
            DiskError::NoDatastore(_) | DiskError::NotFound(..) => StatusCode::NOT_FOUND,
            DiskError::BadName(_) => StatusCode::BAD_REQUEST,
            DiskError::Library(_) => StatusCode::FORBIDDEN,
            DiskError::InUse(_) => StatusCode::CONFLICT,
            DiskError::Storage(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DiskError::Io(..) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, msg)
    }
}

type Shared = Arc<Supervisor>;
type Reply<T> = Result<T, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneRequest {
    name: String,
    base: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    name: String,
    source: PathBuf,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Reply<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn host(State(s): State<Shared>) -> impl IntoResponse {
    Json(capacity::measure(s.config()))
}

async fn list_disks(State(s): State<Shared>, Path(ds): Path<String>) -> Reply<impl IntoResponse> {
    let cfg = s.config().clone();
    Ok(Json(blocking(move || disks::list_disks(&cfg, &ds)).await?))
}

async fn clone_disk(
    State(s): State<Shared>,
    Path(ds): Path<String>,
    Json(r): Json<CloneRequest>,
) -> Reply<impl IntoResponse> {
    let cfg = s.config().clone();
    let path = blocking(move || disks::clone_disk(&cfg, &ds, &r.base, &r.name)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "path": path }))))
}

async fn import_base(
    State(s): State<Shared>,
    Path(ds): Path<String>,
    Json(r): Json<ImportRequest>,
) -> Reply<impl IntoResponse> {
    let cfg = s.config().clone();
    let path = blocking(move || disks::import_base(&cfg, &ds, &r.source, &r.name)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "path": path }))))
}

async fn delete_disk(
    State(s): State<Shared>,
    Path((ds, name)): Path<(String, String)>,
) -> Reply<impl IntoResponse> {
    disks::check_name(&name)?;
    let (_, dir) = disks::datastore(s.config(), &ds)?;
    let busy = s.disk_in_use(&dir.join(&name)).await;
    let cfg = s.config().clone();
    blocking(move || disks::delete_disk(&cfg, &ds, &name, |_| busy)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_vms(State(s): State<Shared>) -> Reply<impl IntoResponse> {
    Ok(Json(s.list().await?))
}

async fn define_vm(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Json(spec): Json<VmSpec>,
) -> Reply<impl IntoResponse> {
    if spec.name != name {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the name in the path and in the body differ".into(),
        ));
    }
    s.define(spec).await?;
    Ok((StatusCode::CREATED, Json(s.status(&name).await?)))
}

async fn get_vm(State(s): State<Shared>, Path(name): Path<String>) -> Reply<impl IntoResponse> {
    Ok(Json(s.status(&name).await?))
}

async fn start_vm(State(s): State<Shared>, Path(name): Path<String>) -> Reply<impl IntoResponse> {
    Ok(Json(s.start(&name).await?))
}

/// Stops a VM: the body (optional) is a [`StopRequest`]; the answer says how it stopped.
async fn stop_vm(
    State(s): State<Shared>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Reply<impl IntoResponse> {
    let how: StopRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StopRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad stop request: {e}")))?
    };
    let outcome = s.stop(&name, &how).await?;
    Ok(Json(StopReply {
        outcome,
        status: s.status(&name).await?,
    }))
}

async fn delete_vm(State(s): State<Shared>, Path(name): Path<String>) -> Reply<impl IntoResponse> {
    s.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketRequest {
    ticket: String,
    lifetime_secs: u64,
}

async fn set_ticket(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Json(r): Json<TicketRequest>,
) -> Reply<impl IntoResponse> {
    s.set_ticket(&name, &r.ticket, Duration::from_secs(r.lifetime_secs))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disconnect_display(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Reply<impl IntoResponse> {
    s.disconnect_display(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn metrics(State(s): State<Shared>) -> Reply<impl IntoResponse> {
    let vms = s.list().await?;
    let cap = capacity::measure(s.config());
    let mut out = String::new();
    out.push_str("# HELP tessera_agent_vms VMs defined on this host, by state.\n# TYPE tessera_agent_vms gauge\n");
    for state in ["running", "paused", "starting", "stopped"] {
        let n = vms.iter().filter(|v| v.state == state).count();
        out.push_str(&format!("tessera_agent_vms{{state=\"{state}\"}} {n}\n"));
    }
    out.push_str(&format!(
        "# TYPE tessera_agent_memory_bytes gauge\ntessera_agent_memory_bytes{{kind=\"total\"}} {}\ntessera_agent_memory_bytes{{kind=\"available\"}} {}\n",
        cap.memory_total, cap.memory_free
    ));
    out.push_str("# TYPE tessera_agent_datastore_bytes gauge\n");
    for d in cap.datastores {
        out.push_str(&format!(
            "tessera_agent_datastore_bytes{{datastore=\"{}\",kind=\"capacity\"}} {}\ntessera_agent_datastore_bytes{{datastore=\"{}\",kind=\"free\"}} {}\n",
            d.name, d.capacity, d.name, d.free
        ));
    }
    Ok(([("content-type", "text/plain; version=0.0.4")], out))
}

/// The router.
pub fn router(s: Shared) -> Router {
    Router::new()
        .route("/api/v1/host", get(host))
        .route(
            "/api/v1/datastores/{ds}/disks",
            get(list_disks).post(clone_disk),
        )
        .route("/api/v1/datastores/{ds}/imports", post(import_base))
        .route(
            "/api/v1/datastores/{ds}/disks/{name}",
            axum::routing::delete(delete_disk),
        )
        .route("/api/v1/vms", get(list_vms))
        .route(
            "/api/v1/vms/{name}",
            get(get_vm).put(define_vm).delete(delete_vm),
        )
        .route("/api/v1/vms/{name}/start", post(start_vm))
        .route("/api/v1/vms/{name}/stop", post(stop_vm))
        .route(
            "/api/v1/vms/{name}/display/ticket",
            axum::routing::put(set_ticket),
        )
        .route(
            "/api/v1/vms/{name}/display/disconnect",
            post(disconnect_display),
        )
        .route("/metrics", get(metrics))
        .with_state(s)
}
