/* tinydyn PS-side controller for FINN dataflow partitions on a Zynq-7000 (Cortex-A9).
 *
 * Stage k is two FINN dataflow partitions, each with an input and an output IODMA:
 *   segment k: the backbone blocks after exit k-1 up to exit k's block; it reads the image
 *              (k = 0) or the uint8 NHWC feature map segment k-1 left in DDR, and writes its own;
 *   head k:    reads that feature map and streams exit k's integer accumulators.
 * The last stage's head is part of its segment. The PS finishes the logits exactly like the
 * integer reference (acc + bias, fixed-point requantisation, clamp to int16), applies the exit
 * policy, and starts segment k+1 on the stored features only when the image does not leave:
 * no partition recomputes another's work. The model comes from the generated td_fpga_model.h.
 */
#ifndef TD_FPGA_H
#define TD_FPGA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* FINN IODMA (AXI-lite) registers */
#define TD_IODMA_CTRL 0x00u     /* bit0 ap_start, bit1 ap_done, bit2 ap_idle */
#define TD_IODMA_ADDR_LO 0x10u  /* DDR buffer address, low word */
#define TD_IODMA_ADDR_HI 0x14u  /* high word (0 on the 32-bit Zynq-7000) */
#define TD_IODMA_REPEAT 0x1Cu   /* number of images in the buffer */
#define TD_IODMA_START 0x1u
#define TD_IODMA_DONE 0x2u

#define TD_FPGA_MAX_CLASSES 32u

typedef struct {
    uintptr_t seg_idma, seg_odma;   /* AXI-lite bases of segment k's input/output IODMA */
    uintptr_t head_idma, head_odma; /* exit head k's; 0: the head is part of the segment (last) */
    uint32_t in_bytes;              /* segment input bytes (NHWC uint8 image or feature map) */
    uint32_t feat_bytes;            /* NHWC uint8 feature map the segment writes (0 for the last) */
    uint32_t out_bits;              /* width of one head accumulator */
    uint32_t out_per_word;          /* accumulators per output stream word (the head's PE) */
    uint32_t out_word_bits;         /* stream word width padded to bytes, as the ODMA writes it */
    uint32_t out_bytes;             /* accumulator bytes the ODMA writes (whole words) */
    uint32_t seg_macs, head_macs;   /* multiply-accumulates of segment k and of head k */
    const int32_t *bias;            /* head bias, int32, one per class */
    const int64_t *mult;            /* requantisation multiplier per class */
    const uint8_t *shift;           /* requantisation shift per class (>= 1) */
    uint32_t lut_mult;              /* confidence: logit difference -> 1/16-nat steps, shift 24 */
} td_fpga_stage_t;

typedef struct {
    uint8_t num_stages, num_classes;
    const td_fpga_stage_t *stages;
    const uint16_t *exp_lut; /* 256 entries: round(65535 * exp(-i/16)) */
} td_fpga_model_t;

typedef struct {
    uint8_t policy;          /* enum td_policy (protocol.h) */
    uint32_t confidence_t16; /* threshold * 65536 */
    uint32_t budget_macs;
    int32_t margin[TD_FPGA_MAX_CLASSES]; /* integer margin per exit */
} td_fpga_policy_t;

typedef struct {
    uint8_t predicted, exit_index;
    uint32_t macs, cycles;
    int16_t logits[TD_FPGA_MAX_CLASSES];
} td_fpga_result_t;

/* Platform hooks (td_fpga_zynq.c implements them bare-metal). */
uint32_t td_hal_cycles(void);
void td_hal_cache_flush(const void *addr, size_t n);
void td_hal_cache_invalidate(const void *addr, size_t n);
uintptr_t td_hal_phys(const void *addr);
#ifdef TD_FPGA_REG_HOOKS /* host tests only: AXI-lite register accesses go to a model */
void td_hal_reg_write(uintptr_t addr, uint32_t value);
uint32_t td_hal_reg_read(uintptr_t addr);
#endif

/* Integer pieces, shared with the host tests through the integer reference. */
int16_t td_fpga_logit(int32_t acc, int32_t bias, int64_t mult, uint8_t shift);
int32_t td_fpga_unpack(const uint8_t *buf, uint32_t index, uint32_t bits, uint32_t per_word,
                       uint32_t word_bits);
int td_fpga_leave(const td_fpga_model_t *m, const td_fpga_policy_t *p, uint8_t stage,
                  const int16_t *logits, uint32_t macs_so_far);

/* Run the partitions an image needs. feat_a/feat_b: DMA-able buffers of the largest segment
 * input/feature map (used in turn), acc_buf: of the largest out_bytes. image: NHWC uint8.
 * Returns 0, or -1 if a partition did not finish (timeout). */
int td_fpga_infer(const td_fpga_model_t *m, const td_fpga_policy_t *p, const uint8_t *image,
                  uint8_t *feat_a, uint8_t *feat_b, uint8_t *acc_buf, td_fpga_result_t *r);

#ifdef __cplusplus
}
#endif
#endif
