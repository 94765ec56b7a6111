//! ACPI's fixed hardware: the PM1 event and control registers, the power management timer
//! and general-purpose event block 0, at I/O ports 0x600-0x67F as on Intel's ICH9 (the PMBASE
//! QEMU's q35 machine and OVMF use), with the SCI on IRQ 9.
//!
//! The guest powers off by writing SLP_TYP = S5 with SLP_EN (Linux's `poweroff`, Windows'
//! shutdown, OVMF's ResetSystem): the VM ends with [`ExitReason::GuestPowerOff`]. The power
//! button (`PUT /vm/power-button`) sets PWRBTN_STS and raises the SCI while the guest has the
//! event enabled; the guest's handler reads the status, clears it (write one to clear) and
//! shuts down as its policy says.

use std::time::Instant;

use crate::devices::bus::BusDevice;
use crate::exit::{ExitReason, ExitSender};
use crate::rate_limit::{RateLimiter, Verdict};

/// First port of the block.
pub const PM_BASE: u16 = 0x600;
/// Ports in the block (ICH9's PMBASE decodes 128).
pub const PM_LEN: u16 = 0x80;
/// PM1a event block: status (2 bytes) then enable (2 bytes).
pub const PM1_EVT: u16 = PM_BASE;
/// PM1a control block (2 bytes).
pub const PM1_CNT: u16 = PM_BASE + 0x04;
/// Power management timer (4 bytes, 24 bits of count).
pub const PM_TMR: u16 = PM_BASE + 0x08;
/// General-purpose event block 0: 8 status bytes then 8 enable bytes.
pub const GPE0_BLK: u16 = PM_BASE + 0x20;
/// Length of GPE0_BLK.
pub const GPE0_LEN: u8 = 16;
/// The SCI's ISA IRQ (and GSI): level-triggered, active high (MADT says so).
pub const SCI_IRQ: u32 = 9;
/// SLP_TYP of the S5 (soft-off) state, as `\_S5` in the DSDT gives it.
pub const SLP_TYP_S5: u16 = 0;
/// The timer's frequency, fixed by the ACPI specification.
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// PM1 status and enable bits.
const TMR_STS: u16 = 1 << 0;
const GBL_STS: u16 = 1 << 5;
const PWRBTN_STS: u16 = 1 << 8;
const RTC_STS: u16 = 1 << 10;
const PCIEXP_WAKE_DIS: u16 = 1 << 14;
const WAK_STS: u16 = 1 << 15;
/// The PM1 events this block can raise: timer carry and power button.
const PM1_EVENTS: u16 = TMR_STS | PWRBTN_STS;
/// The PM1 enable bits that read back as written (ICH9's): an OS enables the global lock and
/// RTC events and checks the bits stuck, though this block never raises those events.
const PM1_EN_STORED: u16 = PM1_EVENTS | GBL_STS | RTC_STS | PCIEXP_WAKE_DIS;
/// PM1 control: SCI_EN, and the SLP_TYP and SLP_EN fields.
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;
/// The PM1 control bits that read back as written (SCI_EN, BM_RLD, SLP_TYP).
const PM1_CNT_STORED: u16 = SCI_EN | 1 << 1 | SLP_TYP_MASK;
/// The timer's counting bits.
const PM_TMR_MASK: u32 = 0x00ff_ffff;

/// Drives the SCI: called with true while an enabled event is pending, false once none is.
pub type SciLine = Box<dyn FnMut(bool) + Send>;

/// The block's registers.
pub struct PowerManagement {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    gpe0_sts: [u8; 8],
    gpe0_en: [u8; 8],
    /// The timer counts from here.
    timer_start: Instant,
    /// The timer's top bit when the guest last read PM1 status (its carry sets TMR_STS).
    timer_msb: bool,
    sci: SciLine,
    sci_level: bool,
    exit: ExitSender,
    sleep_warnings: RateLimiter,
}

impl PowerManagement {
    /// The block after reset: ACPI mode on (the FADT names no SMI command port, so the guest
    /// never switches modes), no events enabled.
    pub fn new(sci: SciLine, exit: ExitSender) -> Self {
        let mut me = Self {
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 0,
            gpe0_sts: [0; 8],
            gpe0_en: [0; 8],
            timer_start: Instant::now(),
            timer_msb: false,
            sci,
            sci_level: false,
            exit,
            sleep_warnings: RateLimiter::new(3, std::time::Duration::from_secs(5)),
        };
        me.power_on();
        me
    }

    /// The registers as at power-on (and after a reset).
    fn power_on(&mut self) {
        self.pm1_sts = 0;
        self.pm1_en = 0;
        self.pm1_cnt = SCI_EN;
        self.gpe0_sts = [0; 8];
        self.gpe0_en = [0; 8];
        self.timer_start = Instant::now();
        self.timer_msb = false;
    }

    /// Presses the power button: the guest sees PWRBTN_STS, and an SCI if it enabled the event.
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= PWRBTN_STS;
        self.update_sci();
    }

    /// Whether the guest has enabled the power button event (an ACPI-aware OS is running).
    pub fn power_button_enabled(&self) -> bool {
        self.pm1_cnt & SCI_EN != 0 && self.pm1_en & PWRBTN_STS != 0
    }

    fn timer(&self) -> u32 {
        let ns = self.timer_start.elapsed().as_nanos();
        // Ticks since start; only the low 24 bits are the register's.
        ((ns * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u32) & PM_TMR_MASK
    }

    fn pm1_status(&mut self) -> u16 {
        // The timer's carry is seen when the guest looks, not as an interrupt: no guest this
        // VMM runs enables TMR_EN (Linux and Windows read the counter directly).
        let msb = self.timer() & 0x0080_0000 != 0;
        if msb != self.timer_msb {
            self.timer_msb = msb;
            self.pm1_sts |= TMR_STS;
        }
        self.pm1_sts
    }

    fn update_sci(&mut self) {
        let pending = self.pm1_sts & self.pm1_en & PM1_EVENTS != 0
            || self
                .gpe0_sts
                .iter()
                .zip(self.gpe0_en.iter())
                .any(|(s, e)| s & e != 0);
        let level = pending && self.pm1_cnt & SCI_EN != 0;
        if level != self.sci_level {
            self.sci_level = level;
            (self.sci)(level);
        }
    }

    fn write_pm1_cnt(&mut self, value: u16, written: u16) {
        self.pm1_cnt =
            (self.pm1_cnt & !(PM1_CNT_STORED & written)) | (value & PM1_CNT_STORED & written);
        if value & written & SLP_EN == 0 {
            return;
        }
        let typ = (self.pm1_cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        if typ == SLP_TYP_S5 {
            self.exit.send(ExitReason::GuestPowerOff);
        } else if let Verdict::Log { suppressed } = self.sleep_warnings.check(Instant::now()) {
            // Only \_S5 is in the DSDT: a guest asking for another state is confused.
            tracing::warn!(
                slp_typ = typ,
                suppressed,
                "guest asked for a sleep state this VM does not offer; ignored"
            );
        }
    }

    /// The byte at `offset` of the block.
    fn read_byte(&mut self, offset: u16, pm1_sts: u16, timer: u32) -> u8 {
        let byte = |v: u16, i: u16| v.to_le_bytes()[usize::from(i)];
        match offset {
            0..=1 => byte(pm1_sts, offset),
            2..=3 => byte(self.pm1_en, offset - 2),
            4..=5 => byte(self.pm1_cnt & !SLP_EN, offset - 4),
            8..=11 => timer.to_le_bytes()[usize::from(offset - 8)],
            0x20..=0x27 => self.gpe0_sts[usize::from(offset - 0x20)],
            0x28..=0x2f => self.gpe0_en[usize::from(offset - 0x28)],
            _ => 0,
        }
    }
}

/// A 16-bit register's new value and which of its bits an access of `data` at `offset` wrote
/// (the register starting at `reg`).
fn written16(offset: u64, data: &[u8], reg: u64) -> (u16, u16) {
    let mut value = 0u16;
    let mut mask = 0u16;
    for (i, b) in data.iter().enumerate() {
        let at = offset + i as u64;
        if (reg..reg + 2).contains(&at) {
            let shift = 8 * (at - reg);
            value |= u16::from(*b) << shift;
            mask |= 0xff << shift;
        }
    }
    (value, mask)
}

impl BusDevice for PowerManagement {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let pm1_sts = self.pm1_status();
        let timer = self.timer();
        for (i, b) in data.iter_mut().enumerate() {
            *b = u16::try_from(offset + i as u64).map_or(0, |o| self.read_byte(o, pm1_sts, timer));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (sts, sts_mask) = written16(offset, data, 0);
        // Status bits are cleared by writing ones.
        self.pm1_sts &= !(sts & sts_mask);
        let (en, en_mask) = written16(offset, data, 2);
        self.pm1_en = (self.pm1_en & !en_mask) | (en & en_mask & PM1_EN_STORED);
        for (i, b) in data.iter().enumerate() {
            match offset + i as u64 {
                o @ 0x20..=0x27 => self.gpe0_sts[(o - 0x20) as usize] &= !b,
                o @ 0x28..=0x2f => self.gpe0_en[(o - 0x28) as usize] = *b,
                _ => {}
            }
        }
        let (cnt, cnt_mask) = written16(offset, data, 4);
        if cnt_mask != 0 {
            self.write_pm1_cnt(cnt, cnt_mask);
        }
        // WAK_STS is set on waking, which this VM never does from S5; nothing else is
        // writable.
        self.pm1_sts &= !WAK_STS;
        self.update_sci();
    }

    fn reset(&mut self) {
        self.power_on();
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver};
    use std::sync::{Arc, Mutex};

    use super::*;

    fn pm() -> (PowerManagement, Arc<Mutex<Vec<bool>>>, Receiver<ExitReason>) {
        let levels = Arc::new(Mutex::new(Vec::new()));
        let seen = levels.clone();
        let (tx, rx) = channel();
        let pm = PowerManagement::new(
            Box::new(move |l| seen.lock().unwrap().push(l)),
            ExitSender::new(tx),
        );
        (pm, levels, rx)
    }

    fn read16(pm: &mut PowerManagement, offset: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn power_button_raises_the_sci_until_the_guest_clears_it() {
        let (mut pm, levels, _rx) = pm();
        // Not enabled yet: the status is set, no SCI.
        pm.press_power_button();
        assert_eq!(read16(&mut pm, 0) & PWRBTN_STS, PWRBTN_STS);
        assert!(levels.lock().unwrap().is_empty());
        assert!(!pm.power_button_enabled());
        // Enabling it with the status pending raises the SCI at once.
        pm.write(2, &PWRBTN_STS.to_le_bytes());
        assert!(pm.power_button_enabled());
        assert_eq!(*levels.lock().unwrap(), vec![true]);
        // Writing zero changes nothing; writing one clears it and drops the line.
        pm.write(0, &0u16.to_le_bytes());
        assert_eq!(read16(&mut pm, 0) & PWRBTN_STS, PWRBTN_STS);
        pm.write(0, &PWRBTN_STS.to_le_bytes());
        assert_eq!(read16(&mut pm, 0) & PWRBTN_STS, 0);
        assert_eq!(*levels.lock().unwrap(), vec![true, false]);
        // A second press, the same again; with SCI_EN off, no interrupt.
        pm.press_power_button();
        assert_eq!(*levels.lock().unwrap(), vec![true, false, true]);
        pm.write(4, &0u16.to_le_bytes());
        assert_eq!(*levels.lock().unwrap(), vec![true, false, true, false]);
    }

    #[test]
    fn enables_an_os_checks_read_back_without_raising_the_sci() {
        let (mut pm, levels, _rx) = pm();
        // ACPICA enables the global lock and RTC events and reads them back.
        pm.write(2, &(GBL_STS | RTC_STS).to_le_bytes());
        assert_eq!(read16(&mut pm, 2), GBL_STS | RTC_STS);
        assert!(levels.lock().unwrap().is_empty());
    }

    #[test]
    fn a_dword_write_reaches_status_and_enable() {
        let (mut pm, levels, _rx) = pm();
        pm.press_power_button();
        let v = u32::from(PWRBTN_STS) << 16;
        pm.write(0, &v.to_le_bytes());
        assert_eq!(read16(&mut pm, 2), PWRBTN_STS);
        assert_eq!(*levels.lock().unwrap(), vec![true]);
        pm.write(0, &(v | u32::from(PWRBTN_STS)).to_le_bytes());
        assert_eq!(*levels.lock().unwrap(), vec![true, false]);
    }

    #[test]
    fn slp_en_with_s5_powers_off_and_other_states_do_not() {
        let (mut pm, _levels, rx) = pm();
        // S3 (typ 1 here) is not offered: ignored.
        pm.write(4, &(SCI_EN | 1 << SLP_TYP_SHIFT | SLP_EN).to_le_bytes());
        assert!(rx.try_recv().is_err());
        // SLP_EN reads as zero; SLP_TYP reads back.
        assert_eq!(read16(&mut pm, 4), SCI_EN | 1 << SLP_TYP_SHIFT);
        // Linux writes SLP_TYP, then SLP_TYP with SLP_EN.
        pm.write(4, &(SCI_EN | SLP_TYP_S5 << SLP_TYP_SHIFT).to_le_bytes());
        assert!(rx.try_recv().is_err());
        pm.write(5, &[((SLP_TYP_S5 << SLP_TYP_SHIFT | SLP_EN) >> 8) as u8]);
        assert_eq!(rx.try_recv(), Ok(ExitReason::GuestPowerOff));
    }

    #[test]
    fn the_timer_counts_at_3_58_mhz() {
        let (mut pm, _levels, _rx) = pm();
        let mut b = [0u8; 4];
        pm.read(8, &mut b);
        let t0 = u32::from_le_bytes(b);
        std::thread::sleep(std::time::Duration::from_millis(20));
        pm.read(8, &mut b);
        let t1 = u32::from_le_bytes(b);
        let ticks = t1.wrapping_sub(t0) & PM_TMR_MASK;
        // At least 20 ms worth, and the top byte is always zero.
        assert!(ticks >= 20 * 3579, "{ticks}");
        assert_eq!(t1 >> 24, 0);
        // Writes do not move it.
        pm.write(8, &[0xff; 4]);
        pm.read(8, &mut b);
        assert!(u32::from_le_bytes(b).wrapping_sub(t1) & PM_TMR_MASK < PM_TIMER_HZ as u32);
    }

    #[test]
    fn gpe_status_is_write_one_to_clear_and_raises_the_sci_when_enabled() {
        let (mut pm, levels, _rx) = pm();
        pm.gpe0_sts[0] = 0x02;
        pm.write(0x28, &[0x02]);
        assert_eq!(*levels.lock().unwrap(), vec![true]);
        pm.write(0x20, &[0x02]);
        let mut b = [0u8; 1];
        pm.read(0x20, &mut b);
        assert_eq!(b[0], 0);
        assert_eq!(*levels.lock().unwrap(), vec![true, false]);
    }

    #[test]
    fn a_reset_drops_the_sci_and_the_enables() {
        let (mut pm, levels, _rx) = pm();
        pm.write(2, &PWRBTN_STS.to_le_bytes());
        pm.press_power_button();
        assert_eq!(*levels.lock().unwrap(), vec![true]);
        pm.reset();
        assert_eq!(*levels.lock().unwrap(), vec![true, false]);
        assert_eq!(read16(&mut pm, 0) & PWRBTN_STS, 0);
        assert!(!pm.power_button_enabled());
        assert_eq!(read16(&mut pm, 4), SCI_EN);
    }

    #[test]
    fn hostile_accesses_change_nothing_they_should_not() {
        let (mut pm, _levels, rx) = pm();
        for offset in 0..u64::from(PM_LEN) + 8 {
            for len in [1usize, 2, 3, 4, 8] {
                let mut b = vec![0u8; len];
                pm.read(offset, &mut b);
                // Ones in the control register ask for sleep state 7, which is not offered.
                pm.write(offset, &vec![0xff; len]);
            }
        }
        assert!(rx.try_recv().is_err());
        // The enables the ones set: the implemented ones, nothing else.
        assert_eq!(read16(&mut pm, 2), PM1_EN_STORED);
    }
}
