/* MMU and caches of the Zynq-7000's Cortex-A9 (core 0), bare metal; see td_zynq.h.
 *
 * References: ARM Architecture Reference Manual ARMv7-A (short-descriptor sections, TEX/C/B
 * memory types, CP15 cache maintenance), Cortex-A9 TRM (ACTLR, set/way geometry from CCSIDR),
 * PL310 (L2C-310) TRM (maintenance by PA, cache sync, invalidate by way), Zynq-7000 TRM UG585
 * (memory map; SLCR L2C_RAM register 0xF8000A1C = 0x00020202 before enabling the L2). */
#include "td_zynq.h"

/* short-descriptor section entry fields */
#define SEC 0x2u
#define SEC_B (1u << 2)
#define SEC_C (1u << 3)
#define SEC_XN (1u << 4)
#define SEC_AP_RW (3u << 10) /* read/write at any privilege */
#define SEC_TEX(x) ((uint32_t)(x) << 12)
/* memory types (TEX remap off): normal inner/outer write-back write-allocate; device (shareable) */
#define TD_NORMAL_WB (SEC | SEC_AP_RW | SEC_TEX(1) | SEC_C | SEC_B)
#define TD_DEVICE (SEC | SEC_AP_RW | SEC_B | SEC_XN)

/* PL310 L2 cache controller (CPU private region) */
#define L2C_BASE 0xF8F02000u
#define L2C_CTRL 0x100u
#define L2C_AUX 0x104u
#define L2C_TAG_LAT 0x108u
#define L2C_DATA_LAT 0x10Cu
#define L2C_INT_CLEAR 0x220u
#define L2C_SYNC 0x730u
#define L2C_INV_PA 0x770u
#define L2C_INV_WAY 0x77Cu
#define L2C_CLEAN_PA 0x7B0u
/* Xilinx's standalone BSP values for the Zynq-7000: early BRESP, instruction and data prefetch,
 * 8-way, 64 KiB ways; RAM latencies */
#define L2C_AUX_VALUE 0x72360000u
#define L2C_TAG_LAT_VALUE 0x0111u
#define L2C_DATA_LAT_VALUE 0x0121u
#define SLCR_LOCK 0xF8000004u
#define SLCR_UNLOCK 0xF8000008u
#define SLCR_L2C_RAM 0xF8000A1Cu
#define SCU_CTRL 0xF8F00000u

static uint32_t td_tt[4096] __attribute__((aligned(16384), section(".mmu_tbl")));

static volatile uint32_t *reg(uint32_t addr) { return (volatile uint32_t *)(uintptr_t)addr; }
static void dsb(void) { __asm__ volatile("dsb" ::: "memory"); }
static void isb(void) { __asm__ volatile("isb" ::: "memory"); }

/* Invalidate the whole L1 data cache by set/way (its contents are undefined after reset). */
static void l1d_invalidate_all(void) {
    uint32_t ccsidr;
    __asm__ volatile("mcr p15, 2, %0, c0, c0, 0" ::"r"(0u)); /* CSSELR: L1 data */
    isb();
    __asm__ volatile("mrc p15, 1, %0, c0, c0, 0" : "=r"(ccsidr)); /* CCSIDR */
    const uint32_t line_shift = (ccsidr & 7u) + 4u;
    const uint32_t ways = ((ccsidr >> 3) & 0x3FFu) + 1u, sets = ((ccsidr >> 13) & 0x7FFFu) + 1u;
    /* the way number sits in the top log2(ways) bits (A9: 4 ways -> bits 31:30) */
    const uint32_t way_shift = ways > 1u ? (uint32_t)__builtin_clz(ways - 1u) : 0u;
    for (uint32_t w = 0; w < ways; ++w)
        for (uint32_t s = 0; s < sets; ++s) {
            uint32_t sw = (ways > 1u ? w << way_shift : 0u) | (s << line_shift);
            __asm__ volatile("mcr p15, 0, %0, c7, c6, 2" ::"r"(sw)); /* DCISW */
        }
    dsb();
}

static void l2_enable(void) {
    if (*reg(L2C_BASE + L2C_CTRL) & 1u) return; /* already on (e.g. left on by a debugger) */
    *reg(SLCR_UNLOCK) = 0xDF0Du;
    *reg(SLCR_L2C_RAM) = 0x00020202u;
    *reg(SLCR_LOCK) = 0x767Bu;
    *reg(L2C_BASE + L2C_AUX) = L2C_AUX_VALUE;
    *reg(L2C_BASE + L2C_TAG_LAT) = L2C_TAG_LAT_VALUE;
    *reg(L2C_BASE + L2C_DATA_LAT) = L2C_DATA_LAT_VALUE;
    *reg(L2C_BASE + L2C_INV_WAY) = 0xFFFFu; /* every way */
    while (*reg(L2C_BASE + L2C_INV_WAY) & 0xFFFFu) {
    }
    *reg(L2C_BASE + L2C_SYNC) = 0u;
    while (*reg(L2C_BASE + L2C_SYNC) & 1u) {
    }
    *reg(L2C_BASE + L2C_INT_CLEAR) = 0x1FFu;
    *reg(L2C_BASE + L2C_CTRL) = 1u;
    dsb();
}

static uint32_t section_attributes(uint32_t mib) {
    if (mib < 0x200u) return TD_NORMAL_WB;                    /* DDR, 512 MiB */
    if (mib >= 0x400u && mib < 0xC00u) return TD_DEVICE;      /* PL: AXI GP0/GP1 (IODMA registers) */
    if (mib >= 0xE00u && mib < 0xE03u) return TD_DEVICE;      /* IOP: UART, GPIO, ... */
    if (mib >= 0xF80u && mib < 0xF90u) return TD_DEVICE;      /* SLCR, PS system, CPU private, L2C */
    if (mib == 0xFFFu) return TD_NORMAL_WB;                   /* on-chip memory, high */
    return 0u;                                                /* fault: catches stray pointers */
}

void td_zynq_mmu_init(void) {
    uint32_t v;
    /* MMU and caches are off here (reset, or the FSBL turned them off before the hand-over) */
    __asm__ volatile("mcr p15, 0, %0, c8, c7, 0" ::"r"(0u)); /* TLBIALL */
    __asm__ volatile("mcr p15, 0, %0, c7, c5, 0" ::"r"(0u)); /* ICIALLU */
    __asm__ volatile("mcr p15, 0, %0, c7, c5, 6" ::"r"(0u)); /* BPIALL */
    l1d_invalidate_all();
    for (uint32_t mib = 0; mib < 4096u; ++mib) {
        uint32_t attr = section_attributes(mib);
        td_tt[mib] = attr ? (mib << 20) | attr : 0u;
    }
    dsb();
    __asm__ volatile("mcr p15, 0, %0, c2, c0, 2" ::"r"(0u)); /* TTBCR: TTBR0 only */
    /* TTBR0: table walks inner and outer write-back write-allocate, non-shareable */
    __asm__ volatile("mcr p15, 0, %0, c2, c0, 0" ::"r"((uint32_t)(uintptr_t)td_tt | 0x48u));
    __asm__ volatile("mcr p15, 0, %0, c3, c0, 0" ::"r"(0x55555555u)); /* DACR: client everywhere */
    *reg(SCU_CTRL) |= 1u;                                             /* SCU on */
    __asm__ volatile("mrc p15, 0, %0, c1, c0, 1" : "=r"(v));           /* ACTLR */
    v |= (1u << 6) | (1u << 0);                                       /* SMP, cache/TLB maintenance broadcast */
    __asm__ volatile("mcr p15, 0, %0, c1, c0, 1" ::"r"(v));
    isb();
    l2_enable();
    __asm__ volatile("mrc p15, 0, %0, c1, c0, 0" : "=r"(v)); /* SCTLR */
    v &= ~((1u << 1) | (1u << 28) | (1u << 29));             /* no alignment faults, no TEX remap/AF */
    v |= (1u << 0) | (1u << 2) | (1u << 11) | (1u << 12);    /* MMU, D-cache, branch prediction, I-cache */
    dsb();
    __asm__ volatile("mcr p15, 0, %0, c1, c0, 0" ::"r"(v));
    isb();
}

uint32_t td_zynq_section(uintptr_t addr) { return td_tt[addr >> 20]; }

void td_zynq_cache_clean(const void *addr, size_t n) {
    uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(TD_ZYNQ_CACHE_LINE - 1u), end = (uintptr_t)addr + n;
    if (n == 0u) return;
    for (uintptr_t p = a; p < end; p += TD_ZYNQ_CACHE_LINE)
        __asm__ volatile("mcr p15, 0, %0, c7, c10, 1" ::"r"(p)); /* DCCMVAC: L1 to the L2 */
    dsb();
    for (uintptr_t p = a; p < end; p += TD_ZYNQ_CACHE_LINE) *reg(L2C_BASE + L2C_CLEAN_PA) = (uint32_t)p;
    *reg(L2C_BASE + L2C_SYNC) = 0u; /* identity map: virtual = physical */
    while (*reg(L2C_BASE + L2C_SYNC) & 1u) {
    }
    dsb();
}

void td_zynq_cache_invalidate(const void *addr, size_t n) {
    uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(TD_ZYNQ_CACHE_LINE - 1u), end = (uintptr_t)addr + n;
    if (n == 0u) return;
    /* outer first, so that the L1 cannot refill a line from a stale L2 copy */
    for (uintptr_t p = a; p < end; p += TD_ZYNQ_CACHE_LINE) *reg(L2C_BASE + L2C_INV_PA) = (uint32_t)p;
    *reg(L2C_BASE + L2C_SYNC) = 0u;
    while (*reg(L2C_BASE + L2C_SYNC) & 1u) {
    }
    for (uintptr_t p = a; p < end; p += TD_ZYNQ_CACHE_LINE)
        __asm__ volatile("mcr p15, 0, %0, c7, c6, 1" ::"r"(p)); /* DCIMVAC */
    dsb();
}
