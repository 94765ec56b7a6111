//! tessera-agent: run a host for the Tessera broker.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;

const AFTER_HELP: &str = "\
Configuration (TOML; every key is described in host-agent/src/config.rs):
  name = \"host-01\"                      default: the machine's host name
  listen = \"0.0.0.0:8443\"
  state_dir = \"/var/lib/tessera-agent\"  VM definitions, control sockets, console logs
  vmm = \"/usr/bin/tessera-vmm\"          default: next to tessera-agent, else on PATH
  [[datastore]]
  name = \"ds1\"
  path = \"/srv/tessera/ds1\"
  [tls]                                 required unless listening on loopback
  cert = \"/etc/tessera/agent.pem\"
  key = \"/etc/tessera/agent.key\"
  client_ca = \"/etc/tessera/ca.pem\"     only clients signed by this CA (the broker) get in

VMs keep running when the agent stops or restarts; the agent finds them again at start.
Logs go to stderr (TESSERA_LOG=info,tessera_agent=debug ...).";

/// Run this host for the Tessera broker: datastores, linked clones, and one tessera-vmm per VM.
#[derive(Parser)]
#[command(name = "tessera-agent", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        default_value = "/etc/tessera/agent.toml",
        env = "TESSERA_AGENT_CONFIG"
    )]
    config: PathBuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let cfg = match tessera_agent::config::AgentConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tessera-agent: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera-agent: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!(listen = %cfg.listen, "tessera-agent starting");
    if let Err(e) = rt.block_on(tessera_agent::serve(cfg, None)) {
        eprintln!("tessera-agent: {e}");
        std::process::exit(1);
    }
}
