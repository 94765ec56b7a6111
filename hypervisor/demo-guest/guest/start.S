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

/* QEMU's entry: its -kernel takes an ELF only by the PVH boot protocol (32-bit protected mode,
 * paging off, EBX at struct hvm_start_info, entered at the note's address, which QEMU reads as
 * 64 bits in an ELF64). Map the low 4 GiB with 2 MiB user pages, enter long mode and go on at
 * _start with RSI at a zero page holding what demo_main reads: the command line's address. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long   4, 8, 18                    /* name size, address size, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz  "Xen"
    .quad   pvh_start32
    .popsection
    .code32
pvh_start32:
    mov     24(%ebx), %eax              /* start_info.cmdline_paddr */
    mov     %eax, pvh_zero_page + 0x228
    movl    $pvh_pdpt + 7, pvh_pml4     /* present, writable, user */
    movl    $pvh_pd + 0x0007, pvh_pdpt
    movl    $pvh_pd + 0x1007, pvh_pdpt + 8
    movl    $pvh_pd + 0x2007, pvh_pdpt + 16
    movl    $pvh_pd + 0x3007, pvh_pdpt + 24
    mov     $0x87, %eax                 /* and 2 MiB */
    xor     %ecx, %ecx
1:  mov     %eax, pvh_pd(, %ecx, 8)
    add     $0x200000, %eax
    inc     %ecx
    cmp     $2048, %ecx
    jne     1b
    mov     $pvh_pml4, %eax
    mov     %eax, %cr3
    mov     %cr4, %eax
    or      $0x20, %eax                 /* PAE */
    mov     %eax, %cr4
    mov     $0xc0000080, %ecx           /* EFER.LME */
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000001, %eax           /* PG, PE */
    mov     %eax, %cr0
    lgdt    pvh_gdtr
    ljmp    $0x08, $pvh_start64
    .code64
pvh_start64:                            /* kernel_init loads the real GDT and segments */
    lea     pvh_zero_page(%rip), %rsi
    jmp     _start

    .section .rodata
    .balign 8
pvh_gdt:
    .quad   0, 0x00af9a000000ffff       /* null, 64-bit code */
pvh_gdtr:
    .word   pvh_gdtr - pvh_gdt - 1
    .long   pvh_gdt

    .bss
    .balign 4096
pvh_pml4:   .space 4096
pvh_pdpt:   .space 4096
pvh_pd:     .space 4 * 4096
pvh_zero_page: .space 4096
    .balign 16
    .space  16384
kernel_stack_top:
