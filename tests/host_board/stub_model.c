/* A deterministic stand-in for the generated model (td_infer), for protocol tests only.
 * tests/host_board/stub_model.py mirrors it exactly. Vector model: id 0123456789abcdef,
 * input 1x4x4, 10 classes, 3 exits. */
#include "tinydyn_model.h"

#ifndef STUB_IN_C /* other shapes only for benchmarks/serial_throughput.py; the vectors use 1x4x4 */
#define STUB_IN_C 1
#define STUB_IN_H 4
#define STUB_IN_W 4
#endif

#ifndef STUB_BUDGET_UNITS /* every unit; the vector tests also build a board with MACs only (1) */
#define STUB_BUDGET_UNITS 7u
#endif

const td_model_info_t td_model_info = {"0123456789abcdef", STUB_IN_C, STUB_IN_H, STUB_IN_W, 10, 3, 1234u, 30000u,
                                       STUB_BUDGET_UNITS, 0x12345678u};

int td_infer(const uint8_t *image, const td_config_t *cfg, td_result_t *result)
{
    uint32_t sum = 0;
    unsigned i, last = td_model_info.num_exits - 1u;
    unsigned n = (unsigned)td_model_info.in_c * td_model_info.in_h * td_model_info.in_w;
    if (image[0] == 0xEE) {
        return -3; /* lets tests reach INFER_FAILED */
    }
    for (i = 0; i < n; i++) {
        sum += image[i];
    }
    result->predicted = 0;
    for (i = 0; i < td_model_info.num_classes; i++) {
        result->logits[i] = (int16_t)((int32_t)((sum * (i + 1u)) % 512u) - 256);
        if (result->logits[i] > result->logits[result->predicted]) {
            result->predicted = (uint8_t)i;
        }
    }
    /* the exit depends on the policy so that tests can see which CONFIG is in force */
    switch (cfg->policy) {
    case 1: /* confidence */
        result->exit_index = (uint8_t)(cfg->confidence_t16 < 32768u ? 0u : last);
        break;
    case 2: /* margin: first exit whose margin is <= image[0] */
        result->exit_index = (uint8_t)last;
        for (i = 0; i < last; i++) {
            if (cfg->margin[i] <= (int32_t)image[0]) {
                result->exit_index = (uint8_t)i;
                break;
            }
        }
        break;
    case 3: { /* budget: 10000 MACs, 100 nJ or 1000 cycles per exit, so tests see the unit */
        const uint32_t step = cfg->budget_unit == 2 ? 100u : (cfg->budget_unit == 3 ? 1000u : 10000u);
        result->exit_index = (uint8_t)(cfg->budget / step < last ? cfg->budget / step : last);
        break;
    }
    default:
        result->exit_index = (uint8_t)last;
        break;
    }
    result->macs = 10000u * (result->exit_index + 1u);
    result->skipped_blocks = (uint16_t)(image[0] % 3u);
    result->skipped_channels = (uint16_t)(2u * image[1]);
    result->energy_cost_nj = result->macs / 100u;
    result->cycles_cost = 3u * result->macs;
    result->gate_macs = 100u * (result->exit_index + 1u);
    return 0;
}
