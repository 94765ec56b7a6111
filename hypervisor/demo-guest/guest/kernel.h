/* The part of the demo that runs at CPL 0: descriptor tables, interrupts, the drop to CPL 3. */
#ifndef DEMO_KERNEL_H
#define DEMO_KERNEL_H

#include <stdint.h>

/* Waits for the next interrupt (a timer tick at the latest): the invalid-opcode handler
 * (start.S, sleep_gate) sleeps on behalf of CPL 3. */
static inline void sleep_until_interrupt(void)
{
    __asm__ volatile("ud2" ::: "memory");
}

#endif
