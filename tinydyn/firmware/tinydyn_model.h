/* tinydyn firmware API: what a board's main (serial protocol, test harness) calls.
 * The generated model.c implements it; this header is the same for every model. */
#ifndef TINYDYN_MODEL_H
#define TINYDYN_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Fixed upper limits, so that the structs below have one layout for every model (codegen
 * refuses a model that exceeds them). TD_MAX_EXITS must stay <= TD_PROTO_MAX_EXITS. */
#ifndef TD_MAX_EXITS
#define TD_MAX_EXITS 8
#endif
#ifndef TD_MAX_CLASSES
#define TD_MAX_CLASSES 100
#endif

/* Exit policies, chosen at run time. protocol.h defines the same enumerators; the guard
 * lets both headers share one translation unit. */
#ifndef TD_POLICY_ENUM_DEFINED
#define TD_POLICY_ENUM_DEFINED
enum td_policy { TD_POLICY_NONE = 0, TD_POLICY_CONFIDENCE = 1, TD_POLICY_MARGIN = 2, TD_POLICY_BUDGET = 3 };
#endif

/* Units of a budget (tinydyn/cost/budget.py; the same codes on the wire, docs/PROTOCOL.md).
 * 0 reads as MACs, so a zeroed config keeps the version-1 meaning. */
#ifndef TD_BUDGET_UNIT_ENUM_DEFINED
#define TD_BUDGET_UNIT_ENUM_DEFINED
enum td_budget_unit { TD_UNIT_MACS = 1, TD_UNIT_ENERGY = 2, TD_UNIT_CYCLES = 3 };
#endif
#define TD_UNIT_BIT(unit) (1u << ((unit) - 1u)) /* td_model_info.budget_units */

/* Integer policy parameters, as tinydyn.quantize.policy.ExitPolicy.to_integer(ir) gives them. */
typedef struct {
    uint8_t policy;                /* enum td_policy */
    uint32_t confidence_t16;       /* leave when top-1 softmax >= t16 / 65536 */
    int32_t margin[TD_MAX_EXITS];  /* leave exit i when top1 - top2 >= margin[i] (integer logits) */
    uint32_t budget;               /* leave when the next exit could break this budget ... */
    uint8_t budget_unit;           /* ... in this unit: enum td_budget_unit (MACs, nJ, cycles) */
    uint8_t gates_off;             /* 1: gate FCs not run, every salience 255 (the static network) */
} td_config_t;

typedef struct {
    int16_t logits[TD_MAX_CLASSES]; /* logits of the exit taken (num_classes valid entries) */
    uint8_t predicted;              /* top-1 class, ties to the lowest index */
    uint8_t exit_index;             /* the final classifier is num_exits - 1 */
    uint32_t macs;                  /* multiply-accumulates executed (gates and heads included) */
    uint16_t skipped_blocks;
    uint16_t skipped_channels;
    uint32_t energy_cost_nj;        /* modelled energy of what ran (the budget's cost model) */
    uint32_t cycles_cost;           /* modelled cycles of what ran (cost table; 0 without one) */
    uint32_t gate_macs;             /* of macs: those the gates executed */
} td_result_t;

typedef struct {
    const char *model_id; /* 16 hex characters: IRModel.model_id() */
    uint16_t in_c, in_h, in_w;
    uint8_t num_classes, num_exits;
    uint32_t arena_bytes, static_macs;
    uint8_t budget_units;   /* TD_UNIT_BIT of each unit a budget can be given in */
    uint32_t cost_model_id; /* CRC-32 of the per-op cost model (BudgetCosts.cost_model_id) */
} td_model_info_t;

extern const td_model_info_t td_model_info;

#define TD_OK 0
#define TD_ERR_ARGS 1   /* a NULL pointer */
#define TD_ERR_POLICY 2 /* unknown policy, or a budget unit this model has no costs for */

/* Run one image (C*H*W uint8, CHW order). Returns TD_OK and fills *result. Not reentrant:
 * every activation lives in one static arena. */
int td_infer(const uint8_t *image, const td_config_t *cfg, td_result_t *result);

#ifdef __cplusplus
}
#endif

#endif /* TINYDYN_MODEL_H */
