//! Fuzzes the VMM's control API behind the HTTP layer: any method, path and body reach the
//! router, its JSON parsing and the controller of a VM without vCPUs.
#![no_main]

use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tessera_vmm::api::routes::route;
use tessera_vmm::arch::x86_64::boot::KernelFormat;
use tessera_vmm::controller::{Controller, VmFacts};
use tessera_vmm::devices::legacy::debug_port::BootTimes;
use tessera_vmm::exit::{ExitReason, ExitSender};
use tessera_vmm::vstate::vcpu::RunControl;

struct Rig {
    ctl: Controller,
    exits: Mutex<mpsc::Receiver<ExitReason>>,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        Rig {
            ctl: Controller::new(
                Instant::now(),
                VmFacts {
                    vcpus: 1,
                    memory: 64 << 20,
                    kernel_format: Some(KernelFormat::Elf),
                    seccomp: false,
                },
                Arc::new(RunControl::default()),
                ExitSender::new(tx),
                Arc::new(Mutex::new(BootTimes::default())),
            ),
            exits: Mutex::new(rx),
        }
    })
}

const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"];
const PATHS: [&str; 9] = [
    "/vm",
    "/vm/pause",
    "/vm/resume",
    "/vm/shutdown",
    "/vm/kill",
    "/display",
    "/display/ticket",
    "/display/disconnect",
    "/display/screenshot",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let method: axum::http::Method = METHODS[usize::from(pick) % METHODS.len()]
        .parse()
        .expect("a method");
    // Half the inputs take a known path, half a path of their own.
    let (path, body) = if pick & 0x80 == 0 {
        (
            PATHS[usize::from(pick >> 3) % PATHS.len()].to_string(),
            rest,
        )
    } else {
        let cut = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        (
            String::from_utf8_lossy(&rest[..cut]).into_owned(),
            &rest[cut.min(rest.len())..],
        )
    };
    let r = rig();
    let _ = route(&r.ctl, &method, &path, body);
    // A shutdown or kill only asks the main thread; drain the requests.
    while r.exits.lock().expect("lock").try_recv().is_ok() {}
    let _ = r.ctl.resume();
});
