/* PCI lookup, the serial console and the two memory functions the compiler may call. */
#include "hw.h"

int pci_find(uint16_t vendor, uint16_t device)
{
    uint32_t want = (uint32_t)device << 16 | vendor;
    for (unsigned dev = 0; dev < 32; dev++)
        if (pci_read32(dev, 0) == want)
            return (int)dev;
    return -1;
}

uint64_t pci_bar(unsigned dev, unsigned bar)
{
    if (bar > 5)
        return 0;
    uint32_t lo = pci_read32(dev, 0x10 + bar * 4);
    if (lo & 1) /* an I/O BAR */
        return 0;
    uint64_t addr = lo & ~0xfu;
    if (((lo >> 1) & 3) == 2 && bar < 5)
        addr |= (uint64_t)pci_read32(dev, 0x14 + bar * 4) << 32;
    return addr;
}

void pci_enable(unsigned dev)
{
    uint32_t cmd = pci_read32(dev, 0x04) & 0xffff;
    pci_write32(dev, 0x04, cmd | 0x02 | 0x04);
}

void serial_putc(char c)
{
    for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
        ;
    outb(COM1, (uint8_t)c);
}

void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

void serial_putu(unsigned v)
{
    char buf[12];
    int n = 0;
    do
        buf[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < 11);
    while (n)
        serial_putc(buf[--n]);
}

void *memset(void *d, int c, unsigned long n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}
