"""S2DNAS: the static-to-dynamic transformation, its lowering (stages computed once, in order),
generated C equal to the reference under every policy, per-stage thresholds, checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tinydyn.cli import cli
from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_qemu
from tinydyn.host.sweep import Probe
from tinydyn.models.checkpoint import CheckpointError, bundled_static_checkpoint, load_model, save_checkpoint
from tinydyn.models.lcnet import ConfigError
from tinydyn.models.lcnet_lower import lower as lower_lcnet
from tinydyn.models.s2dnas import S2DNASConfig, S2DNASNet, conv_mask, inherit, layer_plan
from tinydyn.models.s2dnas_lower import lower, static_macs
from tinydyn.models.s2dnas_thresholds import choose
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

from .codegen_support import assert_same
from .conftest import require_tool
from .s2dnas_support import assert_host_equals_reference, tiny_config, tiny_ir, tiny_model

CLASSES = tuple(str(i) for i in range(10))


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "change,message",
    [
        ({"splits": ((2, 2), (2, 3))}, r"splits\[0\] \[2, 2\] must be 2 strictly increasing points"),
        ({"splits": ((0, 3), (2, 3))}, r"splits\[0\]\[0\] 0 is outside 1..3"),
        ({"splits": ((2, 3),)}, r"splits must have one entry per resolution \(2\)"),
        ({"concat": ((True, True), (True, True, True))}, r"concat\[0\] must list 3 indicators"),
        ({"concat": ((1, 1, 1), (True, True, True))}, r"concat\[0\] must hold true or false only"),
        ({"groups": 3}, r"stem_width 8 is not a multiple of 3 groups"),
        ({"stages": 5}, r"5 stages need at least as many channel groups, not 4"),
        ({"thresholds": (0.5, 1.5)}, r"threshold 1.5 is not a number in 0..1"),
        ({"backbone": "densenet"}, r"backbone must be one of resnet, vgg"),
    ],
)
def test_config_is_checked_before_anything_is_built(change, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(CLASSES, **change)


def test_a_checkpoint_with_a_bad_config_is_refused(tmp_path):
    model = S2DNASNet(tiny_config(CLASSES))
    path = save_checkpoint(tmp_path / "m.pt", model, {})
    payload = torch.load(path, weights_only=True)
    payload["config"]["splits"] = [[3, 1], [2, 3]]
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError, match=r"invalid model config \(splits\[0\] \[3, 1\] must be 2 strictly"
    ):
        load_model(path)


# ----------------------------------------------------------------------------- transformation
def test_masks_keep_own_groups_and_reused_earlier_stages():
    cfg = tiny_config(CLASSES)  # res 0: 8 channels, groups of 2, splits (2, 3); m12 m13 set, m23 not
    conv = next(p for p in layer_plan(cfg) if p["name"] == "blocks.0.conv2")
    mask = conv_mask(cfg, conv).int()
    # stage 1 = channels 0-3, stage 2 = 4-5, stage 3 = 6-7
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert mask[4].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert mask[6].tolist() == [1, 1, 1, 1, 0, 0, 1, 1]  # reuses stage 1, not stage 2
    stem = conv_mask(cfg, layer_plan(cfg)[0])
    assert bool(stem.all())  # the input layer is not split


def test_one_stage_from_the_static_resnet_is_the_static_model(fashion_test):
    """The transformation with one stage inherits every weight: its integer model equals the
    static checkpoint's bit for bit."""
    static, payload = load_model(bundled_static_checkpoint())
    cfg = S2DNASConfig(stages=1, classes=fashion_test.classes)
    model = S2DNASNet(cfg)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 1, 28, 28))
    assert inherit(model, payload["state_dict"], "lcnet") == []
    images = fashion_test.images[:200]
    ours = execute(lower(model, "one"), images)
    theirs = execute(lower_lcnet(static, "static"), images)
    assert np.array_equal(ours.logits, theirs.logits)
    assert static_macs(cfg) == int(theirs.macs[0]) == 9_345_920


def test_training_keeps_removed_connections_at_zero_and_stages_causal(fashion_test):
    model = tiny_model(tiny_config(CLASSES), fashion_test.images[:32])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-3)
    x = torch.from_numpy(fashion_test.images[:16].astype(np.float32) / 255.0)
    for _ in range(2):
        opt.zero_grad()
        sum(lg.square().mean() for lg in model(x).logits).backward()
        opt.step()
    conv = model.blocks[1].conv2
    spec = next(p for p in layer_plan(model.config) if p["name"] == "blocks.1.conv2")
    removed = conv_mask(model.config, spec)[:, :, None, None].expand_as(conv.weight) == 0
    assert removed.any() and bool((conv.weight[removed] == 0).all())
    # stage 1 never reads the channels of later stages: changing them leaves its logits alone
    model.eval()
    before = [lg.detach() for lg in model(x).logits]
    with torch.no_grad():
        model.blocks[0].conv2.weight[4:] += 1.0  # rows of stages 2 and 3 at resolution 0
    after = model(x).logits
    assert torch.equal(before[0], after[0]) and not torch.equal(before[2], after[2])


def test_lowering_computes_each_stage_once_in_order(fashion_test):
    cfg = tiny_config(CLASSES)
    ir = lower(tiny_model(cfg, fashion_test.images[:32]), "tiny")
    kinds = [op.kind for op in ir.ops]
    exits = [i for i, k in enumerate(kinds) if k == "exit"]
    assert len(exits) == 3 and exits[-1] == len(kinds) - 1
    stage_of = [int(op.name[1]) for op in ir.ops if op.kind == "conv2d"]
    assert stage_of == sorted(stage_of)  # stage 1's layers, then stage 2's, then stage 3's
    # every output channel of every static layer is computed exactly once, with exactly the
    # connections the masks keep: the MACs of all stages are the masked network's
    sizes = {0: 28, 1: 14}
    kept = sum(int(conv_mask(cfg, p).sum()) * p["k"] ** 2 * sizes[p["r_out"]] ** 2 for p in layer_plan(cfg))
    convs = sum(op.attrs["macs"] for op in ir.ops if op.kind == "conv2d")
    assert convs == kept < static_macs(cfg)
    # the later stages read the earlier ones' features through concat, never recompute them
    assert {op.kind for op in ir.ops} >= {"concat", "gap", "exit"}
    heads = [op.then[-1] for op in ir.ops if op.kind == "exit"]
    assert [ir.tensors[h.inputs["x"]].shape[0] for h in heads] == [8, 12, 16]  # stages 1, 1-2, 1-3


def test_thresholds_maximise_the_reward():
    """Stage 1 is sure (and right) on the first half of the images, unsure on the rest; the
    final stage is right everywhere at 10x the cost: the reward wants the sure half out early."""
    n = 100
    labels = np.zeros(n, dtype=np.int64)
    sure = np.tile(np.array([[2000] + [0] * 9]), (n, 1))
    unsure = np.tile(np.array([[10, 0, 0, 0, 0, 0, 0, 0, 0, 9]]), (n, 1))
    first = np.where(np.arange(n)[:, None] < n // 2, sure, unsure)
    final = np.tile(np.array([[50] + [0] * 9]), (n, 1))
    pr = Probe([first, final], [np.full(n, 100), np.full(n, 1000)], [10, 10], [900, 0])
    choice = choose(pr, labels, [1 << 20, 1 << 20], static_macs=1000)
    assert choice.exit_fractions == [0.5, 0.5] and choice.accuracy == 1.0
    assert choice.mean_macs == 550 and choice.reward == pytest.approx(0.55**-0.06)
    # the sure images' confidence is 0.9963 (7.8 nats over 9 others), the unsure ones' ~0.1
    assert 0.1 < choice.thresholds[0] <= 0.995


def test_thresholds_within_a_mac_cap_maximise_accuracy():
    """Stage 1 is sure and right on 50 images, fairly sure (~0.8) and wrong on 20, unsure (~0.5)
    and wrong on 30; the final stage is always right at 10x the cost. The reward sends the 50 out
    (accuracy 1.0 at cost 0.55); within a cap of 0.4 the most accurate choice sends 70 out (0.8 at
    0.37) rather than all 100 (0.5 at 0.1); a cap nothing meets gives the cheapest choice."""
    n = 100
    labels = np.zeros(n, dtype=np.int64)
    index = np.arange(n)[:, None]
    sure_right = np.tile(np.array([[2000] + [0] * 9]), (n, 1))
    fairly_sure_wrong = np.tile(np.array([[0, 900] + [0] * 8]), (n, 1))
    unsure_wrong = np.tile(np.array([[0, 600] + [0] * 8]), (n, 1))
    first = np.where(index < 50, sure_right, np.where(index < 70, fairly_sure_wrong, unsure_wrong))
    final = np.tile(np.array([[50] + [0] * 9]), (n, 1))
    pr = Probe([first, final], [np.full(n, 100), np.full(n, 1000)], [10, 10], [900, 0])
    mults = [1 << 20, 1 << 20]
    by_reward = choose(pr, labels, mults, static_macs=1000)
    assert by_reward.exit_fractions == [0.5, 0.5] and by_reward.accuracy == 1.0
    capped = choose(pr, labels, mults, static_macs=1000, max_cost=0.4)
    assert capped.exit_fractions == [0.7, 0.3] and capped.accuracy == 0.8
    assert capped.cost == pytest.approx(0.37) and capped.reward == pytest.approx(0.8 * 0.37**-0.06)
    cheapest = choose(pr, labels, mults, static_macs=1000, max_cost=0.05)
    assert cheapest.exit_fractions == [1.0, 0.0] and cheapest.cost == pytest.approx(0.1)


# ----------------------------------------------------------------------------- C
@pytest.fixture(scope="module", params=["resnet", "vgg"])
def s2d_ir(request, fashion_test):
    return tiny_ir(fashion_test.classes, fashion_test.images, request.param)


def policies(ir) -> list[ExitPolicy]:  # noqa: ANN001
    static = int(ir.meta["static_backbone_macs"])
    return [
        ExitPolicy("none"),
        ExitPolicy("confidence", 0.9),  # the exits' own thresholds decide, not 0.9
        ExitPolicy("margin", 0.7),
        ExitPolicy("budget", static * 0.1),
        ExitPolicy("budget", static * 0.3),
    ]


def test_host_build_equals_the_reference_under_every_policy(s2d_ir, fashion_test, tmp_path):
    require_tool("gcc")
    assert_host_equals_reference(s2d_ir, fashion_test.images[:300], policies(s2d_ir), tmp_path, 50)


def test_qemu_build_equals_the_reference(fashion_test, tmp_path):
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    ir = tiny_ir(fashion_test.classes, fashion_test.images, "resnet")
    build_project(ir, "qemu-mps2-an386", tmp_path, compile=True)
    images = fashion_test.images[:100]
    for policy in [ExitPolicy("none"), ExitPolicy("confidence", 0.9), ExitPolicy("budget", 300_000)]:
        assert_same(
            execute(ir, images, policy), run_qemu(ir, tmp_path / "fw.elf", images, policy, icount_shift=3)
        )


# ----------------------------------------------------------------------------- commands
def test_train_transforms_a_static_vgg_and_tunes_thresholds(tmp_path, fashion_test):
    runner = CliRunner()
    small = ["--widths", "8,16", "--blocks", "1,1", "--limit", "128", "--epochs", "1", "--threads", "1"]
    static = tmp_path / "vgg.pt"
    result = runner.invoke(
        cli,
        ["train", "--model", "s2dnas", "--backbone", "vgg", "--stages", "1", "--groups", "4", *small]
        + ["--eval-limit", "0", "--out", str(static), "--lr", "0.02"],
    )
    assert result.exit_code == 0, result.output
    dynamic = tmp_path / "s2d.pt"
    result = runner.invoke(
        cli,
        ["train", "--model", "s2dnas", "--backbone-from", str(static), "--groups", "4", "--splits", "2,3"]
        + ["--concat", "110/111", "--held-out", "300", *small, "--eval-limit", "50", "--out", str(dynamic)]
        + ["--lr", "0.02"],
    )
    assert result.exit_code == 0, result.output
    model, payload = load_model(dynamic)
    cfg = model.config
    assert payload["family"] == "s2dnas" and cfg.backbone == "vgg" and cfg.stages == 3
    assert cfg.concat == ((True, True, False), (True, True, True))
    tuned = payload["train"]["tuned"]
    assert tuned["images"] == 300 and "held out of training" in tuned["where"]
    assert list(cfg.thresholds) == tuned["thresholds"]
    ir = lower(model, "s2d")
    own = [op.attrs.get("confidence_t16") for op in sorted(ir.exits(), key=lambda o: o.attrs["index"])]
    assert own == [round(t * 65536) for t in cfg.thresholds] + [None]
    result = runner.invoke(cli, ["eval", str(dynamic), "--limit", "50"])
    assert result.exit_code == 0, result.output
    assert "exit histogram" in result.output


def test_a_static_checkpoint_of_another_backbone_is_refused(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["train", "--model", "s2dnas", "--backbone-from", str(bundled_static_checkpoint()), "--groups", "3"]
        + ["--limit", "16", "--epochs", "1", "--out", str(tmp_path / "x.pt")],
    )
    assert result.exit_code != 0
    assert "stem_width 16 is not a multiple of 3 groups" in str(result.exception)


def test_config_round_trips_through_json():
    cfg = replace(tiny_config(CLASSES), thresholds=(0.5, 0.75))
    assert S2DNASConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match=r"model config lacks \['thresholds'\]"):
        S2DNASConfig.from_json({k: v for k, v in cfg.to_json().items() if k != "thresholds"})


def test_state_dict_of_a_checkpoint_loads_with_masks(tmp_path, fashion_test):
    model = tiny_model(tiny_config(fashion_test.classes), fashion_test.images[:32])
    path = save_checkpoint(Path(tmp_path) / "m.pt", model, {})
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["blocks.0.conv2.weight"][0, 7] = 3.0  # a removed connection, set in the file
    torch.save(payload, path)
    loaded, _ = load_model(path)
    assert float(loaded.blocks[0].conv2.weight[0, 7].abs().sum()) == 0.0  # never counts
