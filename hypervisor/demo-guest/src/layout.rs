// The demo desktop's geometry and colours: the single source for the guest (build.rs turns
// these into guest/layout.h) and for the tests that check what it draws. Plain `pub const`
// items of integer type only, one per line: build.rs reads this file as text.

/// Default mode when the command line gives no `mode=WxH`.
pub const DEFAULT_WIDTH: u32 = 1024;
/// Default mode height.
pub const DEFAULT_HEIGHT: u32 = 768;
/// Height of the title bar at the top of the screen.
pub const TITLE_HEIGHT: u32 = 32;
/// Glyphs are 8x8 font cells drawn at this scale.
pub const FONT_SCALE: u32 = 2;
/// Left edge of the notes window.
pub const NOTES_X: u32 = 48;
/// Top edge of the notes window.
pub const NOTES_Y: u32 = 80;
/// Notes window header height.
pub const NOTES_HEADER: u32 = 28;
/// Gap between the notes window's edge and its text.
pub const NOTES_PAD: u32 = 12;
/// Where the first typed character goes (x), inside the notes window.
pub const TEXT_X: u32 = NOTES_X + NOTES_PAD;
/// Where the first typed character goes (y).
pub const TEXT_Y: u32 = NOTES_Y + NOTES_HEADER + NOTES_PAD;
/// Line height of typed text.
pub const LINE_HEIGHT: u32 = 20;
/// Title bar colour (0x00RRGGBB, as every colour here).
pub const TITLE_BG: u32 = 0x0017_2a3a;
/// Title bar text.
pub const TITLE_FG: u32 = 0x00f0_f4f8;
/// Desktop colour at the top of the screen; it shades towards DESKTOP_BOTTOM.
pub const DESKTOP_TOP: u32 = 0x0020_6080;
/// Desktop colour at the bottom.
pub const DESKTOP_BOTTOM: u32 = 0x0010_3040;
/// Notes window background.
pub const NOTES_BG: u32 = 0x00fa_faf6;
/// Notes window header.
pub const NOTES_HEADER_BG: u32 = 0x00d8_e0e8;
/// Typed text.
pub const TEXT_FG: u32 = 0x0010_1820;
/// Side of the probe square at the bottom-right corner (see `probe_color`).
pub const PROBE_SIZE: u32 = 16;
