"""Helpers shared by the codegen tests (not collected: no test_ prefix)."""

from __future__ import annotations

import numpy as np

from tinydyn.codegen.harness import HarnessResults
from tinydyn.ir import IRModel, TensorSpec
from tinydyn.models.lcnet import LCNetConfig
from tinydyn.models.lcnet_lower import lower
from tinydyn.quantize.executor import Results, trace
from tinydyn.quantize.policy import ExitPolicy

FIELDS = ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")


def assert_same(ref: Results, got: HarnessResults) -> None:
    """Every per-image field of the C firmware equals the executor's."""
    assert len(got.predictions) == len(ref.predictions)
    for name in FIELDS:
        a, b = getattr(ref, name), getattr(got, name)
        bad = np.nonzero((a != b).reshape(len(a), -1).any(axis=1))[0]
        assert bad.size == 0, (
            f"{name} differs on images {bad[:10].tolist()}: ref {a[bad[0]]} vs C {b[bad[0]]}"
        )


def diversify(ir: IRModel, images: np.ndarray) -> IRModel:
    """An untrained model behaves the same on every image. Re-centre its gate biases so that
    about half the images skip each block and a third of the channels are off, and give the
    heads a logit scale on which confidence and margin policies split the images."""
    arrays, tensors = dict(ir.arrays), dict(ir.tensors)
    ir = IRModel(ir.name, ir.input, tensors, ir.ops, arrays, ir.classes, dict(ir.meta))
    for op in ir.walk():
        if op.kind == "linear" and op.attrs.get("role") == "exit_head":
            # untrained heads saturate int16 at about one logit: shrink them, widen the scale
            arrays[f"{op.name}.shift"] = arrays[f"{op.name}.shift"] + 4
            spec = tensors[op.output]
            tensors[op.output] = TensorSpec(spec.name, spec.shape, spec.dtype, spec.scale * 48, spec.kind)
    for op in [op for op in ir.walk() if op.kind == "linear" and op.attrs.get("role") == "gate"]:
        x = trace(ir, images, ExitPolicy("none")).tensors[op.inputs["x"]].astype(np.float64)
        acc = x @ arrays[f"{op.name}.weight"].astype(np.float64).T + arrays[f"{op.name}.bias"]
        quantile = 50 if op.name.endswith("lnet") else 35
        arrays[f"{op.name}.bias"] = (arrays[f"{op.name}.bias"] - np.percentile(acc, quantile, axis=0)).astype(
            np.int32
        )
    return ir


def gated_config(classes: tuple[str, ...]) -> LCNetConfig:
    """Three gated blocks and two early exits: the small LC-Net of :func:`gated_ir`."""
    return LCNetConfig(widths=(8, 16, 24), blocks=(1, 1, 1), stem_width=8, exits=(0, 1), classes=classes)


def gated_ir(fashion_test, make_model) -> IRModel:  # noqa: ANN001 - conftest objects
    """Three gated blocks and two early exits whose gates really skip blocks and channels."""
    config = gated_config(fashion_test.classes)
    ir = lower(make_model(config, seed=3, warm_images=fashion_test.images[:64]), name="gated")
    return diversify(ir, fashion_test.images[:256])
