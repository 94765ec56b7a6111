//! The CMOS real-time clock and NVRAM (ports 0x70/0x71), so the guest boots with the right
//! wall-clock time.
//!
//! Time reads come from the host clock (UTC) plus an offset that guest writes adjust, so a
//! guest running `hwclock --systohc` keeps its own idea of the time without touching the host.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::devices::bus::BusDevice;

/// Index port 0x70 and data port 0x71.
pub const CMOS_BASE: u64 = 0x70;
/// Ports decoded.
pub const CMOS_LEN: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;
const REG_MEM_ABOVE_16M_LO: u8 = 0x34;
const REG_MEM_ABOVE_4G_LO: u8 = 0x5b;

const B_24H: u8 = 0x02;
const B_BINARY: u8 = 0x04;
const B_SET: u8 = 0x80;
const D_VALID_RAM: u8 = 0x80;
/// 32.768 kHz time base, 1024 Hz periodic rate; UIP is never reported.
const A_DEFAULT: u8 = 0x26;

/// Seconds since the epoch, now, from the host.
fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> u8 {
    (v >> 4).min(9) * 10 + (v & 0xf).min(9)
}

/// Broken-down time as the RTC registers hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tm {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Tm {
    fn from_unix(t: i64) -> Self {
        let (year, month, day) = civil_from_days(t.div_euclid(86_400));
        let secs = t.rem_euclid(86_400) as u32;
        Self {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }
}

/// The RTC and its 128 bytes of NVRAM.
pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
    /// Guest time minus host time, in seconds.
    offset: i64,
    now: fn() -> i64,
}

impl Cmos {
    /// An RTC whose NVRAM reports `mem_below_4g` and `mem_above_4g` bytes of RAM, as firmware
    /// expects.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64) -> Self {
        Self::with_clock(mem_below_4g, mem_above_4g, host_now)
    }

    fn with_clock(mem_below_4g: u64, mem_above_4g: u64, now: fn() -> i64) -> Self {
        let mut nvram = [0u8; 128];
        nvram[usize::from(REG_A)] = A_DEFAULT;
        nvram[usize::from(REG_B)] = B_24H;
        nvram[usize::from(REG_D)] = D_VALID_RAM;
        let above_16m = (mem_below_4g.saturating_sub(16 << 20) >> 16).min(0xffff) as u16;
        let lo = usize::from(REG_MEM_ABOVE_16M_LO);
        nvram[lo..lo + 2].copy_from_slice(&above_16m.to_le_bytes());
        let above_4g = (mem_above_4g >> 16).min(0xff_ffff) as u32;
        let lo = usize::from(REG_MEM_ABOVE_4G_LO);
        nvram[lo..lo + 3].copy_from_slice(&above_4g.to_le_bytes()[..3]);
        Self {
            index: 0,
            nvram,
            offset: 0,
            now,
        }
    }

    fn binary(&self) -> bool {
        self.nvram[usize::from(REG_B)] & B_BINARY != 0
    }

    fn encode(&self, v: u32) -> u8 {
        let v = (v % 100) as u8;
        if self.binary() {
            v
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        u32::from(if self.binary() { v } else { from_bcd(v) })
    }

    fn tm(&self) -> Tm {
        Tm::from_unix((self.now)() + self.offset)
    }

    fn read_reg(&self, reg: u8) -> u8 {
        let tm = self.tm();
        match reg {
            REG_SECONDS => self.encode(tm.second),
            REG_MINUTES => self.encode(tm.minute),
            REG_HOURS => self.encode_hour(tm.hour),
            REG_WEEKDAY => {
                let days = days_from_civil(tm.year, tm.month, tm.day);
                // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
                self.encode(((days + 4).rem_euclid(7) + 1) as u32)
            }
            REG_DAY => self.encode(tm.day),
            REG_MONTH => self.encode(tm.month),
            REG_YEAR => self.encode(tm.year.rem_euclid(100) as u32),
            REG_CENTURY => self.encode(tm.year.div_euclid(100).clamp(0, 99) as u32),
            REG_C => 0, // no interrupt flags: alarms and periodic interrupts are not emulated
            _ => self.nvram[usize::from(reg & 0x7f)],
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.nvram[usize::from(REG_B)] & B_24H != 0 {
            return self.encode(hour);
        }
        let pm = hour >= 12;
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if pm { 0x80 } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.nvram[usize::from(REG_B)] & B_24H != 0 {
            return self.decode(v);
        }
        let h = self.decode(v & 0x7f) % 12;
        if v & 0x80 != 0 {
            h + 12
        } else {
            h
        }
    }

    fn write_reg(&mut self, reg: u8, value: u8) {
        let mut tm = self.tm();
        let field = match reg {
            REG_SECONDS => &mut tm.second,
            REG_MINUTES => &mut tm.minute,
            REG_DAY => &mut tm.day,
            REG_MONTH => &mut tm.month,
            REG_HOURS => {
                tm.hour = self.decode_hour(value);
                return self.set_time(tm);
            }
            REG_YEAR => {
                tm.year = tm.year - tm.year.rem_euclid(100) + i64::from(self.decode(value) % 100);
                return self.set_time(tm);
            }
            REG_CENTURY => {
                tm.year = i64::from(self.decode(value)) * 100 + tm.year.rem_euclid(100);
                return self.set_time(tm);
            }
            REG_C | REG_D | REG_WEEKDAY => return,
            REG_B => {
                self.nvram[usize::from(REG_B)] = value & !B_SET;
                return;
            }
            _ => {
                self.nvram[usize::from(reg & 0x7f)] = value;
                return;
            }
        };
        *field = self.decode(value);
        self.set_time(tm);
    }

    fn set_time(&mut self, tm: Tm) {
        let valid = (1..=12).contains(&tm.month)
            && (1..=31).contains(&tm.day)
            && tm.hour < 24
            && tm.minute < 60
            && tm.second < 60;
        if valid {
            self.offset = tm.to_unix() - (self.now)();
        } else {
            tracing::debug!(?tm, "CMOS: guest wrote an invalid time; ignored");
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => self.index,
            1 => self.read_reg(self.index),
            _ => 0xff,
        };
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else { return };
        match offset {
            // Bit 7 of the index port masks NMIs on a PC; NMIs are not routed here.
            0 => self.index = byte & 0x7f,
            1 => self.write_reg(self.index, byte),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-25 10:53:46 UTC, a Wednesday.
    fn fixed() -> i64 {
        1_795_604_026
    }

    fn reg(c: &mut Cmos, r: u8) -> u8 {
        c.write(0, &[r]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    #[test]
    fn calendar_round_trips() {
        for t in [0i64, 951_782_400, 1_795_604_026, 4_102_444_800, -86_400] {
            assert_eq!(Tm::from_unix(t).to_unix(), t);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
    }

    #[test]
    fn reads_host_time_in_bcd() {
        let mut c = Cmos::with_clock(512 << 20, 0, fixed);
        assert_eq!(reg(&mut c, REG_YEAR), 0x26);
        assert_eq!(reg(&mut c, REG_MONTH), 0x11);
        assert_eq!(reg(&mut c, REG_DAY), 0x25);
        assert_eq!(reg(&mut c, REG_HOURS), 0x10);
        assert_eq!(reg(&mut c, REG_MINUTES), 0x53);
        assert_eq!(reg(&mut c, REG_SECONDS), 0x46);
        assert_eq!(reg(&mut c, REG_CENTURY), 0x20);
        assert_eq!(reg(&mut c, REG_WEEKDAY), 4); // Wednesday
        assert_eq!(reg(&mut c, REG_A) & 0x80, 0, "UIP must stay clear");
        assert_eq!(reg(&mut c, REG_D), D_VALID_RAM);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut c = Cmos::with_clock(512 << 20, 0, fixed);
        c.write(0, &[REG_B]);
        c.write(1, &[B_BINARY]);
        assert_eq!(reg(&mut c, REG_MINUTES), 53);
        assert_eq!(reg(&mut c, REG_HOURS), 10);
    }

    #[test]
    fn guest_sets_its_own_time() {
        let mut c = Cmos::with_clock(512 << 20, 0, fixed);
        c.write(0, &[REG_YEAR]);
        c.write(1, &[0x30]);
        assert_eq!(reg(&mut c, REG_YEAR), 0x30);
        assert_eq!(reg(&mut c, REG_MONTH), 0x11);
        // An impossible month is refused, the clock keeps running.
        c.write(0, &[REG_MONTH]);
        c.write(1, &[0x13]);
        assert_eq!(reg(&mut c, REG_MONTH), 0x11);
    }

    #[test]
    fn memory_size_in_nvram() {
        let mut c = Cmos::with_clock(512 << 20, 1 << 30, fixed);
        let lo = reg(&mut c, REG_MEM_ABOVE_16M_LO) as u16;
        let hi = reg(&mut c, REG_MEM_ABOVE_16M_LO + 1) as u16;
        assert_eq!((hi << 8 | lo) as u64, (512 - 16) << 4);
        assert_eq!(reg(&mut c, REG_MEM_ABOVE_4G_LO + 2), 0x00);
        assert_eq!(reg(&mut c, REG_MEM_ABOVE_4G_LO + 1), 0x40);
    }

    #[test]
    fn hostile_writes_keep_time_sane() {
        let mut c = Cmos::with_clock(512 << 20, 0, fixed);
        for r in 0..=255u8 {
            for v in [0u8, 0x99, 0xff, 0x7f] {
                c.write(0, &[r]);
                c.write(1, &[v]);
            }
        }
        c.write(5, &[1]);
        let mut wide = [0u8; 2];
        c.read(1, &mut wide);
        c.write(0, &[REG_B]);
        c.write(1, &[B_24H]);
        let m = from_bcd(reg(&mut c, REG_MONTH));
        assert!((1..=12).contains(&m));
    }
}
