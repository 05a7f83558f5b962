"""Naive early exits of the s2dnas family (the S2DNAS paper's Table 1 baseline): the static
model with classifiers after intermediate resolutions. Config refusals, the module's exits, the
lowering (heads where the torch model has them, exit MACs from layer shapes), generated C equal to
the reference under every policy, training with per-exit thresholds tuned on held-out images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tinydyn.cli import cli
from tinydyn.host.sweep import probe
from tinydyn.models.checkpoint import load_model, save_checkpoint
from tinydyn.models.lcnet import ConfigError
from tinydyn.models.s2dnas import S2DNASConfig, layer_plan
from tinydyn.models.s2dnas_family import S2DNAS, static_architecture
from tinydyn.models.s2dnas_fpga import S2DNASFpgaError
from tinydyn.models.s2dnas_lower import lower, static_macs
from tinydyn.quantize.executor import every_head, execute, trace
from tinydyn.quantize.policy import ExitPolicy
from tinydyn.train.evaluate import evaluate
from tinydyn.train.loop import to_float

from .conftest import require_tool
from .s2dnas_support import assert_host_equals_reference, split_exits, tiny_config, tiny_model

CLASSES = tuple(str(i) for i in range(10))
# the last layer of each resolution is not the first: resnet blocks (1, 2, 1) put resolution 1's
# exit after block 2, vgg convs (2, 1, 1) resolution 0's after conv 1
BLOCKS = {"resnet": (1, 2, 1), "vgg": (2, 1, 1)}


def naive_config(classes: tuple[str, ...], backbone: str = "resnet", **settings) -> S2DNASConfig:  # noqa: ANN003
    """Three resolutions of 8, 16, 16 channels, one stage, naive exits after resolutions 0 and 1."""
    fields = {
        "stages": 1,
        "splits": (),
        "concat": (),
        "widths": (8, 16, 16),
        "blocks": BLOCKS[backbone],
        "naive_exits": (0, 1),
        **settings,
    }
    return tiny_config(classes, backbone, **fields)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"stages": 3, "splits": (), "concat": ()},
            "naive early exits need a one-stage (static) model, not 3 stages: pass --stages 1 with "
            "--naive-exits",
        ),
        (
            {"naive_exits": (2,)},
            "naive_exits[0] 2 is outside 0..1: give strictly increasing resolution indices in 0..1, "
            "e.g. --naive-exits 0,1",
        ),
        (
            {"naive_exits": (1, 0)},
            "naive_exits [1, 0] must be strictly increasing: give strictly increasing resolution indices "
            "in 0..1, e.g. --naive-exits 0,1",
        ),
        (
            {"naive_exits": "0"},
            "naive_exits must be a list of whole numbers, got a str: give strictly increasing resolution "
            "indices in 0..1, e.g. --naive-exits 0,1",
        ),
        (
            {"naive_exits": (True,)},
            "naive_exits[0] must be a whole number, got a bool: give strictly increasing resolution "
            "indices in 0..1, e.g. --naive-exits 0,1",
        ),
        (
            {"widths": (8,), "blocks": (1,), "naive_exits": (0,)},
            "a model with one resolution has no place for a naive early exit: leave --naive-exits out",
        ),
        (
            {"thresholds": (0.5,)},
            "thresholds must list 2 numbers, got a tuple: give 2 confidences in 0..1, one per early exit",
        ),
    ],
)
def test_naive_exit_config_is_checked_before_anything_is_built(change, message):
    with pytest.raises(ConfigError) as err:
        naive_config(CLASSES, **change)
    assert str(err.value) == message


def test_exit_count_and_old_checkpoints_without_the_field(tmp_path):
    cfg = naive_config(CLASSES)
    assert cfg.exit_count == 3 and cfg.thresholds == (0.9, 0.9)
    assert S2DNASConfig.from_json(cfg.to_json()) == cfg
    # a checkpoint written before naive exits existed has no such key: it loads with none
    old = tiny_model(tiny_config(CLASSES), np.zeros((2, 1, 28, 28), np.uint8))
    path = save_checkpoint(tmp_path / "old.pt", old, {})
    payload = torch.load(path, weights_only=True)
    del payload["config"]["naive_exits"]
    torch.save(payload, path)
    loaded, _ = load_model(path)
    assert loaded.config.naive_exits == () and loaded.config.exit_count == 3
    assert [k for k in loaded.state_dict() if k.startswith("naive_heads")] == []


def test_naive_exits_are_refused_for_other_families_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "tinydyn", "train", "--model", "lcnet", "--naive-exits", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --naive-exits is an s2dnas option, not one of lcnet's: use --model s2dnas --stages 1"
    ]


def test_the_fpga_path_refuses_naive_exits_in_one_line():
    from tinydyn.hw.build import check_buildable

    model = tiny_model(naive_config(CLASSES), np.zeros((2, 1, 28, 28), np.uint8))
    with pytest.raises(S2DNASFpgaError) as err:
        check_buildable(S2DNAS, model, "n.pt")
    assert str(err.value) == (
        "tinydyn fpga does not build S2DNAS models with naive early exits (after resolutions 0, 1): "
        "deploy it on a microcontroller board (tinydyn build / run), or build the static model it came from"
    )


# ----------------------------------------------------------------------------- models
@pytest.fixture(scope="module", params=["resnet", "vgg"])
def naive(request, fashion_test):
    """(torch model, its IR as lowered, the IR with exits that split the images)."""
    model = tiny_model(naive_config(fashion_test.classes, request.param), fashion_test.images[:64])
    ir = lower(model, f"naive_{request.param}")
    return model, ir, split_exits(ir, fashion_test.images[:256])


def test_exits_sit_after_the_last_layer_of_their_resolution(naive):
    model, ir, _ = naive
    exits = [op for op in ir.ops if op.kind == "exit"]
    assert [(op.name, op.attrs["index"], op.attrs["final"]) for op in exits] == [
        ("naive0", 0, False),
        ("naive1", 1, False),
        ("final", 2, True),
    ]
    assert [op.attrs["confidence_t16"] for op in exits[:2]] == [round(0.9 * 65536)] * 2
    # each naive head pools the output of the last layer of its resolution, inside the exit
    last = {"resnet": ["s0.b0.out", "s0.b2.out"], "vgg": ["s0.c1", "s0.c2"]}[model.config.backbone]
    for op, fm, width in zip(exits[:2], last, (8, 16), strict=True):
        gap, fc = op.then
        assert (gap.kind, gap.inputs["x"], fc.kind) == ("gap", fm, "linear")
        assert ir.tensors[fm].shape[0] == width and fc.inputs["x"] == gap.output
        before = ir.ops[ir.ops.index(op) - 1]  # the exit comes right after that layer
        assert before.output == fm


def test_integer_reference_follows_brevitas_at_every_exit(naive, fashion_test):
    model, ir, _ = naive
    images = fashion_test.images[:200]
    run = trace(ir, images, every_head(), keep_tensors=False)
    with torch.no_grad():
        out = model(to_float(images))
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    assert len(out.logits) == len(exits) == 3
    for k, op in enumerate(exits):
        ours = run.exit_logits[k] if k < 2 else run.results.logits
        theirs = out.logits[k].numpy() / ir.tensors[op.attrs["logits"]].scale
        # int8 requantisation vs float: a few % of the logit range, the same decisions
        assert np.abs(theirs - ours).max() <= 0.05 * np.abs(ours).max()
        assert np.mean(theirs.argmax(axis=1) == ours.argmax(axis=1)) >= 0.97
    # the whole dynamic model under its own per-exit thresholds (Brevitas with the same ones)
    summary, _ = evaluate(ir, fashion_test.subset(200), ExitPolicy("confidence", 0.5), model)
    assert summary.agreement >= 0.97


def test_exit_macs_equal_a_count_from_layer_shapes(naive, fashion_test):
    model, ir, _ = naive
    cfg = model.config
    size = {r: 28 >> r for r in range(3)}  # 28, 14, 7: stride-2 convs / 2x2 pools halve the map
    convs = {r: 0 for r in range(3)}
    for p in layer_plan(cfg):
        convs[p["r_out"]] += p["k"] ** 2 * p["cin"] * p["cout"] * size[p["r_out"]] ** 2
    heads = [8 * 10, 16 * 10, 16 * 10]  # pooled width x classes per exit
    upto = [convs[0], convs[0] + convs[1], sum(convs.values())]
    images = fashion_test.images[:20]
    pr = probe(ir, images)  # every head computed
    assert [int(m[0]) for m in pr.macs] == [
        upto[0] + heads[0],
        upto[1] + heads[0] + heads[1],
        upto[2] + sum(heads),
    ]
    assert pr.head_macs == heads
    assert pr.next_cost_max == [convs[1] + heads[1], convs[2] + heads[2], 0]
    # no policy: no early head runs, exactly the static model's MACs
    assert execute(ir, images).macs.tolist() == [upto[2] + heads[2]] * 20 == [static_macs(cfg)] * 20


def test_host_build_equals_the_reference_under_every_policy(naive, fashion_test, tmp_path):
    require_tool("gcc")
    _, _, ir = naive
    static = int(ir.meta["static_backbone_macs"])
    policies = [
        ExitPolicy("none"),
        ExitPolicy("confidence", 0.9),  # the exits' own thresholds decide
        ExitPolicy("margin", 0.7),
        ExitPolicy("budget", static * 0.3),
        ExitPolicy("budget", static * 0.7),
    ]
    assert_host_equals_reference(ir, fashion_test.images[:300], policies, tmp_path, 30)


# ----------------------------------------------------------------------------- training
def test_train_naive_exits_from_a_static_model_tunes_thresholds(tmp_path, fashion_test):
    static = tiny_model(
        naive_config(fashion_test.classes, "vgg", widths=(8, 16), blocks=(1, 1), naive_exits=()),
        fashion_test.images[:32],
    )
    source = save_checkpoint(tmp_path / "static.pt", static, {})
    out = tmp_path / "naive.pt"
    runner = CliRunner()
    base = [
        "train",
        "--model",
        "s2dnas",
        "--backbone-from",
        str(source),
        "--groups",
        "4",
        "--naive-exits",
        "0",
    ]
    small = ["--held-out", "300", "--limit", "128", "--epochs", "1", "--threads", "1", "--eval-limit", "0"]
    result = runner.invoke(cli, [*base, "--stages", "1", *small, "--lr", "0.02", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, payload = load_model(out)
    cfg = model.config
    assert (cfg.backbone, cfg.stages, cfg.naive_exits, cfg.exit_count) == ("vgg", 1, (0,), 2)
    tuned = payload["train"]["tuned"]
    assert tuned["images"] == 300 and "held out of training" in tuned["where"]
    assert list(cfg.thresholds) == tuned["thresholds"] and len(tuned["exit_fractions"]) == 2
    own = [
        op.attrs.get("confidence_t16") for op in sorted(lower(model).exits(), key=lambda o: o.attrs["index"])
    ]
    assert own == [round(cfg.thresholds[0] * 65536), None]
    with pytest.raises(ConfigError) as err:  # not a static model to transform or search from
        static_architecture(out)
    assert str(err.value) == f"{out} has naive early exits: give the one-stage (static) model it came from"
    result = runner.invoke(cli, ["eval", str(out), "--limit", "50"])
    assert result.exit_code == 0, result.output
    assert f"the model's own per-exit confidences {cfg.thresholds[0]:.4g} (tuned" in result.output
    # more than one stage with naive exits: refused before anything is built
    result = runner.invoke(cli, [*base, "--limit", "16", "--out", str(tmp_path / "x.pt")])
    assert result.exit_code != 0
    assert str(result.exception) == (
        "naive early exits need a one-stage (static) model, not 3 stages: pass --stages 1 with --naive-exits"
    )
