//! The tessera-display binary: started by tessera-vmm, never by hand.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

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
        env = "TESSERA_LOG"
    )]
    log: String,
}

fn main() -> ExitCode {
    tessera_display::sandbox::close_inherited();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
