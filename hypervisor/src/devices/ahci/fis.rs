//! Frame Information Structures (Serial ATA 3.x, 10.5): the Register Host-to-Device FIS a
//! command table carries, and the Register Device-to-Host and PIO Setup FISes the HBA writes
//! into the port's receive area when a command ends.

/// FIS type of a Register FIS, host to device.
pub const TYPE_REG_H2D: u8 = 0x27;
/// FIS type of a Register FIS, device to host.
pub const TYPE_REG_D2H: u8 = 0x34;
/// FIS type of a PIO Setup FIS.
pub const TYPE_PIO_SETUP: u8 = 0x5f;
/// Bytes of a Register FIS (either direction) and of a PIO Setup FIS.
pub const FIS_LEN: usize = 20;

/// Offsets in the received-FIS area (AHCI 1.3.1, 4.2.1).
pub const RX_PIO_SETUP: u64 = 0x20;
/// Where the Register D2H FIS goes.
pub const RX_D2H: u64 = 0x40;

/// The device-control register's soft-reset bit.
pub const CONTROL_SRST: u8 = 1 << 2;

/// ATA status register bits.
pub mod status {
    /// Error (CHECK for packet devices).
    pub const ERR: u8 = 0x01;
    /// Data request.
    pub const DRQ: u8 = 0x08;
    /// Seek complete / deferred write error, set by convention on ready devices.
    pub const DSC: u8 = 0x10;
    /// Device ready.
    pub const DRDY: u8 = 0x40;
    /// Busy.
    pub const BSY: u8 = 0x80;
}

/// ATA error register bits.
pub mod error {
    /// Command aborted.
    pub const ABRT: u8 = 0x04;
    /// ID not found: an address beyond the medium.
    pub const IDNF: u8 = 0x10;
    /// Uncorrectable data error.
    pub const UNC: u8 = 0x40;
}

/// The registers a command sets, as an H2D Register FIS carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskFile {
    /// The C bit: a command (true) or a device-control update (false).
    pub is_command: bool,
    /// Command register.
    pub command: u8,
    /// Features, 16 bits (the high byte for 48-bit commands).
    pub features: u16,
    /// LBA, 48 bits.
    pub lba: u64,
    /// Device register.
    pub device: u8,
    /// Sector count, 16 bits.
    pub count: u16,
    /// Device control register.
    pub control: u8,
}

impl TaskFile {
    /// Reads an H2D Register FIS; None when the bytes are another FIS type.
    pub fn from_fis(fis: &[u8; FIS_LEN]) -> Option<Self> {
        if fis[0] != TYPE_REG_H2D {
            return None;
        }
        let lba = u64::from(fis[4])
            | u64::from(fis[5]) << 8
            | u64::from(fis[6]) << 16
            | u64::from(fis[8]) << 24
            | u64::from(fis[9]) << 32
            | u64::from(fis[10]) << 40;
        Some(Self {
            is_command: fis[1] & 0x80 != 0,
            command: fis[2],
            features: u16::from_le_bytes([fis[3], fis[11]]),
            lba,
            device: fis[7],
            count: u16::from_le_bytes([fis[12], fis[13]]),
            control: fis[15],
        })
    }

    /// The 28-bit address of a command without the 48-bit extension (its top nibble is in
    /// the device register).
    pub fn lba28(&self) -> u64 {
        (self.lba & 0x00ff_ffff) | u64::from(self.device & 0x0f) << 24
    }
}

/// The registers a device reports when a command ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registers {
    /// Status.
    pub status: u8,
    /// Error.
    pub error: u8,
    /// Sector count (a packet device's interrupt reason; a signature's 1).
    pub count: u16,
    /// LBA (a signature's bytes).
    pub lba: u64,
    /// Device register.
    pub device: u8,
}

impl Registers {
    /// The Register D2H FIS, with its interrupt bit set.
    pub fn d2h_fis(&self) -> [u8; FIS_LEN] {
        let mut f = self.fis_body();
        f[0] = TYPE_REG_D2H;
        f[1] = 0x40;
        f
    }

    /// The PIO Setup FIS of a data-in command that ended with these registers (the ending
    /// status goes in E_Status, which is what a host reads for PIO data-in commands).
    pub fn pio_setup_fis(&self, transfer: u16) -> [u8; FIS_LEN] {
        let mut f = self.fis_body();
        f[0] = TYPE_PIO_SETUP;
        // Interrupt, and D: device to host.
        f[1] = 0x40 | 0x20;
        f[2] = (self.status & !status::BSY) | status::DRQ;
        f[15] = self.status;
        f[16..18].copy_from_slice(&transfer.to_le_bytes());
        f
    }

    fn fis_body(&self) -> [u8; FIS_LEN] {
        let mut f = [0u8; FIS_LEN];
        f[2] = self.status;
        f[3] = self.error;
        let lba = self.lba.to_le_bytes();
        f[4..7].copy_from_slice(&lba[0..3]);
        f[7] = self.device;
        f[8..11].copy_from_slice(&lba[3..6]);
        f[12..14].copy_from_slice(&self.count.to_le_bytes());
        f
    }

    /// PxTFD as the HBA shows these registers: error in bits 15:8, status in 7:0.
    pub fn tfd(&self) -> u32 {
        u32::from(self.error) << 8 | u32::from(self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_h2d_fis_reads_back_as_its_registers() {
        let mut f = [0u8; FIS_LEN];
        f[0] = TYPE_REG_H2D;
        f[1] = 0x80;
        f[2] = 0x25;
        f[3] = 0x01;
        f[4..7].copy_from_slice(&[0x11, 0x22, 0x33]);
        f[7] = 0xe5;
        f[8..11].copy_from_slice(&[0x44, 0x55, 0x66]);
        f[11] = 0x02;
        f[12..14].copy_from_slice(&[0x10, 0x01]);
        f[15] = CONTROL_SRST;
        let tf = TaskFile::from_fis(&f).unwrap();
        assert!(tf.is_command);
        assert_eq!(tf.command, 0x25);
        assert_eq!(tf.features, 0x0201);
        assert_eq!(tf.lba, 0x6655_4433_2211);
        assert_eq!(tf.count, 0x0110);
        assert_eq!(tf.control, CONTROL_SRST);
        assert_eq!(tf.lba28(), 0x0533_2211);
        f[0] = TYPE_REG_D2H;
        assert_eq!(TaskFile::from_fis(&f), None);
    }

    #[test]
    fn d2h_and_pio_setup_carry_the_ending_registers() {
        let r = Registers {
            status: 0x50,
            error: 0,
            count: 1,
            lba: 0xeb_1401,
            device: 0,
        };
        let d = r.d2h_fis();
        assert_eq!(
            (d[0], d[1], d[2], d[4], d[5], d[6], d[12]),
            (0x34, 0x40, 0x50, 1, 0x14, 0xeb, 1)
        );
        let p = r.pio_setup_fis(512);
        assert_eq!((p[0], p[1], p[2], p[15]), (0x5f, 0x60, 0x58, 0x50));
        assert_eq!(u16::from_le_bytes([p[16], p[17]]), 512);
        assert_eq!(
            Registers {
                status: 0x51,
                error: 0x04,
                ..r
            }
            .tfd(),
            0x0451
        );
    }
}
