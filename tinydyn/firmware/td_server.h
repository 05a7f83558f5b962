/* Board-independent protocol server: feed it received bytes, it answers through td_serial_write.
 * It counts with td_board_counter() (td_board.h) around td_infer and reports the board's unit:
 * cycles, or retired instructions under QEMU -icount shift=TD_ICOUNT_SHIFT (timer ticks x 40/2^S). */
#ifndef TD_SERVER_H
#define TD_SERVER_H

#include "protocol.h"
#include "tinydyn_model.h"

#ifndef TD_MAX_IMAGE_BYTES /* the largest C*H*W the receive buffer takes; codegen may set it */
#define TD_MAX_IMAGE_BYTES 3072 /* 3x32x32 */
#endif

#if TD_MAX_EXITS > TD_PROTO_MAX_EXITS
#error "TD_MAX_EXITS exceeds TD_PROTO_MAX_EXITS: raise TD_PROTO_MAX_EXITS"
#endif

/* the largest request: a v2 INFER (budget prefix + image) or a v2 CONFIG */
#define TD_SERVER_RX_BODY_MAX                                                                         \
    (TD_INFER2_PREFIX + TD_MAX_IMAGE_BYTES > TD_CONFIG2_BODY_LEN(TD_MAX_EXITS)                       \
         ? TD_INFER2_PREFIX + TD_MAX_IMAGE_BYTES                                                      \
         : TD_CONFIG2_BODY_LEN(TD_MAX_EXITS))
#define TD_SERVER_RX_CAP (TD_PROTO_OVERHEAD + TD_SERVER_RX_BODY_MAX)
/* Upper bound of the largest reply (v2 INFO with a 32-character name, or v2 RESULT with logits). */
#define TD_SERVER_TX_CAP                                                                              \
    (TD_PROTO_OVERHEAD + TD_INFO_BODY_FIXED + TD_BOARD_NAME_MAX + TD_INFO2_EXT_LEN + TD_RESULT_BODY_FIXED + \
     2u * TD_MAX_CLASSES + TD_RESULT2_EXT_LEN)

typedef struct {
    td_rx_t rx;
    td_config_t cfg;
    uint8_t flags;       /* TD_CFG_FLAG_* in force */
    uint16_t config_tag; /* seq of the CONFIG in force; TD_SEQ_UNKNOWN at boot */
    uint8_t rx_buf[TD_SERVER_RX_CAP];
    uint8_t tx[TD_SERVER_TX_CAP];
    uint8_t wire[TD_WIRE_MAX(TD_SERVER_TX_CAP)];
} td_server_t;

/* Boot state: policy none, gating on, logits on, budget unit MACs, config tag 0xFFFF. */
void td_server_init(td_server_t *s);

/* Feed one received byte. When it completes a frame the reply is sent with td_serial_write.
 * Returns -1 if no frame completed, else the ERROR code sent (0 = a normal reply).
 * Call td_board_init() once before serving. */
int td_server_feed(td_server_t *s, uint8_t byte);

#endif /* TD_SERVER_H */
