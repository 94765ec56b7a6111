//! tessera-directory: test a directory configuration step by step, look users and groups up,
//! watch entitled groups, and manage computer accounts for clones.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tessera_directory::sync::SyncEngine;
use tessera_directory::{config, login, Directories, DirectoryClient};

const AFTER_HELP: &str = "\
The configuration file holds one [[directory]] table per domain or LDAP tree (see the README
of tessera-directory for every key). Passwords are read from standard input, never from the
command line.

Examples:
  Check a configuration end to end, with the time of each step:
    echo 'Al1ce!Passw0rd' | tessera-directory -c directories.toml test --user alice
  Sign a user in once, as the broker does (exit status 0: signed in):
    echo 'Al1ce!Passw0rd' | tessera-directory -c directories.toml auth --user alice
  Find users and groups for an entitlement:
    tessera-directory -c directories.toml users ali
    tessera-directory -c directories.toml groups vdi-
    tessera-directory -c directories.toml members vdi-users
  Watch entitled groups and print membership events as JSON lines:
    tessera-directory -c directories.toml sync vdi-users vdi-gpu --interval 30
  Computer accounts for clones (Active Directory):
    tessera-directory -c directories.toml computer create vdi-lc-042

Exit status: 0 success, 1 failure (the message says which step and why), 2 usage.";

/// Test and use Tessera's directory (Active Directory / LDAP) configuration.
#[derive(Parser)]
#[command(name = "tessera-directory", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Directory configuration (TOML).
    #[arg(short, long, env = "TESSERA_DIRECTORIES", value_name = "FILE")]
    config: PathBuf,
    /// Which directory (by name); default: the first, or the one a login's domain selects.
    #[arg(short, long, global = true)]
    directory: Option<String>,
    /// Output JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Connect to each server (TLS details), bind the service account, and with --user find
    /// and authenticate that user (password on stdin) and list their groups.
    Test {
        /// A login to try: alice, alice@realm or DOMAIN\alice.
        #[arg(long)]
        user: Option<String>,
    },
    /// Sign USER in once, exactly as the broker does (find the user with the service account,
    /// bind as the user on a fresh connection, read the nested groups), with the password on
    /// stdin; prints the user's DN (--json: the whole identity).
    Auth {
        /// The login: alice, alice@realm or DOMAIN\alice.
        #[arg(long)]
        user: String,
    },
    /// Users whose name starts with PREFIX.
    Users {
        /// Name prefix (empty: everyone, up to --limit).
        #[arg(default_value = "")]
        prefix: String,
        /// Most results.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Groups whose name starts with PREFIX.
    Groups {
        /// Name prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// Most results.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Every member of GROUP (name or DN), nested groups included.
    Members {
        /// The group.
        group: String,
        /// Most results.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Watch GROUPS and print membership events (JSON lines) as they happen.
    Sync {
        /// Entitled groups (names or DNs).
        #[arg(required = true)]
        groups: Vec<String>,
        /// Seconds between polls.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Seconds between full recomputations.
        #[arg(long, default_value_t = 3600)]
        full_resync: u64,
        /// Poll once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Computer accounts for clones (Active Directory).
    Computer {
        #[command(subcommand)]
        action: ComputerCmd,
    },
}

#[derive(Subcommand)]
enum ComputerCmd {
    /// Create NAME in the computer OU (or reuse it) with a random password, printed once.
    Create {
        /// NetBIOS name, 15 characters at most.
        name: String,
    },
    /// Give NAME a new random password, printed once.
    Reset {
        /// The computer.
        name: String,
    },
    /// Disable NAME.
    Disable {
        /// The computer.
        name: String,
    },
    /// Enable NAME.
    Enable {
        /// The computer.
        name: String,
    },
    /// Delete NAME.
    Delete {
        /// The computer.
        name: String,
    },
}

fn step(started: Instant, what: &str, outcome: &str) {
    println!(
        "[{:>9.1} ms] {what}: {outcome}",
        started.elapsed().as_secs_f64() * 1000.0
    );
}

fn pick<'a>(dirs: &'a Directories, name: &Option<String>) -> Result<&'a DirectoryClient> {
    match name {
        Some(n) => dirs
            .get(n)
            .with_context(|| format!("no directory named {n:?}")),
        None => Ok(&dirs.clients()[0]),
    }
}

async fn test(dirs: &Directories, cli: &Cli, user: Option<&str>) -> Result<()> {
    let client = pick(dirs, &cli.directory)?;
    let d = client.directory();
    println!("directory {} ({:?})", d.config.name, d.config.kind);
    let mut reachable = 0;
    for url in &d.config.urls {
        let single = config::validate(config::DirectoryConfig {
            urls: vec![url.clone()],
            ..d.config.clone()
        })?;
        let probe = DirectoryClient::new(single)?;
        let t = Instant::now();
        match probe.connect().await {
            Ok((mut ldap, _)) => {
                step(t, &format!("connect {url}"), "ok");
                let cert = ldap.get_peer_certificate().await.ok().flatten();
                match cert {
                    Some(der) => println!(
                        "               TLS: {}",
                        tessera_directory::tls::describe_certificate(&der)
                    ),
                    None => println!("               TLS: none (plain LDAP)"),
                }
                let _ = ldap.unbind().await;
                reachable += 1;
            }
            Err(e) => step(t, &format!("connect {url}"), &format!("FAILED: {e}")),
        }
    }
    if reachable == 0 {
        bail!("no server of {} is reachable", d.config.name);
    }
    let t = Instant::now();
    let (mut svc, url) = client.service_connection().await?;
    step(
        t,
        &format!("service bind as {} on {url}", d.config.service_dn),
        "ok",
    );
    let _ = svc.unbind().await;
    let Some(user) = user else { return Ok(()) };
    let parsed = login::parse(user)?;
    let t = Instant::now();
    let found = client.find_user(&parsed).await?;
    match &found {
        Some(e) => step(t, &format!("find {user}"), &e.dn),
        None => {
            step(t, &format!("find {user}"), "no such user");
            bail!("user {user:?} not found in {}", d.config.user_base);
        }
    }
    let password = read_password()?;
    let t = Instant::now();
    let id = dirs.authenticate(user, &password).await;
    match id {
        Ok(id) => {
            step(t, &format!("authenticate {user}"), "ok");
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&id)?);
            } else {
                println!("               dn: {}", id.dn);
                println!("               guid: {}", id.guid.as_deref().unwrap_or("-"));
                println!("               sid: {}", id.sid.as_deref().unwrap_or("-"));
                println!("               upn: {}", id.upn.as_deref().unwrap_or("-"));
                println!(
                    "               name: {}",
                    id.display_name.as_deref().unwrap_or("-")
                );
                println!("               mail: {}", id.mail.as_deref().unwrap_or("-"));
                let names: Vec<&str> = id.groups.iter().map(|g| g.name.as_str()).collect();
                println!(
                    "               groups ({}): {}",
                    names.len(),
                    names.join(", ")
                );
            }
            Ok(())
        }
        Err(e) => {
            step(t, &format!("authenticate {user}"), &format!("FAILED: {e}"));
            Err(e.into())
        }
    }
}

/// One sign-in; a failure is the error, so the exit status tells scripts the outcome.
async fn auth(dirs: &Directories, cli: &Cli, user: &str) -> Result<()> {
    let password = read_password()?;
    let id = dirs
        .authenticate(user, &password)
        .await
        .with_context(|| format!("sign-in of {user}"))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&id)?);
    } else {
        println!("{}", id.dn);
    }
    Ok(())
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn run(cli: Cli) -> Result<()> {
    let dirs = Directories::new(config::load(&cli.config)?)?;
    match &cli.cmd {
        Cmd::Test { user } => test(&dirs, &cli, user.as_deref()).await?,
        Cmd::Auth { user } => auth(&dirs, &cli, user).await?,
        Cmd::Users { prefix, limit } => {
            let v = pick(&dirs, &cli.directory)?
                .search_users(prefix, *limit)
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for u in v {
                    let state = if u.enabled { "" } else { "  (disabled)" };
                    println!(
                        "{:<20} {:<30} {}{state}",
                        u.login,
                        u.display_name.unwrap_or_default(),
                        u.dn
                    );
                }
            }
        }
        Cmd::Groups { prefix, limit } => {
            let v = pick(&dirs, &cli.directory)?
                .search_groups(prefix, *limit)
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for g in v {
                    println!("{:<30} {}", g.name, g.dn);
                }
            }
        }
        Cmd::Members { group, limit } => {
            let c = pick(&dirs, &cli.directory)?;
            let g = c.find_group(group).await?;
            let v = c.group_members(&g.dn, *limit).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{} ({} members, nested included)", g.dn, v.len());
                for u in v {
                    println!("  {:<20} {}", u.login, u.dn);
                }
            }
        }
        Cmd::Sync {
            groups,
            interval,
            full_resync,
            once,
        } => {
            let c = pick(&dirs, &cli.directory)?;
            let mut engine = SyncEngine::new(c, groups, Duration::from_secs(*full_resync)).await?;
            loop {
                for e in engine.poll().await? {
                    println!("{}", serde_json::to_string(&e)?);
                }
                if *once {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(*interval)).await;
            }
        }
        Cmd::Computer { action } => {
            let c = pick(&dirs, &cli.directory)?;
            match action {
                ComputerCmd::Create { name } => {
                    let a = c.create_or_reuse_computer(name).await?;
                    let how = if a.created { "created" } else { "reused" };
                    println!("{how} {}\npassword: {}", a.dn, a.password);
                }
                ComputerCmd::Reset { name } => {
                    println!("password: {}", c.reset_computer_password(name).await?);
                }
                ComputerCmd::Disable { name } => c.set_computer_enabled(name, false).await?,
                ComputerCmd::Enable { name } => c.set_computer_enabled(name, true).await?,
                ComputerCmd::Delete { name } => c.delete_computer(name).await?,
            }
        }
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera-directory: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("tessera-directory: {e:#}");
        std::process::exit(1);
    }
}
