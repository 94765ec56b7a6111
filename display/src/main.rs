//! The tessera-display binary: started by tessera-vmm, never by hand.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const ABOUT: &str = "\
One VM's SPICE display, in a process of its own. tessera-vmm starts it for a VM with a
display (--display or [display]), passes it the guest's video memory and a control socket on
standard input, and restarts it if it dies, so no SPICE client can crash the desktop.

It is found next to tessera-vmm, or where TESSERA_DISPLAY points. It takes no settings of its
own: the VM's [display] table configures it.";

/// One VM's SPICE display; started by tessera-vmm.
#[derive(Parser, Debug)]
#[command(name = "tessera-display", version, about, long_about = ABOUT)]
struct Cli {
    /// Log filter for messages on stderr (tessera-vmm passes its own).
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "warn",
        env = "TESSERA_LOG",
        value_parser = log_filter
    )]
    log: String,
}

fn main() -> ExitCode {
    tessera_display::sandbox::close_inherited();
    let cli = Cli::parse();
    // `Targets` rather than `EnvFilter`: the same `target=level` directives without the
    // regex engine behind EnvFilter's span filters, 250 KiB of text that every start would
    // map (BENCHMARKS.md, bench-vmm (c)). `--log` was checked when parsed.
    let filter = cli
        .log
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::WARN));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                )
                .with_filter(filter),
        )
        .init();
    match tessera_display::serve::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-display: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks a `--log` filter: a default level and `target=level` directives, comma-separated
/// (tracing-subscriber's `Targets`), so that a typo is an error rather than silence.
fn log_filter(s: &str) -> Result<String, tracing_subscriber::filter::ParseError> {
    s.parse::<Targets>().map(|_| s.to_owned())
}
