"""Tiny real S2DNAS models for the tests (not collected: no test_ prefix)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_host
from tinydyn.ir import IRModel, Op, TensorSpec
from tinydyn.models.s2dnas import S2DNASConfig, S2DNASNet
from tinydyn.models.s2dnas_lower import lower
from tinydyn.quantize.executor import every_head, execute, trace
from tinydyn.quantize.policy import ExitPolicy, confident, lut_multiplier


def tiny_config(classes: tuple[str, ...], backbone: str = "resnet", **settings) -> S2DNASConfig:  # noqa: ANN003
    """Two resolutions of 8 and 16 channels in 4 groups, 3 stages; stage 3 reuses stage 1 only
    at the first resolution, stage 2 reuses stage 1 everywhere."""
    fields = {
        "backbone": backbone,
        "stem_width": 8,
        "widths": (8, 16),
        "blocks": (1, 1),
        "groups": 4,
        "stages": 3,
        "splits": ((2, 3), (2, 3)),
        "concat": ((True, True, False), (True, False, True)),
        "classes": classes,
    }
    fields.update(settings)
    return S2DNASConfig(**fields)


def tiny_model(config: S2DNASConfig, images: np.ndarray, seed: int = 0) -> S2DNASNet:
    """Random weights, BN statistics varied, Brevitas scales set by a few training passes."""
    warnings.filterwarnings("ignore", module="brevitas")
    torch.manual_seed(seed)
    model = S2DNASNet(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.uniform_(-0.1, 0.5, generator=gen)
    model.apply_masks()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.from_numpy(images.astype(np.float32) / 255.0))
    model.eval()
    return model


def split_exits(ir: IRModel, images: np.ndarray, share: float = 0.35) -> IRModel:
    """An untrained model is equally (un)sure of every image. Widen the heads' logit scale (as
    tests/codegen_support.diversify does) and give each early exit the confidence threshold
    that about ``share`` of the images reach, so that every stage really ends some inferences."""
    tensors = dict(ir.tensors)
    arrays = dict(ir.arrays)
    for op in ir.walk():
        if op.kind == "linear" and op.attrs.get("role") == "exit_head":
            arrays[f"{op.name}.shift"] = arrays[f"{op.name}.shift"] + 4
            spec = tensors[op.output]
            tensors[op.output] = TensorSpec(spec.name, spec.shape, spec.dtype, spec.scale * 48, spec.kind)
    wide = IRModel(ir.name, ir.input, tensors, ir.ops, arrays, ir.classes, dict(ir.meta))
    run = trace(wide, images, every_head(), keep_tensors=False)
    ops = []
    for op in wide.ops:
        if op.kind == "exit" and not op.attrs.get("final"):
            index = int(op.attrs["index"])
            mult = lut_multiplier(tensors[op.attrs["logits"]].scale)
            lo, hi = 0, 65536  # the share leaving falls as t16 rises: bisect for the target
            while lo < hi:
                mid = (lo + hi) // 2
                if confident(run.exit_logits[index], mult, mid).mean() > share:
                    lo = mid + 1
                else:
                    hi = mid
            op = Op(op.kind, op.name, op.inputs, op.output, {**op.attrs, "confidence_t16": lo}, op.then)
        ops.append(op)
    return IRModel(ir.name, ir.input, tensors, ops, arrays, ir.classes, dict(ir.meta))


def tiny_ir(classes: tuple[str, ...], images: np.ndarray, backbone: str = "resnet") -> IRModel:
    model = tiny_model(tiny_config(classes, backbone), images[:64])
    return split_exits(lower(model, f"tiny_{backbone}"), images[:256])


def assert_host_equals_reference(
    ir: IRModel, images: np.ndarray, policies: list[ExitPolicy], work: Path, min_per_exit: int
) -> None:
    """The host build of ``ir`` equals the reference under every policy; under confidence (the
    exits' own thresholds) every exit ends more than ``min_per_exit`` inferences, and the
    run-time threshold does not move those exits."""
    from .codegen_support import assert_same

    build_project(ir, "host", work, compile=True)
    exits = len(ir.exits())
    for policy in policies:
        ref = execute(ir, images, policy)
        assert_same(ref, run_host(ir, work / "fw", images, policy))
        if policy.kind == "confidence":
            assert np.bincount(ref.exits, minlength=exits).min() > min_per_exit
    low = execute(ir, images, ExitPolicy("confidence", 0.1))
    assert np.array_equal(low.exits, execute(ir, images, ExitPolicy("confidence", 0.99)).exits)
    assert "static const uint32_t exit_t16[NUM_EXITS]" in (work / "model.c").read_text()
