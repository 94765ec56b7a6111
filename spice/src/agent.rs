//! A VMM-side stand-in for the guest's spice-vdagent. Clients send monitor configurations
//! (window resizes) only while an agent is connected, and libspice-server then hands them to
//! the display's `client_monitors_config` instead of the agent; so this port announces the
//! monitors-config capability and otherwise swallows what the client sends. (Clipboard and
//! file transfer need the real agent in the guest, over a virtio-serial port.)

use std::ffi::c_int;
use std::sync::Mutex;

use spice_server_sys as sys;

use crate::core::guard;

/// The char device instance (first, so its pointer is the box's), its interface and what the
/// "agent" has to say.
#[repr(C)]
pub(crate) struct AgentBox {
    pub(crate) sin: sys::SpiceCharDeviceInstance,
    iface: sys::SpiceCharDeviceInterface,
    out: Mutex<Vec<u8>>,
}

// SAFETY: the raw pointers inside are libspice-server's or point at 'static strings.
unsafe impl Send for AgentBox {}
// SAFETY: as above; `out` is behind a Mutex.
unsafe impl Sync for AgentBox {}

/// # Safety
/// `sin` must be the `sin` field of a live AgentBox.
unsafe fn agent_box<'a>(sin: *mut sys::SpiceCharDeviceInstance) -> &'a AgentBox {
    // SAFETY: repr(C) with `sin` first.
    unsafe { &*sin.cast::<AgentBox>() }
}

unsafe extern "C" fn state(_sin: *mut sys::SpiceCharDeviceInstance, _connected: c_int) {}

unsafe extern "C" fn write(
    _sin: *mut sys::SpiceCharDeviceInstance,
    _buf: *const u8,
    len: c_int,
) -> c_int {
    // Everything the client sends the agent is taken and dropped.
    len.max(0)
}

unsafe extern "C" fn read(
    sin: *mut sys::SpiceCharDeviceInstance,
    buf: *mut u8,
    len: c_int,
) -> c_int {
    guard("agent_read", 0, || {
        // SAFETY: sin is our registered instance.
        let b = unsafe { agent_box(sin) };
        let mut out = b.out.lock().unwrap_or_else(|p| p.into_inner());
        let n = out.len().min(usize::try_from(len).unwrap_or(0));
        // SAFETY: the server gives a writable buffer of `len` bytes; n <= len.
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), buf, n) };
        out.drain(..n);
        n as c_int
    })
}

/// VD_AGENT_ANNOUNCE_CAPABILITIES (monitors config, reply), wrapped for the client port.
fn announce_capabilities() -> Vec<u8> {
    let caps: u32 = (1 << sys::VD_AGENT_CAP_MONITORS_CONFIG) | (1 << sys::VD_AGENT_CAP_REPLY);
    let mut payload = Vec::with_capacity(8);
    payload.extend_from_slice(&1u32.to_le_bytes()); // request: "send me yours"
    payload.extend_from_slice(&caps.to_le_bytes());
    let mut msg = Vec::with_capacity(20 + payload.len());
    msg.extend_from_slice(&sys::VD_AGENT_PROTOCOL.to_le_bytes());
    msg.extend_from_slice(&sys::VD_AGENT_ANNOUNCE_CAPABILITIES.to_le_bytes());
    msg.extend_from_slice(&0u64.to_le_bytes());
    msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    msg.extend_from_slice(&payload);
    let mut chunk = Vec::with_capacity(8 + msg.len());
    chunk.extend_from_slice(&sys::VDP_CLIENT_PORT.to_le_bytes());
    chunk.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    chunk.extend_from_slice(&msg);
    chunk
}

impl AgentBox {
    /// A client arrived: it needs the agent's capabilities (each client learns them anew);
    /// the caller then wakes the device so that the server reads them.
    pub(crate) fn client_arrived(&self) {
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = announce_capabilities();
    }

    /// The stand-in agent, with its capabilities ready to be read.
    pub(crate) fn new() -> Box<Self> {
        let mut b = Box::new(AgentBox {
            sin: sys::SpiceCharDeviceInstance {
                base: sys::SpiceBaseInstance {
                    sif: std::ptr::null(),
                },
                subtype: c"vdagent".as_ptr(),
                st: std::ptr::null_mut(),
                portname: std::ptr::null(),
            },
            iface: sys::SpiceCharDeviceInterface {
                base: sys::SpiceBaseInterface {
                    type_: c"char_device".as_ptr(),
                    description: c"tessera vdagent stand-in".as_ptr(),
                    major_version: sys::SPICE_INTERFACE_CHAR_DEVICE_MAJOR,
                    minor_version: sys::SPICE_INTERFACE_CHAR_DEVICE_MINOR,
                },
                state: Some(state),
                write: Some(write),
                read: Some(read),
                event: None,
                flags: 0,
            },
            out: Mutex::new(announce_capabilities()),
        });
        b.sin.base.sif = &raw const b.iface.base;
        b
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_announcement_is_a_well_formed_agent_message() {
        let m = super::announce_capabilities();
        // VDIChunkHeader (port, size) + VDAgentMessage (protocol, type, opaque, size) + 8.
        assert_eq!(m.len(), 8 + 20 + 8);
        assert_eq!(u32::from_le_bytes(m[4..8].try_into().unwrap()), 28);
        assert_eq!(u32::from_le_bytes(m[8..12].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(m[12..16].try_into().unwrap()), 6);
        assert_eq!(u32::from_le_bytes(m[24..28].try_into().unwrap()), 8);
    }
}
