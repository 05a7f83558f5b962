/* tinydyn kernels: integer layers on HWC activations, bit-exact with the numpy executor
 * (tinydyn/quantize/executor.py). Every kernel has the same shape of signature, as in
 * CMSIS-NN: run context (counters, scratch), layer parameters (constant, in flash), gates,
 * then input, residual and output data.
 *
 * One header and one source per op kind under kernels/, each with its scratch-size function
 * beside the kernel (CMSIS-NN's *_get_buffer_size): td_<kind>_scratch_size() returns the bytes
 * the kernel takes from ctx->scratch, which is what the codegen reserves (tested equal):
 *   kernels/td_common.h   types every kernel shares (td_ctx_t, td_gates_t, td_quant_t),
 *                         td_chw_to_hwc
 *   kernels/td_conv2d.h   td_conv2d        kernels/td_linear.h   td_linear
 *   kernels/td_gap.h      td_gap           kernels/td_pool.h     td_maxpool, td_avgpool
 *   kernels/td_rescale.h  td_rescale       kernels/td_policy.h   td_argmax, exit policies
 *   kernels/td_concat.h   td_concat        kernels/td_split.h    td_split
 *   kernels/td_lstm_gate.h td_lstm_gate (integer LSTM cell step of a layer gate)
 * kernels/td_internal.h (private to the kernels) holds the shared helpers: element access,
 * requantisation, the im2col column pair and the 2x2 dot product (td_common.c).
 *
 * Two paths give identical results: a portable C path and a Cortex-M DSP path (SMLAD) that
 * is used when __ARM_FEATURE_DSP is defined. TD_PORTABLE forces the portable path;
 * TD_EMULATE_DSP runs the DSP path on any CPU with C versions of the intrinsics (tests). */
#ifndef TD_KERNELS_H
#define TD_KERNELS_H

#include "kernels/td_common.h"
#include "kernels/td_concat.h"
#include "kernels/td_conv2d.h"
#include "kernels/td_gap.h"
#include "kernels/td_linear.h"
#include "kernels/td_lstm_gate.h"
#include "kernels/td_policy.h"
#include "kernels/td_pool.h"
#include "kernels/td_rescale.h"
#include "kernels/td_split.h"

#endif /* TD_KERNELS_H */
