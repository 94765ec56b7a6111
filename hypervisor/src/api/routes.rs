//! The control API's routes: method and path to a controller call and a JSON answer.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::controller::{ControlError, Controller};
use crate::exit::ExitReason;

/// An answer: status and JSON body (None for 204).
#[derive(Debug, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Option<serde_json::Value>,
}

impl Reply {
    fn json(status: StatusCode, body: serde_json::Value) -> Self {
        Self {
            status,
            body: Some(body),
        }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::json(status, json!({ "error": message.into() }))
    }

    fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
        }
    }
}

fn from_control(result: Result<(), ControlError>, ok: StatusCode) -> Reply {
    match result {
        Ok(()) if ok == StatusCode::NO_CONTENT => Reply::no_content(),
        Ok(()) => Reply::json(ok, json!({ "accepted": true })),
        Err(ControlError::PauseTimeout) => Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ControlError::PauseTimeout.to_string(),
        ),
        Err(e) => Reply::error(StatusCode::CONFLICT, e.to_string()),
    }
}

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/vm"),
    ("PUT", "/vm/pause"),
    ("PUT", "/vm/resume"),
    ("PUT", "/vm/shutdown"),
    ("PUT", "/vm/kill"),
];

/// Handles one request. Blocking: call it off the async reactor.
pub fn route(ctl: &Controller, method: &Method, path: &str) -> Reply {
    let path = path.trim_end_matches('/');
    match (method.as_str(), path) {
        ("GET", "/vm") => match serde_json::to_value(ctl.info()) {
            Ok(v) => Reply::json(StatusCode::OK, v),
            Err(e) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        ("PUT", "/vm/pause") => from_control(ctl.pause(), StatusCode::NO_CONTENT),
        ("PUT", "/vm/resume") => from_control(ctl.resume(), StatusCode::NO_CONTENT),
        ("PUT", "/vm/shutdown") => from_control(
            ctl.request_exit(ExitReason::ApiShutdown),
            StatusCode::ACCEPTED,
        ),
        ("PUT", "/vm/kill") => {
            from_control(ctl.request_exit(ExitReason::ApiKill), StatusCode::ACCEPTED)
        }
        (m, p) if ROUTES.iter().any(|(_, rp)| *rp == p) => Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed on {p}"),
        ),
        (m, p) => {
            let known: Vec<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
            // Echo at most a short prefix of what the client sent.
            let shown: String = p.chars().take(64).collect();
            Reply::error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {m} {shown}; known: {}", known.join(", ")),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::boot::KernelFormat;
    use crate::controller::VmFacts;
    use crate::devices::legacy::debug_port::BootTimes;
    use crate::vstate::vcpu::RunControl;
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Instant;

    fn ctl() -> (Controller, mpsc::Receiver<ExitReason>) {
        let (tx, rx) = mpsc::channel();
        let c = Controller::new(
            Instant::now(),
            VmFacts {
                vcpus: 2,
                memory: 512 << 20,
                kernel_format: KernelFormat::BzImage,
            },
            Arc::new(RunControl::default()),
            crate::exit::ExitSender::new(tx),
            Arc::new(Mutex::new(BootTimes::default())),
        );
        (c, rx)
    }

    #[test]
    fn info_reports_facts() {
        let (c, _rx) = ctl();
        let r = route(&c, &Method::GET, "/vm");
        assert_eq!(r.status, StatusCode::OK);
        let b = r.body.unwrap();
        assert_eq!(b["state"], "running");
        assert_eq!(b["vcpus"], 2);
        assert_eq!(b["memory_mib"], 512);
        assert_eq!(b["kernel_format"], "bzimage");
    }

    #[test]
    fn pause_resume_state_machine() {
        let (c, _rx) = ctl();
        assert_eq!(
            route(&c, &Method::PUT, "/vm/pause").status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            route(&c, &Method::GET, "/vm").body.unwrap()["state"],
            "paused"
        );
        let again = route(&c, &Method::PUT, "/vm/pause");
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert_eq!(again.body.unwrap()["error"], "the VM is already paused");
        assert_eq!(
            route(&c, &Method::PUT, "/vm/resume").status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            route(&c, &Method::PUT, "/vm/resume").status,
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn shutdown_and_kill_reach_the_main_thread_once() {
        let (c, rx) = ctl();
        assert_eq!(
            route(&c, &Method::PUT, "/vm/shutdown").status,
            StatusCode::ACCEPTED
        );
        assert_eq!(rx.try_recv().unwrap(), ExitReason::ApiShutdown);
        assert_eq!(
            route(&c, &Method::PUT, "/vm/kill").status,
            StatusCode::CONFLICT
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn unknown_paths_and_methods_are_json_errors() {
        let (c, _rx) = ctl();
        let r = route(&c, &Method::GET, "/etc/passwd");
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.body.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("GET /vm"));
        assert_eq!(
            route(&c, &Method::DELETE, "/vm").status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let long = "/".to_string() + &"a".repeat(10_000);
        let r = route(&c, &Method::GET, &long);
        assert!(r.body.unwrap()["error"].as_str().unwrap().len() < 300);
    }
}
