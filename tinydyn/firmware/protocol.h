/* tinydyn serial protocol v1, board side: framing (COBS + CRC-32), byte-at-a-time receiver,
 * reply encoders and request decoders. C99, no malloc, every buffer is the caller's.
 * The wire format is specified in docs/PROTOCOL.md; tests/vectors/protocol_vectors.json holds
 * exact bytes that this file and tinydyn/host/protocol.py are both tested against. */
#ifndef TD_PROTOCOL_H
#define TD_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef TD_PROTO_VERSION /* overridable only to build mismatched boards for tests */
#define TD_PROTO_VERSION 1u
#endif
#define TD_PROTO_HEADER_LEN 4u   /* version, type, seq:u16 */
#define TD_PROTO_CRC_LEN 4u      /* CRC-32/ISO-HDLC, little-endian, after the body */
#define TD_PROTO_OVERHEAD (TD_PROTO_HEADER_LEN + TD_PROTO_CRC_LEN)
#define TD_SEQ_UNKNOWN 0xFFFFu   /* ERROR seq when the header is untrusted; boot config tag */
#define TD_MODEL_ID_LEN 16u
#define TD_BOARD_NAME_MAX 32u

/* Wire-level limit on margins in CONFIG (the model's own TD_MAX_EXITS must not exceed it). */
#ifndef TD_PROTO_MAX_EXITS
#define TD_PROTO_MAX_EXITS 16u
#endif

/* Bytes on the wire for a payload of n bytes: COBS overhead plus the two delimiters. */
#define TD_WIRE_MAX(n) ((n) + (n) / 254u + 1u + 2u)

/* Body lengths. */
#define TD_CONFIG_BODY_LEN(n) (11u + 4u * (n))
#define TD_INFO_BODY_FIXED 44u
#define TD_RESULT_BODY_FIXED 27u
#define TD_ERROR_BODY_LEN 5u

enum td_msg_type {
    TD_MSG_INFO_REQ = 0x01,
    TD_MSG_CONFIG = 0x02,
    TD_MSG_INFER = 0x03,
    TD_MSG_INFO = 0x81,
    TD_MSG_CONFIG_ACK = 0x82,
    TD_MSG_RESULT = 0x83,
    TD_MSG_ERROR = 0xFF
};

enum td_error_code {
    TD_ERR_NONE = 0,
    TD_ERR_BAD_FRAME = 1,
    TD_ERR_BAD_CRC = 2,
    TD_ERR_BAD_LENGTH = 3,
    TD_ERR_UNKNOWN_TYPE = 4,
    TD_ERR_BAD_VERSION = 5,
    TD_ERR_BAD_IMAGE_SIZE = 6,
    TD_ERR_BAD_CONFIG = 7,
    TD_ERR_INFER_FAILED = 8
};

/* Also defined by tinydyn_model.h; the guard lets both headers share a translation unit. */
#ifndef TD_POLICY_ENUM_DEFINED
#define TD_POLICY_ENUM_DEFINED
enum td_policy { TD_POLICY_NONE = 0, TD_POLICY_CONFIDENCE = 1, TD_POLICY_MARGIN = 2, TD_POLICY_BUDGET = 3 };
#endif

#define TD_CFG_FLAG_GATING 0x01u
#define TD_CFG_FLAG_LOGITS 0x02u
#define TD_CFG_FLAGS_KNOWN (TD_CFG_FLAG_GATING | TD_CFG_FLAG_LOGITS)
#define TD_CONFIDENCE_ONE 65536u

enum td_counter_kind { TD_COUNTER_NONE = 0, TD_COUNTER_CYCLES = 1, TD_COUNTER_INSTRUCTIONS = 2 };
enum td_energy_kind { TD_ENERGY_NONE = 0, TD_ENERGY_MODELLED = 1, TD_ENERGY_MEASURED = 2 };

/* ---- checksums and COBS ---- */

/* CRC-32/ISO-HDLC (zlib's crc32): td_crc32(0, "123456789", 9) == 0xCBF43926.
 * Chain by passing the previous return value as crc. */
uint32_t td_crc32(uint32_t crc, const uint8_t *data, size_t n);

/* COBS-encode n bytes into out (no delimiters). Returns the encoded length, or 0 if cap is
 * too small (nothing beyond out[cap-1] is ever written). */
size_t td_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* COBS-decode n bytes (no delimiters). Returns TD_ERR_NONE and *out_len, TD_ERR_BAD_FRAME for a
 * zero byte or a block running past the end, TD_ERR_BAD_LENGTH if the result exceeds cap. */
int td_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap, size_t *out_len);

/* Turn a payload into wire bytes: 0x00 COBS(payload) 0x00. Returns the length or 0 if cap is
 * too small (TD_WIRE_MAX(n) always suffices). */
size_t td_wire_encode(const uint8_t *payload, size_t n, uint8_t *wire, size_t cap);

/* ---- receiver ---- */

/* A CRC-valid frame. body points into the receiver's buffer and stays valid until the next
 * td_rx_feed call. */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t seq;
    const uint8_t *body;
    size_t body_len;
} td_frame_t;

/* Incremental COBS decoder: state between bytes. Treat as opaque. */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    uint8_t code;     /* code byte of the current block */
    uint8_t left;     /* data bytes still expected in the current block */
    uint8_t active;   /* a non-delimiter byte has been seen since the last delimiter */
    uint8_t overflow; /* the frame outgrew buf: drop bytes until the delimiter */
} td_rx_t;

#define TD_RX_NONE 0
#define TD_RX_FRAME 1

/* buf receives decoded payloads; cap bounds the largest accepted payload (header+body+CRC). */
void td_rx_init(td_rx_t *rx, uint8_t *buf, size_t cap);

/* Feed one received byte. Returns TD_RX_NONE (frame incomplete, or an empty frame),
 * TD_RX_FRAME (*frame holds a CRC-valid frame), or -code for a broken frame
 * (BAD_FRAME, BAD_CRC, BAD_LENGTH; frame->seq = TD_SEQ_UNKNOWN, frame->body_len = 0).
 * Resynchronises at every 0x00. */
int td_rx_feed(td_rx_t *rx, uint8_t byte, td_frame_t *frame);

/* ---- UART ISR -> main loop byte queue ---- */

/* Single-producer (UART RX interrupt) single-consumer (main loop) ring. td_server_feed runs
 * inference, so it belongs in the main loop; the ISR only pushes. size must be a power of two;
 * it holds size - 1 bytes. A byte arriving when full is dropped and counted: the frame it
 * belonged to then fails its CRC, the host is told BAD_CRC and resends. */
typedef struct {
    volatile uint8_t *buf;
    uint16_t mask;
    volatile uint16_t head; /* written by the producer only */
    volatile uint16_t tail; /* written by the consumer only */
    volatile uint16_t dropped;
} td_ring_t;

void td_ring_init(td_ring_t *r, volatile uint8_t *buf, uint16_t size);
int td_ring_push(td_ring_t *r, uint8_t byte); /* 1 = queued, 0 = full (dropped) */
int td_ring_pop(td_ring_t *r);                /* the next byte, or -1 if empty */

/* ---- messages ---- */

typedef struct {
    char model_id[TD_MODEL_ID_LEN]; /* 16 hex characters, not NUL-terminated */
    uint16_t in_c, in_h, in_w;
    uint8_t num_classes, num_exits, counter_kind, energy_kind;
    uint32_t clock_hz, arena_bytes, static_macs, max_payload;
    const char *board_name; /* NUL-terminated; truncated to TD_BOARD_NAME_MAX */
} td_msg_info_t;

typedef struct {
    uint8_t policy, flags;
    uint32_t confidence_t16, budget_macs;
    uint8_t n_margins;
    int32_t margin[TD_PROTO_MAX_EXITS];
} td_msg_config_t;

typedef struct {
    uint8_t predicted, exit_index, counter_kind, energy_kind;
    uint32_t macs, counter;
    uint16_t skipped_blocks, skipped_channels;
    uint32_t energy_nj, power_uw;
    uint16_t config_tag;
    uint8_t n_logits;
    const int16_t *logits; /* n_logits values */
} td_msg_result_t;

/* Reply encoders: write a whole payload (header, body, CRC) into out. Return its length, or 0
 * if it does not fit in cap. */
size_t td_encode_info(uint8_t *out, size_t cap, uint16_t seq, const td_msg_info_t *m);
size_t td_encode_config_ack(uint8_t *out, size_t cap, uint16_t seq);
size_t td_encode_result(uint8_t *out, size_t cap, uint16_t seq, const td_msg_result_t *m);
size_t td_encode_error(uint8_t *out, size_t cap, uint16_t seq, uint8_t code, uint32_t detail);

/* Request checks and decoders. Each returns TD_ERR_NONE or an error code, with *detail set to
 * the ERROR detail (see docs/PROTOCOL.md). */
int td_check_request(const td_frame_t *f, uint32_t *detail); /* version and type */
int td_decode_config(const td_frame_t *f, td_msg_config_t *m, uint32_t *detail);

#ifdef __cplusplus
}
#endif

#endif /* TD_PROTOCOL_H */
