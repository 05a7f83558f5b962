/* tinydyn PS-side controller for FINN dataflow partitions on a Zynq-7000 (Cortex-A9).
 *
 * Stage k is one FINN dataflow partition with an input and an output IODMA, and an exit head:
 *   segment k: the backbone blocks after exit k-1 up to exit k's block; it reads the images
 *              (k = 0) or the uint8 NHWC feature maps segment k-1 left in DDR, and writes its own;
 *   head k:    GAP + FC on that feature map, run here on the PS in software (td_fpga_ps_head),
 *              bit for bit the integer reference; the last segment holds the final head and
 *              writes its integer accumulators.
 * The PS finishes the logits exactly like the integer reference (acc + bias, fixed-point
 * requantisation, clamp to int16) and applies the exit policy; only images that stay go on to
 * segment k+1: no partition recomputes another's work.
 *
 * Batched, software-pipelined schedule (td_fpga_run_batch; timing model and its derivation in
 * tinydyn/hw/schedule.py, which the report's throughput comes from): images go in batches of B,
 * every segment runs on a whole batch (IODMA repeat count = images in it). Batch b's segment k
 * runs in round b + 2k; in round b + 2k + 1 the PS runs head k on its feature maps, decides and
 * compacts the feature maps of the images that stay to the front of their buffer, which segment
 * k+1 reads in round b + 2k + 2. In one round every segment with work starts, each on another
 * batch; the PS works while they run, then waits for all of them.
 *
 * Stages that read the image (reads_image; S2DNAS: partition k recomputes the earlier stages'
 * channels from the image and ends in classifier k's accumulators): every stage writes
 * accumulators, the PS finishes them like the final ones and decides with the stage's own
 * confidence threshold (confidence_t16 >= 0), and gathers the images that stay from the image
 * array into stage k+1's input buffer (TD_FPGA_IN_SLOTS slots). A stage whose head does not run
 * (policy none) is not started: the next stage reads the same images.
 * The model comes from the generated td_fpga_model.h.
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
#define TD_FPGA_MAX_CHANNELS 1024u /* feature-map channels of a PS exit head */
#define TD_FPGA_MAX_STAGES 8u
#define TD_FPGA_MAX_BATCH 4096u
#define TD_FPGA_ROUNDS_PER_STAGE 2u /* segment, then the PS's head and decision */
#define TD_FPGA_FEAT_SLOTS 3u       /* a feature map lives 2 rounds after its segment's round */
#define TD_FPGA_ACC_SLOTS 2u        /* final accumulators: written in one round, read in the next */
#define TD_FPGA_IN_SLOTS 2u         /* gathered images: written by the PS, read in the next round */
/* RADI branch partitions (DDI): in round b + 2k + 1 branch k reads segment k's feature maps and
 * writes its accumulators into one of TD_FPGA_ACC_SLOTS slots laid out after every other slot of
 * the arena; once the round's runs are done the PS decides on them and compacts the feature maps
 * of the images that stay, which segment k+1 reads in round b + 2k + 2. */
#define TD_FPGA_DMA_ALIGN 64u       /* every buffer slot starts on a cache line (A9: 32 bytes) */

typedef struct {
    uintptr_t idma, odma;         /* AXI-lite bases of segment k's input/output IODMA */
    uint32_t in_bytes;            /* segment input bytes (NHWC uint8 image or feature map) */
    uint32_t feat_bytes;          /* NHWC uint8 feature map the segment writes (0: head in the fabric) */
    uint32_t feat_c;              /* its channels (HW = feat_bytes / feat_c) */
    const int8_t *head_weight;    /* exit head k's FC on the PS, [classes][feat_c]; NULL: in the fabric */
    uint32_t out_bits;            /* head in the fabric: width of one accumulator */
    uint32_t out_per_word;        /* accumulators per output stream word (the head's PE) */
    uint32_t out_word_bits;       /* stream word width padded to bytes, as the ODMA writes it */
    uint32_t out_bytes;           /* accumulator bytes the ODMA writes (whole words; 0: PS head) */
    uint32_t seg_macs, head_macs; /* multiply-accumulates of segment k and of head k */
    const int32_t *bias;          /* head bias, int32, one per class */
    const int64_t *mult;          /* requantisation multiplier per class */
    const uint8_t *shift;         /* requantisation shift per class (>= 1) */
    uint32_t lut_mult;            /* confidence: logit difference -> 1/16-nat steps, shift 24 */
    uintptr_t head_idma, head_odma; /* DDI's RADI branch k: a partition of its own reading the segment's
                                     * feature map, writing the exit's accumulators (out_*); 0: none */
    uint8_t reads_image;          /* k > 0: the segment reads the images that stay (gathered) */
    int32_t confidence_t16;       /* the exit's own confidence threshold * 65536; -1: the policy's */
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
/* Exit head k on the PS: global average pool of the NHWC uint8 feature map (rounded half up,
 * as the integer reference's gap), the FC's integer accumulators, then td_fpga_logit. */
void td_fpga_ps_head(const td_fpga_model_t *m, const td_fpga_stage_t *s, const uint8_t *feat,
                     int16_t *logits);

/* Memory of the batched schedule. dma: DMA-able (non-cacheable, or kept coherent by the cache
 * hooks), TD_FPGA_DMA_ALIGN-aligned, td_fpga_batch_dma_bytes(m, batch) bytes: per stage
 * TD_FPGA_IN_SLOTS slots of gathered images (a stage k > 0 that reads the image), then
 * TD_FPGA_FEAT_SLOTS feature-map slots (a head in the fabric: TD_FPGA_ACC_SLOTS accumulator
 * slots) of `batch` images, every slot starting on a TD_FPGA_DMA_ALIGN boundary.
 * ids: TD_FPGA_MAX_STAGES * TD_FPGA_FEAT_SLOTS * batch entries (ordinary memory). */
typedef struct {
    uint8_t *dma;
    uint32_t dma_bytes;
    uint16_t *ids;
    uint32_t batch; /* images per batch: segment 0's IODMA repeat count */
} td_fpga_batch_mem_t;

/* Bytes of mem->dma for `batch` (0 if it would not fit 32 bits or batch is out of range). */
uint32_t td_fpga_batch_dma_bytes(const td_fpga_model_t *m, uint32_t batch);

/* Run n images (NHWC uint8, back to back in DMA-able memory: segment 0 reads them in place)
 * through the batched schedule; results[i] is image i's. Returns 0, -1 if a partition did not
 * finish (timeout), -2 if mem is too small or the batch out of range. */
int td_fpga_run_batch(const td_fpga_model_t *m, const td_fpga_policy_t *p, const uint8_t *images,
                      uint32_t n, const td_fpga_batch_mem_t *mem, td_fpga_result_t *results);

/* One image (a batch of one): image must be DMA-able. */
int td_fpga_infer(const td_fpga_model_t *m, const td_fpga_policy_t *p, const uint8_t *image,
                  const td_fpga_batch_mem_t *mem, td_fpga_result_t *r);

#ifdef __cplusplus
}
#endif
#endif
