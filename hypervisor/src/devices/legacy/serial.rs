//! The 16550A UART at COM1 (vm-superio), its interrupt wired to an irqfd.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

/// I/O base of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Ports a UART decodes.
pub const COM_LEN: u64 = 8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;

/// An interrupt line backed by an eventfd registered as a KVM irqfd.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where the console goes.
pub type ConsoleOut = Box<dyn Write + Send>;

/// COM1 as a bus device.
pub struct SerialDevice {
    uart: Serial<IrqLine, NoEvents, ConsoleOut>,
}

impl SerialDevice {
    /// A UART that raises `irq` and writes transmitted bytes to `out`.
    pub fn new(irq: IrqLine, out: ConsoleOut) -> Self {
        Self {
            uart: Serial::new(irq, out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data.len(), u8::try_from(offset)) {
            (1, Ok(reg)) => data[0] = self.uart.read(reg),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (1, Ok(reg)) = (data.len(), u8::try_from(offset)) {
            // A console that cannot be written (closed pipe, full disk) loses output but must
            // not stop the guest.
            if let Err(e) = self.uart.write(reg, data[0]) {
                tracing::debug!(error = ?e, "serial output lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn dev() -> (SerialDevice, Sink, EventFd) {
        let sink = Sink::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let clone = irq.try_clone().unwrap();
        (
            SerialDevice::new(IrqLine(irq), Box::new(sink.clone())),
            sink,
            clone,
        )
    }

    #[test]
    fn transmitted_bytes_reach_the_console() {
        let (mut d, sink, _) = dev();
        for b in b"hi\n" {
            d.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_raises_the_interrupt_when_enabled() {
        let (mut d, _, irq) = dev();
        d.write(1, &[0x01]); // IER: received-data interrupt
        assert_eq!(d.enqueue_input(b"x"), 1);
        assert_eq!(irq.read().unwrap(), 1);
        let mut b = [0u8];
        d.read(0, &mut b);
        assert_eq!(b[0], b'x');
    }

    #[test]
    fn hostile_accesses_are_harmless() {
        let (mut d, sink, _) = dev();
        let mut wide = [0u8; 4];
        d.read(0, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        d.write(0, &[1, 2, 3, 4]);
        for offset in 0..=255u64 {
            for v in [0u8, 0x80, 0xff] {
                d.write(offset, &[v]);
                let mut b = [0u8];
                d.read(offset, &mut b);
            }
        }
        d.write(u64::MAX, &[1]);
        // Only bytes written to THR (offset 0 with DLAB clear) may have reached the console.
        assert!(sink.0.lock().unwrap().len() <= 3 * 256);
    }
}
