"""tinydyn search: the action space, PPO's vector environment, and a tiny real search through Ray
and stable-baselines3 PPO (2 candidates, 4 batches each), resumed, and the random baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tinydyn.cli import cli
from tinydyn.models.checkpoint import bundled_static_checkpoint, load_model
from tinydyn.models.s2dnas import S2DNASConfig
from tinydyn.search.controller import CandidateVecEnv, rollout_shape
from tinydyn.search.pareto import pareto_front
from tinydyn.search.space import SearchSpace, cli_settings, settings_key

from .conftest import require_tool


def test_space_decodes_every_action_to_a_valid_architecture():
    space = SearchSpace(resolutions=3, groups=8, stages=3)
    assert space.nvec() == [21, 2, 2, 2] * 3  # C(7, 2) split tuples, 3 concat indicators
    rng = np.random.default_rng(0)
    for _ in range(50):
        action = space.sample(rng)
        settings = space.decode(action)
        assert space.encode(settings) == action
        S2DNASConfig(**settings)  # every action is a buildable config
    settings = space.decode([0, 1, 0, 1, 20, 0, 0, 0, 5, 1, 1, 1])
    assert settings["splits"] == [[1, 2], [6, 7], [1, 7]]
    assert settings_key(settings) == "1,2:101|6,7:000|1,7:111"
    assert cli_settings(settings) == ("1,2/6,7/1,7", "101/000/111")


def test_rollouts_divide_the_budget():
    assert rollout_shape(24, 2, 4) == (2, 4)
    assert rollout_shape(3, 2, 4) == (1, 3)
    assert rollout_shape(2, 2, 4) == (2, 1)


def test_vector_env_scores_a_whole_step_at_once():
    seen = []

    def evaluate(actions):
        seen.append(actions)
        return [float(a[0]) for a in actions]

    env = CandidateVecEnv(SearchSpace(2, 4, 2), 2, evaluate)
    assert env.reset().shape == (2, 1)
    env.step_async(np.array([[1, 0, 2, 1], [0, 1, 1, 0]]))
    obs, rewards, dones, infos = env.step_wait()
    assert seen == [[[1, 0, 2, 1], [0, 1, 1, 0]]] and rewards.tolist() == [1.0, 0.0]
    assert dones.all() and "terminal_observation" in infos[0]


def test_pareto_front_keeps_the_undominated():
    rows = [
        {"key": "a", "accuracy": 0.9, "cost": 0.5, "reward": 0},
        {"key": "b", "accuracy": 0.8, "cost": 0.6, "reward": 0},  # dominated by a
        {"key": "c", "accuracy": 0.95, "cost": 0.9, "reward": 0},
        {"key": "d", "accuracy": 0.7, "cost": 0.2, "reward": 0},
    ]
    assert [r["key"] for r in pareto_front(rows)] == ["d", "a", "c"]


@pytest.mark.usefixtures("fashion_test")
def test_a_tiny_search_runs_through_ray_and_ppo_and_resumes(tmp_path):
    runner = CliRunner()
    out = tmp_path / "search"
    args = ["search", str(bundled_static_checkpoint()), "--out", str(out), "--workers", "2"]
    args += ["--limit", "256", "--batch-size", "64", "--held-out", "200", "--candidates", "2"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(records) >= 1 and all(r["method"] == "ppo" for r in records)
    for r in records:
        assert r["train_images"] == 256 and r["held_out_images"] == 200
        assert r["reward"] == pytest.approx(r["accuracy"] * r["cost"] ** -0.06)
        assert 0 < r["cost"] < 1  # dynamic inference: fewer MACs than the static model
        model, payload = load_model(r["checkpoint"])  # each candidate is a real S2DNAS checkpoint
        assert list(model.config.thresholds) == r["thresholds"] == payload["train"]["tuned"]["thresholds"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["candidates"] == 2 and len(summary["best_reward_curve"]) == 2
    assert "--splits" in summary["final_training_command"]
    assert (out / "pareto.png").stat().st_size > 1000 and (out / "ppo_policy.zip").is_file()
    assert "best reward" in result.output
    # the same search again: refused without --resume; with it, nothing is left to train
    again = runner.invoke(cli, args)
    assert again.exit_code != 0 and "already holds a search" in str(again.exception)
    other = runner.invoke(cli, [*args, "--resume", "--omega", "-0.1"])
    assert other.exit_code != 0 and "holds another search" in str(other.exception)
    done = runner.invoke(cli, [*args, "--resume"])
    assert done.exit_code == 0, done.output
    assert len((out / "candidates.jsonl").read_text().splitlines()) == len(records)  # nothing retrained


def test_random_baseline_same_budget_in_board_cycles(tmp_path):
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    runner = CliRunner()
    out = tmp_path / "random"
    args = [
        "search",
        str(bundled_static_checkpoint()),
        "--out",
        str(out),
        "--workers",
        "2",
        "--method",
        "random",
    ]
    args += ["--limit", "64", "--batch-size", "64", "--held-out", "50", "--candidates", "2", "--seed", "3"]
    # COST in cycles on the QEMU board: each candidate is built and profiled (tests/test_s2dnas_cycles.py)
    args += ["--cost", "cycles"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "random" and summary["candidates"] == 2
    assert "--cost profile" in summary["final_training_command"]
    records = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    for r in records:
        assert r["cost_unit"] == "cycles" and r["mean_cost"] > 0
        assert r["reward"] == pytest.approx(r["accuracy"] * r["cost"] ** -0.06)
    space = SearchSpace(3, 8, 3)
    rng = np.random.default_rng(3)
    expected = [settings_key(space.decode(space.sample(rng))) for _ in range(2)]
    state = json.loads((out / "search_state.json").read_text())
    assert [p["key"] for p in state["proposals"]] == expected  # seeded: reproducible and resumable


def test_search_refuses_a_dynamic_checkpoint(tmp_path):
    from tinydyn.models.checkpoint import bundled_checkpoint

    result = CliRunner().invoke(cli, ["search", str(bundled_checkpoint()), "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "is a dynamic LC-Net (gates or early exits)" in str(result.exception)
