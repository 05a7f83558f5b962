/* tinydyn kernels: split, a channel slice of an HWC tensor. */
#ifndef TD_SPLIT_H
#define TD_SPLIT_H

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For each of the hw pixels, count_bytes bytes from offset_bytes of the input's in_bytes-byte
 * channel run (tinydyn.ops.split); one memcpy when the slice is contiguous (hw == 1). */
void td_split(td_ctx_t *ctx, uint32_t hw, uint16_t in_bytes, uint16_t offset_bytes, uint16_t count_bytes,
              const void *input, void *output);
/* Bytes td_split takes from ctx->scratch: none. */
uint32_t td_split_scratch_size(void);

#ifdef __cplusplus
}
#endif

#endif /* TD_SPLIT_H */
