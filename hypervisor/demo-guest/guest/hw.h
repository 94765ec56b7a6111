/* Port I/O, memory-mapped registers, PCI configuration space and the serial console. */
#ifndef DEMO_HW_H
#define DEMO_HW_H

#include <stdint.h>

#define COM1 0x3f8

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline void barrier(void) { __asm__ volatile("" : : : "memory"); }

static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_read16(uint64_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_write16(uint64_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline void mmio_write64(uint64_t a, uint64_t v)
{
    mmio_write32(a, (uint32_t)v);
    mmio_write32(a + 4, (uint32_t)(v >> 32));
}

/* Configuration space of function 0 of device `dev` on bus 0 (mechanism #1). */
static inline uint32_t pci_read32(unsigned dev, unsigned reg)
{
    outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
    return inl(0xcfc);
}
static inline void pci_write32(unsigned dev, unsigned reg, uint32_t v)
{
    outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
    outl(0xcfc, v);
}
static inline uint8_t pci_read8(unsigned dev, unsigned reg)
{
    return (uint8_t)(pci_read32(dev, reg) >> ((reg & 3) * 8));
}

/* The device on bus 0 with this vendor and device ID, or -1. */
int pci_find(uint16_t vendor, uint16_t device);
/* The memory address BAR `bar` decodes (both halves of a 64-bit BAR). */
uint64_t pci_bar(unsigned dev, unsigned bar);
/* Turns on memory decoding and bus mastering. */
void pci_enable(unsigned dev);

void serial_putc(char c);
void serial_puts(const char *s);
void serial_putu(unsigned v);

void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);

#endif
