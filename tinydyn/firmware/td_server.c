/* Protocol server: decodes requests, runs td_infer, encodes replies (docs/PROTOCOL.md). */
#include "td_server.h"

#include <string.h>

#include "td_board.h"
#include "td_serial.h"

#ifndef TD_ICOUNT_SHIFT
#define TD_ICOUNT_SHIFT 6 /* must match qemu -icount shift=N */
#endif

/* A board that learns at boot whether its power sensor answers reports the kind in force
 * through td_serial_energy_kind() (td_serial.h); the others report the fixed one. */
#ifdef TD_SERIAL_RUNTIME_ENERGY_KIND
#define ENERGY_KIND() td_serial_energy_kind()
#else
#define ENERGY_KIND() td_serial_board.energy_kind
#endif

void td_server_init(td_server_t *s)
{
    memset(&s->cfg, 0, sizeof(s->cfg));
    s->cfg.policy = TD_POLICY_NONE;
    s->cfg.budget_unit = TD_UNIT_MACS;
    s->flags = TD_CFG_FLAG_GATING | TD_CFG_FLAG_LOGITS;
    s->config_tag = TD_SEQ_UNKNOWN;
    td_rx_init(&s->rx, s->rx_buf, sizeof(s->rx_buf));
}

static void send_payload(td_server_t *s, size_t n)
{
    size_t w;
    if (n == 0) {
        return; /* cannot happen: TD_SERVER_TX_CAP bounds every reply */
    }
    w = td_wire_encode(s->tx, n, s->wire, sizeof(s->wire));
    if (w != 0) {
        td_serial_write(s->wire, w);
    }
}

/* version: the request's (TD_PROTO_VERSION, the newest, when the header cannot be trusted or
 * names a version this board does not speak) */
static int send_error(td_server_t *s, uint8_t version, uint16_t seq, int code, uint32_t detail)
{
    send_payload(s, td_encode_error_v(s->tx, sizeof(s->tx), version, seq, (uint8_t)code, detail));
    return code;
}

/* whether this firmware has costs for a budget unit (MACs always) */
static int unit_supported(uint8_t unit)
{
    return unit >= TD_UNIT_MACS && unit <= TD_UNIT_CYCLES &&
           (unit == TD_UNIT_MACS || (td_model_info.budget_units & TD_UNIT_BIT(unit)) != 0u);
}

static uint8_t counter_kind(void)
{
    switch (td_board_counter_kind) {
    case TD_BOARD_COUNTER_CYCLES:
        return TD_COUNTER_CYCLES;
    case TD_BOARD_COUNTER_TIMER_TICKS:
        return TD_COUNTER_INSTRUCTIONS;
    default:
        return TD_COUNTER_NONE;
    }
}

/* Board counter delta in the unit RESULT reports. */
static uint32_t counter_value(uint32_t delta)
{
    if (td_board_counter_kind == TD_BOARD_COUNTER_TIMER_TICKS) {
        /* 25 MHz timer on QEMU virtual time: one tick = 40 ns, one instruction = 2^S ns */
        return (uint32_t)(((uint64_t)delta * 40u) >> TD_ICOUNT_SHIFT);
    }
    return td_board_counter_kind == TD_BOARD_COUNTER_NONE ? 0u : delta;
}

static int handle_info(td_server_t *s, uint8_t version, uint16_t seq)
{
    td_msg_info_t m;
    td_msg_info2_t ext;
    size_t i;
    const char *id = td_model_info.model_id;
    /* model_id is exactly 16 characters on the wire; a shorter id is padded with '0'. */
    for (i = 0; i < TD_MODEL_ID_LEN; i++) {
        m.model_id[i] = (id != NULL && id[i] != '\0') ? id[i] : '0';
        if (id != NULL && id[i] == '\0') {
            id = NULL;
        }
    }
    m.in_c = td_model_info.in_c;
    m.in_h = td_model_info.in_h;
    m.in_w = td_model_info.in_w;
    m.num_classes = td_model_info.num_classes;
    m.num_exits = td_model_info.num_exits;
    m.counter_kind = counter_kind();
    m.energy_kind = ENERGY_KIND();
    m.clock_hz = td_serial_board.clock_hz;
    m.arena_bytes = td_model_info.arena_bytes;
    m.static_macs = td_model_info.static_macs;
    m.max_payload = (uint32_t)sizeof(s->rx_buf);
    m.board_name = td_serial_board.name;
    ext.min_version = TD_PROTO_VERSION_MIN;
    ext.budget_units = (uint8_t)(td_model_info.budget_units | TD_UNIT_BIT(TD_UNIT_MACS));
    ext.cost_model_id = td_model_info.cost_model_id;
    send_payload(s, td_encode_info_v(s->tx, sizeof(s->tx), version, seq, &m, &ext));
    return TD_ERR_NONE;
}

static int handle_config(td_server_t *s, const td_frame_t *f)
{
    td_msg_config_t m;
    uint32_t detail;
    uint8_t i;
    int err = td_decode_config(f, &m, &detail);
    if (err != TD_ERR_NONE) {
        return send_error(s, f->version, f->seq, err, detail);
    }
    if (m.n_margins != td_model_info.num_exits || m.n_margins > TD_MAX_EXITS) {
        return send_error(s, f->version, f->seq, TD_ERR_BAD_CONFIG, TD_BAD_CONFIG_EXITS);
    }
    if (!unit_supported(m.budget_unit)) {
        return send_error(s, f->version, f->seq, TD_ERR_BAD_CONFIG, TD_BAD_CONFIG_UNIT);
    }
    memset(&s->cfg, 0, sizeof(s->cfg));
    s->cfg.policy = m.policy;
    s->cfg.confidence_t16 = m.confidence_t16;
    s->cfg.budget = m.budget_macs;
    s->cfg.budget_unit = m.budget_unit;
    for (i = 0; i < m.n_margins; i++) {
        s->cfg.margin[i] = m.margin[i];
    }
    s->cfg.gates_off = (uint8_t)((m.flags & TD_CFG_FLAG_GATING) == 0u);
    s->flags = m.flags;
    s->config_tag = f->seq;
    send_payload(s, td_encode_config_ack_v(s->tx, sizeof(s->tx), f->version, f->seq));
    return TD_ERR_NONE;
}

static int handle_infer(td_server_t *s, const td_frame_t *f)
{
    td_result_t r;
    td_msg_result_t m;
    td_msg_result2_t ext;
    td_msg_infer_t req;
    td_config_t cfg = s->cfg; /* a v2 INFER may carry its own budget: this image's config */
    uint32_t expected = (uint32_t)td_model_info.in_c * td_model_info.in_h * td_model_info.in_w;
    uint32_t counter, start, detail;
    int rc = td_decode_infer(f, &req, &detail);
    if (rc != TD_ERR_NONE) {
        return send_error(s, f->version, f->seq, rc, detail);
    }
    if (req.image_len != expected) {
        return send_error(s, f->version, f->seq, TD_ERR_BAD_IMAGE_SIZE, expected);
    }
    if (req.budget_unit != 0) {
        if (!unit_supported(req.budget_unit)) {
            return send_error(s, f->version, f->seq, TD_ERR_BAD_CONFIG, TD_BAD_CONFIG_UNIT);
        }
        cfg.policy = TD_POLICY_BUDGET;
        cfg.budget_unit = req.budget_unit;
        cfg.budget = req.budget;
    }
    memset(&r, 0, sizeof(r));
    start = td_board_counter();
    rc = td_infer(req.image, &cfg, &r);
    counter = counter_value(td_board_counter() - start); /* unsigned: wrap-safe */
    if (rc != 0) {
        return send_error(s, f->version, f->seq, TD_ERR_INFER_FAILED, (uint32_t)rc);
    }
    m.predicted = r.predicted;
    m.exit_index = r.exit_index;
    m.counter_kind = counter_kind();
    m.macs = r.macs;
    m.counter = counter;
    m.skipped_blocks = r.skipped_blocks;
    m.skipped_channels = r.skipped_channels;
    td_serial_energy(r.macs, counter, &m.energy_nj, &m.power_uw);
    m.energy_kind = ENERGY_KIND(); /* after td_serial_energy: a sensor may have just failed */
    m.config_tag = s->config_tag;
    m.n_logits = 0;
    if (s->flags & TD_CFG_FLAG_LOGITS) {
        m.n_logits = td_model_info.num_classes <= TD_MAX_CLASSES ? td_model_info.num_classes : TD_MAX_CLASSES;
    }
    m.logits = r.logits;
    ext.policy = cfg.policy;
    ext.budget_unit = cfg.budget_unit;
    ext.budget = cfg.policy == TD_POLICY_BUDGET ? cfg.budget : 0u;
    ext.energy_cost_nj = r.energy_cost_nj;
    ext.cycles_cost = r.cycles_cost;
    ext.gate_macs = r.gate_macs;
    send_payload(s, td_encode_result_v(s->tx, sizeof(s->tx), f->version, f->seq, &m, &ext));
    return TD_ERR_NONE;
}

int td_server_feed(td_server_t *s, uint8_t byte)
{
    td_frame_t f;
    uint32_t detail;
    int err;
    int r = td_rx_feed(&s->rx, byte, &f);
    if (r == TD_RX_NONE) {
        return -1;
    }
    if (r < 0) {
        /* Broken frame: its header cannot be trusted, so the seq is unknown. */
        return send_error(s, TD_PROTO_VERSION, TD_SEQ_UNKNOWN, -r,
                          r == -TD_ERR_BAD_LENGTH ? (uint32_t)sizeof(s->rx_buf) : 0u);
    }
    err = td_check_request_v(&f, TD_PROTO_VERSION_MIN, TD_PROTO_VERSION, &detail);
    if (err != TD_ERR_NONE) {
        return send_error(s, err == TD_ERR_BAD_VERSION ? (uint8_t)TD_PROTO_VERSION : f.version, f.seq, err, detail);
    }
    switch (f.type) {
    case TD_MSG_INFO_REQ:
        return handle_info(s, f.version, f.seq);
    case TD_MSG_CONFIG:
        return handle_config(s, &f);
    default:
        return handle_infer(s, &f);
    }
}
