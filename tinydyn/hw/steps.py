"""tinydyn's extra finn-plus build steps (each ``(model, cfg) -> model``, as FINN's own).

FINN's default streamlining leaves three things of an LC-Net stage unmapped:

* the input scale (1/255, and later activation scales) sits in front of a residual fork:
  moving linear ops past forks and re-streamlining pushes it into both branches
  (shared/notes/finn-plus.md: MoveLinearPastFork, MoveTransposePastFork);
* GlobalAveragePool becomes GlobalAccPool + a scalar Mul *after* thresholds were absorbed;
  we convert it first and move the Mul through Flatten into the pooled-grid thresholds;
* the head's output affine + int16 Quant (no HW form for a float-in Quant): the stage ends at
  the head's integer accumulator, and the PS finishes the logits exactly as the integer
  reference does (``acc + bias``, fixed-point requantisation), see :mod:`tinydyn.hw.controller`.

The residual join stays float32 (finn-plus ElementwiseMul/Add): the trained shortcut and
branch have different scales, so there is no integer-only form without retraining.
"""

from __future__ import annotations

from typing import Any

import onnx

FORK_ROUNDS = 3


def step_tinydyn_streamline_forks(model: Any, cfg: Any) -> Any:
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.absorb import (
        AbsorbConsecutiveTransposes,
        AbsorbTransposeIntoMultiThreshold,
    )
    from finn.transformation.streamline.reorder import (
        MoveLinearPastFork,
        MoveScalarLinearPastInvariants,
        MoveTransposePastEltwise,
        MoveTransposePastFork,
        MoveTransposePastJoinAdd,
    )

    for _ in range(FORK_ROUNDS):
        for transform in (
            MoveLinearPastFork(),
            MoveTransposePastFork(),
            MoveTransposePastEltwise(),
            MoveTransposePastJoinAdd(),
            MoveScalarLinearPastInvariants(),
            Streamline(),
            AbsorbConsecutiveTransposes(),
            AbsorbTransposeIntoMultiThreshold(),
        ):
            model = model.transform(transform)
    return model


def step_tinydyn_global_pool(model: Any, cfg: Any) -> Any:
    from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import InferGlobalAccPoolLayer
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.absorb import (
        AbsorbMulIntoMultiThreshold,
        AbsorbTransposeIntoFlatten,
    )
    from finn.transformation.streamline.reorder import (
        MoveFlattenPastAffine,
        MoveScalarLinearPastInvariants,
        MoveTransposePastScalarMul,
    )
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    model = model.transform(InferGlobalAccPoolLayer())
    for _ in range(2):
        for transform in (
            MoveTransposePastScalarMul(),
            AbsorbTransposeIntoFlatten(),
            MoveFlattenPastAffine(),
            MoveScalarLinearPastInvariants(),
            AbsorbMulIntoMultiThreshold(),
            Streamline(),
            InferShapes(),
            InferDataTypes(),
        ):
            model = model.transform(transform)
    return model


def step_tinydyn_cut_tail(model: Any, cfg: Any) -> Any:
    """End the graph at the last MatMul (the head's integer accumulator)."""
    from qonnx.transformation.general import RemoveUnusedTensors

    graph = model.graph
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    if not matmuls:
        return model
    last = matmuls[-1].output[0]
    doomed, frontier = [], list(model.find_consumers(last) or [])
    while frontier:
        node = frontier.pop()
        if node in doomed:
            continue
        doomed.append(node)
        for out in node.output:
            frontier.extend(model.find_consumers(out) or [])
    for node in doomed:
        graph.node.remove(node)
    shape = model.get_tensor_shape(last)
    for vi in [v for v in graph.value_info if v.name == last]:
        graph.value_info.remove(vi)
    while graph.output:
        graph.output.pop()
    graph.output.append(onnx.helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, shape))
    return model.transform(RemoveUnusedTensors())


def step_tinydyn_check_mapped(model: Any, cfg: Any) -> Any:
    """Name every layer finn-plus could not turn into a HW layer (before it fails obscurely).

    Only layout ops at the graph's edges may stay in software (the PS does them)."""
    edge = {inp.name for inp in model.graph.input} | {out.name for out in model.graph.output}
    unmapped = [
        f"{node.op_type} ({node.name})"
        for node in model.graph.node
        if not node.domain.startswith("finn.custom_op.fpgadataflow")
        and not (node.op_type in ("Transpose", "Reshape") and edge & {*node.input, *node.output})
    ]
    if unmapped:
        raise ValueError(f"unmapped layers with no finn-plus HW form: {', '.join(unmapped[:5])}")
    return model
