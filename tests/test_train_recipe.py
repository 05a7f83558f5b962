"""The training recipe: batch augmentation, weight-decay groups, the warm-up + cosine schedule,
the distillation loss, the gate schedule, and what a `tinydyn train` checkpoint records."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.test_cli import tinydyn
from tinydyn.models.lcnet import LCNet, LCNetConfig
from tinydyn.models.registry import get_family
from tinydyn.train.augment import augment, default_crop_padding, default_flip, draw_epoch
from tinydyn.train.loop import TrainConfig, make_optimizer
from tinydyn.train.recipe import distillation_loss, exits_loss, gate_phase, lr_factor, warmup_steps

TINY = ["--widths", "8,16", "--blocks", "1,1", "--limit", "256", "--batch-size", "64", "--threads", "1"]


def batch(n: int = 6, c: int = 1, size: int = 8) -> torch.Tensor:
    return torch.randint(
        1, 256, (n, c, size, size), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )


# --- augmentation ---------------------------------------------------------------------------


def test_crop_keeps_shape_and_dtype_and_shifts_with_zero_fill():
    x = batch()
    draws = draw_epoch(len(x), 2, True, torch.Generator().manual_seed(0))
    out = augment(x, 2, draws.dy, draws.dx, draws.flip)
    assert out.shape == x.shape and out.dtype == torch.uint8
    n = len(x)
    centre = torch.full((n,), 2)
    no = torch.zeros(n, dtype=torch.bool)
    assert torch.equal(augment(x, 2, centre, centre, no), x)  # the centred window is the image
    zero = torch.zeros(n, dtype=torch.long)
    shifted = augment(x, 2, zero, zero, no)  # window at the padded corner: image moved by 2 px
    assert torch.equal(shifted[..., 2:, 2:], x[..., :-2, :-2])
    assert int(shifted[..., :2, :].abs().sum()) == 0 and int(shifted[..., :, :2].abs().sum()) == 0


def test_flip_only_when_enabled():
    x = batch(n=64)
    off = draw_epoch(len(x), 0, False, torch.Generator().manual_seed(0))
    assert not off.flip.any()
    assert torch.equal(augment(x, 0, off.dy, off.dx, off.flip), x)
    on = draw_epoch(len(x), 0, True, torch.Generator().manual_seed(0))
    assert 0 < int(on.flip.sum()) < len(x)
    out = augment(x, 0, on.dy, on.dx, on.flip)
    assert torch.equal(out[on.flip], x[on.flip].flip(3)) and torch.equal(out[~on.flip], x[~on.flip])
    assert not default_flip("mnist") and default_flip("fashion-mnist") and default_flip("cifar10")
    assert default_crop_padding(28) == 3 and default_crop_padding(32) == 4


def test_augmentation_is_deterministic_under_a_seed():
    x = batch(n=32)

    def run(seed: int) -> torch.Tensor:
        d = draw_epoch(len(x), 3, True, torch.Generator().manual_seed(seed))
        return augment(x, 3, d.dy, d.dx, d.flip)

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


# --- optimizer groups and schedule ----------------------------------------------------------


def test_weight_decay_skips_bn_biases_and_gates():
    model = LCNet(LCNetConfig(widths=(8, 16), blocks=(1, 1), stem_width=8, exits=(0,)))
    cfg = TrainConfig().resolved("fashion-mnist", 28, warm_started=False)
    decay, no_decay, gates = make_optimizer(get_family("lcnet"), model, cfg).param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0 and gates["weight_decay"] == 0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "stem.weight" in decayed and "blocks.1.conv2.weight" in decayed and "head.fc.weight" in decayed
    assert all(n.endswith("weight") and ".lnet." not in n and ".cnet." not in n for n in decayed)
    assert all(model.get_parameter(n).ndim > 1 for n in decayed)
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"stem_bn.weight", "stem_bn.bias", "blocks.0.bn1.weight", "head.fc.bias"} <= skipped
    gate_names = {names[id(p)] for p in gates["params"]}
    assert {"blocks.0.lnet.fc.weight", "blocks.0.cnet.fc.bias"} <= gate_names
    assert len(decayed) + len(skipped) + len(gate_names) == len(names)  # every parameter in one group


def test_gate_optimizer_gives_the_gates_their_own_adamw():
    model = LCNet(LCNetConfig(widths=(8, 16), blocks=(1, 1), stem_width=8, exits=(0,)))
    family = get_family("lcnet")
    same = TrainConfig().resolved("fashion-mnist", 28, warm_started=False)
    assert same.gate_optimizer == "sgd" and same.gate_lr == 0.1
    assert isinstance(make_optimizer(family, model, same), torch.optim.SGD)
    cfg = TrainConfig(gate_optimizer="adamw").resolved("fashion-mnist", 28, warm_started=False)
    assert (cfg.lr, cfg.gate_lr) == (0.1, 2e-3)  # each optimizer's own default
    optimizer = make_optimizer(family, model, cfg)
    assert isinstance(optimizer.main, torch.optim.SGD) and isinstance(optimizer.gates, torch.optim.AdamW)
    decay, no_decay, gates = optimizer.param_groups
    _, gate_params = family.parameter_groups(model)
    assert {id(p) for p in gates["params"]} == {id(p) for p in gate_params} and gates["lr"] == 2e-3
    assert not {id(p) for p in gates["params"]} & {id(p) for p in decay["params"] + no_decay["params"]}
    gate = gates["params"][0]
    before = gate.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    gate.grad = torch.full_like(gate, 1e-5)  # a tiny gradient: Adam still steps by about lr
    optimizer.step()
    assert torch.allclose(before - gate.detach(), torch.full_like(gate, 2e-3), rtol=0.01)
    state = optimizer.state_dict()
    fresh = make_optimizer(family, model, cfg)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.gates.state_dict()["state"][0]["exp_avg"], state["gates"]["state"][0]["exp_avg"])
    with pytest.raises(KeyError):
        fresh.load_state_dict(make_optimizer(family, model, same).state_dict())
    with pytest.raises(Exception, match="unknown gate optimizer 'adam'"):
        TrainConfig(gate_optimizer="adam").resolved("fashion-mnist", 28, warm_started=False)


def test_resume_refuses_another_gate_optimizer(tmp_path):
    out = tmp_path / "run.pt"
    base = ["--out", str(out), "--epochs", "2", "--exits", "0", *TINY, "--eval-limit", "0"]
    first = tinydyn("train", *base, "--stop-after", "1", "--gate-optimizer", "adamw")
    assert first.returncode == 0, first.stderr
    assert torch.load(out, weights_only=True)["recipe"]["gate_optimizer"] == "adamw"
    other = tinydyn("train", *base, "--resume", "--gate-optimizer", "sgd")
    assert other.returncode == 2
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds the optimizer state of another recipe" in lines[0], other.stderr
    again = tinydyn("train", *base, "--resume")  # the recorded gate optimizer is taken again
    assert again.returncode == 0, again.stderr
    assert torch.load(out, weights_only=True)["recipe"]["gate_optimizer"] == "adamw"


def test_warmup_then_cosine_values():
    total, warm = 100, 10
    assert lr_factor(0, total, warm) == pytest.approx(0.1)  # (step + 1) / warm-up
    assert lr_factor(4, total, warm) == pytest.approx(0.5)
    assert lr_factor(9, total, warm) == pytest.approx(1.0)
    assert lr_factor(10, total, warm) == pytest.approx(1.0)  # cosine starts at its peak
    assert lr_factor(55, total, warm) == pytest.approx(0.5)  # half way through the decay
    assert lr_factor(85, 110, warm) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    assert lr_factor(100, total, warm) == pytest.approx(0.0)
    assert lr_factor(3, 8, 0) == pytest.approx(0.5 * (1 + math.cos(3 / 8 * math.pi)))
    assert warmup_steps(1.0, 469, 15 * 469) == 469
    assert warmup_steps(1.0, 4, 4) == 0  # at most a fifth of the run


def test_gate_schedule_open_then_ramp():
    assert gate_phase(0, 10, 20) == (True, 0.0) and gate_phase(9, 10, 20) == (True, 0.0)
    assert gate_phase(10, 10, 20) == (False, pytest.approx(1 / 20))
    assert gate_phase(19, 10, 20) == (False, pytest.approx(0.5))
    assert gate_phase(29, 10, 20) == (False, 1.0) and gate_phase(500, 10, 20) == (False, 1.0)
    assert gate_phase(0, 0, 0) == (False, 1.0)


def test_resume_keeps_the_automatic_defaults_the_run_started_with():
    """A run warm-started from a backbone resolved its gate schedule to 1 + 2 epochs; resumed
    (no --backbone-from this time) it keeps them, while options given explicitly win."""
    recorded = {
        "gate_open_epochs": 1.0,
        "l1_ramp_epochs": 2.0,
        "flip": False,
        "lr": "0.1",
        "crop_padding": True,
    }
    cfg = TrainConfig(gate_lr=0.05).defaults_from(recorded).resolved("fashion-mnist", 28, warm_started=False)
    assert (cfg.gate_open_epochs, cfg.l1_ramp_epochs, cfg.flip) == (1.0, 2.0, False)
    assert cfg.lr == 0.1 and cfg.gate_lr == 0.05 and cfg.crop_padding == 3  # ill-typed values ignored
    assert TrainConfig().defaults_from(None).resolved("mnist", 28, warm_started=False).flip is False


# --- losses ---------------------------------------------------------------------------------


def test_distillation_loss_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    t = 2.0

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        p, q = softmax(t_row), softmax(s_row)
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = expected / 2 * t * t  # batch mean, times T²
    assert distillation_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-7)


def test_exits_loss_weights_exits_and_mixes_distillation():
    early, final = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.5, 0.0]])
    labels, teacher = torch.tensor([1]), torch.tensor([[0.0, 3.0, 0.0]])
    ce = [F.cross_entropy(early, labels).item(), F.cross_entropy(final, labels).item()]
    assert exits_loss([early, final], labels, 0.3).item() == pytest.approx(0.3 * ce[0] + ce[1])
    kd = [distillation_loss(early, teacher, 4.0).item(), distillation_loss(final, teacher, 4.0).item()]
    mixed = exits_loss([early, final], labels, 0.3, teacher=teacher, kd_weight=0.25, temperature=4.0)
    assert mixed.item() == pytest.approx(0.3 * (0.75 * ce[0] + 0.25 * kd[0]) + 0.75 * ce[1] + 0.25 * kd[1])
    smooth = exits_loss([final], labels, 1.0, label_smoothing=0.1).item()
    assert smooth == pytest.approx(F.cross_entropy(final, labels, label_smoothing=0.1).item())


# --- the command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_run(tmp_path_factory, fashion_test):
    out = tmp_path_factory.mktemp("recipe") / "static.pt"
    proc = tinydyn(
        "train", "--out", str(out), "--epochs", "1", "--no-gates", "--exits", "", *TINY, "--eval-limit", "100"
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_a_run_records_recipe_command_and_evaluation(static_run):
    out, proc = static_run
    payload = torch.load(out, weights_only=True)
    recipe = payload["recipe"]
    assert recipe["optimizer"] == "sgd" and recipe["lr"] == 0.1 and recipe["momentum"] == 0.9
    assert recipe["flip"] is True and recipe["crop_padding"] == 3  # Fashion-MNIST's defaults, resolved
    assert recipe["epochs"] == 1 and recipe["batch_size"] == 64 and recipe["eval_limit"] == 100
    assert payload["command"].startswith("tinydyn train --out ") and "--no-gates" in payload["command"]
    assert payload["train"]["commands"] == [payload["command"]] and payload["dataset"] == "fashion-mnist"
    evaluation = payload["evaluation"]
    assert evaluation["images"] == 100 and evaluation["dataset"] == "fashion-mnist test split"
    none = evaluation["none"]
    assert 0 <= none["reference_accuracy"] <= 1 and none["agreement"] >= 0.9
    assert none["mean_macs"] == none["static_backbone_macs"]
    assert "integer reference" in proc.stdout and "policy none" in proc.stdout
    assert payload["train"]["history"][0]["images_per_second"] > 0


def test_backbone_start_keeps_gates_open_and_distils(static_run, tmp_path):
    """--backbone-from opens every gate (bias 1, weights ~0) and, by default, holds them open for
    the first epoch; --teacher distils from the static checkpoint."""
    static, _ = static_run
    out = tmp_path / "dynamic.pt"
    proc = tinydyn(
        "train", "--out", str(out), "--epochs", "1", "--backbone-from", str(static), "--teacher", str(static),
        "--exits", "0", "--l1", "5", *TINY, "--eval-limit", "50",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    payload = torch.load(out, weights_only=True)
    state, recipe = payload["state_dict"], payload["recipe"]
    assert recipe["gate_open_epochs"] == 1.0 and recipe["l1_ramp_epochs"] == 2.0
    assert recipe["teacher"] == str(static) and recipe["kd_weight"] == 0.5
    assert "confidence 0.9" in payload["evaluation"]  # the opened gates lower to the integer model
    for key in ("blocks.0.lnet.fc.weight", "blocks.1.cnet.fc.weight"):
        assert float(state[key].abs().max()) < 1e-3, key  # frozen at 1/1000 of their initialisation
    assert torch.all(state["blocks.1.cnet.fc.bias"] == 1.0)
    assert payload["train"]["history"][0]["l1"] == 0.0  # the penalty waits for the gates


def test_resume_continues_the_schedule(tmp_path, fashion_test):
    out = tmp_path / "run.pt"
    base = ["--out", str(out), "--epochs", "2", "--exits", "0", *TINY, "--eval-limit", "0"]
    first = tinydyn("train", *base, "--stop-after", "1")
    assert first.returncode == 0, first.stderr
    payload = torch.load(out, weights_only=True)
    assert payload["train"]["epochs_done"] == 1
    second = tinydyn("train", *base, "--resume")
    assert second.returncode == 0, second.stderr
    history = torch.load(out, weights_only=True)["train"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    # 4 steps per epoch, 8 in all, 1 of warm-up (a fifth of the run): the lr at each epoch's last
    # step follows one schedule over both sessions, not two
    assert history[0]["lr"] == pytest.approx(0.1 * lr_factor(3, 8, 1))
    assert history[1]["lr"] == pytest.approx(0.1 * lr_factor(7, 8, 1))
    assert len(torch.load(out, weights_only=True)["train"]["commands"]) == 2
