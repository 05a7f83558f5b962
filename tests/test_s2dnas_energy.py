"""S2DNAS with COST in modelled energy (beyond the paper): the thresholds' reward counts the
budget cost model's picojoules up to each image's exit, relative to the static backbone's;
`tinydyn train --cost energy` and `tinydyn search --cost energy` use it (cycles:
tests/test_s2dnas_cycles.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tinydyn.cli import cli
from tinydyn.cost.budget import budget_costs
from tinydyn.data import Dataset
from tinydyn.models.checkpoint import load_model, save_checkpoint
from tinydyn.models.s2dnas_lower import lower, static_macs
from tinydyn.models.s2dnas_thresholds import ENERGY_BOARD, static_energy_pj, tune_thresholds
from tinydyn.quantize.executor import trace
from tinydyn.quantize.policy import ExitPolicy
from tinydyn.search.candidate import CandidateJob

from .s2dnas_support import tiny_config, tiny_model


def held_out(data: Dataset, n: int) -> Dataset:
    return Dataset(data.images[:n], data.labels[:n], data.classes, data.name, data.split)


def test_energy_thresholds_count_the_cost_model_up_to_each_exit(fashion_test):
    """The chosen thresholds' mean cost is exactly what the reference's cost meter charges the
    held-out images under them, divided by the static backbone's energy."""
    cfg = tiny_config(fashion_test.classes)
    model = tiny_model(cfg, fashion_test.images[:32])
    held = held_out(fashion_test, 200)
    choice = tune_thresholds(model, held, unit="energy")
    assert choice.unit == "energy" and model.config.thresholds == choice.thresholds
    ir = lower(model, "check")
    run = trace(ir, held.images, ExitPolicy("confidence", 0.9, costs=budget_costs(ir, ENERGY_BOARD)))
    final = max(int(op.attrs["index"]) for op in ir.exits())
    per_image_pj = run.exit_costs[final][0]  # every image's total when the last ones finish
    assert choice.mean_cost == pytest.approx(float(per_image_pj.mean()), rel=1e-12)
    assert choice.accuracy == float((run.results.predictions == held.labels).mean())
    assert choice.mean_macs == float(run.results.macs.mean())
    static_pj = static_energy_pj(cfg)
    assert choice.cost == pytest.approx(choice.mean_cost / static_pj, rel=1e-12)
    # the static backbone computes every connection: dearer than even the whole multi-stage model
    assert per_image_pj.max() < static_pj
    # a MAC-cost tuning of the same model reports MACs, relative to the static MACs
    by_macs = tune_thresholds(model, held)
    assert by_macs.unit == "macs" and by_macs.cost == pytest.approx(by_macs.mean_macs / static_macs(cfg))


def test_static_energy_depends_on_the_architecture_only(fashion_test):
    cfg = tiny_config(fashion_test.classes, stages=1, splits=(), concat=())
    other_weights = tiny_model(cfg, fashion_test.images[:32], seed=3)
    ir = lower(other_weights, "static")
    run = trace(ir, fashion_test.images[:5], ExitPolicy("none", costs=budget_costs(ir, ENERGY_BOARD)))
    assert static_energy_pj(tiny_config(fashion_test.classes)) == int(run.exit_costs[0][0][0])
    assert np.all(run.exit_costs[0][0] == run.exit_costs[0][0][0])  # no gates: the same for every image


def run_main(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[int, str]:
    """`tinydyn ARGV` as the console script runs it: (exit status, stderr)."""
    from tinydyn.cli import main

    monkeypatch.setattr(sys, "argv", ["tinydyn", *argv])
    with pytest.raises(SystemExit) as done:
        main()
    return int(done.value.code or 0), capsys.readouterr().err


def test_train_cost_energy_tunes_in_energy_and_refuses_other_units(
    tmp_path, fashion_test, monkeypatch, capsys
):
    static = tiny_model(
        tiny_config(fashion_test.classes, "vgg", stages=1, splits=(), concat=()), fashion_test.images[:32]
    )
    source = save_checkpoint(tmp_path / "static.pt", static, {})
    base = ["train", "--model", "s2dnas", "--backbone-from", str(source), "--groups", "4", "--stages", "2"]
    small = ["--held-out", "300", "--limit", "128", "--epochs", "1", "--threads", "1", "--eval-limit", "0"]
    out = tmp_path / "energy.pt"
    result = CliRunner().invoke(cli, [*base, *small, "--cost", "energy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, payload = load_model(out)
    tuned = payload["train"]["tuned"]
    assert tuned["unit"] == "energy" and tuned["mean_cost"] > 0
    assert tuned["cost"] == pytest.approx(tuned["mean_cost"] / static_energy_pj(model.config))
    for extra, message in [
        (["--target-skip", "0.5"], "error: --target-skip is not an S2DNAS option: drop it"),
        (
            ["--cost", "profile", "--cost-table", str(tmp_path / "t.json")],
            "error: --cost-table is not an S2DNAS option: drop it",
        ),
    ]:
        bad = tmp_path / "bad.pt"
        code, err = run_main([*base, *small, *extra, "--out", str(bad)], monkeypatch, capsys)
        assert code == 2 and err.strip() == message, err
        assert not bad.exists()


@pytest.mark.parametrize(("cost", "option"), [("energy", "--cost energy"), ("cycles", "--cost profile")])
def test_search_cost_reaches_the_candidates_training(cost, option, tmp_path):
    """A search's COST unit reaches every candidate's training and the printed final command, in
    tinydyn train's name for it (the cycles COST is its --cost profile)."""
    job = CandidateJob(
        index=3,
        method="random",
        settings={"splits": [[1, 2], [1, 3]], "concat": [[True, False, True], [True, True, True]]},
        static="static.pt",
        groups=4,
        stages=3,
        dataset="fashion-mnist",
        data_root=None,
        limit=None,
        held_out=5000,
        epochs=1,
        batch_size=128,
        lr=None,
        seed=0,
        omega=-0.06,
        out_dir=str(tmp_path),
        cost=cost,
    )
    assert option in job.train_command() and option in job.train_command(epochs=15)
