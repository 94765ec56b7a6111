//! The control API's routes: method and path to a controller call and a JSON answer.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::controller::{ControlError, Controller};
use crate::devices::display::service::DisplayError;
use crate::exit::ExitReason;

/// An answer: status and JSON body (None for 204), or raw bytes with their content type.
#[derive(Debug, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Option<serde_json::Value>,
    /// A non-JSON body (a screenshot).
    pub raw: Option<(&'static str, Vec<u8>)>,
}

impl Reply {
    fn json(status: StatusCode, body: serde_json::Value) -> Self {
        Self {
            status,
            body: Some(body),
            raw: None,
        }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::json(status, json!({ "error": message.into() }))
    }

    fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            raw: None,
        }
    }

    /// An error answer.
    pub fn error_reply(status: StatusCode, message: impl Into<String>) -> Self {
        Self::error(status, message)
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
    ("PUT", "/vm/power-button"),
    ("GET", "/display"),
    ("PUT", "/display/ticket"),
    ("DELETE", "/display/ticket"),
    ("POST", "/display/disconnect"),
    ("GET", "/display/screenshot"),
    ("GET", "/metrics"),
];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketRequest {
    ticket: String,
    #[serde(default = "default_lifetime")]
    lifetime_secs: u64,
}

fn default_lifetime() -> u64 {
    60
}

fn display_route(ctl: &Controller, method: &str, path: &str, body: &[u8]) -> Reply {
    let Some(d) = ctl.display() else {
        return Reply::error(StatusCode::NOT_FOUND, "this VM has no display");
    };
    let failed = |e: DisplayError| match e {
        DisplayError::Off => Reply::error(StatusCode::CONFLICT, e.to_string()),
        DisplayError::Refused(_) => Reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        _ => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match (method, path) {
        ("GET", "/display") => match serde_json::to_value(d.info()) {
            Ok(v) => Reply::json(StatusCode::OK, v),
            Err(e) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        ("PUT", "/display/ticket") => {
            let r: TicketRequest = match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => {
                    return Reply::error(
                        StatusCode::BAD_REQUEST,
                        format!("expected {{\"ticket\": \"...\", \"lifetime_secs\": N}}: {e}"),
                    )
                }
            };
            let lifetime = std::time::Duration::from_secs(r.lifetime_secs);
            match d.set_ticket(&r.ticket, lifetime) {
                Ok(()) => Reply::no_content(),
                Err(e) => failed(e),
            }
        }
        ("DELETE", "/display/ticket") => match d.clear_ticket() {
            Ok(()) => Reply::no_content(),
            Err(e) => failed(e),
        },
        ("POST", "/display/disconnect") => match d.disconnect() {
            Ok(()) => Reply::no_content(),
            Err(e) => failed(e),
        },
        ("GET", "/display/screenshot") => match d.screenshot_png() {
            Ok(png) => Reply {
                status: StatusCode::OK,
                body: None,
                raw: Some(("image/png", png)),
            },
            Err(e) => failed(e),
        },
        _ => Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
    }
}

/// A counter of a device's stats: its name, its help, and where it is.
type Counter<T> = (
    &'static str,
    &'static str,
    fn(&T) -> &std::sync::atomic::AtomicU64,
);

/// Writes counters `tessera_vmm_{prefix}_{name}` (name, help, the counter of a device's
/// stats), one line per device with its labels.
fn counter_family<T>(
    out: &mut String,
    prefix: &str,
    counters: &[Counter<T>],
    devices: &[(String, &T)],
) {
    use std::fmt::Write;
    for (name, help, counter) in counters {
        let _ = writeln!(
            out,
            "# HELP tessera_vmm_{prefix}_{name} {help}\n# TYPE tessera_vmm_{prefix}_{name} counter"
        );
        for (labels, stats) in devices {
            let v = counter(stats).load(std::sync::atomic::Ordering::Relaxed);
            let _ = writeln!(out, "tessera_vmm_{prefix}_{name}{{{labels}}} {v}");
        }
    }
}

/// Prometheus text for `GET /metrics`.
fn metrics(ctl: &Controller) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let info = ctl.info();
    let _ = writeln!(
        out,
        "# HELP tessera_vmm_uptime_seconds Seconds since the VMM started.\n\
         # TYPE tessera_vmm_uptime_seconds gauge\n\
         tessera_vmm_uptime_seconds {}",
        info.uptime_ms as f64 / 1000.0
    );
    if let Some(d) = ctl.display() {
        let d = d.info();
        let _ = writeln!(
            out,
            "# HELP tessera_vmm_display_restarts_total Display processes that died and were started again.\n\
             # TYPE tessera_vmm_display_restarts_total counter\n\
             tessera_vmm_display_restarts_total {}\n\
             # HELP tessera_vmm_display_refused_links_total SPICE links refused for their ticket.\n\
             # TYPE tessera_vmm_display_refused_links_total counter\n\
             tessera_vmm_display_refused_links_total {}\n\
             # HELP tessera_vmm_display_input_clients Clients whose keys and pointer reach the guest.\n\
             # TYPE tessera_vmm_display_input_clients gauge\n\
             tessera_vmm_display_input_clients {}\n\
             # HELP tessera_vmm_display_process_up Whether a display process serves now.\n\
             # TYPE tessera_vmm_display_process_up gauge\n\
             tessera_vmm_display_process_up {}",
            d.restarts,
            d.refused_links,
            d.input_clients,
            u8::from(d.process_id.is_some())
        );
    }
    let sata = ctl.sata();
    if !sata.is_empty() {
        use crate::devices::ahci::drive::DriveStats;
        let counters: [Counter<DriveStats>; 4] = [
            (
                "commands_total",
                "Commands the AHCI controller's device ran.",
                |s| &s.commands,
            ),
            ("errors_total", "Commands that ended in an error.", |s| {
                &s.errors
            }),
            ("read_bytes_total", "Bytes moved to the guest.", |s| {
                &s.read_bytes
            }),
            (
                "written_bytes_total",
                "Bytes the guest wrote to the medium.",
                |s| &s.written_bytes,
            ),
        ];
        let devices: Vec<_> = sata
            .iter()
            .map(|d| {
                (
                    format!("port=\"{}\",kind=\"{}\"", d.port, d.kind),
                    &*d.stats,
                )
            })
            .collect();
        counter_family(&mut out, "sata", &counters, &devices);
    }
    let nets = ctl.nets();
    if !nets.is_empty() {
        use crate::devices::virtio::net::NetStats;
        let counters: [Counter<NetStats>; 6] = [
            ("rx_frames_total", "Frames delivered to the guest.", |s| {
                &s.rx_frames
            }),
            (
                "rx_bytes_total",
                "Bytes delivered to the guest, virtio-net headers included.",
                |s| &s.rx_bytes,
            ),
            (
                "rx_dropped_total",
                "Frames for the guest dropped (too long, no room).",
                |s| &s.rx_dropped,
            ),
            ("tx_frames_total", "Frames the guest sent.", |s| {
                &s.tx_frames
            }),
            (
                "tx_bytes_total",
                "Bytes the guest sent, virtio-net headers included.",
                |s| &s.tx_bytes,
            ),
            (
                "tx_dropped_total",
                "Frames the guest sent that were dropped (malformed, refused by the tap).",
                |s| &s.tx_dropped,
            ),
        ];
        let devices: Vec<_> = nets
            .iter()
            .map(|(tap, stats)| (format!("tap=\"{tap}\""), &**stats))
            .collect();
        counter_family(&mut out, "net", &counters, &devices);
    }
    out
}

/// Handles one request. Blocking: call it off the async reactor.
pub fn route(ctl: &Controller, method: &Method, path: &str, body: &[u8]) -> Reply {
    let path = path.trim_end_matches('/');
    match (method.as_str(), path) {
        (
            m,
            p @ ("/display" | "/display/ticket" | "/display/disconnect" | "/display/screenshot"),
        ) if ROUTES.iter().any(|(rm, rp)| *rm == m && *rp == p) => display_route(ctl, m, p, body),
        ("GET", "/metrics") => Reply {
            status: StatusCode::OK,
            body: None,
            raw: Some(("text/plain; version=0.0.4", metrics(ctl).into_bytes())),
        },
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
        // 202: the guest was told; whether it shuts down is its decision. `listening` says
        // whether it had enabled the button (an ACPI-aware OS is up).
        ("PUT", "/vm/power-button") => match ctl.power_button() {
            Ok(listening) => Reply::json(
                StatusCode::ACCEPTED,
                serde_json::json!({ "listening": listening }),
            ),
            Err(e) => from_control(Err(e), StatusCode::ACCEPTED),
        },
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
                kernel_format: Some(KernelFormat::BzImage),
                seccomp: true,
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
        let r = route(&c, &Method::GET, "/vm", b"");
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
            route(&c, &Method::PUT, "/vm/pause", b"").status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            route(&c, &Method::GET, "/vm", b"").body.unwrap()["state"],
            "paused"
        );
        let again = route(&c, &Method::PUT, "/vm/pause", b"");
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert_eq!(again.body.unwrap()["error"], "the VM is already paused");
        assert_eq!(
            route(&c, &Method::PUT, "/vm/resume", b"").status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            route(&c, &Method::PUT, "/vm/resume", b"").status,
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn shutdown_and_kill_reach_the_main_thread_once() {
        let (c, rx) = ctl();
        assert_eq!(
            route(&c, &Method::PUT, "/vm/shutdown", b"").status,
            StatusCode::ACCEPTED
        );
        assert_eq!(rx.try_recv().unwrap(), ExitReason::ApiShutdown);
        assert_eq!(
            route(&c, &Method::PUT, "/vm/kill", b"").status,
            StatusCode::CONFLICT
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn unknown_paths_and_methods_are_json_errors() {
        let (c, _rx) = ctl();
        let r = route(&c, &Method::GET, "/etc/passwd", b"");
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.body.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("GET /vm"));
        assert_eq!(
            route(&c, &Method::DELETE, "/vm", b"").status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let long = "/".to_string() + &"a".repeat(10_000);
        let r = route(&c, &Method::GET, &long, b"");
        assert!(r.body.unwrap()["error"].as_str().unwrap().len() < 400);
    }

    #[test]
    fn metrics_show_each_nic_s_counters() {
        use crate::devices::virtio::net::NetStats;
        use std::sync::atomic::Ordering::Relaxed;
        let (c, _rx) = ctl();
        let stats = Arc::new(NetStats::default());
        stats.rx_frames.fetch_add(3, Relaxed);
        stats.tx_dropped.fetch_add(1, Relaxed);
        c.set_nets(vec![("desk-01-0".into(), stats)]);
        let text =
            String::from_utf8(route(&c, &Method::GET, "/metrics", b"").raw.unwrap().1).unwrap();
        for line in [
            "# TYPE tessera_vmm_net_rx_frames_total counter",
            "tessera_vmm_net_rx_frames_total{tap=\"desk-01-0\"} 3",
            "tessera_vmm_net_tx_dropped_total{tap=\"desk-01-0\"} 1",
            "tessera_vmm_net_tx_bytes_total{tap=\"desk-01-0\"} 0",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }

    #[test]
    fn metrics_show_each_sata_device_s_counters() {
        use crate::devices::ahci::drive::{DriveInfo, DriveStats};
        let (c, _rx) = ctl();
        let plain = |c: &Controller| {
            String::from_utf8(route(c, &Method::GET, "/metrics", b"").raw.unwrap().1).unwrap()
        };
        assert!(!plain(&c).contains("sata"), "no controller, no lines");
        let dvd = Arc::new(DriveStats::default());
        dvd.command(false);
        dvd.command(true);
        dvd.read(2048);
        c.set_sata(vec![
            DriveInfo {
                port: 0,
                kind: "disk",
                stats: Arc::new(DriveStats::default()),
            },
            DriveInfo {
                port: 1,
                kind: "dvd",
                stats: dvd,
            },
        ]);
        let text = plain(&c);
        for line in [
            "# TYPE tessera_vmm_sata_read_bytes_total counter",
            "tessera_vmm_sata_commands_total{port=\"1\",kind=\"dvd\"} 2",
            "tessera_vmm_sata_errors_total{port=\"1\",kind=\"dvd\"} 1",
            "tessera_vmm_sata_read_bytes_total{port=\"1\",kind=\"dvd\"} 2048",
            "tessera_vmm_sata_written_bytes_total{port=\"0\",kind=\"disk\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }
}
