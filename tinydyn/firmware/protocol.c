/* tinydyn serial protocol v1 and v2, board side. See protocol.h and docs/PROTOCOL.md. */
#include "protocol.h"

#include <string.h>

/* ---- little-endian helpers ---- */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] | ((uint16_t)p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- CRC-32/ISO-HDLC ---- */

/* Nibble table: 64 bytes of flash instead of 1 KB, two lookups per byte; the CRC of a 3 KB
 * image costs well under 1 ms on a Cortex-M4, which is noise next to the UART transfer. */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t td_crc32(uint32_t crc, const uint8_t *data, size_t n)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
    }
    return ~crc;
}

/* ---- COBS ---- */

size_t td_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t code_pos = 0, o = 1, i;
    uint8_t code = 1;
    if (cap < 1) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_pos] = code;
            code = 1;
            code_pos = o;
            if (o >= cap) {
                return 0;
            }
            o++;
            continue;
        }
        if (o >= cap) {
            return 0;
        }
        out[o++] = in[i];
        code++;
        /* A full block of 254 data bytes has no implied zero; start a new block only if more
         * data follows, so that no spurious empty block is emitted at the end. */
        if (code == 0xFFu && i + 1 < n) {
            out[code_pos] = code;
            code = 1;
            code_pos = o;
            if (o >= cap) {
                return 0;
            }
            o++;
        }
    }
    out[code_pos] = code;
    return o;
}

int td_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t i = 0, o = 0;
    *out_len = 0;
    while (i < n) {
        uint8_t code = in[i++];
        uint8_t k;
        if (code == 0) {
            return TD_ERR_BAD_FRAME;
        }
        for (k = 1; k < code; k++) {
            if (i >= n || in[i] == 0) {
                return TD_ERR_BAD_FRAME;
            }
            if (o >= cap) {
                return TD_ERR_BAD_LENGTH;
            }
            out[o++] = in[i++];
        }
        if (code != 0xFFu && i < n) {
            if (o >= cap) {
                return TD_ERR_BAD_LENGTH;
            }
            out[o++] = 0;
        }
    }
    *out_len = o;
    return TD_ERR_NONE;
}

size_t td_wire_encode(const uint8_t *payload, size_t n, uint8_t *wire, size_t cap)
{
    size_t k;
    if (cap < 3) {
        return 0;
    }
    wire[0] = 0;
    k = td_cobs_encode(payload, n, wire + 1, cap - 2);
    if (k == 0) {
        return 0;
    }
    wire[1 + k] = 0;
    return k + 2;
}

/* ---- receiver ---- */

void td_rx_init(td_rx_t *rx, uint8_t *buf, size_t cap)
{
    rx->buf = buf;
    rx->cap = cap;
    rx->len = 0;
    rx->code = 0xFFu; /* no implied zero before the first block */
    rx->left = 0;
    rx->active = 0;
    rx->overflow = 0;
}

static void rx_reset(td_rx_t *rx)
{
    rx->len = 0;
    rx->code = 0xFFu;
    rx->left = 0;
    rx->active = 0;
    rx->overflow = 0;
}

static void rx_put(td_rx_t *rx, uint8_t b)
{
    if (rx->len < rx->cap) {
        rx->buf[rx->len++] = b;
    } else {
        rx->overflow = 1;
    }
}

static int rx_finish(td_rx_t *rx, td_frame_t *frame)
{
    uint32_t crc;
    size_t n = rx->len;
    frame->version = 0;
    frame->type = 0;
    frame->seq = TD_SEQ_UNKNOWN;
    frame->body = rx->buf;
    frame->body_len = 0;
    if (rx->overflow) {
        return -TD_ERR_BAD_LENGTH;
    }
    if (rx->left != 0 || n < TD_PROTO_OVERHEAD) {
        return -TD_ERR_BAD_FRAME; /* block cut short by the delimiter, or too short */
    }
    crc = td_crc32(0, rx->buf, n - TD_PROTO_CRC_LEN);
    if (crc != get_u32(rx->buf + n - TD_PROTO_CRC_LEN)) {
        return -TD_ERR_BAD_CRC;
    }
    frame->version = rx->buf[0];
    frame->type = rx->buf[1];
    frame->seq = get_u16(rx->buf + 2);
    frame->body = rx->buf + TD_PROTO_HEADER_LEN;
    frame->body_len = n - TD_PROTO_OVERHEAD;
    return TD_RX_FRAME;
}

int td_rx_feed(td_rx_t *rx, uint8_t byte, td_frame_t *frame)
{
    int r;
    if (byte == 0) {
        if (!rx->active) {
            return TD_RX_NONE; /* empty frame: leading delimiter or idle line */
        }
        r = rx_finish(rx, frame);
        rx_reset(rx);
        return r;
    }
    rx->active = 1;
    if (rx->overflow) {
        return TD_RX_NONE; /* discard until the delimiter, then answer BAD_LENGTH */
    }
    if (rx->left == 0) {
        /* A code byte. The previous block's implied zero is only known to exist now that
         * another block follows it. */
        if (rx->code != 0xFFu) {
            rx_put(rx, 0);
        }
        rx->code = byte;
        rx->left = (uint8_t)(byte - 1u);
    } else {
        rx_put(rx, byte);
        rx->left--;
    }
    return TD_RX_NONE;
}

/* ---- ring ---- */

void td_ring_init(td_ring_t *r, volatile uint8_t *buf, uint16_t size)
{
    r->buf = buf;
    r->mask = (uint16_t)(size - 1u);
    r->head = 0;
    r->tail = 0;
    r->dropped = 0;
}

int td_ring_push(td_ring_t *r, uint8_t byte)
{
    uint16_t head = r->head, next = (uint16_t)((head + 1u) & r->mask);
    if (next == r->tail) {
        r->dropped++;
        return 0;
    }
    r->buf[head] = byte; /* volatile: stored before head is published */
    r->head = next;
    return 1;
}

int td_ring_pop(td_ring_t *r)
{
    uint16_t tail = r->tail;
    uint8_t b;
    if (tail == r->head) {
        return -1;
    }
    b = r->buf[tail];
    r->tail = (uint16_t)((tail + 1u) & r->mask);
    return b;
}

/* ---- reply encoders ---- */

static size_t finish_payload(uint8_t *out, size_t cap, uint8_t version, uint8_t type, uint16_t seq,
                             size_t body_len)
{
    size_t n = TD_PROTO_HEADER_LEN + body_len;
    if (cap < n + TD_PROTO_CRC_LEN) {
        return 0;
    }
    out[0] = version;
    out[1] = type;
    put_u16(out + 2, seq);
    put_u32(out + n, td_crc32(0, out, n));
    return n + TD_PROTO_CRC_LEN;
}

size_t td_encode_info(uint8_t *out, size_t cap, uint16_t seq, const td_msg_info_t *m)
{
    return td_encode_info_v(out, cap, TD_PROTO_V1, seq, m, NULL);
}

size_t td_encode_info_v(uint8_t *out, size_t cap, uint8_t version, uint16_t seq, const td_msg_info_t *m,
                        const td_msg_info2_t *ext)
{
    size_t name_len = 0, body_len, ext_len = (version >= TD_PROTO_V2 && ext != NULL) ? TD_INFO2_EXT_LEN : 0u;
    uint8_t *b = out + TD_PROTO_HEADER_LEN;
    if (m->board_name != NULL) {
        while (name_len < TD_BOARD_NAME_MAX && m->board_name[name_len] != '\0') {
            name_len++;
        }
    }
    body_len = TD_INFO_BODY_FIXED + name_len + ext_len;
    if (cap < TD_PROTO_OVERHEAD + body_len) {
        return 0;
    }
    b[0] = version;
    memcpy(b + 1, m->model_id, TD_MODEL_ID_LEN);
    put_u16(b + 17, m->in_c);
    put_u16(b + 19, m->in_h);
    put_u16(b + 21, m->in_w);
    b[23] = m->num_classes;
    b[24] = m->num_exits;
    b[25] = m->counter_kind;
    b[26] = m->energy_kind;
    put_u32(b + 27, m->clock_hz);
    put_u32(b + 31, m->arena_bytes);
    put_u32(b + 35, m->static_macs);
    put_u32(b + 39, m->max_payload);
    b[43] = (uint8_t)name_len;
    if (name_len > 0) {
        memcpy(b + 44, m->board_name, name_len);
    }
    if (ext_len > 0) {
        uint8_t *e = b + TD_INFO_BODY_FIXED + name_len;
        e[0] = ext->min_version;
        e[1] = ext->budget_units;
        put_u32(e + 2, ext->cost_model_id);
    }
    return finish_payload(out, cap, version, TD_MSG_INFO, seq, body_len);
}

size_t td_encode_config_ack(uint8_t *out, size_t cap, uint16_t seq)
{
    return td_encode_config_ack_v(out, cap, TD_PROTO_V1, seq);
}

size_t td_encode_config_ack_v(uint8_t *out, size_t cap, uint8_t version, uint16_t seq)
{
    return finish_payload(out, cap, version, TD_MSG_CONFIG_ACK, seq, 0);
}

size_t td_encode_result(uint8_t *out, size_t cap, uint16_t seq, const td_msg_result_t *m)
{
    return td_encode_result_v(out, cap, TD_PROTO_V1, seq, m, NULL);
}

size_t td_encode_result_v(uint8_t *out, size_t cap, uint8_t version, uint16_t seq, const td_msg_result_t *m,
                          const td_msg_result2_t *ext)
{
    size_t ext_len = (version >= TD_PROTO_V2 && ext != NULL) ? TD_RESULT2_EXT_LEN : 0u;
    size_t logits_len = 2u * (size_t)m->n_logits, i;
    size_t body_len = TD_RESULT_BODY_FIXED + logits_len + ext_len;
    uint8_t *b = out + TD_PROTO_HEADER_LEN;
    if (cap < TD_PROTO_OVERHEAD + body_len) {
        return 0;
    }
    b[0] = m->predicted;
    b[1] = m->exit_index;
    b[2] = m->counter_kind;
    b[3] = m->energy_kind;
    put_u32(b + 4, m->macs);
    put_u32(b + 8, m->counter);
    put_u16(b + 12, m->skipped_blocks);
    put_u16(b + 14, m->skipped_channels);
    put_u32(b + 16, m->energy_nj);
    put_u32(b + 20, m->power_uw);
    put_u16(b + 24, m->config_tag);
    b[26] = m->n_logits;
    for (i = 0; i < m->n_logits; i++) {
        put_u16(b + TD_RESULT_BODY_FIXED + 2u * i, (uint16_t)m->logits[i]);
    }
    if (ext_len > 0) {
        uint8_t *e = b + TD_RESULT_BODY_FIXED + logits_len;
        e[0] = ext->policy;
        e[1] = ext->budget_unit;
        put_u32(e + 2, ext->budget);
        put_u32(e + 6, ext->energy_cost_nj);
        put_u32(e + 10, ext->cycles_cost);
        put_u32(e + 14, ext->gate_macs);
    }
    return finish_payload(out, cap, version, TD_MSG_RESULT, seq, body_len);
}

size_t td_encode_error(uint8_t *out, size_t cap, uint16_t seq, uint8_t code, uint32_t detail)
{
    return td_encode_error_v(out, cap, TD_PROTO_V1, seq, code, detail);
}

size_t td_encode_error_v(uint8_t *out, size_t cap, uint8_t version, uint16_t seq, uint8_t code, uint32_t detail)
{
    if (cap < TD_PROTO_OVERHEAD + TD_ERROR_BODY_LEN) {
        return 0;
    }
    out[TD_PROTO_HEADER_LEN] = code;
    put_u32(out + TD_PROTO_HEADER_LEN + 1, detail);
    return finish_payload(out, cap, version, TD_MSG_ERROR, seq, TD_ERROR_BODY_LEN);
}

/* ---- request decoders ---- */

int td_check_request(const td_frame_t *f, uint32_t *detail)
{
    return td_check_request_v(f, TD_PROTO_V1, TD_PROTO_V1, detail);
}

int td_check_request_v(const td_frame_t *f, uint8_t min_version, uint8_t max_version, uint32_t *detail)
{
    *detail = 0;
    if (f->version < min_version || f->version > max_version) {
        *detail = max_version;
        return TD_ERR_BAD_VERSION;
    }
    switch (f->type) {
    case TD_MSG_INFO_REQ:
        if (f->body_len != 0) {
            return TD_ERR_BAD_LENGTH; /* expected length 0 */
        }
        return TD_ERR_NONE;
    case TD_MSG_CONFIG:
    case TD_MSG_INFER:
        return TD_ERR_NONE; /* lengths depend on the body / the model */
    default:
        *detail = f->type;
        return TD_ERR_UNKNOWN_TYPE;
    }
}

int td_decode_config(const td_frame_t *f, td_msg_config_t *m, uint32_t *detail)
{
    const uint8_t *b = f->body;
    const uint32_t ext = f->version >= TD_PROTO_V2 ? 1u : 0u; /* v2: a trailing budget_unit */
    uint8_t n, i;
    *detail = 0;
    if (f->body_len < TD_CONFIG_BODY_LEN(0) + ext) {
        *detail = TD_CONFIG_BODY_LEN(0) + ext;
        return TD_ERR_BAD_LENGTH;
    }
    n = b[10];
    if (f->body_len != TD_CONFIG_BODY_LEN((size_t)n) + ext) {
        *detail = TD_CONFIG_BODY_LEN((uint32_t)n) + ext;
        return TD_ERR_BAD_LENGTH;
    }
    m->policy = b[0];
    m->flags = b[1];
    m->confidence_t16 = get_u32(b + 2);
    m->budget_macs = get_u32(b + 6);
    m->n_margins = n;
    m->budget_unit = ext ? b[TD_CONFIG_BODY_LEN((size_t)n)] : (uint8_t)TD_UNIT_MACS;
    /* detail names the offending field: 1 policy, 2 flags, 3 confidence_t16, 4 margin count,
     * 5 budget unit */
    if (m->policy > TD_POLICY_BUDGET) {
        *detail = 1;
        return TD_ERR_BAD_CONFIG;
    }
    if ((m->flags & (uint8_t)~TD_CFG_FLAGS_KNOWN) != 0) {
        *detail = 2;
        return TD_ERR_BAD_CONFIG;
    }
    if (m->confidence_t16 > TD_CONFIDENCE_ONE) {
        *detail = 3;
        return TD_ERR_BAD_CONFIG;
    }
    if (n > TD_PROTO_MAX_EXITS) {
        *detail = 4;
        return TD_ERR_BAD_CONFIG;
    }
    if (m->budget_unit < TD_UNIT_MACS || m->budget_unit > TD_UNIT_CYCLES) {
        *detail = TD_BAD_CONFIG_UNIT;
        return TD_ERR_BAD_CONFIG;
    }
    for (i = 0; i < n; i++) {
        m->margin[i] = (int32_t)get_u32(b + 11u + 4u * i);
    }
    return TD_ERR_NONE;
}

int td_decode_infer(const td_frame_t *f, td_msg_infer_t *m, uint32_t *detail)
{
    *detail = 0;
    m->budget_unit = 0;
    m->budget = 0;
    m->image = f->body;
    m->image_len = f->body_len;
    if (f->version < TD_PROTO_V2) {
        return TD_ERR_NONE; /* v1: the body is the image */
    }
    if (f->body_len < TD_INFER2_PREFIX) {
        *detail = TD_INFER2_PREFIX;
        return TD_ERR_BAD_LENGTH;
    }
    m->budget_unit = f->body[0];
    m->budget = get_u32(f->body + 1);
    m->image = f->body + TD_INFER2_PREFIX;
    m->image_len = f->body_len - TD_INFER2_PREFIX;
    if (m->budget_unit > TD_UNIT_CYCLES) {
        *detail = TD_BAD_CONFIG_UNIT;
        return TD_ERR_BAD_CONFIG;
    }
    if (m->budget_unit == 0 && m->budget != 0) {
        *detail = TD_BAD_CONFIG_OVERRIDE;
        return TD_ERR_BAD_CONFIG;
    }
    return TD_ERR_NONE;
}
