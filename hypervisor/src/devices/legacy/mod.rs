//! PC legacy devices: the 8250 UART, the i8042 controller, the CMOS RTC and the boot-timer
//! debug port. The PIC, I/O APIC and PIT are emulated in the kernel by KVM.

pub mod cmos;
pub mod console_log;
pub mod debug_port;
pub mod i8042;
pub mod ps2_mouse;
pub mod serial;
