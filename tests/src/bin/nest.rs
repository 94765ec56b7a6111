//! `nest`: runs scenarios of the nested harness in one L1 and copies L1's console to stdout.
//! `tests/nested/run.sh` is its front door; see there for the environment it reads.
//!
//! Usage: nest SCENARIO[,SCENARIO...]
//! Exit status: the last scenario's (its NEST-END rc), the first non-zero one if any, or 125
//! when L1 never reported the end of a scenario (overrun, with a diagnosis on stderr, or a
//! crash).

use std::io::Write;
use std::time::Duration;

use tessera_e2e::nested::{scenario_outcome, Spec};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() {
    let Some(list) = std::env::args().nth(1) else {
        eprintln!("usage: nest SCENARIO[,SCENARIO...]");
        std::process::exit(2);
    };
    let scenarios: Vec<&str> = list.split(',').collect();
    let mut spec = Spec::new(&scenarios.join("+"), &scenarios);
    spec.disk = env("NEST_DISK").map(Into::into);
    spec.hostfwd = env("NEST_HOSTFWD").and_then(|p| p.parse().ok());
    spec.args = env("NEST_ARGS")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    spec.budget = Duration::from_secs(
        env("NEST_TIMEOUT")
            .and_then(|t| t.parse().ok())
            .unwrap_or(600),
    );
    let budget = spec.budget;
    let mut l1 = match spec.start() {
        Ok(l1) => l1,
        Err(e) => {
            eprintln!("nest: {e}");
            std::process::exit(125);
        }
    };
    // Copy the console through as it grows.
    let mut shown = 0;
    let result = l1.wait_for("L1's power-off", budget, |text| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&text.as_bytes()[shown.min(text.len())..]);
        let _ = out.flush();
        shown = text.len();
        text.contains("NEST-DONE")
    });
    let text = match result {
        Ok(text) => text,
        Err(e) => {
            eprintln!("nest: {e}");
            std::process::exit(125);
        }
    };
    let mut rc = 0;
    for s in &scenarios {
        match scenario_outcome(&text, s) {
            Some(o) if rc == 0 => rc = o.rc,
            Some(_) => {}
            None => {
                eprintln!("nest: L1 never reported the end of {s}");
                std::process::exit(125);
            }
        }
    }
    std::process::exit(rc);
}
