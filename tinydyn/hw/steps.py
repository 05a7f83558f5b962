"""tinydyn's extra finn-plus build steps (each ``(model, cfg) -> model``, as FINN's own).

FINN's default streamlining leaves four things of an LC-Net partition unmapped:

* the input scale (1/255, and later activation scales) sits in front of a residual fork:
  moving linear ops past forks and re-streamlining pushes it into both branches
  (shared/notes/finn-plus.md: MoveLinearPastFork, MoveTransposePastFork);
* GlobalAveragePool becomes GlobalAccPool + a scalar Mul *after* thresholds were absorbed;
  we convert it first and move the Mul through Flatten into the pooled-grid thresholds;
* the head's output affine + int16 Quant (no HW form for a float-in Quant): a head partition
  ends at the head's integer accumulator, and the PS finishes the logits exactly as the integer
  reference does (``acc + bias``, fixed-point requantisation), see :mod:`tinydyn.hw.controller`;
* a backbone segment's output scale multiply: cut, so the segment streams its uint8 feature map.

The residual join stays float32 (finn-plus ElementwiseMul/Add) when the trained shortcut and
branch have different scales; a model trained with integer joins (one shared quantiser,
``LCNetConfig.int_joins``) has the same scale on both inputs: ``MoveLinearPastEltwiseAdd`` takes
it past the add, which finn-plus then maps to an integer AddStreams.
"""

from __future__ import annotations

from typing import Any

import onnx

FORK_ROUNDS = 3  # at least; then on until a round changes nothing (a DenseNet's concatenations take more)
MAX_FORK_ROUNDS = 8


def step_tinydyn_streamline_forks(model: Any, cfg: Any) -> Any:
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.absorb import (
        AbsorbConsecutiveTransposes,
        AbsorbTransposeIntoMultiThreshold,
    )
    from finn.transformation.streamline.reorder import (
        MoveLinearPastEltwiseAdd,
        MoveLinearPastFork,
        MoveMulPastJoinConcat,
        MoveScalarLinearPastInvariants,
        MoveTransposePastEltwise,
        MoveTransposePastFork,
        MoveTransposePastJoinAdd,
        MoveTransposePastJoinConcat,
    )

    inp = model.graph.input[0].name
    in_shape = model.get_tensor_shape(inp)
    model = _nhwc_before_fork(model)
    for round_ in range(MAX_FORK_ROUNDS):
        before = model.model.SerializeToString()
        model = _sum_pools(model)
        for transform in (
            MoveLinearPastFork(),
            # integer joins (one shared quantiser): Mul(a, s) + Mul(b, s) -> Mul(a + b, s), so the add
            # sees integers (AddStreams) and the scale moves on into the next thresholds
            MoveLinearPastEltwiseAdd(),
            MoveTransposePastFork(),
            MoveTransposePastEltwise(),
            MoveTransposePastJoinAdd(),
            MoveScalarLinearPastInvariants(),
            # dense concatenation (DDI DenseNet): maps of one grid, Mul(a, s) ++ Mul(b, s) ->
            # Mul(a ++ b, s), and the layout transposes past it: a Concat of integer NHWC streams
            # along channels, finn-plus's StreamingConcat (here, where the scales sit last:
            # MoveTransposePastEltwise puts a transpose behind some of them)
            MoveMulPastJoinConcat(),
            MoveTransposePastJoinConcat(),
            Streamline(),
            AbsorbConsecutiveTransposes(),
            AbsorbTransposeIntoMultiThreshold(),
        ):
            model = model.transform(transform)
        if round_ + 1 >= FORK_ROUNDS and model.model.SerializeToString() == before:
            break
    # the shared join quantiser on an identity shortcut thresholds a uint8 input into int8: its
    # negative thresholds (always passed) become 0 once the input type is known, as finn-plus requires
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    if model.get_tensor_shape(inp) != in_shape:
        # MoveTransposePastFork on the input's Transpose pair (_nhwc_before_fork) drops the graph
        # input's shape (and those after it): put it back and infer the rest again
        model.set_tensor_shape(inp, in_shape)
        for vi in [v for v in model.graph.value_info if not v.type.tensor_type.shape.dim]:
            model.graph.value_info.remove(vi)
        model = model.transform(InferShapes())
    return model.transform(InferDataTypes()).transform(RoundAndClipThresholds())


def _sum_pools(model: Any) -> Any:
    """A k x k, stride-k AveragePool (DDI DenseNet transition) as finn-plus maps it: the exact window
    sum of the integers (QuantAvgPool2d with an output as wide as the sum: no shift; finn-plus's
    InferPool makes it a sliding window + Pool), NHWC between two layout transposes the
    streamlining cancels, then Mul(1/k²). A scalar scale in front moves behind the pool first (a
    mean commutes with it), so the pool sees the integers; the Mul then goes into the next
    thresholds, which compare integer sums (the grid copy of the transition rounds half up there
    exactly, :mod:`tinydyn.models.ddi_fpga`). A pool on anything else is left alone (and named by
    step_tinydyn_check_mapped)."""
    import numpy as np
    from onnx import helper
    from qonnx.core.datatype import DataType
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import get_by_name

    changed = False
    for name in [n.name for n in model.graph.node if n.op_type == "AveragePool"]:
        node = model.get_node_from_name(name)  # transforms below copy the model: look it up again
        kernel = list(getattr(get_by_name(node.attribute, "kernel_shape"), "ints", []))
        strides = list(getattr(get_by_name(node.attribute, "strides"), "ints", []))
        pads = list(getattr(get_by_name(node.attribute, "pads"), "ints", []))
        ceil = getattr(get_by_name(node.attribute, "ceil_mode"), "i", 0)
        if len(kernel) != 2 or kernel[0] != kernel[1] or strides != kernel or any(pads) or ceil:
            continue
        scale = model.find_producer(node.input[0])
        if (
            scale is not None
            and scale.op_type == "Mul"
            and model.get_initializer(scale.input[1]) is not None
            and model.get_initializer(scale.input[1]).size == 1
            and len(model.find_consumers(scale.output[0]) or []) == 1
        ):  # AveragePool(Mul(x, c)) -> Mul(AveragePool(x), c)
            between = model.make_new_valueinfo_name()
            node.input[0], node.output[0], scale.input[0], scale.output[0] = (
                scale.input[0], between, between, node.output[0]
            )  # fmt: skip
            model.graph.node.remove(scale)
            model.graph.node.insert(list(model.graph.node).index(node) + 1, scale)
            model = model.transform(InferShapes()).transform(InferDataTypes())
            node = model.get_node_from_name(name)
        dtype = model.get_tensor_datatype(node.input[0])
        if not dtype.is_integer() or dtype.signed():
            continue
        k = kernel[0]
        n, c, h, w = model.get_tensor_shape(node.input[0])
        oh, ow = model.get_tensor_shape(node.output[0])[2:]
        names = [model.make_new_valueinfo_name() for _ in range(3)]
        sum_bits = int((dtype.max() * k * k).bit_length())
        new = [
            helper.make_node("Transpose", [node.input[0]], [names[0]], perm=[0, 2, 3, 1]),
            helper.make_node(
                "QuantAvgPool2d",
                [names[0]],
                [names[1]],
                domain="qonnx.custom_op.general",
                kernel=k,
                stride=k,
                ibits=dtype.bitwidth(),
                obits=sum_bits,  # the whole sum: no shift
                signed=0,
                data_layout="NHWC",
            ),
            helper.make_node("Transpose", [names[1]], [names[2]], perm=[0, 3, 1, 2]),
            helper.make_node("Mul", [names[2], names[2] + "_k2"], [node.output[0]]),
        ]
        model.set_initializer(names[2] + "_k2", np.array(1.0 / (k * k), dtype=np.float32))
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for i, added in enumerate(new):
            model.graph.node.insert(at + i, added)
        model.set_tensor_shape(names[0], [n, h, w, c])
        model.set_tensor_datatype(names[0], dtype)
        model.set_tensor_shape(names[1], [n, oh, ow, c])
        model.set_tensor_datatype(names[1], DataType[f"UINT{sum_bits}"])
        model.set_tensor_shape(names[2], [n, c, oh, ow])
        changed = True
    return model.transform(InferShapes()).transform(InferDataTypes()) if changed else model


def _nhwc_before_fork(model: Any) -> Any:
    """A segment that starts inside a stage (DDI: a RADI branch follows the unit before) forks its
    NCHW input, through the input scale, into a conv (behind FINN's NCHW→NHWC Transpose) and an
    identity shortcut (no Transpose): the join and the thresholds after it stay NCHW and become
    Shuffle layers, and the segment would stream NCHW. An NHWC→NCHW Transpose pair at the input
    (the identity) gives the shortcut its Transpose too: the loop below moves the inner one past
    the scale and the fork, cancels it against the conv's and moves the shortcut's past the join
    (MoveTransposePastJoinAdd), so everything between the input and the output streams NHWC."""
    from onnx import helper
    from qonnx.transformation.infer_shapes import InferShapes

    inp = model.graph.input[0].name
    shape = model.get_tensor_shape(inp)
    if shape is None or len(shape) != 4:
        return model
    tensor, consumers = inp, model.find_consumers(inp) or []
    while len(consumers) == 1 and consumers[0].op_type in ("Mul", "Add"):  # the input scale
        if model.get_initializer(consumers[0].input[1]) is None:
            break
        tensor = consumers[0].output[0]
        consumers = model.find_consumers(tensor) or []
    if len(consumers) < 2 or all(c.op_type == "Transpose" for c in consumers):
        return model  # no fork, or one the LC-Net flow handles (_merge_input_transposes)
    n, c, h, w = shape
    nhwc, nchw = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
    for node in model.find_consumers(inp) or []:
        node.input[list(node.input).index(inp)] = nchw
    model.graph.node.insert(0, helper.make_node("Transpose", [nhwc], [nchw], perm=[0, 3, 1, 2]))
    model.graph.node.insert(0, helper.make_node("Transpose", [inp], [nhwc], perm=[0, 2, 3, 1]))
    model.set_tensor_shape(nhwc, [n, h, w, c])
    model.set_tensor_shape(nchw, [n, c, h, w])
    for name in (nhwc, nchw):
        model.set_tensor_datatype(name, model.get_tensor_datatype(inp))
    return model.transform(InferShapes())


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
    """Make the partition stream integers: a head ends at its last MatMul (the integer accumulator,
    the PS finishes the logits); a backbone segment drops the scale multiplies after its last
    thresholds, so it streams the uint8 feature map the next segment reads."""
    model = _merge_input_transposes(model)
    if any(n.op_type == "GlobalAccPool" for n in model.graph.node):
        return _cut_at_last_matmul(model)
    return _cut_output_scale(model)


def _merge_input_transposes(model: Any) -> Any:
    """A segment whose input forks (residual block) gets one NCHW→NHWC Transpose per branch; FINN
    would turn them into Shuffle layers behind a DuplicateStreams, so the partition would read
    NCHW. One Transpose before the fork stays outside the partition: it reads NHWC, exactly what
    the previous segment streams (and what head partitions read)."""
    inp = model.graph.input[0].name
    consumers = model.find_consumers(inp) or []

    def perm(node: Any) -> list[int]:
        return [list(a.ints) for a in node.attribute if a.name == "perm"][0] if node.attribute else []

    if len(consumers) < 2 or any(c.op_type != "Transpose" or perm(c) != [0, 2, 3, 1] for c in consumers):
        return model
    keep = consumers[0]
    for other in consumers[1:]:
        for node in model.find_consumers(other.output[0]) or []:
            node.input[list(node.input).index(other.output[0])] = keep.output[0]
        model.graph.node.remove(other)
    from qonnx.transformation.general import RemoveUnusedTensors

    return model.transform(RemoveUnusedTensors())


def _cut_at_last_matmul(model: Any) -> Any:
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


def _cut_output_scale(model: Any) -> Any:
    """Drop the constant scalar Muls and the NHWC→NCHW Transpose between the last MultiThreshold
    and the graph output: the segment then streams its uint8 feature map in FINN's NHWC order,
    exactly what the next segment's (and the exit head's) input DMA reads."""
    from qonnx.transformation.general import RemoveUnusedTensors

    graph = model.graph
    while True:
        node = model.find_producer(graph.output[0].name)
        if node is None:
            break
        if node.op_type == "Mul":
            const = model.get_initializer(node.input[1])
            if const is None or const.size != 1:
                break
        elif node.op_type == "Transpose":
            perm = [a.ints for a in node.attribute if a.name == "perm"]
            if not perm or list(perm[0]) != [0, 3, 1, 2]:
                break
        else:
            break
        upstream = node.input[0]
        graph.node.remove(node)
        shape = model.get_tensor_shape(upstream)
        for vi in [v for v in graph.value_info if v.name == upstream]:
            graph.value_info.remove(vi)
        graph.output.pop()
        graph.output.append(onnx.helper.make_tensor_value_info(upstream, onnx.TensorProto.FLOAT, shape))
    model = model.transform(RemoveUnusedTensors())
    out = graph.output[0].name
    if not model.get_tensor_datatype(out).is_integer():
        raise ValueError(f"unmapped layers: the segment output {out} is not integer after the cut")
    return model


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


# Threshold memories of at least this many entries go into block RAM (Thresholding_rtl's
# depth_trigger_bram, which the RTL and finn-plus's estimate both read): left to LUTRAM they were
# the largest LUT item of the design (e.g. 8,160 LUT for 64 channels of 32-bit thresholds) while
# most of the Zynq-7020's 280 BRAM18 sat idle. Shallower stages stay in LUTRAM (a BRAM18 holds
# 512 x 36 bits: below 256 entries it would be mostly empty).
THRESHOLD_BRAM_DEPTH = 256
NO_URAM = 2**30  # the Zynq-7000 has no URAM; 0 would make finn-plus's estimate pick URAM


def step_tinydyn_threshold_memory(model: Any, cfg: Any) -> Any:
    """Put deep Thresholding_rtl memories into BRAM (after the folding is chosen)."""
    from qonnx.custom_op.registry import getCustomOp

    for node in model.graph.node:
        if node.op_type == "Thresholding_rtl":
            op = getCustomOp(node)
            op.set_nodeattr("depth_trigger_bram", THRESHOLD_BRAM_DEPTH)
            op.set_nodeattr("depth_trigger_uram", NO_URAM)
    return model
