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
    case TD_POLICY_CONFIDENCE:
        return confident(m, &m->stages[stage], logits, p->confidence_t16);
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

static int run_partition(uintptr_t idma, uintptr_t odma, const uint8_t *in_buf, uint32_t in_bytes,
                         uint8_t *out_buf, uint32_t out_bytes) {
    td_hal_cache_flush(in_buf, in_bytes);
    td_hal_cache_invalidate(out_buf, out_bytes);
    /* output DMA first so that the pipeline never stalls on a full output stream */
    reg_write(odma, TD_IODMA_ADDR_LO, (uint32_t)td_hal_phys(out_buf));
    reg_write(odma, TD_IODMA_ADDR_HI, 0u);
    reg_write(odma, TD_IODMA_REPEAT, 1u);
    reg_write(odma, TD_IODMA_CTRL, TD_IODMA_START);
    reg_write(idma, TD_IODMA_ADDR_LO, (uint32_t)td_hal_phys(in_buf));
    reg_write(idma, TD_IODMA_ADDR_HI, 0u);
    reg_write(idma, TD_IODMA_REPEAT, 1u);
    reg_write(idma, TD_IODMA_CTRL, TD_IODMA_START);
    for (uint32_t spin = 0; spin < TD_DMA_TIMEOUT; ++spin) {
        if (reg_read(odma, TD_IODMA_CTRL) & TD_IODMA_DONE) {
            td_hal_cache_invalidate(out_buf, out_bytes);
            return 0;
        }
    }
    return -1;
}

static void finish_logits(const td_fpga_model_t *m, const td_fpga_stage_t *s, const uint8_t *acc_buf,
                          td_fpga_result_t *r) {
    for (uint8_t c = 0; c < m->num_classes; ++c) {
        int32_t acc = td_fpga_unpack(acc_buf, c, s->out_bits, s->out_per_word, s->out_word_bits);
        r->logits[c] = td_fpga_logit(acc, s->bias[c], s->mult[c], s->shift[c]);
    }
}

int td_fpga_infer(const td_fpga_model_t *m, const td_fpga_policy_t *p, const uint8_t *image,
                  uint8_t *feat_a, uint8_t *feat_b, uint8_t *acc_buf, td_fpga_result_t *r) {
    uint32_t start = td_hal_cycles();
    memset(r, 0, sizeof(*r));
    memcpy(feat_a, image, m->stages[0].in_bytes);
    uint8_t *in = feat_a, *out = feat_b;
    for (uint8_t k = 0; k < m->num_stages; ++k) {
        const td_fpga_stage_t *s = &m->stages[k];
        r->exit_index = k;
        if (s->head_idma == 0u) { /* last stage: segment and final head in one partition */
            if (run_partition(s->seg_idma, s->seg_odma, in, s->in_bytes, acc_buf, s->out_bytes) != 0)
                return -1;
            r->macs += s->seg_macs + s->head_macs;
            finish_logits(m, s, acc_buf, r);
            break;
        }
        /* segment k: features of the previous segment (or the image) -> this stage's features */
        if (run_partition(s->seg_idma, s->seg_odma, in, s->in_bytes, out, s->feat_bytes) != 0) return -1;
        r->macs += s->seg_macs;
        /* as the integer reference: no policy computes no early head; a MAC budget decides
         * before the head, which then runs only for an image that leaves */
        int run_head = p->policy != TD_POLICY_NONE;
        if (p->policy == TD_POLICY_BUDGET) run_head = td_fpga_leave(m, p, k, r->logits, r->macs);
        if (run_head) {
            if (run_partition(s->head_idma, s->head_odma, out, s->feat_bytes, acc_buf, s->out_bytes) != 0)
                return -1;
            r->macs += s->head_macs;
            finish_logits(m, s, acc_buf, r);
            if (p->policy == TD_POLICY_BUDGET || td_fpga_leave(m, p, k, r->logits, r->macs)) break;
        }
        uint8_t *t = in; /* segment k+1 reads the features segment k just wrote */
        in = out;
        out = t;
    }
    uint8_t best = 0;
    for (uint8_t c = 1; c < m->num_classes; ++c)
        if (r->logits[c] > r->logits[best]) best = c; /* ties: lowest index, as the reference */
    r->predicted = best;
    r->cycles = td_hal_cycles() - start;
    return 0;
}
