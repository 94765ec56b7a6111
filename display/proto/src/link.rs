//! The socket between the VMM and its display process: length-prefixed JSON messages, and
//! the two descriptors handed over at start.
//!
//! A message is a 4-byte little-endian length and that many bytes of JSON. Stream sockets
//! (not datagrams) so that either side sees the other's death as end-of-file.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// The largest message either side accepts (a frame's dirty log is 512 bytes of bitmap).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why a message did not get through.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The other side closed its end (it exited or died).
    #[error("the other side closed the link")]
    Closed,
    /// The socket failed (or a read timed out).
    #[error("link: {0}")]
    Io(#[from] std::io::Error),
    /// A length past [`MAX_MESSAGE`].
    #[error("a message of {0} bytes (at most {MAX_MESSAGE} are accepted)")]
    TooLong(usize),
    /// Not the JSON of the expected message.
    #[error("a malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Descriptor passing failed, or the descriptors were not the expected ones.
    #[error("descriptor passing: {0}")]
    Fds(String),
}

/// One end of the socket. Any thread may send (messages never interleave); one thread reads.
#[derive(Debug)]
pub struct Link {
    stream: UnixStream,
    writing: Mutex<()>,
}

impl Link {
    /// Wraps a connected stream socket.
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            writing: Mutex::new(()),
        }
    }

    /// Makes [`Link::recv`] fail after `timeout` without a message (None: wait forever). A
    /// timeout may leave half a message unread: the link is then unusable.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), LinkError> {
        Ok(self.stream.set_read_timeout(timeout)?)
    }

    /// Sends one message.
    pub fn send<T: Serialize>(&self, message: &T) -> Result<(), LinkError> {
        let mut bytes = vec![0u8; 4];
        serde_json::to_writer(&mut bytes, message)?;
        let len = bytes.len() - 4;
        if len > MAX_MESSAGE {
            return Err(LinkError::TooLong(len));
        }
        bytes[..4].copy_from_slice(&(len as u32).to_le_bytes());
        let _one_at_a_time = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        (&self.stream)
            .write_all(&bytes)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    LinkError::Closed
                }
                _ => LinkError::Io(e),
            })
    }

    /// Receives one message (one reader at a time).
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T, LinkError> {
        let mut len = [0u8; 4];
        read_exact(&self.stream, &mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_MESSAGE {
            return Err(LinkError::TooLong(len));
        }
        let mut body = vec![0u8; len];
        read_exact(&self.stream, &mut body)?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Closes both directions: the other side's reads end, and so do ours.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn read_exact(mut stream: &UnixStream, buf: &mut [u8]) -> Result<(), LinkError> {
    stream.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            LinkError::Closed
        }
        _ => LinkError::Io(e),
    })
}

const VIDEO: u8 = b'v';
const CONTROL: u8 = b'c';

/// Hands video memory and the control socket to the display process over `events`.
pub fn send_fds(events: &UnixStream, video: &File, control: OwnedFd) -> Result<(), LinkError> {
    let fds_err = |e: vmm_sys_util::errno::Error| LinkError::Fds(e.to_string());
    events
        .send_with_fd(&[VIDEO][..], video.as_raw_fd())
        .map_err(fds_err)?;
    events
        .send_with_fd(&[CONTROL][..], control.as_raw_fd())
        .map_err(fds_err)?;
    // Ours is a copy: the descriptor now also lives in the other process.
    drop(control);
    Ok(())
}

/// Receives what [`send_fds`] sent: video memory and the control socket.
pub fn recv_fds(events: &UnixStream) -> Result<(File, UnixStream), LinkError> {
    let one = |want: u8| -> Result<File, LinkError> {
        let mut byte = [0u8; 1];
        let (n, file) = events
            .recv_with_fd(&mut byte)
            .map_err(|e| LinkError::Fds(e.to_string()))?;
        match (n, file) {
            (0, _) => Err(LinkError::Closed),
            (1, Some(f)) if byte[0] == want => Ok(f),
            _ => Err(LinkError::Fds(format!(
                "expected the {:?} descriptor",
                want as char
            ))),
        }
    };
    let video = one(VIDEO)?;
    let control = UnixStream::from(OwnedFd::from(one(CONTROL)?));
    Ok((video, control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_and_bad_ones_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (Link::new(a), Link::new(b));
        a.send(&crate::Event::Key { scancode: 1 }).unwrap();
        assert_eq!(
            b.recv::<crate::Event>().unwrap(),
            crate::Event::Key { scancode: 1 }
        );

        // A length past the limit is refused before anything is allocated for it.
        (&a.stream).write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(matches!(
            b.recv::<crate::Event>(),
            Err(LinkError::TooLong(_))
        ));
        // Garbage JSON.
        (&a.stream).write_all(&3u32.to_le_bytes()).unwrap();
        (&a.stream).write_all(b"{x}").unwrap();
        assert!(matches!(
            b.recv::<crate::Event>(),
            Err(LinkError::Malformed(_))
        ));
        // Half a message, then the writer dies.
        (&a.stream).write_all(&10u32.to_le_bytes()).unwrap();
        drop(a);
        assert!(matches!(b.recv::<crate::Event>(), Err(LinkError::Closed)));
    }

    #[test]
    fn descriptors_cross() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut video = tempfile();
        video.write_all(b"pixels").unwrap();
        let (c1, c2) = UnixStream::pair().unwrap();
        send_fds(&a, &video, OwnedFd::from(c1)).unwrap();
        let (mut v, c) = recv_fds(&b).unwrap();
        let mut s = String::new();
        use std::io::Seek;
        v.seek(std::io::SeekFrom::Start(0)).unwrap();
        v.read_to_string(&mut s).unwrap();
        assert_eq!(s, "pixels");
        let (c, c2) = (Link::new(c), Link::new(c2));
        c.send(&crate::Command::Disconnect).unwrap();
        assert_eq!(
            c2.recv::<crate::Command>().unwrap(),
            crate::Command::Disconnect
        );
        // Nothing more: end of file.
        drop(a);
        assert!(matches!(recv_fds(&b), Err(LinkError::Closed)));
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!("tessera-link-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
