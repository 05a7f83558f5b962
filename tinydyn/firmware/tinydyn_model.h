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

/* Integer policy parameters, as tinydyn.quantize.policy.ExitPolicy.to_integer(ir) gives them. */
typedef struct {
    uint8_t policy;                /* enum td_policy */
    uint32_t confidence_t16;       /* leave when top-1 softmax >= t16 / 65536 */
    int32_t margin[TD_MAX_EXITS];  /* leave exit i when top1 - top2 >= margin[i] (integer logits) */
    uint32_t budget_macs;          /* leave when the next exit could break this MAC budget */
    uint8_t gates_off;             /* 1: gate FCs not run, every salience 255 (the static network) */
} td_config_t;

typedef struct {
    int16_t logits[TD_MAX_CLASSES]; /* logits of the exit taken (num_classes valid entries) */
    uint8_t predicted;              /* top-1 class, ties to the lowest index */
    uint8_t exit_index;             /* the final classifier is num_exits - 1 */
    uint32_t macs;                  /* multiply-accumulates executed (gates and heads included) */
    uint16_t skipped_blocks;
    uint16_t skipped_channels;
} td_result_t;

typedef struct {
    const char *model_id; /* 16 hex characters: IRModel.model_id() */
    uint16_t in_c, in_h, in_w;
    uint8_t num_classes, num_exits;
    uint32_t arena_bytes, static_macs;
} td_model_info_t;

extern const td_model_info_t td_model_info;

#define TD_OK 0
#define TD_ERR_ARGS 1   /* a NULL pointer */
#define TD_ERR_POLICY 2 /* unknown policy */

/* Run one image (C*H*W uint8, CHW order). Returns TD_OK and fills *result. Not reentrant:
 * every activation lives in one static arena. */
int td_infer(const uint8_t *image, const td_config_t *cfg, td_result_t *result);

#ifdef __cplusplus
}
#endif

#endif /* TINYDYN_MODEL_H */
