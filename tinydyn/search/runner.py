"""One search run: Ray start and stop, the state file it resumes from, the JSON-lines log of every
trained candidate, progress, and the summary and Pareto plot at the end.

Files under ``--out``:

* ``search_state.json``: the options (a resumed run must be the same search), the proposals
  made so far (index, architecture key) and, for PPO, when its policy was last saved;
* ``ppo_policy.zip``: the PPO controller after its last update (stable-baselines3's format);
* ``candidates.jsonl``: one JSON record per trained candidate, appended when it finishes: the
  cache a resumed run serves repeated architectures from (never trained twice);
* ``candidate_NNNN.pt``: each candidate's checkpoint (its tuned thresholds in its config);
* ``summary.json`` and ``pareto.png``: written when the budget is spent.

A run killed mid-way resumes from the last saved PPO update (random search: from the last
finished batch); candidates trained after it are in the log and are served from it when
proposed again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tinydyn.errors import TinydynError
from tinydyn.search.candidate import CandidateJob, evaluate_candidate
from tinydyn.search.space import SearchSpace, settings_key

STATE_FORMAT, STATE_VERSION = "tinydyn-search", 1
METHODS = ("ppo", "random")


class SearchError(TinydynError):
    """A search that cannot start or continue."""


@dataclass
class SearchOptions:
    static: str
    out_dir: str
    method: str = "ppo"
    candidates: int = 24
    workers: int = 2
    ray_address: str | None = None
    groups: int = 8
    stages: int = 3
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    limit: int | None = None  # training images per candidate (None: all but the held-out ones)
    held_out: int = 5000
    epochs: int = 1
    batch_size: int = 128
    lr: float | None = (
        0.02  # a short fine-tune of inherited weights: far below the 0.1 of training from scratch
    )
    seed: int = 0
    omega: float = -0.06
    cost: str = "macs"  # the reward's COST: executed MACs, modelled energy or QEMU cycles (s2dnas_thresholds)
    steps_per_update: int = 4  # PPO: candidates per environment between updates
    ppo_lr: float = 3e-3

    def same_search(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        # how it runs, not what it searches; a larger budget extends a finished search
        keep = {"out_dir", "workers", "ray_address", "candidates"}
        return {k: v for k, v in asdict(self).items() if k not in keep}


class SearchRun:
    """State, log, cache and the Ray pool of one search."""

    def __init__(self, options: SearchOptions, space: SearchSpace, resume: bool) -> None:
        self.options, self.space = options, space
        self.out = Path(options.out_dir)
        self.state_path = self.out / "search_state.json"
        self.log_path = self.out / "candidates.jsonl"
        self.policy_path = self.out / "ppo_policy.zip"
        self.cache: dict[str, dict[str, Any]] = {}
        self.proposals: list[dict[str, Any]] = []
        self.policy_saved_at = 0
        if self.state_path.exists():
            if not resume:
                raise SearchError(
                    f"{self.out} already holds a search: pass --resume to continue it, or another --out"
                )
            self._load()
        elif resume and self.log_path.exists():
            raise SearchError(f"{self.state_path} is missing: the search in {self.out} cannot be resumed")
        self.out.mkdir(parents=True, exist_ok=True)
        self.bar: Any = None
        self._remote: Any = None

    # --- state ------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            raise SearchError(
                f"{self.state_path} is not a search state file: remove it or pick another --out"
            ) from None
        if (
            not isinstance(state, dict)
            or state.get("format") != STATE_FORMAT
            or state.get("version") != STATE_VERSION
        ):
            raise SearchError(f"{self.state_path} is not a tinydyn search state (version {STATE_VERSION})")
        saved = state.get("search")
        if isinstance(saved, dict):
            saved = {"cost": "macs", **saved}  # states written before --cost existed searched MACs
        if saved != self.options.same_search():
            raise SearchError(
                f"{self.out} holds another search (different options): resume it with the options it "
                "started with, or give another --out"
            )
        proposals = state.get("proposals")
        if not isinstance(proposals, list) or not all(
            isinstance(p, dict) and isinstance(p.get("key"), str) for p in proposals
        ):
            raise SearchError(
                f"{self.state_path} has no valid proposal list: remove the directory and start again"
            )
        self.proposals = proposals
        saved = state.get("policy_saved_at", 0)
        self.policy_saved_at = saved if isinstance(saved, int) and 0 <= saved <= len(proposals) else 0
        if self.log_path.exists():
            for line in self.log_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill mid-write: that candidate is trained again
                if isinstance(record, dict) and isinstance(record.get("key"), str) and "reward" in record:
                    self.cache[record["key"]] = record

    def save_state(self) -> None:
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "search": self.options.same_search(),
            "proposals": self.proposals,
            "policy_saved_at": self.policy_saved_at,
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    # --- evaluation ---------------------------------------------------------------------
    def job(self, index: int, settings: dict[str, list]) -> CandidateJob:
        o = self.options
        return CandidateJob(
            index=index,
            method=o.method,
            settings=settings,
            static=o.static,
            groups=o.groups,
            stages=o.stages,
            dataset=o.dataset,
            data_root=o.data_root,
            limit=o.limit,
            held_out=o.held_out,
            epochs=o.epochs,
            batch_size=o.batch_size,
            lr=o.lr,
            seed=o.seed,
            omega=o.omega,
            out_dir=str(self.out),
            cost=o.cost,
        )

    def evaluate(self, actions: list[list[int]]) -> list[float]:
        """Propose ``actions``: train those not in the cache in parallel, log them; rewards."""
        import ray

        settings = [self.space.decode(a) for a in actions]
        keys = [settings_key(s) for s in settings]
        start = len(self.proposals)
        pending: dict[Any, str] = {}
        for offset, (key, s) in enumerate(zip(keys, settings, strict=True)):
            if key not in self.cache and key not in pending.values():
                pending[self._remote.remote(self.job(start + offset, s))] = key
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                pending.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker's failure ends the search, said why
                    cause = (
                        str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
                    )
                    raise SearchError(f"a candidate failed to train: {cause}") from None
                self.cache[record["key"]] = record
                with self.log_path.open("a") as log:
                    log.write(json.dumps(record) + "\n")
        rewards = []
        for offset, key in enumerate(keys):
            self.proposals.append({"index": start + offset, "key": key, "method": self.options.method})
            rewards.append(float(self.cache[key]["reward"]))
            self._progress()
        return rewards

    def _progress(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        best = self.best()
        if best is not None:
            self.bar.set_postfix(
                best=f"{best['reward']:.4f}", acc=f"{best['accuracy']:.3f}", cost=f"{best['cost']:.2f}"
            )

    def best(self) -> dict[str, Any] | None:
        seen = [self.cache[p["key"]] for p in self.proposals if p["key"] in self.cache]
        return max(seen, key=lambda r: r["reward"]) if seen else None

    # --- the two methods ----------------------------------------------------------------
    def run_random(self) -> None:
        rng = np.random.default_rng(self.options.seed)
        for _ in range(len(self.proposals)):  # the draws already made (deterministic by seed)
            self.space.sample(rng)
        while len(self.proposals) < self.options.candidates:
            batch = min(self.options.workers, self.options.candidates - len(self.proposals))
            self.evaluate([self.space.sample(rng) for _ in range(batch)])
            self.save_state()

    def run_ppo(self) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        from tinydyn.search.controller import CandidateVecEnv, make_ppo, rollout_shape

        envs, steps = rollout_shape(
            self.options.candidates, self.options.workers, self.options.steps_per_update
        )
        env = CandidateVecEnv(self.space, envs, self.evaluate)
        # proposals made after the last saved update are made again by the restored policy
        # (served from the cache where they repeat an architecture)
        self.proposals = self.proposals[: self.policy_saved_at]
        if self.policy_saved_at and self.policy_path.exists():
            from stable_baselines3 import PPO

            model = PPO.load(self.policy_path, env=env, device="cpu")
            # load re-seeds with the run's seed: draw the continuation from another stream
            model.set_random_seed(self.options.seed + len(self.proposals))
        else:
            self.proposals, self.policy_saved_at = [], 0
            model = make_ppo(env, steps, self.options.seed, self.options.ppo_lr)
        run = self

        class SaveEachUpdate(BaseCallback):
            """PPO updates right after each rollout: saving when the next rollout starts (and when
            learning ends) saves the policy after every update."""

            def _on_step(self) -> bool:
                return True

            def _on_rollout_start(self) -> None:
                run.checkpoint_policy(self.model)

            def _on_training_end(self) -> None:
                run.checkpoint_policy(self.model)

        remaining = self.options.candidates - len(self.proposals)
        if remaining > 0:
            model.learn(remaining, callback=SaveEachUpdate(), reset_num_timesteps=False)

    def checkpoint_policy(self, model: Any) -> None:
        model.save(self.policy_path)
        self.policy_saved_at = len(self.proposals)
        self.save_state()

    # --- the whole run -------------------------------------------------------------------
    def run(self, progress: bool = True) -> dict[str, Any]:
        import ray

        if len(self.proposals) >= self.options.candidates:  # a finished search, resumed: report it
            return self.finish()
        if self.options.ray_address:
            ray.init(address=self.options.ray_address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=self.options.workers, include_dashboard=False, log_to_driver=False)
        try:
            self._remote = ray.remote(num_cpus=1)(evaluate_candidate)
            self.bar = tqdm(
                total=self.options.candidates,
                initial=0,
                desc=f"{self.options.method} search",
                unit="candidate",
                disable=not progress,
            )
            if self.options.method == "ppo":
                self.run_ppo()
            else:
                self.run_random()
            self.save_state()
        finally:
            if self.bar is not None:
                self.bar.close()
            ray.shutdown()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        from tinydyn.search.pareto import pareto_front, plot

        records = [self.cache[p["key"]] for p in self.proposals if p["key"] in self.cache]
        best = self.best()
        curve, top = [], float("-inf")
        for record in records:
            top = max(top, record["reward"])
            curve.append(top)
        summary = {
            "method": self.options.method,
            "candidates": len(self.proposals),
            "trained": len({p["key"] for p in self.proposals}),
            "best": best,
            "best_reward_curve": curve,  # best reward after each candidate evaluated
            "pareto": pareto_front(list({r["key"]: r for r in records}.values())),
            "options": asdict(self.options),
        }
        if best is not None:
            job = self.job(best["index"], {"splits": best["splits"], "concat": best["concat"]})
            summary["final_training_command"] = job.train_command(
                epochs=15, out=str(self.out / "s2dnas_searched.pt")
            )
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        plot(
            records,
            self.out / "pareto.png",
            f"S2DNAS {self.options.method} search, {len(records)} candidates",
        )
        return summary


def default_workers() -> int:
    """As many candidates at once as cores (each trains on one thread)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def run_search(options: SearchOptions, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    from tinydyn.models.s2dnas_family import static_architecture

    if options.method not in METHODS:
        raise SearchError(f"unknown search method '{options.method}': use ppo or random")
    if options.candidates < 1 or options.workers < 1 or options.epochs < 1:
        raise SearchError("--candidates, --workers and --epochs must be at least 1")
    if options.stages < 2:
        raise SearchError("a search needs at least 2 stages (--stages)")
    options = replace(
        options,
        static=str(Path(options.static).resolve()),
        out_dir=str(Path(options.out_dir).resolve()),
        data_root=str(Path(options.data_root).resolve()) if options.data_root else None,
    )
    arch = static_architecture(options.static)  # checks the file before any worker starts
    from tinydyn.models.s2dnas import S2DNASConfig

    S2DNASConfig(  # the settings' bounds (groups dividing every width, ...) before any worker starts
        backbone=arch["backbone"],
        stem_width=arch["stem_width"],
        widths=arch["widths"],
        blocks=arch["blocks"],
        groups=options.groups,
        stages=options.stages,
    )
    space = SearchSpace(len(arch["widths"]), options.groups, options.stages)
    return SearchRun(options, space, resume).run(progress)
