"""`tinydyn thresholds`: an S2DNAS checkpoint's per-exit thresholds chosen again on its held-out
training images (reward, or the most accurate within a MAC cap), weights untouched."""

from __future__ import annotations

import sys

import pytest
import torch
from click.testing import CliRunner

from tinydyn.cli import cli
from tinydyn.data import load_dataset
from tinydyn.models.checkpoint import bundled_static_checkpoint, load_model, save_checkpoint
from tinydyn.models.s2dnas_family import hold_out
from tinydyn.models.s2dnas_lower import lower, static_macs
from tinydyn.models.s2dnas_thresholds import choose, ir_probe

from .s2dnas_support import tiny_config, tiny_model


def test_thresholds_within_a_cap_are_chosen_on_the_held_out_images(tmp_path, fashion_test):
    model = tiny_model(tiny_config(fashion_test.classes), fashion_test.images[:32])
    source = save_checkpoint(
        tmp_path / "m.pt",
        model,
        {},
        {"dataset": "fashion-mnist", "train": {"tuned": {"images": 300}, "commands": ["tinydyn train ..."]}},
    )
    out = tmp_path / "capped.pt"
    result = CliRunner().invoke(cli, ["thresholds", str(source), "--max-cost", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    _, held = hold_out(load_dataset("fashion-mnist", "train"), 300)
    pr, mults = ir_probe(lower(model, "check"), held.images)
    expected = choose(pr, held.labels, mults, static_macs(model.config), max_cost=0.5)
    new, payload = load_model(out)
    assert new.config.thresholds == expected.thresholds
    tuned = payload["train"]["tuned"]
    assert tuned["accuracy"] == expected.accuracy and tuned["cost"] == expected.cost
    assert tuned["images"] == 300 and tuned["where"].endswith("the most accurate within cost 0.5")
    assert payload["train"]["commands"][0] == "tinydyn train ..." and len(payload["train"]["commands"]) == 2
    early = sorted(
        (op for op in lower(new).exits() if not op.attrs["final"]), key=lambda op: op.attrs["index"]
    )
    assert [op.attrs["confidence_t16"] for op in early] == [round(t * 65536) for t in expected.thresholds]
    for name, tensor in model.state_dict().items():  # the weights are the checkpoint's
        assert torch.equal(tensor, new.state_dict()[name]), name
    assert f"thresholds {' / '.join(f'{t:g}' for t in expected.thresholds)}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-cost", "0"], "--max-cost 0 is not a share of the static model's cost: give 0 < C <= 1"),
        (["--held-out", "0"], "--held-out 0 holds no image: give a positive number"),
        ([], "is a lcnet model: per-exit thresholds of its own are S2DNAS's"),
    ],
)
def test_thresholds_refuses_in_one_line(args, message, tmp_path, monkeypatch, capsys):
    from tinydyn.cli import main

    out = tmp_path / "x.pt"
    argv = ["tinydyn", "thresholds", str(bundled_static_checkpoint()), "--out", str(out), *args]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()
