"""Training and scoring one candidate architecture (runs in a Ray worker, or in-process).

A candidate is the S2DNAS transformation of the static checkpoint with the candidate's split
points and concat indicators: its weights are inherited, it is trained for a few epochs with
Σ α_i·CE over the stages by the same loop as ``tinydyn train --model s2dnas --backbone-from``
(on the training images minus the held-out ones), then its per-stage thresholds are chosen on
the held-out images to maximise ACC x COST^omega (integer reference), which is its reward."""

from __future__ import annotations

import os
import shlex
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tinydyn.search.space import cli_settings, settings_key


@dataclass
class CandidateJob:
    index: int
    method: str  # "ppo" or "random"
    settings: dict[str, list]  # {"splits": [...], "concat": [...]}, one list per resolution
    static: str  # the static checkpoint the candidate is transformed from
    groups: int
    stages: int
    dataset: str
    data_root: str | None
    limit: int | None  # training images (after the held-out ones are taken away); None: all
    held_out: int
    epochs: int
    batch_size: int
    lr: float | None
    seed: int
    omega: float
    out_dir: str  # candidate checkpoints are written here
    cost: str = "macs"  # the reward's COST (tinydyn.models.s2dnas_thresholds.COST_UNITS)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def train_command(self, epochs: int | None = None, out: str | None = None) -> str:
        """The `tinydyn train` command that trains this architecture (the search's own inner
        training with the defaults; a longer final training with ``epochs``)."""
        splits, concat = cli_settings(self.settings)
        args = ["tinydyn", "train", "--model", "s2dnas", "--backbone-from", self.static]
        args += [
            "--groups",
            str(self.groups),
            "--stages",
            str(self.stages),
            "--splits",
            splits,
            "--concat",
            concat,
        ]
        args += ["--held-out", str(self.held_out), "--epochs", str(epochs or self.epochs)]
        if self.cost != "macs":  # tinydyn train names the cycles COST --cost profile
            args += ["--cost", "profile" if self.cost == "cycles" else self.cost]
        if self.dataset != "fashion-mnist":
            args += ["--dataset", self.dataset]
        if epochs is None:
            if self.limit:
                args += ["--limit", str(self.limit)]
            args += ["--batch-size", str(self.batch_size), "--seed", str(self.seed)]
            if self.lr is not None:
                args += ["--lr", str(self.lr)]
        args += ["--out", out or f"{self.out_dir}/candidate_{self.index:04d}.pt"]
        return shlex.join(args)


_DATA: dict[tuple[str, str | None], Any] = {}  # one load per worker process


def _train_images(job: CandidateJob) -> Any:
    from tinydyn.data import load_dataset

    key = (job.dataset, job.data_root)
    if key not in _DATA:
        _DATA[key] = load_dataset(job.dataset, "train", Path(job.data_root) if job.data_root else None)
    return _DATA[key]


def evaluate_candidate(job: CandidateJob) -> dict[str, Any]:
    """Train and score ``job``'s architecture; the JSON record the search logs."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from tinydyn.models.checkpoint import load_model, save_checkpoint
    from tinydyn.models.registry import get_family
    from tinydyn.models.s2dnas_family import hold_out
    from tinydyn.models.s2dnas_lower import static_macs
    from tinydyn.models.s2dnas_thresholds import tune_thresholds
    from tinydyn.train.loop import TrainConfig, train

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # one core per candidate: Ray runs as many as there are cores
    started = time.perf_counter()
    data = _train_images(job)
    train_part, held = hold_out(data, job.held_out)
    if held is None:
        raise ValueError(f"no images held out of {len(data)}: give a larger training set or --held-out")
    if job.limit:
        train_part = train_part.subset(job.limit)
    family = get_family("s2dnas")
    c, h, _ = data.input_shape
    config = family.config_from_options(
        in_channels=c,
        input_size=h,
        num_classes=data.num_classes,
        classes=data.classes,
        backbone_from=job.static,
        s2d={"groups": job.groups, "stages": job.stages, **job.settings},
    )
    out = Path(job.out_dir) / f"candidate_{job.index:04d}.pt"
    recipe = TrainConfig(
        epochs=job.epochs, batch_size=job.batch_size, lr=job.lr, seed=job.seed, threads=1, eval_limit=0
    )
    train(
        train_part,
        out,
        config,
        recipe,
        backbone_from=Path(job.static),
        family_name="s2dnas",
        progress=False,
        command=job.train_command(),
    )
    trained = time.perf_counter()
    model, payload = load_model(out)
    choice = tune_thresholds(model, held, job.omega, unit=job.cost)
    info = dict(payload.get("train", {}))
    info["tuned"] = choice.to_json()
    extra = {k: v for k, v in payload.items() if k in ("dataset", "recipe", "command")}
    save_checkpoint(out, model, payload.get("metrics", {}), {**extra, "train": info})
    out.with_name(out.name + ".resume").unlink(missing_ok=True)  # the optimizer state: not needed
    return {
        "index": job.index,
        "method": job.method,
        "key": settings_key(job.settings),
        **job.settings,
        "reward": choice.reward,
        "accuracy": choice.accuracy,
        "cost": choice.cost,
        "cost_unit": choice.unit,
        "mean_cost": choice.mean_cost,
        "mean_macs": choice.mean_macs,
        "static_macs": static_macs(model.config),
        "thresholds": list(choice.thresholds),
        "exit_fractions": choice.exit_fractions,
        "stage_accuracy": choice.stage_accuracy,
        "held_out_images": choice.images,
        "train_images": len(train_part),
        "train_seconds": round(trained - started, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "checkpoint": str(out),
        "command": job.train_command(),
    }
