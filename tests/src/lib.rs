//! End-to-end tests live in `tests/tests/`; shared helpers here: [`x11`] drives real X
//! clients (remote-viewer, the thin client) on a private Xvfb display, [`nested`] runs the
//! nested KVM harness, [`proc`] ties child processes to the test that started them.

pub mod nested;
pub mod proc;
pub mod x11;
