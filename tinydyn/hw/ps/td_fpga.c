/* Stage sequencing, integer head and exit policy (see td_fpga.h). */
#include "td_fpga.h"

#include <string.h>

#include "protocol.h" /* enum td_policy */

#define TD_LUT_SHIFT 24
#define TD_EXP_LUT_SIZE 256
#define TD_EXP_ONE 65535u
#define TD_DMA_TIMEOUT 100000000u

#ifdef TD_FPGA_REG_HOOKS
/* host tests: a register-level model of the IODMAs stands in for the fabric */
static inline void reg_write(uintptr_t base, uint32_t off, uint32_t v) { td_hal_reg_write(base + off, v); }
static inline uint32_t reg_read(uintptr_t base, uint32_t off) { return td_hal_reg_read(base + off); }
#else
static inline void reg_write(uintptr_t base, uint32_t off, uint32_t v) {
    *(volatile uint32_t *)(base + off) = v;
}
static inline uint32_t reg_read(uintptr_t base, uint32_t off) {
    return *(volatile uint32_t *)(base + off);
}
#endif

int16_t td_fpga_logit(int32_t acc, int32_t bias, int64_t mult, uint8_t shift) {
    /* the integer reference's requantize(): (acc * mult + 2^(shift-1)) >> shift, clamped */
    int64_t v = ((int64_t)acc + bias) * mult + ((int64_t)1 << (shift - 1));
    v >>= shift; /* arithmetic shift: floor, as numpy's >> */
    if (v > 32767) v = 32767;
    if (v < -32768) v = -32768;
    return (int16_t)v;
}

int32_t td_fpga_unpack(const uint8_t *buf, uint32_t index, uint32_t bits, uint32_t per_word,
                       uint32_t word_bits) {
    /* two's-complement field `index` of width `bits`: the ODMA writes the stream words one after
     * the other, each `word_bits` wide (padded to whole bytes), `per_word` fields per word, LSB
     * first */
    uint64_t acc = 0;
    uint32_t bit = (index / per_word) * word_bits + (index % per_word) * bits;
    for (uint32_t i = 0; i < bits; ++i, ++bit)
        acc |= (uint64_t)((buf[bit >> 3] >> (bit & 7u)) & 1u) << i;
    if (bits < 64 && (acc >> (bits - 1)) & 1u) acc |= ~(uint64_t)0 << bits;
    return (int32_t)(int64_t)acc;
}

static int confident(const td_fpga_model_t *m, const td_fpga_stage_t *s, const int16_t *logits,
                     uint32_t t16) {
    int32_t top = logits[0];
    for (uint8_t c = 1; c < m->num_classes; ++c)
        if (logits[c] > top) top = logits[c];
    uint64_t sum = 0;
    for (uint8_t c = 0; c < m->num_classes; ++c) {
        int64_t d = (int64_t)(top - logits[c]);
        int64_t step = (d * (int64_t)s->lut_mult + ((int64_t)1 << (TD_LUT_SHIFT - 1))) >> TD_LUT_SHIFT;
        if (step > TD_EXP_LUT_SIZE - 1) step = TD_EXP_LUT_SIZE - 1;
        sum += m->exp_lut[step];
    }
    return (uint64_t)TD_EXP_ONE * 65536u >= (uint64_t)t16 * sum;
}

int td_fpga_leave(const td_fpga_model_t *m, const td_fpga_policy_t *p, uint8_t stage,
                  const int16_t *logits, uint32_t macs_so_far) {
    if (stage + 1u >= m->num_stages) return 1;
    switch (p->policy) {
    case TD_POLICY_CONFIDENCE: { /* the exit's own threshold (S2DNAS's t_i) before the policy's */
        const td_fpga_stage_t *s = &m->stages[stage];
        return confident(m, s, logits, s->confidence_t16 >= 0 ? (uint32_t)s->confidence_t16 : p->confidence_t16);
    }
    case TD_POLICY_MARGIN: {
        int32_t first = -32769, second = -32769;
        for (uint8_t c = 0; c < m->num_classes; ++c) {
            if (logits[c] > first) {
                second = first;
                first = logits[c];
            } else if (logits[c] > second) {
                second = logits[c];
            }
        }
        return first - second >= p->margin[stage];
    }
    case TD_POLICY_BUDGET: /* the most the way to the next exit's decision can cost */
        return (uint64_t)macs_so_far + m->stages[stage + 1u].seg_macs + m->stages[stage + 1u].head_macs >
               p->budget_macs;
    default:
        return 0;
    }
}

void td_fpga_ps_head(const td_fpga_model_t *m, const td_fpga_stage_t *s, const uint8_t *feat,
                     int16_t *logits) {
    uint32_t sums[TD_FPGA_MAX_CHANNELS];
    uint8_t pooled[TD_FPGA_MAX_CHANNELS];
    const uint32_t c = s->feat_c, hw = s->feat_bytes / s->feat_c;
    for (uint32_t ch = 0; ch < c; ++ch) sums[ch] = 0;
    for (uint32_t p = 0; p < hw; ++p, feat += c) /* NHWC: the channels of one pixel side by side */
        for (uint32_t ch = 0; ch < c; ++ch) sums[ch] += feat[ch];
    for (uint32_t ch = 0; ch < c; ++ch) pooled[ch] = (uint8_t)((sums[ch] + hw / 2u) / hw); /* half up */
    for (uint8_t k = 0; k < m->num_classes; ++k) {
        const int8_t *w = s->head_weight + (size_t)k * c;
        int32_t acc = 0;
        for (uint32_t ch = 0; ch < c; ++ch) acc += (int32_t)w[ch] * (int32_t)pooled[ch];
        logits[k] = td_fpga_logit(acc, s->bias[k], s->mult[k], s->shift[k]);
    }
}

/* ---- batched, software-pipelined schedule (see td_fpga.h and tinydyn/hw/schedule.py) ---- */

typedef struct {
    uintptr_t idma, odma;
    uint8_t *out;
    uint32_t out_bytes;
} td_run_t;

static uint64_t align_up(uint64_t n) { return (n + TD_FPGA_DMA_ALIGN - 1u) / TD_FPGA_DMA_ALIGN * TD_FPGA_DMA_ALIGN; }

static int branch(const td_fpga_stage_t *s) { return s->head_idma != 0u; }

/* the segment itself ends in the head's accumulators (no feature map: not a RADI branch's) */
static int fabric_head(const td_fpga_stage_t *s) { return s->head_weight == NULL && !branch(s); }

static int gathers(const td_fpga_model_t *m, uint32_t k) { return k > 0u && m->stages[k].reads_image; }

/* arena layout, as tinydyn.hw.schedule.arena: per stage its gathered-input slots (a stage k > 0
 * that reads the image) at in_off, then its output slots (feature maps, or a fabric head's
 * accumulators) at off, each slot a multiple of the cache-line alignment */
static uint64_t layout(const td_fpga_model_t *m, uint32_t batch, uint32_t *off, uint32_t *stride,
                       uint32_t *in_off, uint32_t *in_stride, uint32_t *br_off, uint32_t *br_stride) {
    uint64_t at = 0;
    for (uint8_t k = 0; k < m->num_stages; ++k) {
        const td_fpga_stage_t *s = &m->stages[k];
        const int acc = fabric_head(s);
        in_off[k] = in_stride[k] = 0;
        if (gathers(m, k)) {
            uint64_t one = align_up((uint64_t)batch * s->in_bytes);
            if (one > 0xFFFFFFFFu) return 0;
            in_off[k] = (uint32_t)at;
            in_stride[k] = (uint32_t)one;
            at += one * TD_FPGA_IN_SLOTS;
        }
        uint64_t one = align_up((uint64_t)batch * (acc ? s->out_bytes : s->feat_bytes));
        if (one > 0xFFFFFFFFu) return 0;
        off[k] = (uint32_t)at;
        stride[k] = (uint32_t)one;
        at += one * (acc ? TD_FPGA_ACC_SLOTS : TD_FPGA_FEAT_SLOTS);
        if (at > 0xFFFFFFFFu) return 0;
    }
    for (uint8_t k = 0; k < m->num_stages; ++k) { /* RADI branches' accumulators, after the rest */
        const td_fpga_stage_t *s = &m->stages[k];
        br_off[k] = br_stride[k] = 0;
        if (!branch(s)) continue;
        uint64_t one = align_up((uint64_t)batch * s->out_bytes);
        if (one > 0xFFFFFFFFu) return 0;
        br_off[k] = (uint32_t)at;
        br_stride[k] = (uint32_t)one;
        at += one * TD_FPGA_ACC_SLOTS;
        if (at > 0xFFFFFFFFu) return 0;
    }
    return at;
}

uint32_t td_fpga_batch_dma_bytes(const td_fpga_model_t *m, uint32_t batch) {
    uint32_t off[TD_FPGA_MAX_STAGES], stride[TD_FPGA_MAX_STAGES];
    uint32_t in_off[TD_FPGA_MAX_STAGES], in_stride[TD_FPGA_MAX_STAGES];
    uint32_t br_off[TD_FPGA_MAX_STAGES], br_stride[TD_FPGA_MAX_STAGES];
    if (batch == 0u || batch > TD_FPGA_MAX_BATCH || m->num_stages > TD_FPGA_MAX_STAGES) return 0;
    return (uint32_t)layout(m, batch, off, stride, in_off, in_stride, br_off, br_stride);
}

/* Start one segment on `images` images: the caches give the IODMAs the input the CPU wrote and
 * hold no line of the output that could be evicted over the IODMA's data; output IODMA first,
 * so that the pipeline never stalls on a full output stream, then the input IODMA; the repeat
 * count is the number of images. */
static void start_run(td_run_t *run, uintptr_t idma, uintptr_t odma, const uint8_t *in, uint32_t in_bytes,
                      uint8_t *out, uint32_t out_bytes, uint32_t images) {
    td_hal_cache_flush(in, (size_t)in_bytes * images);
    td_hal_cache_invalidate(out, (size_t)out_bytes * images);
    reg_write(odma, TD_IODMA_ADDR_LO, (uint32_t)td_hal_phys(out));
    reg_write(odma, TD_IODMA_ADDR_HI, 0u);
    reg_write(odma, TD_IODMA_REPEAT, images);
    reg_write(odma, TD_IODMA_CTRL, TD_IODMA_START);
    reg_write(idma, TD_IODMA_ADDR_LO, (uint32_t)td_hal_phys(in));
    reg_write(idma, TD_IODMA_ADDR_HI, 0u);
    reg_write(idma, TD_IODMA_REPEAT, images);
    reg_write(idma, TD_IODMA_CTRL, TD_IODMA_START);
    run->idma = idma;
    run->odma = odma;
    run->out = out;
    run->out_bytes = out_bytes * images;
}

/* Wait for a segment; then drop any line of its output the CPU fetched (speculatively) while the
 * IODMA wrote it. */
static int wait_run(const td_run_t *run) {
    for (uint32_t spin = 0; spin < TD_DMA_TIMEOUT; ++spin) {
        if (reg_read(run->odma, TD_IODMA_CTRL) & TD_IODMA_DONE) {
            td_hal_cache_invalidate(run->out, run->out_bytes);
            return 0;
        }
    }
    return -1;
}

static void finish_logits(const td_fpga_model_t *m, const td_fpga_stage_t *s, const uint8_t *acc_buf,
                          int16_t *logits) {
    for (uint8_t c = 0; c < m->num_classes; ++c) {
        int32_t acc = td_fpga_unpack(acc_buf, c, s->out_bits, s->out_per_word, s->out_word_bits);
        logits[c] = td_fpga_logit(acc, s->bias[c], s->mult[c], s->shift[c]);
    }
}

static void set_result(const td_fpga_model_t *m, td_fpga_result_t *r, const int16_t *logits, uint8_t stage,
                       uint32_t macs, uint32_t cycles) {
    uint8_t best = 0;
    for (uint8_t c = 0; c < m->num_classes; ++c) {
        r->logits[c] = logits[c];
        if (logits[c] > logits[best]) best = c; /* ties: lowest index, as the reference */
    }
    r->predicted = best;
    r->exit_index = stage;
    r->macs = macs;
    r->cycles = cycles;
}

/* Which heads run and the MACs of an image leaving at each stage, as the integer reference counts
 * them: no policy computes no early head; a MAC budget decides before the head, which then runs
 * only where the images leave (the budget does not depend on the image). A stage whose head does
 * not run is not started when the next stage reads the image (tinydyn.hw.schedule.partition_runs). */
static void plan(const td_fpga_model_t *m, const td_fpga_policy_t *p, uint8_t *run_head, uint8_t *run_part,
                 uint32_t *macs_exit) {
    uint32_t macs = 0;
    int16_t none[TD_FPGA_MAX_CLASSES] = {0};
    for (uint8_t k = 0; k < m->num_stages; ++k) {
        const td_fpga_stage_t *s = &m->stages[k];
        const int last = k + 1u == m->num_stages;
        macs += s->seg_macs;
        run_head[k] = 1u;
        if (!last) {
            run_head[k] = p->policy != TD_POLICY_NONE;
            if (p->policy == TD_POLICY_BUDGET) run_head[k] = (uint8_t)td_fpga_leave(m, p, k, none, macs);
        }
        run_part[k] = (uint8_t)(last || run_head[k] || !m->stages[k + 1u].reads_image);
        if (run_head[k]) macs += s->head_macs;
        macs_exit[k] = macs;
    }
}

int td_fpga_run_batch(const td_fpga_model_t *m, const td_fpga_policy_t *p, const uint8_t *images,
                      uint32_t n, const td_fpga_batch_mem_t *mem, td_fpga_result_t *results) {
    const uint32_t batch = mem->batch, stages = m->num_stages;
    uint32_t off[TD_FPGA_MAX_STAGES], stride[TD_FPGA_MAX_STAGES], macs_exit[TD_FPGA_MAX_STAGES];
    uint32_t in_off[TD_FPGA_MAX_STAGES], in_stride[TD_FPGA_MAX_STAGES];
    uint32_t br_off[TD_FPGA_MAX_STAGES], br_stride[TD_FPGA_MAX_STAGES];
    uint32_t count[TD_FPGA_MAX_STAGES][TD_FPGA_FEAT_SLOTS], entered[TD_FPGA_FEAT_SLOTS * TD_FPGA_MAX_STAGES];
    const uint8_t *input[TD_FPGA_MAX_STAGES][TD_FPGA_FEAT_SLOTS]; /* what each stage read, per batch slot */
    uint8_t run_head[TD_FPGA_MAX_STAGES], run_part[TD_FPGA_MAX_STAGES];
    td_run_t runs[2u * TD_FPGA_MAX_STAGES]; /* segments and RADI branches */
    int16_t logits[TD_FPGA_MAX_CLASSES];
    uint32_t need = td_fpga_batch_dma_bytes(m, batch);
    if (need == 0u || mem->dma_bytes < need || stages == 0u) return -2;
    for (uint32_t k = 0; k + 1u < stages; ++k) {
        const td_fpga_stage_t *s = &m->stages[k];
        if (branch(s) && (s->feat_bytes == 0u || s->out_bytes == 0u || m->stages[k + 1u].reads_image))
            return -2; /* a RADI branch reads the feature map the next segment reads after it */
        if (fabric_head(s)) { /* its accumulators carry nothing on: the next stage reads the image */
            if (!m->stages[k + 1u].reads_image || m->stages[k + 1u].in_bytes != m->stages[0].in_bytes) return -2;
        } else if (s->feat_c == 0u || s->feat_c > TD_FPGA_MAX_CHANNELS || s->feat_bytes % s->feat_c != 0u) {
            return -2; /* a PS head needs whole pixels of <= MAX_CHANNELS */
        }
    }
    layout(m, batch, off, stride, in_off, in_stride, br_off, br_stride);
    plan(m, p, run_head, run_part, macs_exit);
    const uint32_t batches = (n + batch - 1u) / batch;
    const uint32_t depth = TD_FPGA_ROUNDS_PER_STAGE * (stages - 1u) + 2u;
    const uint32_t ring = TD_FPGA_FEAT_SLOTS * TD_FPGA_MAX_STAGES; /* > depth: batches in flight */
#define TD_IDS(k, slot) (mem->ids + ((size_t)(k) * TD_FPGA_FEAT_SLOTS + (slot)) * batch)
#define TD_SLOT(k, slot) (mem->dma + off[k] + (size_t)(slot) * stride[k])
#define TD_GATHERED(k, slot) (mem->dma + in_off[k] + (size_t)(slot) * in_stride[k])
#define TD_BRANCH(k, slot) (mem->dma + br_off[k] + (size_t)(slot) * br_stride[k])
    for (uint32_t r = 0; batches && r < batches + depth - 1u; ++r) {
        uint32_t started = 0;
        /* 1. start every segment with work this round, in stage order */
        for (uint32_t k = 0; k < stages; ++k) {
            const td_fpga_stage_t *s = &m->stages[k];
            const int acc = fabric_head(s);
            if (r < TD_FPGA_ROUNDS_PER_STAGE * k || r - TD_FPGA_ROUNDS_PER_STAGE * k >= batches) continue;
            uint32_t b = r - TD_FPGA_ROUNDS_PER_STAGE * k, slot = b % TD_FPGA_FEAT_SLOTS, c;
            const uint8_t *in;
            if (k == 0u) {
                c = n - b * batch < batch ? n - b * batch : batch;
                for (uint32_t i = 0; i < c; ++i) TD_IDS(0, slot)[i] = (uint16_t)(b * batch + i);
                in = images + (size_t)b * batch * s->in_bytes;
                entered[b % ring] = td_hal_cycles();
            } else {
                c = count[k - 1][slot];
                memcpy(TD_IDS(k, slot), TD_IDS(k - 1, slot), c * sizeof(uint16_t));
                if (!s->reads_image)
                    in = TD_SLOT(k - 1, slot); /* the images that stayed after head k-1, compacted in place */
                else if (run_part[k - 1])
                    in = TD_GATHERED(k, b % TD_FPGA_IN_SLOTS); /* gathered after head k-1 */
                else
                    in = input[k - 1][slot]; /* stage k-1 did not run: the same images, where they are */
            }
            count[k][slot] = c;
            input[k][slot] = in;
            uint8_t *out = TD_SLOT(k, acc ? b % TD_FPGA_ACC_SLOTS : slot);
            if (c && run_part[k])
                start_run(&runs[started++], s->idma, s->odma, in, s->in_bytes, out,
                          acc ? s->out_bytes : s->feat_bytes, c);
        }
        /* 1b. the RADI branches on the feature maps their segments wrote in the previous round */
        for (uint32_t k = 0; k < stages; ++k) {
            const td_fpga_stage_t *s = &m->stages[k];
            const uint32_t lag = TD_FPGA_ROUNDS_PER_STAGE * k + 1u;
            if (!branch(s) || !run_head[k] || r < lag || r - lag >= batches) continue;
            uint32_t b = r - lag, c = count[k][b % TD_FPGA_FEAT_SLOTS];
            if (c)
                start_run(&runs[started++], s->head_idma, s->head_odma, TD_SLOT(k, b % TD_FPGA_FEAT_SLOTS),
                          s->feat_bytes, TD_BRANCH(k, b % TD_FPGA_ACC_SLOTS), s->out_bytes, c);
        }
        /* 2. heads, decisions and compaction (or gathering) for the segments of the previous
         * round, while the fabric runs; 3. wait for every partition started this round; then
         * (phase 1) the decisions on the RADI branches that ran in it */
        for (uint32_t phase = 0; phase < 2u; ++phase)
        for (uint32_t k = 0; k < stages; ++k) {
            const td_fpga_stage_t *s = &m->stages[k];
            const int acc = fabric_head(s), last = k + 1u == stages;
            const uint32_t lag = TD_FPGA_ROUNDS_PER_STAGE * k + 1u;
            if (phase == 1u && k == 0u)
                for (uint32_t i = 0; i < started; ++i)
                    if (wait_run(&runs[i]) != 0) return -1;
            if ((uint32_t)branch(s) != phase) continue;
            if (r < lag || r - lag >= batches || !run_head[k]) continue; /* no head: all stay */
            uint32_t b = r - lag, slot = b % TD_FPGA_FEAT_SLOTS, kept = 0;
            uint16_t *ids = TD_IDS(k, slot);
            uint8_t *buf = TD_SLOT(k, acc ? b % TD_FPGA_ACC_SLOTS : slot);
            const td_fpga_stage_t *next = last ? NULL : &m->stages[k + 1u];
            for (uint32_t i = 0; i < count[k][slot]; ++i) {
                if (branch(s))
                    finish_logits(m, s, TD_BRANCH(k, b % TD_FPGA_ACC_SLOTS) + (size_t)i * s->out_bytes, logits);
                else if (acc)
                    finish_logits(m, s, buf + (size_t)i * s->out_bytes, logits);
                else
                    td_fpga_ps_head(m, s, buf + (size_t)i * s->feat_bytes, logits);
                int leave = last || p->policy == TD_POLICY_BUDGET ||
                            td_fpga_leave(m, p, (uint8_t)k, logits, macs_exit[k]);
                if (leave) {
                    set_result(m, &results[ids[i]], logits, (uint8_t)k, macs_exit[k],
                               td_hal_cycles() - entered[b % ring]);
                    continue;
                }
                if (next->reads_image) { /* gather: the image itself goes to the next stage's input */
                    memcpy(TD_GATHERED(k + 1u, b % TD_FPGA_IN_SLOTS) + (size_t)kept * next->in_bytes,
                           images + (size_t)ids[i] * next->in_bytes, next->in_bytes);
                    ids[kept] = ids[i];
                } else if (kept != i) { /* compaction: the image moves forward to the next free place */
                    memmove(buf + (size_t)kept * s->feat_bytes, buf + (size_t)i * s->feat_bytes, s->feat_bytes);
                    ids[kept] = ids[i];
                }
                ++kept;
            }
            if (!last) count[k][slot] = kept;
        }
    }
#undef TD_IDS
#undef TD_SLOT
#undef TD_GATHERED
#undef TD_BRANCH
    return 0;
}

int td_fpga_infer(const td_fpga_model_t *m, const td_fpga_policy_t *p, const uint8_t *image,
                  const td_fpga_batch_mem_t *mem, td_fpga_result_t *r) {
    memset(r, 0, sizeof(*r));
    return td_fpga_run_batch(m, p, image, 1u, mem, r);
}
