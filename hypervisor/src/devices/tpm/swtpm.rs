//! The TPM behind the CRB device: swtpm (Debian's `swtpm`, on libtpms), a process of its own,
//! reached over two Unix sockets. The TPM's C code parses what the guest sends; it runs
//! outside the VMM, under swtpm's own seccomp profile.
//!
//! The control channel speaks swtpm's protocol for non-CUSE TPMs (a big-endian command code
//! and its request, answered by the response alone; `swtpm_ioctls(4)`): written here by hand,
//! since no crate speaks it and the VMM needs six of its commands. The data channel carries
//! TPM commands and responses as they are: a socket pair whose other end is handed to swtpm
//! with `CMD_SET_DATAFD`, so that no data socket exists in the file system.
//!
//! The VMM either starts swtpm itself ([`Swtpm::spawn`], the control channel another socket
//! pair, `clientfd=`), or connects to the control socket of one started by someone else
//! ([`Swtpm::connect`]).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Control commands (swtpm's `CMD_*`).
const CMD_GET_CAPABILITY: u32 = 0x01;
const CMD_INIT: u32 = 0x02;
const CMD_STOP: u32 = 0x0e;
const CMD_SET_DATAFD: u32 = 0x10;
const CMD_SET_BUFFERSIZE: u32 = 0x11;
/// Capabilities the VMM relies on (`PTM_CAP_*`).
const CAP_INIT: u64 = 1;
const CAP_STOP: u64 = 1 << 10;
const CAP_SET_DATAFD: u64 = 1 << 12;
const CAP_SET_BUFFERSIZE: u64 = 1 << 13;
/// `CMD_INIT`'s flag: the TPM starts without the volatile state a previous run saved, as a
/// machine's TPM does at power-on and reset.
const INIT_DELETE_VOLATILE: u32 = 1;

/// A TPM command's or response's header: tag (2), size (4), code (4).
pub const HEADER_LEN: usize = 10;

/// How long a TPM command may take: libtpms creates RSA keys in software (seconds for a
/// 3072-bit key on a busy host); past this the TPM is taken for dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a control command may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long swtpm gets to end (saving its state) once its sockets close.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Errors talking to swtpm.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    /// swtpm could not be started.
    #[error("cannot start {0} (the TPM emulator, Debian package swtpm): {1}")]
    Spawn(PathBuf, std::io::Error),
    /// The TPM's state directory could not be made.
    #[error("cannot create the TPM state directory {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
    /// The control socket could not be reached.
    #[error("cannot connect to swtpm's control socket {0}: {1}")]
    Connect(PathBuf, std::io::Error),
    /// A channel failed (swtpm ended, or a socket call failed).
    #[error("swtpm's {0} channel: {1}")]
    Io(&'static str, std::io::Error),
    /// swtpm answered a control command with an error code.
    #[error("swtpm refused {0} with code {1:#x}{2}")]
    Refused(&'static str, u32, &'static str),
    /// swtpm lacks a control command the VMM needs (an old swtpm).
    #[error("this swtpm lacks {0}: swtpm 0.5 or later is needed")]
    Missing(&'static str),
    /// A TPM response that does not parse.
    #[error("swtpm sent a malformed response: {0}")]
    Malformed(String),
}

type Result<T> = std::result::Result<T, SwtpmError>;

/// A running swtpm: its two channels, and the process when the VMM started it.
#[derive(Debug)]
pub struct Swtpm {
    ctrl: UnixStream,
    data: UnixStream,
    child: Option<Child>,
}

impl Swtpm {
    /// Starts `program` (normally `swtpm`) with its state in `state_dir` (created 0700 if
    /// missing; swtpm keeps the TPM's permanent state there, 0600), and makes the TPM ready
    /// for a guest of `buffer_size`-byte commands.
    pub fn spawn(program: &Path, state_dir: &Path, buffer_size: u32) -> Result<Self> {
        create_private_dir(state_dir)?;
        let (ctrl, theirs) =
            UnixStream::pair().map_err(|e| SwtpmError::Spawn(program.to_path_buf(), e))?;
        // The child inherits its end by number; ours stays close-on-exec.
        rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
            .map_err(|e| SwtpmError::Spawn(program.to_path_buf(), e.into()))?;
        let mut state = std::ffi::OsString::from("dir=");
        state.push(state_dir.as_os_str());
        state.push(",mode=0600");
        let mut child = Command::new(program)
            .args(["socket", "--tpm2", "--terminate", "--tpmstate"])
            .arg(state)
            .arg("--ctrl")
            .arg(format!("type=unixio,clientfd={}", theirs.as_raw_fd()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| SwtpmError::Spawn(program.to_path_buf(), e))?;
        drop(theirs);
        match Self::attach(ctrl).and_then(|mut tpm| tpm.prepare(buffer_size).map(|()| tpm)) {
            Ok(mut tpm) => {
                tpm.child = Some(child);
                Ok(tpm)
            }
            // A swtpm that cannot serve (its state held by another, say) is not left behind.
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Connects to the control socket of a swtpm started by someone else (`swtpm socket
    /// --tpm2 --ctrl type=unixio,path=SOCKET ...`), and makes its TPM ready as [`Swtpm::spawn`].
    pub fn connect(socket: &Path, buffer_size: u32) -> Result<Self> {
        let ctrl =
            UnixStream::connect(socket).map_err(|e| SwtpmError::Connect(socket.into(), e))?;
        let mut tpm = Self::attach(ctrl)?;
        tpm.prepare(buffer_size)?;
        Ok(tpm)
    }

    /// Hands swtpm its data channel.
    fn attach(ctrl: UnixStream) -> Result<Self> {
        let ctrl_err = |e| SwtpmError::Io("control", e);
        ctrl.set_read_timeout(Some(CONTROL_TIMEOUT))
            .map_err(ctrl_err)?;
        let (data, theirs) = UnixStream::pair().map_err(|e| SwtpmError::Io("data", e))?;
        data.set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| SwtpmError::Io("data", e))?;
        let mut tpm = Self {
            ctrl,
            data,
            child: None,
        };
        tpm.ctrl
            .send_with_fd(&CMD_SET_DATAFD.to_be_bytes()[..], theirs.as_raw_fd())
            .map_err(|e| ctrl_err(std::io::Error::from_raw_os_error(e.errno())))?;
        drop(theirs);
        tpm.result("CMD_SET_DATAFD")?;
        Ok(tpm)
    }

    /// Checks the capabilities, sets the buffer size (the TPM stopped first, as swtpm
    /// requires: a swtpm reached by its socket may have served a VM before) and starts it.
    fn prepare(&mut self, buffer_size: u32) -> Result<()> {
        // The answer is the capability word alone, without a result code.
        let mut caps = [0u8; 8];
        self.control(CMD_GET_CAPABILITY, &[], &mut caps)?;
        let caps = u64::from_be_bytes(caps);
        for (bit, name) in [
            (CAP_INIT, "CMD_INIT"),
            (CAP_STOP, "CMD_STOP"),
            (CAP_SET_DATAFD, "CMD_SET_DATAFD"),
            (CAP_SET_BUFFERSIZE, "CMD_SET_BUFFERSIZE"),
        ] {
            if caps & bit == 0 {
                return Err(SwtpmError::Missing(name));
            }
        }
        self.send(CMD_STOP, &[])?;
        self.result("CMD_STOP")?;
        let mut resp = [0u8; 16];
        self.control(CMD_SET_BUFFERSIZE, &buffer_size.to_be_bytes(), &mut resp)?;
        check("CMD_SET_BUFFERSIZE", be32(&resp[..4]))?;
        let got = be32(&resp[4..8]);
        if got < buffer_size {
            return Err(SwtpmError::Malformed(format!(
                "its buffer is {got} bytes, less than the device's {buffer_size}"
            )));
        }
        self.init()
    }

    /// Resets the TPM, as at power-on: what the machine's reset does to it.
    pub fn init(&mut self) -> Result<()> {
        self.send(CMD_INIT, &INIT_DELETE_VOLATILE.to_be_bytes())?;
        self.result("CMD_INIT")
    }

    /// Starts the TPM as a PC's firmware does before the OS runs: TPM2_Startup(CLEAR).
    pub fn startup(&mut self) -> Result<()> {
        const STARTUP_CLEAR: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
        let response = self.execute(&STARTUP_CLEAR, HEADER_LEN)?;
        check("TPM2_Startup", be32(&response[6..10]))
    }

    /// Runs one TPM command (its length as the caller found it, at most the buffer size) and
    /// returns the TPM's response, whose header's size is checked against `max`.
    pub fn execute(&mut self, command: &[u8], max: usize) -> Result<Vec<u8>> {
        let io = |e| SwtpmError::Io("data", e);
        self.data.write_all(command).map_err(io)?;
        let mut header = [0u8; HEADER_LEN];
        self.data.read_exact(&mut header).map_err(io)?;
        let size = be32(&header[2..6]) as usize;
        if !(HEADER_LEN..=max).contains(&size) {
            return Err(SwtpmError::Malformed(format!(
                "a response of {size} bytes (the buffer holds {max})"
            )));
        }
        let mut response = vec![0u8; size];
        response[..HEADER_LEN].copy_from_slice(&header);
        self.data
            .read_exact(&mut response[HEADER_LEN..])
            .map_err(io)?;
        Ok(response)
    }

    /// A second handle on the data channel, through which another thread can cut it (a
    /// command in flight then fails at once instead of at its timeout).
    pub fn data_handle(&self) -> Result<UnixStream> {
        self.data.try_clone().map_err(|e| SwtpmError::Io("data", e))
    }

    /// Closes both channels, which ends a swtpm started with `--terminate`, and waits for a
    /// child to end (its state saved), killing it after a few seconds.
    pub fn close(self) {
        let Self { ctrl, data, child } = self;
        drop((ctrl, data));
        let Some(mut child) = child else { return };
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => {
                    tracing::warn!(%status, "swtpm ended with an error");
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) | Err(_) => break,
            }
        }
        tracing::warn!(pid = child.id(), "swtpm did not end; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    fn send(&mut self, cmd: u32, body: &[u8]) -> Result<()> {
        let mut msg = cmd.to_be_bytes().to_vec();
        msg.extend_from_slice(body);
        self.ctrl
            .write_all(&msg)
            .map_err(|e| SwtpmError::Io("control", e))
    }

    /// Sends `cmd` and reads its response into `resp` (sized to the whole response).
    fn control(&mut self, cmd: u32, body: &[u8], resp: &mut [u8]) -> Result<()> {
        self.send(cmd, body)?;
        self.ctrl
            .read_exact(resp)
            .map_err(|e| SwtpmError::Io("control", e))
    }

    /// Reads a bare result code.
    fn result(&mut self, what: &'static str) -> Result<()> {
        let mut r = [0u8; 4];
        self.ctrl
            .read_exact(&mut r)
            .map_err(|e| SwtpmError::Io("control", e))?;
        check(what, u32::from_be_bytes(r))
    }
}

/// The big-endian word at the start of `b` (0 if `b` is shorter), as TPM headers carry them.
pub(super) fn be32(b: &[u8]) -> u32 {
    b.get(..4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// A control command's result code: 0 is success.
fn check(what: &'static str, code: u32) -> Result<()> {
    match code {
        0 => Ok(()),
        // TPM_FAIL from a swtpm whose state cannot be used (locked by another swtpm, or
        // unreadable).
        9 => Err(SwtpmError::Refused(
            what,
            code,
            ": is its state directory in use by another swtpm, or unreadable?",
        )),
        _ => Err(SwtpmError::Refused(what, code, "")),
    }
}

/// Makes `dir` (and its parents) if missing, the directory itself 0700.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |e| SwtpmError::StateDir(dir.to_path_buf(), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    if !std::fs::metadata(dir).map_err(err)?.is_dir() {
        return Err(err(std::io::Error::other("not a directory")));
    }
    Ok(())
}
