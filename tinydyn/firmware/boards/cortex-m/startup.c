/* Minimal Cortex-M4 start-up: vector table, .data copy, .bss clear, FPU on, main(). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
void td_reset_handler(void);

static void td_default_handler(void)
{
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) static void (*const td_vectors[16])(void) = {
    (void (*)(void))(&_estack), td_reset_handler, td_default_handler, td_default_handler,
    td_default_handler, td_default_handler, td_default_handler, 0, 0, 0, 0,
    td_default_handler, td_default_handler, 0, td_default_handler, td_default_handler,
};

void td_reset_handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    /* CPACR: full access to CP10/CP11 (the FPU), needed with -mfloat-abi=hard */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb");
    main();
    for (;;) {
    }
}
