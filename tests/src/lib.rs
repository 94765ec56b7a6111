//! End-to-end tests live in `tests/tests/`; shared helpers here: [`x11`] drives real X
//! clients (remote-viewer, later the thin client) on a private Xvfb display.

pub mod x11;
