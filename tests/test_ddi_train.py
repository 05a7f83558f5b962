"""DDI's training: the cost model equals what the integer model executes, α's sign follows the
batch's skip ratio, the phases freeze what the paper freezes, and `tinydyn train` refuses bad
DDI options in one line."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tinydyn.errors import TinydynError
from tinydyn.models import ddi_train
from tinydyn.models.ddi import DDINet
from tinydyn.models.ddi_family import DDI
from tinydyn.models.ddi_lower import lower
from tinydyn.quantize.executor import execute

from .test_ddi_models import make_ddi, small_config


def _recipe(**extra) -> SimpleNamespace:
    return SimpleNamespace(l1=0.0, extra=extra, epochs=4, gate_open_epochs=1.0)


@pytest.mark.parametrize("backbone", ["resnet", "densenet"])
def test_mac_cost_model_equals_the_integer_models_macs(backbone, fashion_test):
    """E with the integer model's own decisions is exactly the MACs the executor counts."""
    model = make_ddi(small_config(backbone), fashion_test.images, seed=4)
    images = fashion_test.images[:64]
    costs = ddi_train.cost_model(model, "macs", None)
    ir = lower(model, "m")
    assert costs.static == ir.meta["static_backbone_macs"]
    from tinydyn.quantize.executor import trace

    run = trace(ir, images)
    layer = [
        None if g is None else torch.from_numpy(run.tensors[f"u{i}.s_layer"][:, 0] > 0).double()
        for i, g in enumerate(model(torch.zeros(1, 1, 28, 28)).layer_gates)
    ]
    masks = [torch.from_numpy(run.tensors[f"u{i}.s_chan"] > 0).double() for i in range(len(layer))]
    expected = costs.expected(layer, masks).numpy()
    assert np.array_equal(expected, run.results.macs.astype(np.float64))
    assert 0 < run.results.skipped_blocks.sum() and expected.min() < expected.max()


def test_energy_cost_model_counts_traffic_too(fashion_test):
    model = make_ddi(small_config(), fashion_test.images)
    macs = ddi_train.cost_model(model, "macs", None)
    energy = ddi_train.cost_model(model, "energy", None)
    # a skipped identity block still requantises its input (SRAM traffic, no MACs)
    assert macs.units[1].skip == 0 and energy.units[1].skip > 0
    assert energy.static > macs.static * 1.1e-3  # 1.1 pJ per MAC alone, in nJ


def test_alpha_sign_holds_the_target(fashion_test):
    model = make_ddi(small_config(), fashion_test.images)
    model.train()
    ddi_train.start(model, _recipe(target_skip=0.3), steps_per_epoch=10, total_steps=40)
    x = torch.from_numpy(fashion_test.images[:16].astype(np.float32) / 255)
    plan = ddi_train.plan(model, 0)  # step 1: backbone frozen, target 0
    assert plan.coefficient == ddi_train.DEFAULT_ALPHA
    backbone, _ = DDI.parameter_groups(model)  # every parameter but the gates' (branches included)
    assert {id(p) for p in plan.frozen} == {id(p) for p in backbone}
    out = ddi_train.outputs(model, x)
    skip = out.shown["skip"]
    assert len(out.logits) == 1 and float(out.penalty.detach()) == pytest.approx(
        (1 - skip) * (1 if skip < 0 else -1)
    )
    ddi_train.plan(model, 10)  # step 2: toward 0.3, no branches yet
    out = ddi_train.outputs(model, x)
    sign = 1 if out.shown["skip"] < 0.3 else -1
    assert float(out.penalty.detach()) == pytest.approx(sign * (1 - out.shown["skip"]))
    plan = ddi_train.plan(model, 20)  # the last half: DDI, every exit
    assert plan.frozen == [] and len(ddi_train.outputs(model, x).logits) == 6


def test_branch_warmup_trains_only_the_branches_then_everything(fashion_test):
    model = make_ddi(small_config(), fashion_test.images)
    model.train()
    ddi_train.start(
        model, _recipe(target_skip=0.3, branch_warmup_epochs=0.5), steps_per_epoch=10, total_steps=40
    )
    branches = {id(p) for n, p in model.named_parameters() if n.startswith("branches.")}
    x = torch.from_numpy(fashion_test.images[:16].astype(np.float32) / 255)
    for step in (20, 24):  # the DDI phase's first half epoch: every exit, only the branches learn
        plan = ddi_train.plan(model, step)
        assert {id(p) for p in model.parameters()} - {id(p) for p in plan.frozen} == branches
        assert len(ddi_train.outputs(model, x).logits) == 6
    assert ddi_train.plan(model, 25).frozen == []  # then everything, jointly (Eq. 4)
    with pytest.raises(TinydynError, match=r"--branch-warmup-epochs 3 is outside 0..--branch-epochs \(2\)"):
        ddi_train.start(model, _recipe(branch_warmup_epochs=3.0), steps_per_epoch=10, total_steps=40)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target-skip", "1.5"], "--target-skip 1.5 is outside [0, 1)"),
        (["--cost", "profile"], "--cost profile takes the table from --cost-table FILE"),
        (["--l1", "0.1"], "--l1 is LC-Net's salience penalty: DDI's cost weight is --alpha"),
        (["--branch-epochs", "9"], "--branch-epochs 9 is outside 0..--epochs (1)"),
        (["--branch-warmup-epochs", "0.5"], "--branch-warmup-epochs 0.5 is outside 0..--branch-epochs (0)"),
        (["--backbone", "vgg"], "backbone must be one of resnet, densenet, got 'vgg'"),
    ],
)
def test_train_refuses_bad_ddi_options(args, message, fashion_test, tmp_path, monkeypatch, capsys):
    from tinydyn.cli import main

    argv = ["tinydyn", "train", "--model", "ddi", "--widths", "4,4,4", "--limit", "8", "--epochs", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--eval-limit", "0", "--out", str(tmp_path / "m.pt"), *args])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "m.pt").exists()


def test_train_builds_the_channel_gate_asked_for_and_other_families_refuse_it(tmp_path, monkeypatch, capsys):
    import torch

    from tinydyn.cli import main

    out = tmp_path / "light.pt"
    argv = ["tinydyn", "train", "--model", "ddi", "--widths", "4,4,4", "--blocks", "1,1,1", "--limit", "16"]
    argv += ["--epochs", "1", "--batch-size", "8", "--eval-limit", "0", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--channel-gate", "light", "--out", str(out)])
    main()
    payload = torch.load(out, map_location="cpu", weights_only=False)
    assert payload["config"]["channel_gate"] == "light"
    assert "units.0.channel_gate.conv_b.weight" in payload["state_dict"]
    monkeypatch.setattr(sys, "argv", ["tinydyn", "train", "--model", "lcnet", "--channel-gate", "light"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --channel-gate is a ddi option, not one of lcnet's: use --model ddi"
    )


def test_phases_freeze_the_backbone_then_train_branches(fashion_test, tmp_path):
    """A warm-started run: step 1 leaves every backbone tensor as the static checkpoint had it
    and moves the gates; the DDI phase trains the branches."""
    from tinydyn.data import load_dataset
    from tinydyn.models.checkpoint import load_model
    from tinydyn.train.loop import TrainConfig, train

    data = load_dataset("fashion-mnist", "train").subset(96)
    common = dict(batch_size=32, eval_limit=0, threads=1)
    shape = dict(widths=(4, 6, 8), blocks=(1, 1, 1), stem_width=4, classes=data.classes)
    static_cfg = small_config(gates=False, branches=False, **shape)
    train(data, tmp_path / "static.pt", static_cfg, TrainConfig(epochs=1, **common), progress=False,
          family_name="ddi")  # fmt: skip
    cfg = small_config(**shape)
    recipe = TrainConfig(
        epochs=2, gate_open_epochs=1.0, extra={"branch_epochs": 1, "target_skip": 0.5}, **common
    )
    train(data, tmp_path / "ddi.pt", cfg, replace_stop(recipe, 1), progress=False, family_name="ddi",
          backbone_from=tmp_path / "static.pt")  # fmt: skip
    static, _ = load_model(tmp_path / "static.pt")
    after1, payload = load_model(tmp_path / "ddi.pt")
    assert payload["recipe"]["family_options"] == {"branch_epochs": 1, "target_skip": 0.5}
    own = static.state_dict()
    for name, value in after1.state_dict().items():
        if name in own and "running" not in name and "num_batches" not in name:
            assert torch.equal(value, own[name]), name  # frozen in step 1
    gate = after1.units[0].channel_gate.fc.weight
    train(data, tmp_path / "ddi.pt", cfg, recipe, resume=True, progress=False, family_name="ddi")
    after2, _ = load_model(tmp_path / "ddi.pt")
    assert not torch.equal(after2.units[0].channel_gate.fc.weight, gate)
    branch = next(iter(after2.branches.values())).head.fc.weight
    assert not torch.equal(branch, next(iter(after1.branches.values())).head.fc.weight)


def replace_stop(cfg, stop_after: int):
    from dataclasses import replace

    return replace(cfg, stop_after=stop_after)


def test_open_gates_make_the_static_backbone(fashion_test):
    model = DDINet(small_config())
    DDI.open_gates(model)
    model.eval()
    ir = lower(model, "open")
    res = execute(ir, fashion_test.images[:64])
    assert res.skipped_blocks.sum() == res.skipped_channels.sum() == 0


@pytest.mark.parametrize("backbone", ["resnet", "densenet"])
def test_fold_gates_fine_tunes_the_gate_free_model_with_its_branches(backbone, fashion_test, tmp_path):
    """--fold-gates on a DDI checkpoint: the gate-free network the FPGA builds (every unit and
    channel, RADI branches kept) starts from the gated model's weights, and every exit trains
    (Eq. 4), so the branches follow the backbone they read."""
    from click.testing import CliRunner

    from tinydyn.cli import cli
    from tinydyn.models.checkpoint import load_model, save_checkpoint
    from tinydyn.models.ddi_fpga import static_model

    gated = make_ddi(small_config(backbone, classes=fashion_test.classes), fashion_test.images[:64])
    source = save_checkpoint(tmp_path / "gated.pt", gated, {})
    base = ["train", "--init-from", str(source), "--fold-gates", "--limit", "96", "--batch-size", "32"]
    base += ["--eval-limit", "0", "--threads", "1"]
    start = tmp_path / "start.pt"  # lr 0: the folded starting point itself
    result = CliRunner().invoke(cli, [*base, "--epochs", "1", "--lr", "0", "--out", str(start)])
    assert result.exit_code == 0, result.output
    folded, payload = load_model(start)
    assert payload["family"] == "ddi" and not folded.config.gates and folded.config.branches
    assert payload["train"]["folded_from"] == str(source)
    from tinydyn.models.ddi_family import GATE_MODULES

    free = dict(static_model(gated).named_parameters())  # the FPGA model's weights, lr 0 kept them
    own = dict(folded.named_parameters())
    assert own.keys() == free.keys() and not any(g in f".{k}" for k in own for g in GATE_MODULES)
    for name, value in own.items():
        assert torch.equal(value, free[name]), name
    assert execute(lower(folded, "a"), fashion_test.images[:32]).skipped_blocks.sum() == 0
    tuned = tmp_path / "tuned.pt"
    result = CliRunner().invoke(cli, [*base, "--epochs", "1", "--out", str(tuned)])
    assert result.exit_code == 0, result.output
    after, _ = load_model(tuned)
    for name in ("head.fc.weight",):
        before = next(iter(folded.branches.values())).get_submodule(name.rsplit(".", 1)[0])
        moved = next(iter(after.branches.values())).get_submodule(name.rsplit(".", 1)[0])
        assert not torch.equal(before.weight, moved.weight)  # the branches trained
    assert not torch.equal(folded.stem.weight, after.stem.weight)  # and the backbone


@pytest.mark.parametrize("gate_optimizer", ["sgd", "adamw"])
def test_channel_gates_learn_to_skip_with_their_own_optimizer(gate_optimizer, fashion_test, tmp_path):
    """A channel gate's cost gradient is 1/k of its unit's: under SGD the channel gates of a
    DenseNet whose only gates they are (one dense layer per block: no layer gate) stay open; with
    --gate-optimizer adamw (a step per parameter whatever the gradient's scale) the integer model
    skips channels and executes fewer MACs."""
    from tinydyn.data import load_dataset
    from tinydyn.models.checkpoint import load_model
    from tinydyn.train.loop import TrainConfig, train

    data = load_dataset("fashion-mnist", "train").subset(128)
    common = dict(batch_size=32, eval_limit=0, threads=1, warmup_epochs=0.0)
    shape = dict(growth_rate=4, blocks=(1, 1, 1), stem_width=8, classes=data.classes, branches=False)
    train(data, tmp_path / "static.pt", small_config("densenet", gates=False, **shape),
          TrainConfig(epochs=1, **common), progress=False, family_name="ddi")  # fmt: skip
    recipe = TrainConfig(
        epochs=6, lr=0.01, gate_lr=0.3, gate_optimizer=gate_optimizer, gate_open_epochs=0.0,
        extra={"target_skip": 0.5, "alpha": 2.0}, **common,
    )  # fmt: skip
    train(data, tmp_path / "ddi.pt", small_config("densenet", **shape), recipe, progress=False,
          family_name="ddi", backbone_from=tmp_path / "static.pt")  # fmt: skip
    model, payload = load_model(tmp_path / "ddi.pt")
    assert payload["recipe"]["gate_optimizer"] == gate_optimizer
    assert all(g is None for g in model(torch.zeros(1, 1, 28, 28)).layer_gates)
    ir = lower(model.eval(), "m")
    res = execute(ir, fashion_test.images[:200])
    offered = sum(unit.conv1.out_channels for unit in model.units) * 200
    if gate_optimizer == "sgd":
        assert res.skipped_channels.sum() == 0
    else:
        assert res.skipped_channels.sum() > 0.2 * offered
        assert res.macs.mean() < 0.8 * ir.meta["static_backbone_macs"]
