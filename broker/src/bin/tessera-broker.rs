//! tessera-broker: the connection broker and management plane.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tessera_broker::config::BrokerConfig;
use tessera_broker::pki::{Pki, Usage};
use tessera_broker::store::Store;

const AFTER_HELP: &str = "\
Configuration (TOML):
  state_dir = \"/var/lib/tessera-broker\"      CA and certificates (pki/), default SQLite database
  database = \"sqlite:///var/lib/tessera-broker/broker.db\"   or postgres://user@host/db
  listen = \"0.0.0.0:8443\"                    client API (HTTPS)
  admin_listen = \"10.0.0.5:9443\"             admin API and /metrics apart (default: on listen)
  server_names = [\"broker.corp.example\"]     names in the API certificate, besides localhost
  directories = \"/etc/tessera/directories.toml\"   AD/LDAP (tessera-directory format); none: local accounts
  admins = [\"CN=vdi-admins,OU=Groups,DC=corp,DC=example\"]   directory users/groups who administer
  reconcile_interval_secs = 10
  session_idle_minutes = 60                  a session token dies unused this long...
  session_max_hours = 10                     ...or this long after the logon

Adding a host with a join token (the agent makes its key; the broker certifies and registers it):
  tessera-broker -c broker.toml join-token --host host-01
  (on the host) tessera-agent -c agent.toml join --broker https://broker.corp.example:8443 \\
                    --token TSJ1.... --address https://host-01.corp.example:8443
Or with certificates made here and copied to the host:
  tessera-broker -c broker.toml agent-cert host-01 host-01.corp.example 10.0.0.11
  tessera-broker -c broker.toml add-host host-01 https://host-01.corp.example:8443
Rotating a host's key (a re-join; the old certificate is revoked), or retiring a host:
  tessera-broker -c broker.toml rotate-host-cert host-01
  tessera-broker -c broker.toml revoke-host host-01

Local accounts (the break-glass admin, all-in-one users):
  echo 'S3cret!pass' | tessera-broker -c broker.toml add-account demo --display-name 'Demo User'";

/// Tessera's connection broker: users, pools, desktops, hosts.
#[derive(Parser)]
#[command(name = "tessera-broker", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        default_value = "/etc/tessera/broker.toml",
        env = "TESSERA_BROKER_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the broker: client API and pool reconciliation.
    Serve,
    /// Make a one-time token with which host HOST's agent joins (`tessera-agent join`); it
    /// pins this broker's CA, so the agent cannot be fooled into joining another, and admits
    /// that host only: a name already registered is refused unless --rejoin.
    JoinToken {
        /// The host the token admits (its agent's name).
        #[arg(long)]
        host: String,
        /// Let an existing host join again with a new key (its old certificate is revoked).
        #[arg(long)]
        rejoin: bool,
        /// Minutes the token stays valid.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=10080))]
        ttl_minutes: u64,
    },
    /// Rotate a host's key and certificate: a re-join token for HOST; when its agent joins
    /// with it, the host's old certificate is revoked and refused from then on.
    RotateHostCert {
        /// The host.
        host: String,
        /// Minutes the token stays valid.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=10080))]
        ttl_minutes: u64,
    },
    /// Revoke every certificate of HOST (retired, or its key exposed): the broker refuses it
    /// within a host poll (reconcile_interval_secs).
    RevokeHost {
        /// The host.
        host: String,
    },
    /// Issue a host's agent certificate (and print where the CA, certificate and key are).
    AgentCert {
        /// Host name (the certificate's name).
        name: String,
        /// DNS names and IP addresses the agent is reached at.
        names: Vec<String>,
    },
    /// Register a host by its agent's URL.
    AddHost {
        /// Host name.
        name: String,
        /// https://host:port of its agent.
        url: String,
    },
    /// Add a golden image (version 1): a base disk, and either a kernel and initrd for Linux
    /// direct boot or UEFI firmware that boots the disk (OVMF_CODE_4M.fd, its OVMF_VARS_4M.fd
    /// template beside it: each desktop gets its own copy). Paths must be readable on the
    /// hosts (the agents import the disk; kernel and firmware come from their image library).
    AddImage {
        /// Image name.
        name: String,
        /// Base disk (qcow2 or raw).
        #[arg(long)]
        disk: PathBuf,
        /// Kernel.
        #[arg(long, required_unless_present = "firmware")]
        kernel: Option<PathBuf>,
        /// UEFI firmware instead of a kernel.
        #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline"])]
        firmware: Option<PathBuf>,
        /// Initrd.
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Kernel command line; `{desktop}` in it becomes each desktop's name (e.g.
        /// `hostname={desktop}`, or `name={desktop}` for the demo desktop guest).
        #[arg(long)]
        cmdline: Option<String>,
        /// Hyper-V enlightenments for its desktops (Windows images).
        #[arg(long)]
        hyperv: bool,
        /// A TPM 2.0 for each desktop (Windows 11 images; the hosts need swtpm), kept by
        /// its host with the desktop.
        #[arg(long)]
        tpm: bool,
    },
    /// Add a desktop pool from a TOML file of its settings (see PoolSpec: name, display_name,
    /// image, image_version, assignment, clone_kind, naming, min/max/spare_desktops,
    /// power_policy, refresh_on_logoff, vcpus, memory_mib).
    AddPool {
        /// The pool's settings.
        spec: PathBuf,
    },
    /// Entitle a local account, or a directory group (--group DN --directory NAME), to a pool.
    Entitle {
        /// Pool name.
        pool: String,
        /// Local account name.
        #[arg(long, conflicts_with = "group")]
        local: Option<String>,
        /// Directory group DN (nested members included).
        #[arg(long, requires = "directory")]
        group: Option<String>,
        /// Directory name for --group.
        #[arg(long)]
        directory: Option<String>,
    },
    /// Create a local account; the password is read from standard input.
    AddAccount {
        /// Account name.
        name: String,
        /// Display name.
        #[arg(long, default_value = "")]
        display_name: String,
        /// May administer the broker.
        #[arg(long)]
        admin: bool,
        /// The password is temporary: the user must change it (tessera-client asks) before
        /// the first sign-in, as AD's "must change password at next logon".
        #[arg(long)]
        must_change_password: bool,
    },
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = BrokerConfig::load(&cli.config).map_err(anyhow::Error::msg)?;
    match cli.cmd {
        Cmd::Serve => tessera_broker::server::run(cfg)
            .await
            .map_err(anyhow::Error::msg)?,
        Cmd::JoinToken {
            host,
            rejoin,
            ttl_minutes,
        } => join_token(&cfg, &host, rejoin, ttl_minutes).await?,
        Cmd::RotateHostCert { host, ttl_minutes } => {
            join_token(&cfg, &host, true, ttl_minutes).await?
        }
        Cmd::RevokeHost { host } => {
            let store = Store::open(&cfg.database_url()).await?;
            let n = store.revoke_host_certificates(&host).await?;
            println!("{n} certificate(s) of {host} revoked");
        }
        Cmd::AgentCert { name, names } => {
            let pki = Pki::open(&cfg.host_pki_dir())?;
            let (c, k) = pki.issue(&name, &names, Usage::Server)?;
            let (bc, _) = pki.issue(
                "broker-client",
                &["tessera-broker".to_string()],
                Usage::Client,
            )?;
            println!(
                "ca = {}\ncert = {}\nkey = {}",
                pki.ca_path().display(),
                c.display(),
                k.display()
            );
            println!(
                "# the agent's [tls] client_ca is the CA above; the broker presents {}",
                bc.display()
            );
        }
        Cmd::AddHost { name, url } => {
            let store = Store::open(&cfg.database_url()).await?;
            let id = store.register_host(&name, &url).await?;
            println!("host {name} registered ({id}); the broker polls it from now on");
        }
        Cmd::AddImage {
            name,
            disk,
            kernel,
            firmware,
            initrd,
            cmdline,
            hyperv,
            tpm,
        } => {
            let store = Store::open(&cfg.database_url()).await?;
            let size = std::fs::metadata(&disk)
                .with_context(|| disk.display().to_string())?
                .len();
            let abs = |p: &PathBuf| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            };
            let init = initrd.as_ref().map(abs);
            let kern = kernel.as_ref().map(abs);
            let id = store
                .create_image(
                    &name,
                    &abs(&disk),
                    size as i64,
                    kern.as_deref(),
                    init.as_deref(),
                    cmdline.as_deref(),
                )
                .await?;
            if let Some(f) = &firmware {
                store.set_image_firmware(&id, 1, &abs(f)).await?;
            }
            if hyperv || tpm {
                store.set_image_devices(&id, 1, hyperv, tpm).await?;
            }
            println!("image {name} added");
        }
        Cmd::AddPool { spec } => {
            let text =
                std::fs::read_to_string(&spec).with_context(|| spec.display().to_string())?;
            let spec: tessera_broker::store::pools::PoolSpec =
                toml::from_str(&text).with_context(|| spec.display().to_string())?;
            let store = Store::open(&cfg.database_url()).await?;
            let p = store.create_pool(&spec).await?;
            println!("pool {} added; the reconciler provisions it", p.spec.name);
        }
        Cmd::Entitle {
            pool,
            local,
            group,
            directory,
        } => {
            use tessera_broker::store::pools::Principal;
            let store = Store::open(&cfg.database_url()).await?;
            let p = store.pool_by_name(&pool).await?;
            let who = match (local, group, directory) {
                (Some(name), None, _) => Principal::Local { name },
                (None, Some(dn), Some(directory)) => Principal::Group { directory, dn },
                _ => anyhow::bail!("give --local NAME, or --group DN --directory NAME"),
            };
            store.entitle(&p.id, &who).await?;
            println!("entitled to {pool}");
        }
        Cmd::AddAccount {
            name,
            display_name,
            admin,
            must_change_password,
        } => {
            let mut pw = String::new();
            std::io::stdin()
                .read_line(&mut pw)
                .context("reading the password")?;
            let store = Store::open(&cfg.database_url()).await?;
            store
                .create_local_account(
                    &name,
                    &display_name,
                    pw.trim_end_matches(['\r', '\n']),
                    admin,
                )
                .await?;
            if must_change_password {
                store.set_local_must_change(&name, true).await?;
            }
            println!("account {name} created");
        }
    }
    Ok(())
}

/// Prints a (re-)join token for `host` and the agent's command.
async fn join_token(
    cfg: &BrokerConfig,
    host: &str,
    rejoin: bool,
    ttl_minutes: u64,
) -> anyhow::Result<()> {
    let pki = Pki::open(&cfg.pki_dir())?;
    let store = Store::open(&cfg.database_url()).await?;
    let (token, expires) = tessera_broker::host_join::new_token(
        &store,
        &pki,
        "tessera-broker",
        host,
        rejoin,
        std::time::Duration::from_secs(ttl_minutes * 60),
    )
    .await?;
    println!("{token}");
    let what = if rejoin {
        "re-join (its old certificate is then revoked)"
    } else {
        "join"
    };
    eprintln!(
        "Host {host} may {what} with this token in the next {ttl_minutes} minutes (until {expires} \
         Unix ms):\n  tessera-agent -c agent.toml join --broker https://BROKER:PORT --token {token} \
         --address https://HOST:PORT"
    );
    Ok(())
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera-broker: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("tessera-broker: {e:#}");
        std::process::exit(1);
    }
}
