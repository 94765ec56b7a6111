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
  console_log_max_mib = 16              each VM's console.log is rotated at this size
  library = \"/var/lib/tessera/library\"  golden images, kernels, initrds: the only place imports
                                        and VM kernels may come from (default shown)
  [[datastore]]
  name = \"ds1\"
  path = \"/srv/tessera/ds1\"
  [tls]                                 required unless listening on loopback
  cert = \"/etc/tessera/agent.pem\"
  key = \"/etc/tessera/agent.key\"
  client_ca = \"/etc/tessera/ca.pem\"     only clients signed by this CA (the broker) get in

Joining a broker (once per host; writes the [tls] files, the key never leaves the host):
  on the broker:  tessera-broker -c broker.toml join-token
  on the host:    tessera-agent -c agent.toml join --broker https://broker.corp.example:8443 \
                      --token TSJ1.... --address https://host-01.corp.example:8443
  then start the agent (no subcommand) as a service.

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
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Join a broker with a one-time token: check the broker's CA against the token, make a
    /// key pair here, get it certified, write the [tls] files and register this host.
    Join {
        /// The broker's API: https://HOST:PORT.
        #[arg(long)]
        broker: String,
        /// The token from `tessera-broker join-token` (or env TESSERA_JOIN_TOKEN, which keeps
        /// it out of the process list).
        #[arg(long, env = "TESSERA_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Where the broker reaches this agent: https://HOST:PORT (HOST goes into the
        /// certificate).
        #[arg(long)]
        address: String,
    },
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
    if let Some(Cmd::Join {
        broker,
        token,
        address,
    }) = cli.cmd
    {
        std::process::exit(join(&rt, &cfg, &broker, &token, &address));
    }
    tracing::info!(listen = %cfg.listen, "tessera-agent starting");
    if let Err(e) = rt.block_on(tessera_agent::serve(cfg, None)) {
        eprintln!("tessera-agent: {e}");
        std::process::exit(1);
    }
}

fn join(
    rt: &tokio::runtime::Runtime,
    cfg: &tessera_agent::config::AgentConfig,
    broker: &str,
    token: &str,
    address: &str,
) -> i32 {
    let Some(tls) = &cfg.tls else {
        eprintln!("tessera-agent: join needs a [tls] section: the paths of the certificate, key and CA it writes");
        return 2;
    };
    let token = match token.parse::<tessera_agent::join::JoinToken>() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tessera-agent: {e}");
            return 2;
        }
    };
    let name = cfg.host_name();
    match rt.block_on(tessera_agent::join::join(
        broker, &token, &name, address, tls,
    )) {
        Ok(r) => {
            println!(
                "joined {broker} as host {name} ({}); wrote {}, {} and {}.\nStart the agent now; the broker polls it at {address}.",
                r.host_id,
                tls.cert.display(),
                tls.key.display(),
                tls.client_ca.display()
            );
            0
        }
        Err(e) => {
            eprintln!("tessera-agent: join failed: {e}");
            1
        }
    }
}
