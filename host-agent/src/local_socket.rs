//! The agent's API on a Unix socket, for a host without TLS: only the agent's own user (and
//! root) can ever connect. A loopback TCP port, by contrast, lets every local user drive the
//! agent: start VMs, import images, delete disks.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

/// Binds a listening socket at `path` that is never connectable by anyone but this user:
/// bound inside a fresh 0700 directory, made 0600, then renamed into place (a socket's mode
/// comes from the umask at bind; changing it after would leave a window). An old socket at
/// `path` is replaced; any other file there is an error.
pub fn bind_private(path: &Path) -> io::Result<tokio::net::UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| io::Error::other("the socket path has no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the socket path names no file"))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} exists and is not a socket",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let private = parent.join(format!(
        ".{}.{}.bind",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        let tmp = private.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        listener.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}
