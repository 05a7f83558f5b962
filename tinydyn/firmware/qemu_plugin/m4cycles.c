/* m4cycles: a QEMU TCG plugin that charges every executed Thumb/Thumb-2 instruction its
 * Cortex-M4 cycle cost (modelled, not measured; docs/CYCLES.md gives every figure's source).
 *
 *   qemu-system-arm -M mps2-an386 ... -plugin m4cycles.so,out=FILE,entry=0xADDR[,refill=2]
 *       [,div=12][,flash_ws=0][,flash_end=0x400000][,syms=FILE]
 *
 * Each translation block (TB) is classified once, at translation, from its instruction bytes:
 * its cost when its last instruction does not branch, and the extra refill cycles when it does.
 * One exec callback per TB adds that cost and decides the outcome of the previous TB's branch
 * exactly: taken iff this TB does not start at the previous TB's fall-through address.
 *
 * Region: with entry=ADDR (td_infer, from the ELF symbol table) counting starts when the TB at
 * ADDR executes; the return address is the fall-through of the TB that called it (a BL/BLX), and
 * counting stops when the TB at that address executes. One JSON line per call goes to FILE:
 *   {"n": 1, "cycles": C, "insns": I, "taken": T, "not_taken": U}
 * Without entry= the whole run is one region, written at exit.
 *
 * Per-layer attribution (tinydyn profile): with syms=FILE, FILE lists code ranges, one a line,
 *   BUCKET START END [NAME]        (decimal bucket 0..4095, hex or decimal addresses, END exclusive)
 * normally the layer functions of model.c (bucket = layer index). Every executed TB is charged to
 * an owner: a TB inside a listed range belongs to that range's bucket; any other TB (a kernel,
 * memset, td_infer itself) belongs to the owner of the code that called it, tracked on a shadow
 * call stack (a BL/BLX pushes its return address, executing that address pops), so kernels called
 * from a layer count toward the layer and td_infer's own dispatch counts as "control". A taken
 * branch's refill is charged to the owner of the branch. Each line then also carries
 *   "layers": [[insns, cycles], ...] (one pair per bucket), "control": [insns, cycles]
 * whose sums equal "insns" and "cycles" exactly, and "stack_overflow": the calls not tracked
 * because the shadow stack (depth 256) was full (0 in any sane firmware).
 *
 * Debian ships no qemu-plugin.h: the subset of QEMU's plugin API v1 used here is declared below
 * (QEMU 7.2, include/qemu/qemu-plugin.h). */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- QEMU plugin API v1 subset ---- */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;
QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv);

/* ---- parameters (plugin arguments) ---- */
static unsigned g_refill = 2;     /* P: pipeline refill after a taken branch (TRM: 1..3) */
static unsigned g_div = 12;       /* SDIV/UDIV (TRM: 2..12, operand dependent) */
static unsigned g_flash_ws = 0;   /* wait states per 32-bit instruction fetch from flash */
static uint64_t g_flash_end = 0x400000u; /* flash: [0, flash_end) */
static uint64_t g_entry = 0;
static bool g_has_entry = false;
static FILE *g_out = NULL;

/* ---- per-layer attribution (syms=FILE) ---- */
#define MAX_BUCKETS 4096u
#define MAX_RANGES 65536u
#define STACK_DEPTH 256u
typedef struct {
    uint64_t start, end; /* [start, end) */
    int bucket;
} code_range;
static code_range *g_ranges = NULL;
static size_t g_n_ranges = 0;
static unsigned g_n_buckets = 0; /* 0: no attribution */
static uint64_t *g_own_insns = NULL, *g_own_cycles = NULL; /* [g_n_buckets + 1]: last = control */
typedef struct {
    uint64_t ret;
    unsigned owner;
} frame;
static frame g_stack[STACK_DEPTH];
static unsigned g_sp = 0;
static unsigned g_owner = 0, g_prev_owner = 0;
static uint64_t g_overflow = 0;

/* ---- per-instruction classification ---- */
enum { K_OTHER, K_LOAD, K_STORE_IMM, K_STORE_REG };

typedef struct {
    unsigned cost;     /* cycles when it does not write the PC (or its condition fails) */
    unsigned taken;    /* extra cycles when it writes the PC (the refill P) */
    bool writes_pc;    /* a branch, BX, POP/LDM/LDR into PC, TBB/TBH, ADD/MOV PC */
    bool call;         /* BL, BLX */
    int kind;          /* load/store single, for pipelining */
    int dest;          /* K_LOAD: destination register */
    unsigned addr_regs; /* K_LOAD/K_STORE_*: mask of registers forming the address */
} insn_class;

static unsigned popcount16(unsigned v) { return (unsigned)__builtin_popcount(v & 0xFFFFu); }

static insn_class classify16(unsigned h)
{
    insn_class c = {1, 0, false, false, K_OTHER, -1, 0};
    unsigned P = g_refill;
    if ((h & 0xF800u) == 0x4800u) { /* LDR Rt, [PC, #imm] */
        c.cost = 2, c.kind = K_LOAD, c.dest = (int)((h >> 8) & 7u), c.addr_regs = 1u << 15;
    } else if ((h & 0xF000u) == 0x5000u) { /* load/store register offset */
        unsigned op = (h >> 9) & 7u, rm = (h >> 6) & 7u, rn = (h >> 3) & 7u;
        c.addr_regs = (1u << rm) | (1u << rn);
        if (op <= 2u) {
            c.cost = 2, c.kind = K_STORE_REG;
        } else {
            c.cost = 2, c.kind = K_LOAD, c.dest = (int)(h & 7u);
        }
    } else if ((h & 0xE000u) == 0x6000u || (h & 0xF000u) == 0x8000u) { /* LDR/STR(B/H) imm */
        c.addr_regs = 1u << ((h >> 3) & 7u);
        if (h & 0x0800u) {
            c.cost = 2, c.kind = K_LOAD, c.dest = (int)(h & 7u);
        } else {
            c.cost = 1, c.kind = K_STORE_IMM;
        }
    } else if ((h & 0xF000u) == 0x9000u) { /* LDR/STR SP-relative */
        c.addr_regs = 1u << 13;
        if (h & 0x0800u) {
            c.cost = 2, c.kind = K_LOAD, c.dest = (int)((h >> 8) & 7u);
        } else {
            c.cost = 1, c.kind = K_STORE_IMM;
        }
    } else if ((h & 0xFF00u) == 0x4700u) { /* BX / BLX register */
        c.writes_pc = true, c.taken = P, c.call = (h & 0x80u) != 0u;
    } else if ((h & 0xFC00u) == 0x4400u) { /* ADD/CMP/MOV high registers */
        unsigned rd = ((h >> 4) & 8u) | (h & 7u), op = (h >> 8) & 3u;
        if (op != 1u && rd == 15u) {
            c.writes_pc = true, c.taken = P;
        }
    } else if ((h & 0xF500u) == 0xB100u) { /* CBZ / CBNZ */
        c.writes_pc = true, c.taken = P;
    } else if ((h & 0xFE00u) == 0xB400u) { /* PUSH */
        c.cost = 1 + popcount16((h & 0xFFu) | ((h & 0x100u) ? 0x100u : 0u));
    } else if ((h & 0xFE00u) == 0xBC00u) { /* POP */
        c.cost = 1 + popcount16((h & 0xFFu) | ((h & 0x100u) ? 0x100u : 0u));
        if (h & 0x100u) {
            c.writes_pc = true, c.taken = P;
        }
    } else if ((h & 0xF000u) == 0xC000u) { /* STMIA / LDMIA */
        c.cost = 1 + popcount16(h & 0xFFu);
    } else if ((h & 0xF000u) == 0xD000u) { /* B<cond>; 0xDE UDF, 0xDF SVC */
        unsigned cond = (h >> 8) & 0xFu;
        if (cond < 0xEu) {
            c.writes_pc = true, c.taken = P;
        }
    } else if ((h & 0xF800u) == 0xE000u) { /* B (unconditional) */
        c.writes_pc = true, c.taken = P;
    }
    return c;
}

static insn_class classify32(unsigned h1, unsigned h2)
{
    insn_class c = {1, 0, false, false, K_OTHER, -1, 0};
    unsigned P = g_refill;
    if ((h1 & 0xFE40u) == 0xE800u) { /* LDM/STM (incl. PUSH.W/POP.W) */
        c.cost = 1 + popcount16(h2);
        if ((h1 & 0x10u) && (h2 & 0x8000u)) {
            c.writes_pc = true, c.taken = P;
        }
    } else if ((h1 & 0xFE40u) == 0xE840u) { /* dual, exclusive, table branch */
        if ((h1 & 0xFFF0u) == 0xE8D0u && (h2 & 0xFFE0u) == 0xF000u) { /* TBB / TBH */
            c.cost = 2, c.writes_pc = true, c.taken = P;
        } else if ((h1 & 0x0120u) == 0u) { /* LDREX/STREX(B/H): like a single load/store */
            c.cost = 2;
        } else { /* LDRD / STRD: 1 + N with N = 2 */
            c.cost = 3;
        }
    } else if ((h1 & 0xEE00u) == 0xEC00u) { /* coprocessor / FPU load-store */
        if ((h1 & 0x0120u) == 0x0100u) { /* VLDR / VSTR */
            c.cost = 2;
        } else if ((h1 & 0x0180u) != 0u || (h1 & 0x0020u)) { /* VLDM/VSTM/VPUSH/VPOP */
            c.cost = 1 + (h2 & 0xFFu);
        }
    } else if ((h1 & 0xF800u) == 0xF000u && (h2 & 0x8000u)) { /* branches, misc control */
        unsigned op = h2 & 0xD000u;
        if (op == 0x8000u) {
            if (((h1 >> 7) & 7u) != 7u) { /* B<cond>.W */
                c.writes_pc = true, c.taken = P;
            } /* else MSR/MRS/hints/barriers: 1 */
        } else if (op == 0x9000u) { /* B.W */
            c.writes_pc = true, c.taken = P;
        } else { /* BL (0xD000), BLX imm (0xC000) */
            c.writes_pc = true, c.taken = P, c.call = true;
        }
    } else if ((h1 & 0xFE00u) == 0xF800u) { /* load/store single */
        unsigned rn = h1 & 0xFu, rt = (h2 >> 12) & 0xFu, load = h1 & 0x10u;
        bool reg_offset = !(h1 & 0x80u) && rn != 15u && !(h2 & 0x800u) && ((h2 >> 6) & 0x3Fu) == 0u;
        c.addr_regs = 1u << rn;
        if (reg_offset) {
            c.addr_regs |= 1u << (h2 & 0xFu);
        }
        if (load) {
            if (rt == 15u && ((h1 >> 5) & 3u) == 2u) { /* LDR PC: 2 + P */
                c.cost = 2, c.writes_pc = true, c.taken = P;
            } else if (rt == 15u) { /* PLD / PLI */
                c.cost = 1;
            } else {
                c.cost = 2, c.kind = K_LOAD, c.dest = (int)rt;
            }
        } else if (reg_offset) {
            c.cost = 2, c.kind = K_STORE_REG;
        } else {
            c.cost = 1, c.kind = K_STORE_IMM;
        }
    } else if ((h1 & 0xFF80u) == 0xFB00u) { /* multiply, multiply-accumulate */
        unsigned op1 = (h1 >> 4) & 7u, op2 = (h2 >> 4) & 3u, ra = (h2 >> 12) & 0xFu;
        if (op1 == 0u && (op2 == 1u || ra != 15u)) { /* MLA, MLS */
            c.cost = 2;
        } /* MUL, SMUL*, SMLA*, SMLAD, SMUAD, SMLSD, SMMUL, SMMLA, USAD8: 1 */
    } else if ((h1 & 0xFF80u) == 0xFB80u) { /* long multiply, divide */
        unsigned op1 = (h1 >> 4) & 7u, op2 = (h2 >> 4) & 0xFu;
        if ((op1 == 1u || op1 == 3u) && op2 == 0xFu) { /* SDIV, UDIV */
            c.cost = g_div;
        } /* SMULL, UMULL, SMLAL, UMLAL, UMAAL, SMLALD, SMLSLD: 1 */
    }
    return c;
}

/* ---- code ranges (syms=FILE) ---- */
static int cmp_range(const void *a, const void *b)
{
    const code_range *x = (const code_range *)a, *y = (const code_range *)b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

static int bucket_of(uint64_t addr)
{
    size_t lo = 0, hi = g_n_ranges;
    while (lo < hi) { /* the last range starting at or before addr */
        size_t mid = lo + (hi - lo) / 2u;
        if (g_ranges[mid].start <= addr) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    if (lo > 0 && addr < g_ranges[lo - 1u].end) {
        return g_ranges[lo - 1u].bucket;
    }
    return -1;
}

/* reads FILE (BUCKET START END [NAME] per line); returns an error message or NULL */
static const char *load_ranges(const char *path)
{
    static char err[192];
    char line[512];
    size_t cap = 0, lineno = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, sizeof(err), "cannot open syms file %s", path);
        return err;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long bucket = 0;
        unsigned long long start = 0, end = 0;
        char *s = line, *e = NULL;
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(err, sizeof(err), "syms line %zu is too long", lineno);
            fclose(f);
            return err;
        }
        while (*s == ' ' || *s == '\t') {
            s++;
        }
        if (*s == '\n' || *s == '\0' || *s == '#') {
            continue;
        }
        bucket = strtoul(s, &e, 10);
        if (e != s) {
            s = e;
            start = strtoull(s, &e, 0);
        }
        if (e != s) {
            s = e;
            end = strtoull(s, &e, 0);
        }
        if (e == s || (*e != ' ' && *e != '\t' && *e != '\n' && *e != '\0') || bucket >= MAX_BUCKETS ||
            end <= start || g_n_ranges >= MAX_RANGES) {
            snprintf(err, sizeof(err), "bad syms line %zu (want BUCKET START END [NAME])", lineno);
            fclose(f);
            return err;
        }
        if (g_n_ranges == cap) {
            size_t ncap = cap ? 2u * cap : 64u;
            code_range *r = realloc(g_ranges, ncap * sizeof(*r));
            if (r == NULL) {
                fclose(f);
                return "out of memory";
            }
            g_ranges = r, cap = ncap;
        }
        g_ranges[g_n_ranges].start = start;
        g_ranges[g_n_ranges].end = end;
        g_ranges[g_n_ranges].bucket = (int)bucket;
        g_n_ranges++;
        if (bucket + 1u > g_n_buckets) {
            g_n_buckets = (unsigned)bucket + 1u;
        }
    }
    fclose(f);
    if (g_n_ranges == 0) {
        return "the syms file lists no code range";
    }
    qsort(g_ranges, g_n_ranges, sizeof(*g_ranges), cmp_range);
    for (size_t i = 1; i < g_n_ranges; i++) {
        if (g_ranges[i].start < g_ranges[i - 1u].end) {
            return "overlapping code ranges in the syms file";
        }
    }
    g_own_insns = calloc(g_n_buckets + 1u, sizeof(*g_own_insns));
    g_own_cycles = calloc(g_n_buckets + 1u, sizeof(*g_own_cycles));
    if (g_own_insns == NULL || g_own_cycles == NULL) {
        return "out of memory";
    }
    return NULL;
}

/* ---- translation blocks ---- */
typedef struct {
    uint64_t vaddr, fallthrough;
    uint32_t n_insns;
    uint32_t base;         /* cycles with the last instruction not writing the PC */
    uint32_t taken_extra;  /* + when the next TB is not the fall-through (branch taken) */
    bool branch, call;
    bool refund;           /* starts mid-word in flash: that word was fetched already when
                            * this TB is entered sequentially */
    int bucket;            /* the syms= range holding its start, or -1 */
} tb_info;

static const tb_info *g_prev = NULL;
static bool g_counting = false;
static uint64_t g_ret = UINT64_MAX;
static uint64_t g_cycles, g_insns, g_taken, g_not_taken, g_calls;

static void emit(void)
{
    g_calls++;
    if (g_out == NULL) {
        return;
    }
    fprintf(g_out,
            "{\"n\": %" PRIu64 ", \"cycles\": %" PRIu64 ", \"insns\": %" PRIu64
            ", \"taken\": %" PRIu64 ", \"not_taken\": %" PRIu64,
            g_calls, g_cycles, g_insns, g_taken, g_not_taken);
    if (g_n_buckets > 0) {
        fputs(", \"layers\": [", g_out);
        for (unsigned b = 0; b < g_n_buckets; b++) {
            fprintf(g_out, "%s[%" PRIu64 ", %" PRIu64 "]", b ? ", " : "", g_own_insns[b], g_own_cycles[b]);
        }
        fprintf(g_out, "], \"control\": [%" PRIu64 ", %" PRIu64 "], \"stack_overflow\": %" PRIu64,
                g_own_insns[g_n_buckets], g_own_cycles[g_n_buckets], g_overflow);
    }
    fputs("}\n", g_out);
    fflush(g_out);
}

static void start_region(uint64_t ret)
{
    g_cycles = g_insns = g_taken = g_not_taken = 0;
    g_ret = ret;
    g_counting = true;
    if (g_n_buckets > 0) {
        memset(g_own_insns, 0, (g_n_buckets + 1u) * sizeof(*g_own_insns));
        memset(g_own_cycles, 0, (g_n_buckets + 1u) * sizeof(*g_own_cycles));
    }
    g_sp = 0;
    g_overflow = 0;
    g_owner = g_prev_owner = g_n_buckets; /* control */
}

/* the owner of this TB: its own range's bucket, else whoever called the code it is in */
static void attribute(const tb_info *t, const tb_info *p, bool started)
{
    if (!started && p != NULL && p->call && t->vaddr != p->fallthrough) {
        if (g_sp < STACK_DEPTH) {
            g_stack[g_sp].ret = p->fallthrough;
            g_stack[g_sp].owner = g_owner;
            g_sp++;
        } else {
            g_overflow++;
        }
    } else if (g_sp > 0 && t->vaddr == g_stack[g_sp - 1u].ret) {
        g_owner = g_stack[--g_sp].owner;
    }
    if (t->bucket >= 0) {
        g_owner = (unsigned)t->bucket;
    }
}

static void tb_exec(unsigned int vcpu, void *udata)
{
    const tb_info *t = (const tb_info *)udata;
    const tb_info *p = g_prev;
    bool started = false;
    (void)vcpu;
    g_prev = t;
    if (g_counting) {
        if (p != NULL && p->branch) {
            if (t->vaddr != p->fallthrough) {
                g_cycles += p->taken_extra;
                g_taken++;
                if (g_n_buckets > 0) {
                    g_own_cycles[g_prev_owner] += p->taken_extra;
                }
            } else {
                g_not_taken++;
            }
        }
        if (g_has_entry && t->vaddr == g_ret) {
            emit();
            g_counting = false;
        }
    }
    if (!g_counting && g_has_entry && t->vaddr == g_entry) {
        start_region(p != NULL && p->call ? p->fallthrough : UINT64_MAX);
        started = true;
    }
    if (g_counting) {
        g_cycles += t->base;
        g_insns += t->n_insns;
        if (g_n_buckets > 0) {
            attribute(t, p, started);
            g_own_cycles[g_owner] += t->base;
            g_own_insns[g_owner] += t->n_insns;
        }
        if (t->refund && p != NULL && p->fallthrough == t->vaddr) {
            g_cycles -= g_flash_ws;
            if (g_n_buckets > 0) {
                g_own_cycles[g_owner] -= g_flash_ws;
            }
        }
        g_prev_owner = g_owner;
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    tb_info *t = calloc(1, sizeof(*t));
    insn_class prev = {0, 0, false, false, K_OTHER, -1, 0};
    uint64_t end = qemu_plugin_tb_vaddr(tb);
    (void)id;
    if (t == NULL) {
        return;
    }
    t->vaddr = qemu_plugin_tb_vaddr(tb);
    t->n_insns = (uint32_t)n;
    t->bucket = bucket_of(t->vaddr);
    for (size_t i = 0; i < n; i++) {
        const struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *b = (const uint8_t *)qemu_plugin_insn_data(insn);
        size_t size = qemu_plugin_insn_size(insn);
        unsigned h1 = (unsigned)b[0] | ((unsigned)b[1] << 8);
        insn_class c = size >= 4 ? classify32(h1, (unsigned)b[2] | ((unsigned)b[3] << 8)) : classify16(h1);
        unsigned cost = c.cost;
        /* TRM 3.3.2: a load or register-offset store right after a single load is pipelined
         * (one cycle less) unless its address uses that load's destination */
        if ((c.kind == K_LOAD || c.kind == K_STORE_REG) && prev.kind == K_LOAD &&
            !(c.addr_regs & (1u << prev.dest))) {
            cost -= 1;
        }
        t->base += cost;
        end = qemu_plugin_insn_vaddr(insn) + size;
        if (i + 1 == n) {
            t->branch = c.writes_pc;
            t->call = c.call;
            t->taken_extra = c.writes_pc ? c.taken : 0;
        }
        prev = c;
    }
    t->fallthrough = end;
    if (g_flash_ws > 0 && t->vaddr < g_flash_end) {
        uint64_t words = ((end + 3u) >> 2) - (t->vaddr >> 2);
        t->base += (uint32_t)(words * g_flash_ws);
        t->refund = (t->vaddr & 3u) != 0u;
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, t);
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    if (g_counting && !g_has_entry) {
        emit();
    } else if (g_counting) {
        qemu_plugin_outs("m4cycles: the measured function had not returned at exit\n");
    }
    if (g_out != NULL) {
        fclose(g_out);
        g_out = NULL;
    }
}

static bool parse_u64(const char *s, uint64_t *v)
{
    char *end = NULL;
    unsigned long long x = strtoull(s, &end, 0);
    if (end == s || *end != '\0') {
        return false;
    }
    *v = (uint64_t)x;
    return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    char msg[256];
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        uint64_t v = 0;
        size_t klen = eq != NULL ? (size_t)(eq - argv[i]) : 0;
        if (eq == NULL) {
            snprintf(msg, sizeof(msg), "m4cycles: bad argument '%s' (want key=value)\n", argv[i]);
            qemu_plugin_outs(msg);
            return -1;
        }
        if (klen == 4 && strncmp(argv[i], "syms", 4) == 0) {
            const char *e = g_n_ranges > 0 ? "syms= given twice" : load_ranges(eq + 1);
            if (e != NULL) {
                snprintf(msg, sizeof(msg), "m4cycles: %s\n", e);
                qemu_plugin_outs(msg);
                return -1;
            }
            continue;
        }
        if (klen == 3 && strncmp(argv[i], "out", 3) == 0) {
            g_out = fopen(eq + 1, "w");
            if (g_out == NULL) {
                snprintf(msg, sizeof(msg), "m4cycles: cannot open %s\n", eq + 1);
                qemu_plugin_outs(msg);
                return -1;
            }
            continue;
        }
        if (!parse_u64(eq + 1, &v)) {
            snprintf(msg, sizeof(msg), "m4cycles: bad number in '%s'\n", argv[i]);
            qemu_plugin_outs(msg);
            return -1;
        }
        if (klen == 5 && strncmp(argv[i], "entry", 5) == 0) {
            g_entry = v & ~(uint64_t)1u; /* a Thumb symbol's address has bit 0 set */
            g_has_entry = true;
        } else if (klen == 6 && strncmp(argv[i], "refill", 6) == 0 && v >= 1u && v <= 3u) {
            g_refill = (unsigned)v;
        } else if (klen == 3 && strncmp(argv[i], "div", 3) == 0 && v >= 2u && v <= 12u) {
            g_div = (unsigned)v;
        } else if (klen == 8 && strncmp(argv[i], "flash_ws", 8) == 0 && v <= 15u) {
            g_flash_ws = (unsigned)v;
        } else if (klen == 9 && strncmp(argv[i], "flash_end", 9) == 0) {
            g_flash_end = v;
        } else {
            snprintf(msg, sizeof(msg), "m4cycles: unknown or out-of-range argument '%s'\n", argv[i]);
            qemu_plugin_outs(msg);
            return -1;
        }
    }
    if (!g_has_entry) {
        start_region(UINT64_MAX); /* the whole run is one region */
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
