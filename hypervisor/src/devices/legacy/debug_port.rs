//! The boot-timer debug port (I/O port 0x80): the guest writes a byte at each milestone and
//! the VMM timestamps it, as Cloud Hypervisor's debug port does.
//!
//! Linux itself may use port 0x80 as an I/O delay (`io_delay=0x80`), so only the first write of
//! each value is kept, and at most [`MAX_MILESTONES`] of them; pass `io_delay=none` to keep
//! the record clean.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::devices::bus::{lock, BusDevice};

/// The port.
pub const DEBUG_PORT: u64 = 0x80;
/// How many distinct milestones are kept.
pub const MAX_MILESTONES: usize = 64;

/// One milestone the guest reported.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Milestone {
    /// The byte the guest wrote.
    pub code: u8,
    /// Milliseconds since the VMM process started.
    pub ms: f64,
}

/// Milestones seen so far, shared with the control API.
#[derive(Debug, Default)]
pub struct BootTimes {
    milestones: Vec<Milestone>,
    writes: u64,
}

impl BootTimes {
    /// The milestones, in the order they arrived.
    pub fn milestones(&self) -> &[Milestone] {
        &self.milestones
    }

    /// Total writes to the port, repeats included.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

/// The port device.
pub struct DebugPort {
    start: Instant,
    times: Arc<Mutex<BootTimes>>,
}

impl DebugPort {
    /// A port timing milestones from `start` (the process start).
    pub fn new(start: Instant, times: Arc<Mutex<BootTimes>>) -> Self {
        Self { start, times }
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&code) = data.first() else { return };
        let mut t = lock(&self.times);
        t.writes += 1;
        if t.milestones.len() < MAX_MILESTONES && !t.milestones.iter().any(|m| m.code == code) {
            let ms = self.start.elapsed().as_secs_f64() * 1000.0;
            t.milestones.push(Milestone { code, ms });
            tracing::info!(
                code = format_args!("{code:#04x}"),
                ms,
                "guest boot milestone"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_of_each_code_is_kept_and_bounded() {
        let times = Arc::new(Mutex::new(BootTimes::default()));
        let mut port = DebugPort::new(Instant::now(), times.clone());
        port.write(0, &[0x41]);
        port.write(0, &[0x41]);
        port.write(0, &[]);
        for v in 0..=255u8 {
            port.write(0, &[v, 1, 2, 3]);
        }
        let t = lock(&times);
        assert_eq!(t.milestones().len(), MAX_MILESTONES);
        assert_eq!(t.milestones()[0].code, 0x41);
        assert_eq!(t.writes(), 258);
        let mut b = [0u8; 2];
        drop(t);
        port.read(0, &mut b);
        assert_eq!(b, [0xff, 0xff]);
    }
}
