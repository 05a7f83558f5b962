/* tinydyn kernels: lstm_gate, one step of the integer LSTM cell of a layer gate (DDI) and the
 * saliences it gives; the arithmetic is docs/ARITHMETIC.md's "lstm_gate". */
#ifndef TD_LSTM_GATE_H
#define TD_LSTM_GATE_H

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    /* weights packed like a linear's (tinydyn.codegen.packing.pack_linear): rows of row_x
     * (w_x) or row_h (w_h, sal_weight) bytes; gate rows in the order i, f, g, o */
    const int8_t *w_x;        /* [4H][row_x] */
    const int8_t *w_h;        /* [4H][row_h], NULL for the first gate (zero state) */
    const int32_t *bias;      /* [4H], in the units of the x accumulator */
    const int32_t *mult_x;    /* [4H], < 2^31 */
    const int32_t *mult_h;    /* [4H], NULL with w_h */
    const uint8_t *shift;     /* [4H], 1..62 */
    const int8_t *sal_weight; /* [S][row_h] */
    const int32_t *sal_bias, *sal_mult;
    const uint8_t *sal_shift;
    const int16_t *sigmoid_lut, *tanh_lut; /* 129 entries each (tinydyn.ops.lstm_gate) */
    uint16_t in_d, hidden, saliences;
    uint16_t row_x, row_h;
    uint8_t in_type;          /* TD_U8 or TD_S8 */
    uint32_t macs;            /* 4H·D (+ 4H·H with a state) + S·H */
} td_lstm_params_t;

/* One step: x [in_d], state h, c [hidden] (Q0.15, Q4.11; NULL for a zero state) -> the
 * saliences [S] and the new state h_out, c_out. h/c and h_out/c_out never share memory. */
void td_lstm_gate(td_ctx_t *ctx, const td_lstm_params_t *p, const void *x, const int16_t *h, const int16_t *c,
                  uint8_t *salience, int16_t *h_out, int16_t *c_out);
/* Bytes td_lstm_gate takes from ctx->scratch: what tinydyn.ops.lstm_gate reserves. */
uint32_t td_lstm_gate_scratch_size(const td_lstm_params_t *p);

#ifdef __cplusplus
}
#endif

#endif /* TD_LSTM_GATE_H */
