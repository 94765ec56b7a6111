//! Purpose-built tiny guests for tests and benchmarks: a few hundred bytes of x86-64 machine
//! code wrapped in an ELF64 image that tessera-vmm boots at its 64-bit entry.
//!
//! Code is emitted by [`Asm`], a hand encoder for the dozen instructions such guests need; no
//! assembler is needed at build time. The ELF image also carries a PVH note whose 32-bit entry
//! runs the same bytes, so QEMU can load the identical guest with `-kernel` (the instructions
//! used here encode the same in 32-bit and 64-bit mode unless noted).

/// Where the image is loaded (guest-physical), above the boot structures.
pub const LOAD_ADDR: u64 = 0x20_0000;
/// Offset of the code in the image, after the ELF headers and the PVH note.
const CODE_OFFSET: usize = 0x100;
/// Guest-physical address of the first code byte (the entry point).
pub const CODE_BASE: u64 = LOAD_ADDR + CODE_OFFSET as u64;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Serial port COM1 data register.
pub const COM1: u16 = 0x3f8;

/// A minimal x86 encoder with backward labels.
#[derive(Default, Debug, Clone)]
pub struct Asm {
    code: Vec<u8>,
    /// 16-bit real mode: operand sizes flip, so 32-bit operations need a 0x66 prefix and
    /// 16-bit ones lose theirs.
    real_mode: bool,
}

impl Asm {
    /// Empty program for 64-bit (and, for the instructions here, 32-bit) mode.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty program for 16-bit real mode (a firmware image's reset vector).
    pub fn real_mode() -> Self {
        Self {
            code: Vec::new(),
            real_mode: true,
        }
    }

    fn op16(&mut self) -> &mut Self {
        if !self.real_mode {
            self.code.push(0x66);
        }
        self
    }

    fn op32(&mut self) -> &mut Self {
        if self.real_mode {
            self.code.push(0x66);
        }
        self
    }

    /// Current offset, for a later backward jump.
    pub fn here(&self) -> usize {
        self.code.len()
    }

    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.code.extend_from_slice(b);
        self
    }

    /// `mov dx, imm16`.
    pub fn mov_dx(&mut self, v: u16) -> &mut Self {
        let [lo, hi] = v.to_le_bytes();
        self.op16().bytes(&[0xba, lo, hi])
    }

    /// `mov al, imm8`.
    pub fn mov_al(&mut self, v: u8) -> &mut Self {
        self.bytes(&[0xb0, v])
    }

    /// `mov eax, imm32` (zero-extends into RAX in 64-bit mode).
    pub fn mov_eax(&mut self, v: u32) -> &mut Self {
        self.op32().bytes(&[0xb8]).bytes(&v.to_le_bytes())
    }

    /// `mov ecx, imm32`.
    pub fn mov_ecx(&mut self, v: u32) -> &mut Self {
        self.op32().bytes(&[0xb9]).bytes(&v.to_le_bytes())
    }

    /// `out dx, al`.
    pub fn out_dx_al(&mut self) -> &mut Self {
        self.bytes(&[0xee])
    }

    /// `out dx, eax`.
    pub fn out_dx_eax(&mut self) -> &mut Self {
        self.op32().bytes(&[0xef])
    }

    /// `in al, dx`.
    pub fn in_al_dx(&mut self) -> &mut Self {
        self.bytes(&[0xec])
    }

    /// `in eax, dx`.
    pub fn in_eax_dx(&mut self) -> &mut Self {
        self.op32().bytes(&[0xed])
    }

    /// `out imm8, al`.
    pub fn out_imm_al(&mut self, port: u8) -> &mut Self {
        self.bytes(&[0xe6, port])
    }

    /// `shr eax, imm8`.
    pub fn shr_eax(&mut self, n: u8) -> &mut Self {
        self.op32().bytes(&[0xc1, 0xe8, n])
    }

    /// `dec ecx` (the two-byte form, valid in both modes).
    pub fn dec_ecx(&mut self) -> &mut Self {
        self.op32().bytes(&[0xff, 0xc9])
    }

    /// `jnz` back to `target` (within 128 bytes).
    pub fn jnz_back(&mut self, target: usize) -> &mut Self {
        let rel = target as isize - (self.here() as isize + 2);
        self.bytes(&[0x75, rel as i8 as u8])
    }

    /// `jz` back to `target` (within 128 bytes).
    pub fn jz_back(&mut self, target: usize) -> &mut Self {
        let rel = target as isize - (self.here() as isize + 2);
        self.bytes(&[0x74, rel as i8 as u8])
    }

    /// `test eax, imm32`.
    pub fn test_eax(&mut self, v: u32) -> &mut Self {
        self.op32().bytes(&[0xa9]).bytes(&v.to_le_bytes())
    }

    /// `mov dword [eax/rax + disp32], imm32`: a memory or MMIO write through a register,
    /// since 64-bit absolute displacements sign-extend.
    pub fn store_rax_disp(&mut self, disp: u32, v: u32) -> &mut Self {
        self.bytes(&[0xc7, 0x80])
            .bytes(&disp.to_le_bytes())
            .bytes(&v.to_le_bytes())
    }

    /// `lidt [eax/rax]`.
    pub fn lidt_rax(&mut self) -> &mut Self {
        self.bytes(&[0x0f, 0x01, 0x18])
    }

    /// `sti`.
    pub fn sti(&mut self) -> &mut Self {
        self.bytes(&[0xfb])
    }

    /// `hlt; jmp` back to the `hlt`: sleep, wake on each interrupt, sleep again.
    pub fn idle_forever(&mut self) -> &mut Self {
        let top = self.here();
        self.bytes(&[0xf4]);
        let rel = top as isize - (self.here() as isize + 2);
        self.bytes(&[0xeb, rel as i8 as u8])
    }

    /// Pads with NOPs up to `offset`; panics if the code is already longer (a test bug).
    pub fn pad_to(&mut self, offset: usize) -> &mut Self {
        assert!(
            self.here() <= offset,
            "tiny guest code overlaps offset {offset:#x}"
        );
        self.code.resize(offset, 0x90);
        self
    }

    /// `mov eax, dword [eax/rax]`: an MMIO read.
    pub fn load_eax_from_rax(&mut self) -> &mut Self {
        self.bytes(&[0x8b, 0x00])
    }

    /// Writes each byte of `s` to COM1.
    pub fn print(&mut self, s: &[u8]) -> &mut Self {
        self.mov_dx(COM1);
        for &b in s {
            self.mov_al(b).out_dx_al();
        }
        self
    }

    /// Writes AL..EAX's four bytes to COM1, low byte first (clobbers EAX and DX).
    pub fn print_eax_bytes(&mut self) -> &mut Self {
        self.mov_dx(COM1);
        for i in 0..4 {
            self.out_dx_al();
            if i < 3 {
                self.shr_eax(8);
            }
        }
        self
    }

    /// Pulses the CPU reset line through the i8042: tessera-vmm exits with status 0.
    /// Port 0xf4 first, so QEMU's `isa-debug-exit` device ends QEMU the same way.
    pub fn reset(&mut self) -> &mut Self {
        self.mov_al(0)
            .out_imm_al(0xf4)
            .mov_al(0xfe)
            .out_imm_al(0x64)
    }

    /// `cli; hlt` forever.
    pub fn halt_forever(&mut self) -> &mut Self {
        let top = self.here();
        self.bytes(&[0xfa, 0xf4]);
        let rel = top as isize - (self.here() as isize + 2);
        self.bytes(&[0xeb, rel as i8 as u8])
    }

    /// `ud2`.
    pub fn ud2(&mut self) -> &mut Self {
        self.bytes(&[0x0f, 0x0b])
    }

    /// The machine code.
    pub fn code(&self) -> &[u8] {
        &self.code
    }
}

fn pvh_note(entry32: u32) -> Vec<u8> {
    // Xen ELF note: namesz, descsz, type XEN_ELFNOTE_PHYS32_ENTRY (18), "Xen\0", entry.
    let mut n = Vec::new();
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&18u32.to_le_bytes());
    n.extend_from_slice(b"Xen\0");
    n.extend_from_slice(&entry32.to_le_bytes());
    n
}

/// Wraps `code` in an ELF64 executable loaded at [`LOAD_ADDR`] and entered at its first byte.
pub fn elf(code: &[u8]) -> Vec<u8> {
    let note_off = EHDR_SIZE + 2 * PHDR_SIZE;
    let file_size = CODE_OFFSET + code.len();
    let entry = CODE_BASE;
    let note = pvh_note(entry as u32);

    let mut f = Vec::with_capacity(file_size);
    // ELF header.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    f.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
                                  // PT_LOAD of the whole file, read/write/execute.
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&7u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    f.extend_from_slice(&(file_size as u64).to_le_bytes());
    f.extend_from_slice(&(file_size as u64).to_le_bytes());
    f.extend_from_slice(&0x1000u64.to_le_bytes());
    // PT_NOTE with the PVH entry.
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&(note_off as u64).to_le_bytes());
    f.extend_from_slice(&(LOAD_ADDR + note_off as u64).to_le_bytes());
    f.extend_from_slice(&(LOAD_ADDR + note_off as u64).to_le_bytes());
    f.extend_from_slice(&(note.len() as u64).to_le_bytes());
    f.extend_from_slice(&(note.len() as u64).to_le_bytes());
    f.extend_from_slice(&4u64.to_le_bytes());
    f.extend_from_slice(&note);
    f.resize(CODE_OFFSET, 0);
    f.extend_from_slice(code);
    f
}

/// Size of a firmware image built by [`bios`].
pub const BIOS_SIZE: usize = 0x1_0000;

/// Wraps 16-bit real-mode `code` in a 64 KiB firmware image (QEMU `-bios`): the code sits at
/// the start of the image and the reset vector (the last 16 bytes) jumps to it.
pub fn bios(code: &[u8]) -> Vec<u8> {
    let mut img = vec![0xf4u8; BIOS_SIZE];
    let len = code.len().min(BIOS_SIZE - 16);
    img[..len].copy_from_slice(&code[..len]);
    // At reset CS base is 0xffff0000 and IP 0xfff0: a near jump to IP 0 lands on byte 0.
    let rel = 0u16.wrapping_sub(0xfff0 + 3);
    let [lo, hi] = rel.to_le_bytes();
    img[BIOS_SIZE - 16..BIOS_SIZE - 13].copy_from_slice(&[0xe9, lo, hi]);
    img
}

fn hello_code(mut a: Asm, msg: &[u8]) -> Asm {
    a.print(msg).reset().halt_forever();
    a
}

/// OUTs per loop iteration in [`pio_loop`]: unrolled so that the loop's own instructions,
/// which PVM emulates at different speeds in different CPU modes, add little to each exit.
pub const PIO_UNROLL: u32 = 16;

fn pio_loop_code(mut a: Asm, count: u32) -> Asm {
    a.print(b"go\n")
        .mov_dx(0x80)
        .mov_al(0x01)
        .mov_ecx(count.div_ceil(PIO_UNROLL));
    let top = a.here();
    for _ in 0..PIO_UNROLL {
        a.out_dx_al();
    }
    a.dec_ecx().jnz_back(top);
    a.print(b"done\n").reset().halt_forever();
    a
}

fn idle_code(mut a: Asm) -> Asm {
    a.print(b"idle\n").halt_forever();
    a
}

/// Prints `msg` on the serial console and resets.
pub fn hello(msg: &[u8]) -> Vec<u8> {
    elf(hello_code(Asm::new(), msg).code())
}

/// [`hello`] as a real-mode firmware image.
pub fn hello_bios(msg: &[u8]) -> Vec<u8> {
    bios(hello_code(Asm::real_mode(), msg).code())
}

/// Prints `lines` lines of 16 bytes on the serial console, then `flood done`, and resets: a
/// guest that fills its console log.
pub fn serial_flood(lines: u32) -> Vec<u8> {
    let mut a = Asm::new();
    a.mov_ecx(lines);
    let top = a.here();
    a.print(b"0123456789abcde\n").dec_ecx().jnz_back(top);
    a.print(b"flood done\n").reset().halt_forever();
    elf(a.code())
}

/// Prints `go`, does `count` OUTs (rounded up to a multiple of [`PIO_UNROLL`]) to port 0x80,
/// prints `done`, and resets: the port-I/O exit benchmark.
pub fn pio_loop(count: u32) -> Vec<u8> {
    elf(pio_loop_code(Asm::new(), count).code())
}

/// [`pio_loop`] as a real-mode firmware image.
pub fn pio_loop_bios(count: u32) -> Vec<u8> {
    bios(pio_loop_code(Asm::real_mode(), count).code())
}

/// Prints `idle` and sleeps with interrupts off, as a real-mode firmware image (the
/// memory-overhead benchmark's QEMU guest; tessera-vmm's is `milestones_then_idle(&[])`).
pub fn idle_bios() -> Vec<u8> {
    bios(idle_code(Asm::real_mode()).code())
}

/// Vector the serial interrupt is routed to by [`serial_irq`].
const SERIAL_VECTOR: u32 = 0x30;
const IDT_BASE: u32 = 0x1_0000;
const IDTR_ADDR: u32 = 0x1_1000;
const IOAPIC: u32 = 0xfec0_0000;
const LAPIC: u32 = 0xfee0_0000;
/// Offset of the interrupt handler in [`serial_irq`]'s code.
const HANDLER_OFFSET: usize = 0x100;

/// Exercises the whole interrupt path: programs an IDT, the I/O APIC (pin 4 to vector 0x30)
/// and the local APIC, enables the UART's receive interrupt, prints `ready`, and sleeps. A
/// byte sent to the console wakes it through irqfd -> I/O APIC -> LAPIC -> IDT; the handler
/// prints `IRQ:<byte>` and resets.
pub fn serial_irq() -> Vec<u8> {
    let mut a = Asm::new();
    route_irq(&mut a, 4, SERIAL_VECTOR, HANDLER_OFFSET);
    // UART: receive-data interrupt on, OUT2 (the PC's interrupt gate) on.
    a.mov_dx(COM1 + 1).mov_al(0x01).out_dx_al();
    a.mov_dx(COM1 + 4).mov_al(0x0b).out_dx_al();
    a.print(b"ready\n").sti().idle_forever();
    a.pad_to(HANDLER_OFFSET);
    a.print(b"IRQ:").mov_dx(COM1).in_al_dx().out_dx_al();
    a.mov_al(b'\n').out_dx_al().reset().halt_forever();
    elf(a.code())
}

/// Points `vector`'s IDT gate at the code at `handler_offset`, routes I/O APIC pin `pin` to
/// it (fixed, edge, to APIC 0), masks the PICs and enables the local APIC.
fn route_irq(a: &mut Asm, pin: u32, vector: u32, handler_offset: usize) {
    let handler = CODE_BASE + handler_offset as u64;
    // IDT entry: 64-bit interrupt gate, selector 0x10 (boot CS).
    a.mov_eax(IDT_BASE + vector * 16)
        .store_rax_disp(0, (handler as u32 & 0xffff) | (0x10 << 16))
        .store_rax_disp(4, (handler as u32 & 0xffff_0000) | 0x8e00)
        .store_rax_disp(8, (handler >> 32) as u32)
        .store_rax_disp(12, 0);
    // IDTR: limit covers the vector, base IDT_BASE.
    a.mov_eax(IDTR_ADDR)
        .store_rax_disp(0, (vector * 16 + 15) | ((IDT_BASE & 0xffff) << 16))
        .store_rax_disp(4, IDT_BASE >> 16)
        .store_rax_disp(8, 0)
        .lidt_rax();
    // I/O APIC redirection entry `pin` (registers 0x10 + 2 pin, +1): unmasked, to APIC 0.
    a.mov_eax(IOAPIC)
        .store_rax_disp(0, 0x10 + 2 * pin)
        .store_rax_disp(0x10, vector)
        .store_rax_disp(0, 0x11 + 2 * pin)
        .store_rax_disp(0x10, 0);
    // Mask the 8259 PICs, as an OS does once it uses the I/O APIC: KVM resets vCPU 0's LINT0
    // to ExtINT, so an unmasked PIC would deliver the IRQ a second time at a legacy vector.
    a.mov_al(0xff).out_imm_al(0x21).out_imm_al(0xa1);
    // Local APIC software enable (spurious vector register).
    a.mov_eax(LAPIC).store_rax_disp(0xf0, 0x1ff);
}

/// The display painter's video memory BAR (where tessera-vmm puts it; the guest keeps it).
pub const PAINTER_VRAM: u32 = 0xfd00_0000;
/// First pixel of the painter's picture.
pub const PAINTER_SEED: u32 = 0x0020_4060;
/// Added per pixel.
pub const PAINTER_STEP: u32 = 0x0001_0307;
/// Lines at the top that the painter repaints with each key.
pub const PAINTER_KEY_LINES: u32 = 8;
const KBD_VECTOR: u32 = 0x31;
const PAINTER_HANDLER: usize = 0x200;

/// Pixel `i` (row-major) of the painter's picture, as 0x00RRGGBB.
pub fn painter_pixel(i: u32) -> u32 {
    PAINTER_SEED.wrapping_add(i.wrapping_mul(PAINTER_STEP)) & 0x00ff_ffff
}

/// A guest for the display path: turns on memory decoding of the bochs adapter in PCI slot
/// `slot`, sets a `width` x `height` x 32 mode through the DISPI ports, paints
/// [`painter_pixel`] over it and prints `PAINTED`; then, per keyboard interrupt, echoes each
/// scancode byte to COM1 and repaints the top [`PAINTER_KEY_LINES`] lines in the colour
/// `byte * 0x010101`.
pub fn display_painter(slot: u8, width: u16, height: u16) -> Vec<u8> {
    let mut a = Asm::new();
    a.mov_dx(0xcf8)
        .mov_eax(0x8000_0000 | u32::from(slot) << 11 | 4)
        .out_dx_eax();
    a.mov_dx(0xcfc).mov_eax(0x7).out_dx_eax();
    for (index, value) in [(4, 0), (3, 32), (1, width), (2, height), (4, 0x41)] {
        // `out dx, ax` (66 EF) to the index, then to the data port.
        a.mov_dx(0x1ce).mov_eax(index).bytes(&[0x66, 0xef]);
        a.mov_dx(0x1cf)
            .mov_eax(u32::from(value))
            .bytes(&[0x66, 0xef]);
    }
    let pixels = u32::from(width) * u32::from(height);
    // mov edi, VRAM; mov ecx, pixels; mov eax, SEED; 1: stosd; add eax, STEP; dec ecx; jnz 1b
    a.bytes(&[0xbf]).bytes(&PAINTER_VRAM.to_le_bytes());
    a.mov_ecx(pixels).mov_eax(PAINTER_SEED);
    let top = a.here();
    a.bytes(&[0xab, 0x05]).bytes(&PAINTER_STEP.to_le_bytes());
    a.dec_ecx().jnz_back(top);
    a.print(b"PAINTED\n");
    route_irq(&mut a, 1, KBD_VECTOR, PAINTER_HANDLER);
    a.sti().idle_forever();
    a.pad_to(PAINTER_HANDLER);
    // Every byte the controller holds: echo it, paint the key band; then EOI and return.
    let poll = a.here();
    a.bytes(&[0xe4, 0x64, 0xa8, 0x01]); // in al, 0x64; test al, 1
    let jz_at = a.here();
    a.bytes(&[0x74, 0x00]); // jz done (patched below)
    a.bytes(&[0xe4, 0x60]).mov_dx(COM1).out_dx_al(); // in al, 0x60; out dx, al
    a.bytes(&[0x0f, 0xb6, 0xc0, 0x69, 0xc0]) // movzx eax, al; imul eax, eax, 0x010101
        .bytes(&0x0001_0101u32.to_le_bytes());
    a.bytes(&[0xbf]).bytes(&PAINTER_VRAM.to_le_bytes());
    a.mov_ecx(u32::from(width) * PAINTER_KEY_LINES)
        .bytes(&[0xf3, 0xab]); // rep stosd
    let rel = poll as isize - (a.here() as isize + 2);
    a.bytes(&[0xeb, rel as i8 as u8]);
    let done = a.here();
    a.code[jz_at + 1] = (done - (jz_at + 2)) as u8;
    a.mov_eax(LAPIC).store_rax_disp(0xb0, 0);
    a.bytes(&[0x48, 0xcf]); // iretq
    elf(a.code())
}

/// Writes dword register `reg` (byte offset) of PCI function `slot`.0 through 0xCF8/0xCFC.
fn pci_write(a: &mut Asm, slot: u8, reg: u32, value: u32) {
    a.mov_dx(0xcf8)
        .mov_eax(0x8000_0000 | u32::from(slot) << 11 | reg)
        .out_dx_eax();
    a.mov_dx(0xcfc).mov_eax(value).out_dx_eax();
}

/// Writes DISPI register `index` through the ports (`out dx, ax` is 66 EF).
fn dispi(a: &mut Asm, index: u16, value: u16) {
    a.mov_dx(0x1ce)
        .mov_eax(u32::from(index))
        .bytes(&[0x66, 0xef]);
    a.mov_dx(0x1cf)
        .mov_eax(u32::from(value))
        .bytes(&[0x66, 0xef]);
}

/// Sets `width` x `height` x 32 bpp with a linear framebuffer, as Linux's bochs-drm does.
fn set_mode(a: &mut Asm, width: u16, height: u16) {
    for (index, value) in [(4, 0), (3, 32), (1, width), (2, height), (4, 0x41)] {
        dispi(a, index, value);
    }
}

/// Paints [`painter_pixel`] over the first `pixels` pixels of video memory:
/// `mov edi, VRAM; mov ecx, pixels; mov eax, SEED; 1: stosd; add eax, STEP; dec ecx; jnz 1b`.
fn paint(a: &mut Asm, pixels: u32) {
    a.bytes(&[0xbf]).bytes(&PAINTER_VRAM.to_le_bytes());
    a.mov_ecx(pixels).mov_eax(PAINTER_SEED);
    let top = a.here();
    a.bytes(&[0xab, 0x05]).bytes(&PAINTER_STEP.to_le_bytes());
    a.dec_ecx().jnz_back(top);
}

/// A hostile guest for the display: absurd modes (too wide, 16 bpp, panned outside video
/// memory), video memory moved onto its own RAM (KVM refuses the overlap) and back, garbage
/// over the register BAR; then a sane 320x200 mode with [`painter_pixel`]s and `SURVIVED`.
pub fn display_abuse(slot: u8) -> Vec<u8> {
    let mut a = Asm::new();
    pci_write(&mut a, slot, 4, 0x7);
    set_mode(&mut a, 4096, 600);
    set_mode(&mut a, 640, 480);
    dispi(&mut a, 3, 16);
    dispi(&mut a, 3, 32);
    dispi(&mut a, 9, 0xffff);
    dispi(&mut a, 0x7fff, 0xffff);
    // BAR 0 onto guest RAM at 1 MiB, then home again.
    pci_write(&mut a, slot, 0x10, 0x0010_0000);
    pci_write(&mut a, slot, 0x10, PAINTER_VRAM);
    // Every dword of the register BAR gets 0xffffffff: `mov eax, BAR2 + 4 * ecx; mov [rax], -1`.
    a.mov_ecx(1024);
    let top = a.here();
    a.bytes(&[0x8d, 0x04, 0x8d]) // lea eax, [ecx*4 + disp32]
        .bytes(&(crate::arch::x86_64::layout::DISPLAY_MMIO_BAR - 4).to_le_bytes())
        .store_rax_disp(0, 0xffff_ffff)
        .dec_ecx()
        .jnz_back(top);
    set_mode(&mut a, 320, 200);
    paint(&mut a, 320 * 200);
    a.print(b"SURVIVED\n");
    elf(idle_code(a).code())
}

/// Writes each of `codes` to the debug port, then sleeps with interrupts off: a guest that
/// stays up for control-API tests.
pub fn milestones_then_idle(codes: &[u8]) -> Vec<u8> {
    let mut a = Asm::new();
    for &c in codes {
        a.mov_al(c).out_imm_al(0x80);
    }
    elf(idle_code(a).code())
}

/// Reads the PCI vendor/device dword and the class dword of 00:00.0 through ports 0xCF8/0xCFC
/// and prints their eight raw bytes, then resets.
pub fn pci_probe() -> Vec<u8> {
    let mut a = Asm::new();
    for reg in [0u32, 8] {
        a.mov_dx(0xcf8).mov_eax(0x8000_0000 | reg).out_dx_eax();
        a.mov_dx(0xcfc).in_eax_dx().print_eax_bytes();
    }
    a.reset().halt_forever();
    elf(a.code())
}

/// Touches an unclaimed port and unclaimed MMIO `count` times each, then prints
/// `still alive` and resets.
pub fn poke_unknown(count: u32) -> Vec<u8> {
    let mut a = Asm::new();
    a.mov_ecx(count);
    let top = a.here();
    a.mov_dx(0x1234).out_dx_al().in_al_dx();
    a.mov_eax(0xd000_0000)
        .store_rax_disp(0, 0xdead_beef)
        .load_eax_from_rax();
    a.dec_ecx().jnz_back(top);
    a.print(b"still alive\n").reset().halt_forever();
    elf(a.code())
}

/// An ACPI-aware guest in miniature: enables the power button event (PM1 enable, port
/// 0x602), prints `button armed`, and polls PM1 status (0x600) until the button is pressed.
/// Then, if `obey`, prints `button pressed` and powers off through ACPI's S5 (SLP_EN with
/// SLP_TYP 0 in PM1 control, 0x604), as an OS's shutdown ends; otherwise prints `button
/// ignored` and sleeps with interrupts off, as a hung or unwilling guest would.
pub fn acpi_power_button(obey: bool) -> Vec<u8> {
    let mut a = Asm::new();
    // One dword at 0x600: PM1 status (clear nothing) and PM1 enable (PWRBTN_EN).
    a.mov_dx(0x600).mov_eax(0x0100_0000).out_dx_eax();
    a.print(b"button armed\n");
    let top = a.here();
    a.mov_dx(0x600).in_eax_dx().test_eax(0x0100).jz_back(top);
    if obey {
        // PM1 control: SCI_EN kept, SLP_TYP 0 (S5), SLP_EN.
        a.print(b"button pressed\n")
            .mov_dx(0x604)
            .mov_eax(0x2001)
            .out_dx_eax();
    } else {
        a.print(b"button ignored\n");
    }
    a.halt_forever();
    elf(a.code())
}

/// Counts its boots in CMOS NVRAM byte 0x40 (kept across resets, as on a PC), prints `boot
/// N`, and reboots through ACPI's reset register (0xCF9) until the count reaches `boots`,
/// then powers off through ACPI's S5.
pub fn reboot_counter(boots: u8) -> Vec<u8> {
    let mut a = Asm::new();
    count_boot(&mut a);
    a.print(b"boot ");
    a.bytes(&[0x88, 0xd8, 0x04, b'0']); // mov al, bl; add al, '0'
    a.mov_dx(COM1).out_dx_al().mov_al(b'\n').out_dx_al();
    reboot_below(&mut a, boots);
    elf(a.code())
}

/// BL = ++NVRAM[0x40]: this boot's number, kept in CMOS across resets.
fn count_boot(a: &mut Asm) {
    a.mov_al(0x40).out_imm_al(0x70).bytes(&[0xe4, 0x71]); // in al, 0x71
    a.bytes(&[0xfe, 0xc0, 0x88, 0xc3]); // inc al; mov bl, al
    a.mov_al(0x40)
        .out_imm_al(0x70)
        .bytes(&[0x88, 0xd8])
        .out_imm_al(0x71); // mov al, bl
}

/// Reboots through ACPI's reset register (0xCF9) while BL is below `boots`, else powers off
/// through ACPI's S5.
fn reboot_below(a: &mut Asm, boots: u8) {
    let mut off = Asm::new();
    off.mov_dx(0x604)
        .mov_eax(0x2001)
        .out_dx_eax()
        .halt_forever();
    // cmp bl, boots; jb over the power-off to the reset.
    a.bytes(&[0x80, 0xfb, boots, 0x72, off.code().len() as u8]);
    a.bytes(off.code());
    a.mov_dx(0xcf9).mov_al(0x06).out_dx_al().halt_forever();
}

/// Executes `ud2` with no usable IDT: #UD, #GP, #DF, then a triple fault.
pub fn triple_fault() -> Vec<u8> {
    let mut a = Asm::new();
    a.print(b"faulting\n").ud2().halt_forever();
    elf(a.code())
}

/// TPM 2.0 commands the TPM guest sends: Startup(CLEAR), GetRandom(8), ReadClock.
pub const TPM_COMMANDS: [&[u8]; 3] = [
    &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0],
    &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8],
    &[0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x81],
];
/// How many bytes of each response the TPM guest prints (whole dwords covering it).
pub const TPM_RESPONSE_LENS: [usize; 3] = [12, 20, 36];

/// A TPM driver in miniature, on the CRB at 0xFED4_0000: takes locality 0, sends each of
/// [`TPM_COMMANDS`] (written into the buffer, START set, START polled until clear) and prints
/// `tpm\n` and then the first [`TPM_RESPONSE_LENS`] bytes of each response, raw, on COM1.
/// Counts its boots in CMOS NVRAM byte 0x40 and reboots (ACPI's reset register) until the
/// count reaches `boots`, then powers off: the reset count ReadClock returns at each boot
/// shows whether the machine's reset reset the TPM too. With `boots` 0 it sleeps instead,
/// until stopped.
pub fn tpm_exercise(boots: u8) -> Vec<u8> {
    const CRB: u32 = 0xfed4_0000;
    let mut a = Asm::new();
    a.print(b"tpm\n");
    // LOC_CTRL: request locality 0; CTRL_REQ: command ready.
    a.mov_eax(CRB)
        .store_rax_disp(0x08, 1)
        .store_rax_disp(0x40, 1);
    for (cmd, len) in TPM_COMMANDS.iter().zip(TPM_RESPONSE_LENS) {
        a.mov_eax(CRB);
        for (i, word) in cmd.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..word.len()].copy_from_slice(word);
            a.store_rax_disp(0x80 + 4 * i as u32, u32::from_le_bytes(w));
        }
        a.store_rax_disp(0x4c, 1);
        let poll = a.here();
        a.mov_eax(CRB + 0x4c)
            .load_eax_from_rax()
            .test_eax(1)
            .jnz_back(poll);
        for i in 0..len / 4 {
            a.mov_eax(CRB + 0x80 + 4 * i as u32)
                .load_eax_from_rax()
                .print_eax_bytes();
        }
    }
    if boots == 0 {
        a.halt_forever();
    } else {
        count_boot(&mut a);
        reboot_below(&mut a, boots);
    }
    elf(a.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_is_well_formed() {
        let img = hello(b"hi");
        assert_eq!(&img[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(img[24..32].try_into().unwrap());
        let off = (entry - LOAD_ADDR) as usize;
        // The entry is the first `mov dx, 0x3f8`.
        assert_eq!(&img[off..off + 4], &[0x66, 0xba, 0xf8, 0x03]);
        assert_eq!(entry, CODE_BASE);
        // The PVH note (after the headers) points at the same entry.
        let note = EHDR_SIZE + 2 * PHDR_SIZE;
        let note_entry = u32::from_le_bytes(img[note + 16..note + 20].try_into().unwrap());
        assert_eq!(u64::from(note_entry), entry);
    }

    #[test]
    fn real_mode_flips_operand_size_prefixes() {
        let mut a = Asm::real_mode();
        a.mov_dx(0x3f8).mov_ecx(1).dec_ecx();
        assert_eq!(
            a.code(),
            &[0xba, 0xf8, 0x03, 0x66, 0xb9, 1, 0, 0, 0, 0x66, 0xff, 0xc9]
        );
    }

    #[test]
    fn bios_reset_vector_jumps_to_the_start() {
        let img = bios(&[0x90]);
        assert_eq!(img.len(), BIOS_SIZE);
        assert_eq!(img[0], 0x90);
        let r = &img[BIOS_SIZE - 16..];
        assert_eq!(r[0], 0xe9);
        let rel = u16::from_le_bytes([r[1], r[2]]);
        assert_eq!(0xfff3u16.wrapping_add(rel), 0);
    }

    #[test]
    fn backward_jump_encoding() {
        let mut a = Asm::new();
        let top = a.here();
        a.dec_ecx().jnz_back(top);
        assert_eq!(a.code(), &[0xff, 0xc9, 0x75, 0xfc]);
    }
}
