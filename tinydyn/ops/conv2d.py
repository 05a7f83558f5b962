"""``conv2d``: grouped k×k convolution, int8 weights [Cout, Cin/groups, k, k], requantised with
optional gates (channel gate, block gate, input mask) and residual."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tinydyn.ir_schema import MAX_DIM, Field, IRError, is_int
from tinydyn.ops.arith import conv_accumulate, conv_output_hw
from tinydyn.ops.weighted import WEIGHTED_ATTRS, WeightedOp, requant_arrays

COMPACT_BYTES = 4096  # weight-compaction scratch a masked conv may always take

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run


class Conv2d(WeightedOp):
    kind = "conv2d"
    template = "ops/conv2d.c.j2"
    attrs: ClassVar[dict[str, Field]] = {
        **WEIGHTED_ATTRS,
        "stride": Field(lambda v: is_int(v) and 1 <= v <= 16, "an integer in 1..16", True),
        "padding": Field(lambda v: is_int(v) and 0 <= v <= 16, "an integer in 0..16", True),
        "groups": Field(lambda v: is_int(v) and 1 <= v <= MAX_DIM, f"an integer in 1..{MAX_DIM}"),
    }

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        attrs, name = op.get("attrs", {}), op["name"]
        (x_shape, _, _), (o_shape, _, _) = checker.spec(op["inputs"]["x"]), checker.spec(op["output"])
        if len(x_shape) != 3 or len(o_shape) != 3:
            raise IRError(f"{where}: a conv2d reads and writes [C, H, W] tensors")
        groups = attrs.get("groups", 1)
        cin, cout = x_shape[0], o_shape[0]
        if cin % groups or cout % groups:
            raise IRError(
                f"{where} attr 'groups' ({groups}) does not divide its {cin} input and {cout} output channels"
            )
        # the kernel size is the weight's (square, checked with the arrays in check_values)
        checker.arrays[f"{name}.weight"] = ("int8", (cout, cin // groups, None, None))
        self.check_gates(checker, attrs, where, cin, cout)
        requant_arrays(checker, name, where, op, attrs)

    def check_values(self, model: IRModel, op: Op) -> None:
        """The weight's kernel is square and maps the input to the output; MACs follow from it."""
        cout, cin_g, kh, kw = model.arrays[f"{op.name}.weight"].shape
        x_shape, o_shape = model.tensors[op.inputs["x"]].shape, model.tensors[op.output].shape
        stride, pad = op.attrs["stride"], op.attrs["padding"]
        where = f"IR op '{op.name}'"
        if (
            kh != kw
            or pad >= kh
            or conv_output_hw(x_shape[1], x_shape[2], kh, stride, pad) != tuple(o_shape[1:])
        ):
            raise IRError(
                f"{where}: a {kh}x{kw} kernel with stride {stride} and padding {pad} does not map "
                f"{list(x_shape)} to {list(o_shape)} (kernels are square, padding < kernel)"
            )
        macs = cout * cin_g * kh * kw * o_shape[1] * o_shape[2]
        if op.attrs["macs"] != macs:
            raise IRError(
                f"{where} attr 'macs' is {op.attrs['macs']}, its shapes give {macs}: re-run the lowering"
            )
        super().check_values(model, op)

    def plan_scratch(self, layer: dict[str, Any], spare_bytes: int) -> int | None:
        """An unmasked 8-bit k x k conv (k > 1, at least 4 channels or kernel rows of whole groups
        of 4) takes the int16 ring of k
        input rows (each input row widened once instead of once per window) where it fits under
        the peak already needed elsewhere. A masked conv compacts the active channels' weight
        rows into scratch: as many rows of the longest compacted length (``masked_len``) at once
        as fit under the peak already needed elsewhere, or at least COMPACT_BYTES worth. At run
        time the kernel fits as many rows of the call's actual length into those bytes (fewer
        active channels: more rows per pass; each pass re-fills the ring from the input)."""
        if layer["groups"] != 1:
            return None
        if layer["gates"]["input_mask"] == "NULL":
            # a size either way, so that the planner records the choice made with it
            fits = layer["ring_bytes"] and layer["scratch_min"] + layer["ring_bytes"] <= spare_bytes
            layer["ring"] = int(bool(fits))
            return layer["scratch_min"] + layer["ring"] * layer["ring_bytes"]
        row_bytes, out_c = layer["masked_len"], layer["out_c"]
        base = layer["scratch_min"] - 2 * row_bytes
        rows = max((spare_bytes - base) // max(row_bytes, 1), COMPACT_BYTES // max(row_bytes, 1))
        rows = max(2, min(out_c, rows - rows % 2))
        layer["row_group"] = rows
        return base + rows * row_bytes

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        x, gate, active_out, active_in = self.operands(run, op)
        weight = run.model.array(op, "weight")
        groups = op.attrs.get("groups", 1)
        acc = conv_accumulate(
            x, weight, run.model.array(op, "bias"), op.attrs["stride"], op.attrs["padding"], groups
        )
        kk = weight.shape[2] * weight.shape[3]
        hw = acc.shape[2] * acc.shape[3]
        cout_g, cin_g = weight.shape[0] // groups, weight.shape[1]
        macs = np.zeros(x.shape[0], dtype=np.int64)
        for g in range(groups):
            outs = active_out[:, g * cout_g : (g + 1) * cout_g].sum(axis=1)
            ins = active_in[:, g * cin_g : (g + 1) * cin_g].sum(axis=1)
            macs += outs * ins * kk * hw
        run.macs += np.where(live, macs, 0)
        if op.attrs.get("channel_gate"):
            run.skipped_channels += np.where(live, (~active_out).sum(axis=1), 0)
        self.finish(run, op, acc, gate)

    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import CArray, c_name, hwc
        from tinydyn.codegen.packing import pack_conv, prove_accumulators, round4
        from tinydyn.codegen.planner import align

        x, out = ir.tensors[op.inputs["x"]], ir.tensors[op.output]
        weight = ir.array(op, "weight")
        cout, _, k, _ = weight.shape
        groups = int(op.attrs.get("groups", 1))
        stride, pad = int(op.attrs["stride"]), int(op.attrs["padding"])
        cin, h, w = hwc(x)
        _, ho, wo = hwc(out)
        packed, row_len = pack_conv(weight, groups)
        acc_max = prove_accumulators(op.name, packed, row_len, ir.array(op, "bias"), x.dtype)
        desc.max_acc[op.name] = acc_max
        cn = c_name(op.name)
        desc.arrays.append(CArray(f"w_{cn}", "int8_t", packed))
        quant = self.quant_fields(ir, op, desc, acc_max, high_word=groups == 1)
        masked_len = k * round4(k * cin)  # longest compacted row / column (input mask)
        # the int16 ring (td_conv2d.c ring_rows, ring_stride): k input rows (k + stride when a pixel
        # pair can span two output rows), each the padded row, 3 elements of slack, an even count;
        # 8-bit input, masked, or unmasked with k > 1 and at least 4 channels (kernel rows that
        # are not whole groups of 4, e.g. 3x3 over 6 channels, take td_ring_cols_rows; few-channel
        # stems keep their unrolled path, which measured cheaper than the ring)
        ring_rows = k + (stride if wo % 2 else 0)
        ring_bytes = 2 * ring_rows * (((w + 2 * pad) * cin + 4) & ~1) if x.dtype != "int16" else 0
        if not op.attrs.get("input_mask") and (k == 1 or ((k * cin) % 4 and cin < 4)):
            ring_bytes = 0
        if groups == 1 and not op.attrs.get("input_mask"):
            # output index list, row-pair table and accumulators (16 B per pair each), two
            # im2col columns
            scratch = align(2 * cout) + 32 * ((cout + 1) // 2) + 4 * row_len
            if cin == 1 and k == 3 and x.dtype == "uint8":
                # a one-channel 3x3 stem may take td_conv2d_stem3: 28 B of widened weights, bias
                # and multiplier per output channel
                scratch = max(scratch, 28 * cout)
        elif groups == 1:
            # masked input channels (td_conv2d_scratch_size): + the input index list, the
            # compaction's source list (one uint16 per packed byte of a row, k*k*cin rounded up to
            # 4), for 8-bit
            # input the int16 ring of k input rows (active channels, zero padded), columns and at
            # least two compacted rows of masked_len (the planner may grant more)
            ring = ring_bytes
            scratch = (
                align(2 * cout)
                + align(2 * cin)
                + 2 * round4(k * k * cin)
                + ring
                + 32 * ((cout + 1) // 2)
                + 4 * masked_len
                + 2 * masked_len
            )
        else:
            scratch = align(2 * cout) + align(2 * cin) + align(cin)
        desc.scratch[op.name] = scratch
        return {
            "scratch_min": scratch,
            "weight": f"w_{cn}",
            "row_len": row_len,
            "in_c": cin,
            "in_h": h,
            "in_w": w,
            "out_c": cout,
            "out_h": ho,
            "out_w": wo,
            "kernel": k,
            "stride": stride,
            "pad": pad,
            "groups": groups,
            "row_group": 0,
            "skipped_dead": int(skipped_outputs_unread(ir, op)),
            "compact_out": int(compact_output(ir, op)),
            "compact_in": int(
                any(
                    o.kind == "conv2d" and o.output == op.inputs["x"] and compact_output(ir, o)
                    for o in ir.walk()
                )
            ),
            "ring": 0,  # an unmasked conv's ring: granted by plan_scratch
            "ring_bytes": ring_bytes,
            "masked_len": masked_len,
            "quant": quant,
            **self.common_fields(ir, op, x, out),
            "summary": f"conv {k}x{k}/{stride} pad {pad}{'' if groups == 1 else f' groups {groups}'}, "
            f"{cin}x{h}x{w} -> {cout}x{ho}x{wo}",
        }


def skipped_outputs_unread(ir: IRModel, op: Op) -> bool:
    """True when no op can read the outputs a channel gate switches off: every reader of the
    output is a conv masking its input with that same salience (LC-Net's conv1 -> conv2). The
    kernel then leaves those outputs unwritten instead of storing the requantised zero."""
    gate = op.attrs.get("channel_gate")
    if not gate:
        return False
    readers = []
    for other in ir.walk():
        refs = set(other.inputs.values()) | {v for v in other.attrs.values() if isinstance(v, str)}
        if op.output in refs and other is not op:
            readers.append(other)
    return bool(readers) and all(
        r.kind == "conv2d"
        and r.inputs.get("x") == op.output
        and op.output not in {v for k, v in r.inputs.items() if k != "x"}
        and r.attrs.get("input_mask") == gate
        for r in readers
    )


def compact_output(ir: IRModel, op: Op) -> bool:
    """True when the conv may write its active output channels only, pixel by pixel (n_out per
    pixel, in channel order): no one reads its switched-off outputs (skipped_outputs_unread),
    every reader is an ungrouped conv whose input mask (the same salience) tells it the layout,
    the output is 8-bit (its readers take the int16 ring) and there is no residual (whose index
    would differ from the output's). The masked reader then widens whole input rows instead of
    gathering the active channels of every pixel."""
    if op.kind != "conv2d" or op.attrs.get("groups", 1) != 1 or "residual" in op.inputs:
        return False
    if ir.tensors[op.output].dtype not in ("uint8", "int8") or not skipped_outputs_unread(ir, op):
        return False
    readers = [r for r in ir.walk() if r is not op and r.inputs.get("x") == op.output]
    return all(r.attrs.get("groups", 1) == 1 for r in readers)
