/* Start-up of the tinydyn PS application on the Zynq-7000's Cortex-A9 core 0 (bare metal, ARM
 * state): vector table, a stack per exception mode, .data/.bss, VFP/NEON on, MMU and caches
 * (td_zynq_mmu_init), then main. The FSBL (or a JTAG script's ps7_init) has set up DDR, clocks
 * and MIO before it jumps to _start. */
    .syntax unified
    .arm

    .section .vectors, "ax"
    .global td_vectors
td_vectors:                       /* VBAR points here: 8 entries, 32-byte aligned */
    ldr pc, =_start               /* reset */
    ldr pc, =td_undefined         /* undefined instruction */
    ldr pc, =td_hang              /* SVC (not used) */
    ldr pc, =td_prefetch_abort    /* prefetch abort: e.g. executing a fault section */
    ldr pc, =td_data_abort        /* data abort: e.g. a stray pointer outside the mapped regions */
    ldr pc, =td_hang              /* reserved */
    ldr pc, =td_hang              /* IRQ (interrupts stay masked) */
    ldr pc, =td_hang              /* FIQ */
    .ltorg

    .section .boot, "ax"
    .global _start
    .type _start, %function
_start:
    cpsid if                      /* no interrupts */
    mrc p15, 0, r0, c0, c0, 5     /* MPIDR: only core 0 runs the application */
    ands r0, r0, #3
    bne td_hang
    ldr r0, =td_vectors
    mcr p15, 0, r0, c12, c0, 0    /* VBAR */
    /* a stack per mode (SP is banked), ending in SVC mode for main */
    cps #0x1B                     /* undefined */
    ldr sp, =__und_stack
    cps #0x17                     /* abort */
    ldr sp, =__abt_stack
    cps #0x12                     /* IRQ */
    ldr sp, =__irq_stack
    cps #0x13                     /* supervisor */
    ldr sp, =__svc_stack
    /* .data: copy when its load address differs (it does not when the FSBL loads the ELF) */
    ldr r0, =__data_start
    ldr r1, =__data_load
    ldr r2, =__data_end
    cmp r0, r1
    beq 2f
1:  cmp r0, r2
    ldrlo r3, [r1], #4
    strlo r3, [r0], #4
    blo 1b
2:  /* .bss: zero */
    ldr r0, =__bss_start
    ldr r1, =__bss_end
    mov r2, #0
3:  cmp r0, r1
    strlo r2, [r0], #4
    blo 3b
    /* VFP/NEON: full access to cp10/cp11, then FPEXC.EN (the code is built -mfloat-abi=hard) */
    mrc p15, 0, r0, c1, c0, 2
    orr r0, r0, #(0xF << 20)
    mcr p15, 0, r0, c1, c0, 2
    isb
    mov r0, #0x40000000
    vmsr fpexc, r0
    bl td_zynq_mmu_init
    bl main
td_hang:
    wfe
    b td_hang

td_undefined:
    mov r0, #1
    b td_fault
td_prefetch_abort:
    mov r0, #2
    mrc p15, 0, r1, c6, c0, 2     /* IFAR */
    b td_fault
td_data_abort:
    mov r0, #3
    mrc p15, 0, r1, c6, c0, 0     /* DFAR */
td_fault:
    sub r2, lr, #4
    bl td_zynq_fault              /* reports (kind, fault address, pc) on UART1, never returns */
    b td_hang
