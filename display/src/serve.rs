//! The display process from start to end: take the descriptors and settings from the VMM,
//! map video memory, start SPICE, lock the process down, then serve until the VMM goes.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use tessera_display_proto::{recv_fds, Command, Event, Link, LinkError, Outcome, Settings};
use tessera_spice::{Config, Server, SpiceError, TlsFiles};

use crate::forward::{Clients, Forward};
use crate::refresh::Refresh;
use crate::sandbox::{self, SandboxError};
use crate::video::{Video, VideoError};

/// Why the display process stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Standard input is not the VMM's socket.
    #[error("standard input is not tessera-vmm's socket (this program is started by tessera-vmm, one per VM with a display): {0}")]
    NotFromVmm(std::io::Error),
    /// The link to the VMM failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Video memory.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// SPICE did not start.
    #[error(transparent)]
    Spice(#[from] SpiceError),
    /// The seccomp filter could not be installed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A thread could not start.
    #[error("cannot start the control thread: {0}")]
    Thread(std::io::Error),
}

/// Serves the VM whose VMM is on standard input, until it goes.
pub fn run() -> Result<(), ServeError> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(ServeError::NotFromVmm)?;
    let events = UnixStream::from(stdin);
    let (video, control) = recv_fds(&events)?;
    let link = Arc::new(Link::new(events));
    let settings: Settings = link.recv()?;
    let video = Arc::new(Video::map(video, settings.video_memory)?);
    let config = Config {
        name: settings.name.clone(),
        address: settings.address,
        port: settings.port,
        tls: settings.tls.as_ref().map(|t| TlsFiles {
            port: t.port,
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
        }),
        compression: settings.compression,
    };
    let clients = Arc::new(Clients::default());
    let forward = Arc::new(Forward::new(link.clone(), clients.clone()));
    // A small placeholder surface until the guest sets a mode.
    let server = Arc::new(Mutex::new(Server::start(
        &config,
        forward.clone(),
        640,
        480,
    )?));
    let control = Link::new(control);
    let commands = server.clone();
    std::thread::Builder::new()
        .name("display-control".into())
        .spawn(move || serve_commands(&control, &commands))
        .map_err(ServeError::Thread)?;
    // Everything that needs files, new sockets or new processes is done: from here on the
    // process only serves the sockets it has.
    sandbox::apply()?;
    link.send(&Event::Ready)?;
    tracing::info!(address = %settings.address, port = ?settings.port,
        tls_port = ?settings.tls.as_ref().map(|t| t.port), "SPICE display serving");
    let refresh = Refresh {
        link,
        video,
        server,
        fps: settings.fps,
        clients,
        forward,
    };
    match refresh.run() {
        Err(LinkError::Closed) => Ok(()),
        other => other.map_err(ServeError::from),
    }
}

/// Answers the VMM's commands until it closes the control socket; then the whole process
/// ends (its VMM is gone).
fn serve_commands(control: &Link, server: &Mutex<Server>) {
    loop {
        let command = match control.recv::<Command>() {
            Ok(c) => c,
            Err(LinkError::Closed) => std::process::exit(0),
            Err(e) => {
                tracing::error!(error = %e, "display: the control link failed");
                std::process::exit(1);
            }
        };
        let server = server.lock().unwrap_or_else(|p| p.into_inner());
        let done = match command {
            Command::SetTicket {
                ticket,
                lifetime_secs,
            } => server.set_ticket(&ticket, std::time::Duration::from_secs(lifetime_secs)),
            Command::ClearTicket => server.clear_ticket(),
            Command::Disconnect => server.disconnect_clients(),
        };
        drop(server);
        let outcome = match done {
            Ok(()) => Outcome::Done,
            Err(SpiceError::Config(message)) => Outcome::Refused { message },
            Err(e) => Outcome::Failed {
                message: e.to_string(),
            },
        };
        if control.send(&outcome).is_err() {
            std::process::exit(0);
        }
    }
}
