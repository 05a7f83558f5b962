"""DDI lowered to the integer IR: the reference follows the Brevitas model, the IR has the
paper's structure (LSTM chain, coarse-to-fine guards, skips, concatenations), and the generated
C equals the reference bit for bit under every policy, on the host board and the Cortex-M4 under
QEMU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinydyn.ir import IRModel, TensorSpec
from tinydyn.models.ddi_lower import lower
from tinydyn.quantize.executor import execute, trace
from tinydyn.quantize.policy import ExitPolicy
from tinydyn.train.loop import to_float

from .codegen_support import assert_same
from .conftest import require_tool
from .test_ddi_models import make_ddi, small_config

BACKBONES = ["resnet", "densenet"]
CONFIGS = {  # the backbones with their paper's channel gates, and a ResNet with the light gate
    "resnet": small_config("resnet"),
    "densenet": small_config("densenet"),
    "resnet-light": small_config("resnet", channel_gate="light"),
}


@pytest.fixture(scope="module")
def models(fashion_test) -> dict:
    return {name: make_ddi(config, fashion_test.images, seed=2) for name, config in CONFIGS.items()}


@pytest.fixture(scope="module")
def irs(models) -> dict[str, IRModel]:
    return {bb: spread_heads(lower(m, f"ddi_{bb}")) for bb, m in models.items()}


def spread_heads(ir: IRModel) -> IRModel:
    """Untrained heads saturate int16: shrink their logits and widen the scale so that the
    confidence and margin policies split the images."""
    arrays, tensors = dict(ir.arrays), dict(ir.tensors)
    for op in ir.walk():
        if op.kind == "linear" and op.attrs.get("role") == "exit_head":
            arrays[f"{op.name}.shift"] = arrays[f"{op.name}.shift"] + 4
            spec = tensors[op.output]
            tensors[op.output] = TensorSpec(spec.name, spec.shape, spec.dtype, spec.scale * 48, spec.kind)
    return IRModel(ir.name, ir.input, tensors, ir.ops, arrays, ir.classes, dict(ir.meta))


def policies(ir: IRModel, images: np.ndarray) -> list[ExitPolicy]:
    """none (gating on and off), and confidence, margin and two budgets at thresholds where the
    first branch takes some images and not all (picked from the first branch's logits)."""
    first = trace(ir, images, ExitPolicy("margin", 1e12)).exit_logits[0].astype(np.float64)
    first *= ir.tensors[ir.exits()[0].attrs["logits"]].scale
    top = np.sort(first, axis=1)
    margin = float(np.percentile(top[:, -1] - top[:, -2], 60))
    p = np.exp(first - first.max(axis=1, keepdims=True))
    confidence = float(np.percentile(p.max(axis=1) / p.sum(axis=1), 60))
    static = ir.meta["static_backbone_macs"]
    return [
        ExitPolicy("none"),
        ExitPolicy("none", gating=False),
        ExitPolicy("confidence", confidence),
        ExitPolicy("margin", margin),
        ExitPolicy("budget", 0.4 * static),
        ExitPolicy("budget", 0.7 * static),
    ]


# ----------------------------------------------------------------------------- reference
@pytest.mark.parametrize("backbone", CONFIGS)
def test_integer_reference_follows_brevitas(backbone, models, fashion_test):
    model = models[backbone]
    ir = lower(model, "ddi")
    images = fashion_test.images[:300]
    env = trace(ir, images).tensors
    with torch.no_grad():
        out = model(to_float(images))
    layer = [(i, g) for i, g in enumerate(out.layer_gates) if g is not None]
    agree = [np.mean((env[f"u{i}.s_layer"][:, 0] > 0) == (g.numpy() > 0)) for i, g in layer]
    opened = [np.mean(env[f"u{i}.s_layer"][:, 0] > 0) for i, _ in layer]
    # the gates really decide per image, and the same way as the float model (up to ties)
    assert 0.1 < np.mean(opened) < 0.9 and min(agree) >= 0.9
    same = []
    for i, mask in enumerate(out.channel_masks):
        ran = env[f"u{i}.s_layer"][:, 0] > 0 if out.layer_gates[i] is not None else np.ones(300, bool)
        chan = env[f"u{i}.s_chan"]
        assert set(np.unique(chan).tolist()) <= {0, 255}  # hard {0, 1} channel gates
        same.append(((chan > 0) == (mask.numpy() > 0))[ran].reshape(-1))
    assert np.concatenate(same).mean() >= 0.85  # where the unit ran (its channel gate was computed)
    final = out.logits[-1].numpy().argmax(axis=1)
    assert np.mean(final == execute(ir, images).predictions) >= 0.95


@pytest.mark.parametrize("backbone", BACKBONES)
def test_ir_has_the_coarse_to_fine_structure(backbone, irs):
    ir = irs[backbone]
    lstm = [op for op in ir.ops if op.kind == "lstm_gate"]
    guards = [op for op in ir.ops if op.kind == "guard"]
    units = len(small_config(backbone).blocks) * 0 + sum(small_config(backbone).blocks)
    first_layers = 0 if backbone == "resnet" else len(small_config(backbone).blocks)
    assert len(lstm) == len(guards) == units - first_layers
    # one LSTM chain: the first step starts from zero, each later one reads the previous state
    assert "h" not in lstm[0].inputs
    for prev, op in zip(lstm, lstm[1:], strict=False):
        assert (op.inputs["h"], op.inputs["c"]) == (prev.attrs["h_out"], prev.attrs["c_out"])
    for guard in guards:
        p = guard.name.removesuffix(".guard")
        assert guard.attrs["gate"] == f"{p}.s_layer"
        gates = [op for op in guard.then if op.attrs.get("role") == "gate"]
        # the channel gate is computed only where the layer runs (coarse to fine)
        assert gates and gates[-1].output == f"{p}.s_chan"
        conv1 = next(op for op in guard.then if op.name == f"{p}.conv1")
        assert conv1.attrs["channel_gate"] == f"{p}.s_chan"
        (skip,) = guard.orelse
        assert skip.kind == ("rescale" if backbone == "resnet" else "split")
    assert all(op.attrs.get("role") == "gate" for op in lstm)
    if backbone == "densenet":
        assert sum(op.kind == "concat" for op in ir.ops) == units
    heads = ir.exits()
    assert len(heads) == 6 and heads[-1].attrs["final"]
    assert all(op.attrs["next_cost_max"] > 0 for op in heads[:-1])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gates_skip_work_and_gating_off_runs_the_static_backbone(backbone, irs, fashion_test):
    ir = irs[backbone]
    images = fashion_test.images[:200]
    static = ir.meta["static_backbone_macs"]
    on, off = execute(ir, images), execute(ir, images, ExitPolicy("none", gating=False))
    assert off.macs.tolist() == [static] * len(images)
    assert off.skipped_blocks.sum() == off.skipped_channels.sum() == 0
    assert on.skipped_blocks.sum() > 0 and on.skipped_channels.sum() > 0
    assert on.macs.mean() < static
    # each skipped unit and each skipped channel saves MACs (a least-squares fit over the images)
    design = np.stack([np.ones(len(images)), on.skipped_blocks, on.skipped_channels], axis=1)
    _, per_unit, per_channel = np.linalg.lstsq(design.astype(np.float64), on.macs, rcond=None)[0]
    assert per_unit < 0 and per_channel < 0


def test_light_channel_gate_on_a_resnet_is_fig4s_and_costs_a_third(irs):
    """--channel-gate light: 1x1 stride-2 conv to half the input's channels, 3x3 conv, gap, FC
    (paper Fig. 4) instead of Fig. 2(b)'s 3x3 stride-2 conv keeping them; the backbone unchanged."""
    from tinydyn.cost import coefficients, op_traffic

    coeffs = coefficients("qemu-mps2-an386")
    full, light = irs["resnet"], irs["resnet-light"]
    convs: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
    for op in light.walk():
        if op.kind == "conv2d" and op.attrs.get("role") == "gate":
            shape = tuple(light.arrays[f"{op.name}.weight"].shape)
            convs.setdefault(op.name.split(".")[0], []).append((op.attrs["stride"], shape))
    widths = [8, 8, 8, 12, 12, 16]  # each block's input channels (stem 8; widths 8, 12, 16)
    assert sorted(convs) == [f"u{i}" for i in range(len(widths))]
    for i, cin in enumerate(widths):
        half = cin // 2
        assert convs[f"u{i}"] == [(2, (half, cin, 1, 1)), (1, (half, half, 3, 3))]

    def gate_macs(ir: IRModel) -> int:
        return sum(op_traffic(ir, op, coeffs)[0] for op in ir.walk() if op.attrs.get("role") == "gate")

    assert 0.2 < gate_macs(light) / gate_macs(full) < 0.45
    assert light.meta["static_backbone_macs"] == full.meta["static_backbone_macs"]


# ----------------------------------------------------------------------------- C
@pytest.mark.parametrize("backbone", CONFIGS)
def test_host_c_equals_reference_under_every_policy(backbone, irs, fashion_test, tmp_path):
    from tinydyn.codegen import build_project
    from tinydyn.codegen.harness import run_host

    require_tool("gcc")
    ir = irs[backbone]
    build_project(ir, "host", tmp_path, compile=True)
    images = fashion_test.images[:120]
    seen_exits = set()
    for policy in policies(ir, images):
        ref = execute(ir, images, policy)
        assert_same(ref, run_host(ir, tmp_path / "fw", images, policy))
        seen_exits |= set(ref.exits.tolist())
    assert len(seen_exits) >= 3  # early branches and the final classifier all answered


@pytest.fixture(scope="module")
def m4_elf(irs, tmp_path_factory) -> Path:
    from tinydyn.codegen import build_project

    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    out = tmp_path_factory.mktemp("ddi_m4")
    build_project(irs["densenet"], "qemu-mps2-an386", out, compile=True)
    return out / "fw.elf"


def test_cortex_m4_build_equals_reference(irs, m4_elf, fashion_test):
    """The DenseNet (LSTM chain, light channel gates, split skips, concat) on the SMLAD path."""
    from tinydyn.codegen.harness import run_qemu

    ir = irs["densenet"]
    images = fashion_test.images[:60]
    for policy in policies(ir, images)[::2] + [ExitPolicy("none", gating=False)]:
        assert_same(execute(ir, images, policy), run_qemu(ir, m4_elf, images, policy, icount_shift=3))
