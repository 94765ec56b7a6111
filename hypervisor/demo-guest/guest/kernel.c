/* CPL 0: make the identity map reachable from CPL 3, load our GDT, TSS and IDT, route the
 * i8042's and the serial port's interrupts, start a periodic timer, then run demo_main() at CPL 3 with IOPL 3.
 *
 * Why CPL 3: where /dev/kvm is PVM (software-assisted), a non-PVM guest's CPL-0 code is
 * emulated instruction by instruction (~2.3 us each: a full-screen fill took 2.3 s), while its
 * CPL-3 code runs natively (the same fill in milliseconds). On hardware virtualisation both are
 * native and nothing is lost. IOPL 3 lets CPL 3 use port I/O and cli; only `hlt` needs CPL 0,
 * hence the sleep gate (start.S). */
#include "hw.h"
#include "kernel.h"

#define LAPIC 0xfee00000u
#define IOAPIC 0xfec00000u
#define VEC_TIMER 0x40
#define VEC_KBD 0x41
#define VEC_MOUSE 0x42
#define VEC_SERIAL 0x43
#define TICK_HZ 60
#define PTE_PRESENT 0x1
#define PTE_USER 0x4
#define PTE_HUGE 0x80
#define ADDR_MASK 0x000ffffffffff000ull
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UCODE 0x18
#define SEL_UDATA 0x20
#define SEL_TSS 0x28
#define RFLAGS_RESERVED 0x2
#define RFLAGS_IOPL3 0x3000

extern void irq_wake(void);
extern void sleep_gate(void);
void demo_main(const uint8_t *zero_page);

struct idt_entry { uint16_t off0, selector; uint8_t ist, attr; uint16_t off1; uint32_t off2, zero; };
struct __attribute__((packed)) table_register { uint16_t limit; uint64_t base; };

static struct idt_entry idt[256] __attribute__((aligned(16)));
static uint64_t gdt[7] __attribute__((aligned(16)));
/* The 64-bit TSS (104 bytes), then an I/O permission bitmap that allows every port, then its
 * terminating 0xff byte. */
#define TSS_SIZE 104
static uint8_t tss[TSS_SIZE + 8192 + 1] __attribute__((aligned(16)));
static uint8_t user_stack[65536] __attribute__((aligned(16)));
static uint8_t interrupt_stack[16384] __attribute__((aligned(16)));

/* The boot identity map (the VMM's, 2 MiB pages) gets the user bit at every level. */
static void open_identity_map(void)
{
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    uint64_t *pml4 = (uint64_t *)(cr3 & ADDR_MASK);
    for (int i = 0; i < 512; i++) {
        if (!(pml4[i] & PTE_PRESENT))
            continue;
        pml4[i] |= PTE_USER;
        uint64_t *pdpt = (uint64_t *)(pml4[i] & ADDR_MASK);
        for (int j = 0; j < 512; j++) {
            if (!(pdpt[j] & PTE_PRESENT))
                continue;
            pdpt[j] |= PTE_USER;
            if (pdpt[j] & PTE_HUGE)
                continue;
            uint64_t *pd = (uint64_t *)(pdpt[j] & ADDR_MASK);
            for (int k = 0; k < 512; k++)
                if (pd[k] & PTE_PRESENT)
                    pd[k] |= PTE_USER;
        }
    }
    __asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
}

static void load_gdt(void)
{
    gdt[1] = 0x00af9a000000ffffull; /* kernel code, 64-bit */
    gdt[2] = 0x00cf92000000ffffull; /* kernel data */
    gdt[3] = 0x00affa000000ffffull; /* user code, 64-bit, DPL 3 */
    gdt[4] = 0x00cff2000000ffffull; /* user data, DPL 3 */
    uint64_t t = (uint64_t)tss;
    gdt[5] = (sizeof tss - 1) | (t & 0xffffff) << 16 | 0x89ull << 40 | ((t >> 24) & 0xff) << 56;
    gdt[6] = t >> 32;
    *(uint64_t *)(tss + 4) = (uint64_t)(interrupt_stack + sizeof interrupt_stack); /* RSP0 */
    *(uint16_t *)(tss + 102) = TSS_SIZE; /* the I/O bitmap follows */
    tss[sizeof tss - 1] = 0xff;
    struct table_register r = {sizeof gdt - 1, (uint64_t)gdt};
    __asm__ volatile("lgdt %0\n\t"
                     "pushq %1\n\t"
                     "lea 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "lretq\n"
                     "1:\tmov %2, %%eax\n\t"
                     "mov %%eax, %%ds\n\t"
                     "mov %%eax, %%es\n\t"
                     "mov %%eax, %%ss\n\t"
                     "mov %3, %%eax\n\t"
                     "ltr %%ax"
                     :
                     : "m"(r), "i"(SEL_KCODE), "i"(SEL_KDATA), "i"(SEL_TSS)
                     : "rax", "memory");
}

static void set_gate(unsigned vector, void (*handler)(void), uint8_t attr)
{
    uint64_t h = (uint64_t)handler;
    idt[vector] = (struct idt_entry){(uint16_t)h, SEL_KCODE, 0, attr, (uint16_t)(h >> 16),
                                     (uint32_t)(h >> 32), 0};
}

static void load_idt(void)
{
    for (unsigned v = 32; v < 256; v++)
        set_gate(v, irq_wake, 0x8e); /* interrupt gate, DPL 0 */
    set_gate(6, sleep_gate, 0x8e); /* #UD: see start.S */
    struct table_register r = {sizeof idt - 1, (uint64_t)idt};
    __asm__ volatile("lidt %0" : : "m"(r));
}

static void lapic_write(unsigned reg, uint32_t v) { mmio_write32(LAPIC + reg, v); }
static uint32_t lapic_read(unsigned reg) { return mmio_read32(LAPIC + reg); }

static void ioapic_route(unsigned pin, unsigned vector)
{
    mmio_write32(IOAPIC, 0x10 + 2 * pin);
    mmio_write32(IOAPIC + 0x10, vector); /* fixed, edge, active high, unmasked */
    mmio_write32(IOAPIC, 0x11 + 2 * pin);
    mmio_write32(IOAPIC + 0x10, 0); /* to APIC 0 */
}

/* Local APIC timer counts (divide by 16) in 10 ms, measured against PIT channel 2. */
static uint32_t lapic_ticks_per_10ms(void)
{
    const uint16_t latch = 11932; /* 1.193182 MHz / 100 */
    outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
    outb(0x43, 0xb0);
    outb(0x42, latch & 0xff);
    outb(0x42, latch >> 8);
    lapic_write(0x3e0, 0x3);
    lapic_write(0x320, 1u << 16); /* masked, one-shot */
    lapic_write(0x380, 0xffffffffu);
    for (uint32_t i = 0; i < 1000000u && !(inb(0x61) & 0x20); i++)
        ;
    uint32_t elapsed = 0xffffffffu - lapic_read(0x390);
    return elapsed > 1000 ? elapsed : 625000; /* no PIT: assume KVM's 1 GHz APIC bus */
}

static void interrupts_init(void)
{
    outb(0x21, 0xff); /* the 8259s stay masked: the I/O APIC delivers */
    outb(0xa1, 0xff);
    lapic_write(0xf0, 0x1ff);
    ioapic_route(1, VEC_KBD);
    ioapic_route(12, VEC_MOUSE);
    ioapic_route(4, VEC_SERIAL);
    outb(COM1 + 4, 0x08); /* OUT2: the PC's gate for the UART's interrupt line */
    outb(COM1 + 1, 0x01); /* interrupt on received data */
    uint32_t ticks = lapic_ticks_per_10ms();
    lapic_write(0x3e0, 0x3);
    lapic_write(0x320, (1u << 17) | VEC_TIMER); /* periodic */
    lapic_write(0x380, ticks * 100 / TICK_HZ);
}

static void user_halt(void)
{
    for (;;)
        sleep_until_interrupt();
}

void kernel_init(const uint8_t *zero_page)
{
    open_identity_map();
    load_gdt();
    load_idt();
    interrupts_init();
    /* The user stack holds a return address, so that demo_main returning parks the CPU. */
    uint64_t *sp = (uint64_t *)(user_stack + sizeof user_stack) - 1;
    *sp = (uint64_t)user_halt;
    __asm__ volatile("pushq %0\n\t"
                     "pushq %1\n\t"
                     "pushq %2\n\t"
                     "pushq %3\n\t"
                     "pushq %4\n\t"
                     "iretq"
                     :
                     : "i"(SEL_UDATA | 3), "r"((uint64_t)sp), "i"(RFLAGS_IOPL3 | RFLAGS_RESERVED),
                       "i"(SEL_UCODE | 3), "r"((uint64_t)demo_main), "D"(zero_page)
                     : "memory");
    __builtin_unreachable();
}
