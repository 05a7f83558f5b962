"""DDI's torch models: config validation, the branch-position rule, MGL2S's coarse-to-fine
gating and straight-through gradients, DenseNet's skip rule, checkpoints recording the family.
``make_ddi`` (a small real DDI network whose gates really decide) is shared by the other
tests/test_ddi_*.py files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tinydyn.models import ddi
from tinydyn.models.ddi import DDIConfig, DDINet, branch_points, branch_positions
from tinydyn.models.lcnet import ConfigError
from tinydyn.models.registry import get_family
from tinydyn.train.loop import to_float

CLASSES = tuple(str(i) for i in range(10))


def small_config(kind: str = "resnet", **over) -> DDIConfig:
    if kind == "resnet":
        base = dict(widths=(8, 12, 16), blocks=(2, 2, 2), stem_width=8)
    else:
        base = dict(backbone="densenet", widths=(), growth_rate=4, stem_width=8, blocks=(3, 3, 2))
    return DDIConfig(**{**base, **over})


def make_ddi(config: DDIConfig, images: np.ndarray, seed: int = 0) -> DDINet:
    """A DDI network with Brevitas scales initialised on ``images`` and gates that decide: BN
    parameters randomised, gate weights scaled up so their logits spread well beyond the
    quantisation noise, biases centred so about half the gated units skip and a third of the
    channels are off (an untrained gate is open for every input)."""
    warnings.filterwarnings("ignore", module="brevitas")
    torch.manual_seed(seed)
    model = DDINet(config)
    gen = torch.Generator().manual_seed(seed)
    x = to_float(images[:64])
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.uniform_(-0.3, 0.3, generator=gen)
        model.train()
        for _ in range(3):
            model(x, with_branches=True)
        model.eval()
        if not config.gates:
            return model
        for unit in model.units:
            unit.channel_gate.fc.weight.mul_(40.0)
            unit.channel_gate.fc.bias.zero_()
            if unit.layer_gated:
                unit.layer_gate.proj.weight.mul_(8.0)
        model.lstm.sal.weight.mul_(6.0)
        logits: list[torch.Tensor] = []
        original = ddi.hard_gate

        def spy(logit: torch.Tensor) -> torch.Tensor:
            logits.append(logit)
            return original(logit)

        ddi.hard_gate = spy
        try:
            model(x)
        finally:
            ddi.hard_gate = original
        layer = [lg for lg in logits if lg.dim() == 1]
        channel = [lg for lg in logits if lg.dim() == 2]
        model.lstm.sal.bias.sub_(float(torch.cat(layer).median()) if layer else 0.0)
        for unit, lg in zip(model.units, channel, strict=True):
            unit.channel_gate.fc.bias.sub_(torch.quantile(lg, 0.35, dim=0))
    return model


# ----------------------------------------------------------------------------- config
def test_branch_rule_matches_the_paper_and_states_short_stages():
    assert branch_positions(8) == [1, 5]  # Fig. 5: the 2nd and 6th of 8 layers
    assert branch_positions(4) == [0, 2]
    assert branch_positions(1) == [0]  # one unit: one branch, after it
    assert branch_positions(2) == [0, 1] and branch_positions(3) == [0, 1]
    # the last unit of the network feeds the final classifier, never a branch
    assert branch_points((3, 3, 3)) == [0, 1, 3, 4, 6, 7]
    assert branch_points((1, 1, 1)) == [0, 1]
    assert branch_points((8, 8, 8)) == [1, 5, 9, 13, 17, 21]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"backbone": "vgg"}, "backbone must be one of resnet, densenet, got 'vgg'"),
        ({"backbone": 3}, "backbone must be one of resnet, densenet, got 3"),
        ({"widths": (8, 8)}, "widths and blocks need one entry per stage"),
        ({"growth_rate": 12}, "growth_rate is a DenseNet setting"),
        ({"blocks": (2, 0, 2)}, "blocks[1] 0 is outside 1..16"),
        ({"lstm_hidden": 1000}, "lstm_hidden 1000 is outside 1..64"),
        ({"gates": 1}, "gates must be true or false, got 1"),
        ({"widths": (1024, 1024, 1024), "blocks": (16, 16, 16)}, "more than tinydyn's cap"),
        ({"input_size": 8, "blocks": (1, 1, 1, 1)}, "widths and blocks need one entry per stage"),
        ({"channel_gate": "heavy"}, "channel_gate must be one of full, light, got 'heavy'"),
    ],
)
def test_bad_resnet_configs_are_refused_before_building(change, message):
    with pytest.raises(ConfigError) as err:
        small_config(**change)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"growth_rate": 0}, "a DenseNet needs a growth rate"),
        ({"widths": (8,)}, "a DenseNet's widths follow from its growth rate"),
        (
            {"growth_rate": 64, "blocks": (16, 16, 16)},
            "the dense blocks would reach 1794 channels, more than 1024",
        ),
    ],
)
def test_bad_densenet_configs_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        small_config("densenet", **change)


def test_config_from_json_needs_every_field_and_no_other():
    data = small_config().to_json()
    assert DDIConfig.from_json(data) == small_config()
    with pytest.raises(ConfigError, match="model config lacks"):
        DDIConfig.from_json({k: v for k, v in data.items() if k != "growth_rate"})
    with pytest.raises(ConfigError, match="unknown model config keys"):
        DDIConfig.from_json({**data, "exits": [0]})
    with pytest.raises(ConfigError, match="not a mapping"):
        DDIConfig.from_json([1, 2])


def test_each_backbone_defaults_to_its_papers_channel_gate_and_old_checkpoints_load():
    """Fig. 2(b)'s full gate for a ResNet, Fig. 4's light one for a DenseNet; a checkpoint
    written before ``channel_gate`` existed has the gate its backbone had then."""
    for kind, gate in (("resnet", "full"), ("densenet", "light")):
        data = small_config(kind).to_json()
        assert data["channel_gate"] == gate
        del data["channel_gate"]
        assert DDIConfig.from_json(data).channel_gate == gate
    light = small_config("resnet", channel_gate="light")
    assert DDIConfig.from_json(light.to_json()) == light
    assert light.channel_gate == "light" and DDINet(light).units[0].channel_gate.light


def test_family_builds_configs_from_cli_options():
    family = get_family("ddi")
    common = dict(in_channels=1, input_size=28, num_classes=10, classes=CLASSES, blocks=(2, 2, 2))
    dense = family.config_from_options(
        **common, backbone="densenet", widths=(16, 32, 64), stem_width=16, exits=(0, 1), gates=True
    )
    assert (dense.widths, dense.growth_rate, dense.stem_width, dense.branches) == ((), 12, 24, True)
    static = family.config_from_options(**common, widths=(8, 8, 8), stem_width=8, gates=False)
    assert (static.backbone, static.gates, static.branches) == ("resnet", False, False)


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("backbone", ["resnet", "densenet"])
def test_forward_gives_branches_gates_and_hard_decisions(backbone):
    torch.manual_seed(0)
    model = DDINet(small_config(backbone))
    x = torch.rand(4, 1, 28, 28)
    model.train()
    out = model(x)
    assert len(out.logits) == 1  # training without branches: the final classifier only
    out = model(x, with_branches=True)
    points = branch_points(model.config.blocks)
    assert len(out.logits) == len(points) + 1 and all(lg.shape == (4, 10) for lg in out.logits)
    # ResNet: every block has both gates; DenseNet: the first layer of each dense block no layer gate
    has_layer = [g is not None for g in out.layer_gates]
    if backbone == "resnet":
        assert all(has_layer)
    else:
        assert has_layer == [False, True, True, False, True, True, False, True]
    for g, mask in zip(out.layer_gates, out.channel_masks, strict=True):
        for t in (g, mask):
            if t is not None:
                assert set(torch.unique(t).tolist()) <= {0.0, 1.0}


def test_gates_are_straight_through():
    torch.manual_seed(0)
    model = DDINet(small_config())
    model.train()
    out = model(torch.rand(4, 1, 28, 28))
    (sum(g.sum() for g in out.layer_gates) + sum(m.sum() for m in out.channel_masks)).backward()
    assert model.lstm.sal.bias.grad is not None and float(model.lstm.sal.bias.grad.abs()) > 0
    assert float(model.units[0].channel_gate.fc.bias.grad.abs().sum()) > 0
    assert float(model.units[2].layer_gate.proj.weight.grad.abs().sum()) > 0


def test_a_skipped_resnet_block_outputs_its_shortcut(fashion_test):
    model = make_ddi(small_config(), fashion_test.images)
    unit = model.units[1]  # identity shortcut
    x = model.stem_relu(model.stem_bn(model.stem(to_float(fashion_test.images[:8]))))
    x = model.units[0](x, None, None)
    with torch.no_grad():
        skipped = unit(x, torch.zeros(8), torch.ones(8, 8))
    assert torch.equal(skipped, unit.out_relu(x))


def test_a_skipped_dense_layer_repeats_the_previous_new_maps(fashion_test):
    model = make_ddi(small_config("densenet"), fashion_test.images)
    with torch.no_grad():
        model.lstm.sal.bias.fill_(-100.0)  # every layer gate closed
        out = model(to_float(fashion_test.images[:4]))
        assert all(float(g.sum()) == 0 for g in out.layer_gates if g is not None)
        # features after the first dense block: stem (8) + layer 0's maps, then twice the same maps
        feats = []
        hook = model.units[2].register_forward_hook(lambda m, i, o: feats.append(i[0]))
        model(to_float(fashion_test.images[:4]))
        hook.remove()
    x = feats[0]  # the input of layer 2 = stem + new0 + (skipped layer 1: new0 again)
    assert torch.equal(x[:, 8:12], x[:, 12:16])


def test_checkpoint_records_the_family_and_loads_back(tmp_path, fashion_test):
    from tinydyn.models.checkpoint import load_model, read_checkpoint, save_checkpoint

    model = make_ddi(small_config("densenet"), fashion_test.images)
    path = save_checkpoint(tmp_path / "ddi.pt", model, {}, {})
    assert read_checkpoint(path)["family"] == "ddi"
    loaded, _ = load_model(path)
    x = to_float(fashion_test.images[:16])
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.equal(p, q) for p, q in zip(a.logits, b.logits, strict=True))
