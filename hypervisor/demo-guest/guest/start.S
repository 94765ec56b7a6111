/* Entry and interrupt stubs. tessera-vmm enters _start in 64-bit mode at CPL 0, interrupts
 * off, with RSI pointing at the Linux zero page (struct boot_params). kernel_init() prepares
 * the machine and drops to CPL 3, where demo_main() runs. */
    .section .text.start, "ax"
    .global _start
_start:
    lea     kernel_stack_top(%rip), %rsp
    mov     %rsi, %rdi
    call    kernel_init
1:  cli
    hlt
    jmp     1b

/* A device interrupt or the timer: it only ends the `hlt` in sleep_gate. Acknowledge it at the
 * local APIC and return; the main loop polls every device. */
    .text
    .global irq_wake
irq_wake:
    push    %rax
    mov     $0xfee000b0, %eax
    movl    $0, (%rax)
    pop     %rax
    iretq

/* CPL 3 sleeps with `ud2` (interrupts are off there): the invalid-opcode handler steps over it
 * and waits for the next interrupt. Not `int n`: PVM's emulator answers software interrupts
 * from a non-PVM guest with #UD anyway. `sti` takes effect after `hlt` starts, so an
 * interrupt already pending wakes it at once. Any other invalid opcode stops the CPU. */
    .global sleep_gate
sleep_gate:
    push    %rax
    mov     8(%rsp), %rax
    cmpw    $0x0b0f, (%rax)
    jne     2f
    addq    $2, 8(%rsp)
    pop     %rax
    sti
    hlt
    cli
    iretq
2:  cli
    hlt
    jmp     2b

    .bss
    .balign 16
    .space  16384
kernel_stack_top:
