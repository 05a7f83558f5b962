#include "fake_l4.h"
volatile uint32_t td_fake_regs[0x1800];
