/* tinydyn serial protocol v1 and v2, board side: framing (COBS + CRC-32), byte-at-a-time receiver,
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

/* A board speaks every version from TD_PROTO_VERSION_MIN to TD_PROTO_VERSION and answers each
 * request in the request's version. Overridable only to build mismatched boards for tests. */
#ifndef TD_PROTO_VERSION
#define TD_PROTO_VERSION 2u
#endif
#ifndef TD_PROTO_VERSION_MIN
#define TD_PROTO_VERSION_MIN 1u
#endif
#define TD_PROTO_V1 1u
#define TD_PROTO_V2 2u
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

/* Body lengths (v1; v2 appends or prepends the extensions below). */
#define TD_CONFIG_BODY_LEN(n) (11u + 4u * (n))
#define TD_INFO_BODY_FIXED 44u
#define TD_RESULT_BODY_FIXED 27u
#define TD_ERROR_BODY_LEN 5u
#define TD_CONFIG2_BODY_LEN(n) (TD_CONFIG_BODY_LEN(n) + 1u) /* + budget_unit:u8 */
#define TD_INFO2_EXT_LEN 6u    /* after the name: min_version:u8 budget_units:u8 cost_model_id:u32 */
#define TD_RESULT2_EXT_LEN 18u /* after the logits: policy budget_unit budget energy cycles gate_macs */
#define TD_INFER2_PREFIX 5u    /* before the image: budget_unit:u8 budget:u32 (unit 0: no override) */

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

/* BAD_CONFIG details (docs/PROTOCOL.md) */
#define TD_BAD_CONFIG_POLICY 1u
#define TD_BAD_CONFIG_FLAGS 2u
#define TD_BAD_CONFIG_T16 3u
#define TD_BAD_CONFIG_EXITS 4u
#define TD_BAD_CONFIG_UNIT 5u     /* v2: budget unit unknown, or this firmware has no costs for it */
#define TD_BAD_CONFIG_OVERRIDE 6u /* v2 INFER: no override (unit 0) but a non-zero budget */

/* Also defined by tinydyn_model.h; the guard lets both headers share a translation unit. */
#ifndef TD_POLICY_ENUM_DEFINED
#define TD_POLICY_ENUM_DEFINED
enum td_policy { TD_POLICY_NONE = 0, TD_POLICY_CONFIDENCE = 1, TD_POLICY_MARGIN = 2, TD_POLICY_BUDGET = 3 };
#endif

#ifndef TD_BUDGET_UNIT_ENUM_DEFINED
#define TD_BUDGET_UNIT_ENUM_DEFINED
enum td_budget_unit { TD_UNIT_MACS = 1, TD_UNIT_ENERGY = 2, TD_UNIT_CYCLES = 3 };
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

/* INFO v2 fields after the name */
typedef struct {
    uint8_t min_version;    /* the oldest version the board speaks (the newest is the header's) */
    uint8_t budget_units;   /* bit (unit - 1) for each budget unit the firmware has costs for */
    uint32_t cost_model_id; /* CRC-32 of its per-op budget cost model */
} td_msg_info2_t;

typedef struct {
    uint8_t policy, flags;
    uint32_t confidence_t16, budget_macs; /* budget_macs: the budget, in budget_unit */
    uint8_t n_margins;
    int32_t margin[TD_PROTO_MAX_EXITS];
    uint8_t budget_unit; /* TD_UNIT_MACS in a v1 CONFIG */
} td_msg_config_t;

/* INFER: the image, and in v2 a per-request budget (budget_unit 0: the CONFIG applies) */
typedef struct {
    uint8_t budget_unit;
    uint32_t budget;
    const uint8_t *image;
    size_t image_len;
} td_msg_infer_t;

/* RESULT v2 fields after the logits */
typedef struct {
    uint8_t policy, budget_unit; /* what decided this image's exit (a per-request budget included) */
    uint32_t budget;
    uint32_t energy_cost_nj, cycles_cost, gate_macs;
} td_msg_result2_t;

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
 * if it does not fit in cap. The plain ones write version 1; the _v ones the version given
 * (the request's), with the v2 extension where the version is 2 (ignored, may be NULL, in v1). */
size_t td_encode_info(uint8_t *out, size_t cap, uint16_t seq, const td_msg_info_t *m);
size_t td_encode_config_ack(uint8_t *out, size_t cap, uint16_t seq);
size_t td_encode_result(uint8_t *out, size_t cap, uint16_t seq, const td_msg_result_t *m);
size_t td_encode_error(uint8_t *out, size_t cap, uint16_t seq, uint8_t code, uint32_t detail);
size_t td_encode_info_v(uint8_t *out, size_t cap, uint8_t version, uint16_t seq, const td_msg_info_t *m,
                        const td_msg_info2_t *ext);
size_t td_encode_config_ack_v(uint8_t *out, size_t cap, uint8_t version, uint16_t seq);
size_t td_encode_result_v(uint8_t *out, size_t cap, uint8_t version, uint16_t seq, const td_msg_result_t *m,
                          const td_msg_result2_t *ext);
size_t td_encode_error_v(uint8_t *out, size_t cap, uint8_t version, uint16_t seq, uint8_t code,
                         uint32_t detail);

/* Request checks and decoders. Each returns TD_ERR_NONE or an error code, with *detail set to
 * the ERROR detail (see docs/PROTOCOL.md). td_check_request accepts version 1 only (a v1
 * server); td_check_request_v any version in [min_version, max_version] (BAD_VERSION detail =
 * max_version). The decoders read the frame's own version. */
int td_check_request(const td_frame_t *f, uint32_t *detail); /* version and type */
int td_check_request_v(const td_frame_t *f, uint8_t min_version, uint8_t max_version, uint32_t *detail);
int td_decode_config(const td_frame_t *f, td_msg_config_t *m, uint32_t *detail);
int td_decode_infer(const td_frame_t *f, td_msg_infer_t *m, uint32_t *detail);

#ifdef __cplusplus
}
#endif

#endif /* TD_PROTOCOL_H */
