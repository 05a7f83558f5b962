"""Training: cross-entropy at every exit plus the MAC-weighted L1 penalty on saliences.

Plain PyTorch (no custom launcher), so ``torchrun`` + DDP can wrap it unchanged. Seeded,
shows a progress bar, checkpoints after every epoch and resumes from such a checkpoint.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tinydyn.data import Dataset
from tinydyn.errors import TinydynError
from tinydyn.models.checkpoint import read_checkpoint, save_checkpoint
from tinydyn.models.family import ModelFamily
from tinydyn.models.registry import DEFAULT_FAMILY, get_family


@dataclass
class TrainConfig:
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    gate_lr: float = 1e-2  # gates must move from open (bias 1) to closed within a few epochs
    weight_decay: float = 5e-4
    l1: float = 0.0  # salience penalty coefficient: more → fewer MACs, less accuracy
    exit_weight: float = 1.0  # weight of each early exit's cross-entropy (final gets 1)
    seed: int = 0
    threads: int = 0  # 0: torch's default
    extra: dict[str, Any] = field(default_factory=dict)


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 pixels → the float input the Brevitas model sees (pixel / 255, exact grid)."""
    return torch.from_numpy(images.astype(np.float32) / 255.0)


def make_optimizer(family: ModelFamily, model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    backbone, gates = family.parameter_groups(model)
    return torch.optim.AdamW(
        [{"params": backbone, "lr": cfg.lr}, {"params": gates, "lr": cfg.gate_lr}],
        weight_decay=cfg.weight_decay,
    )


def train(
    train_set: Dataset,
    out_path: Path,
    model_config: Any = None,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    init_from: Path | None = None,
    progress: bool = True,
    backbone_from: Path | None = None,
    fold_gates: bool = False,
    family_name: str = DEFAULT_FAMILY,
) -> dict[str, Any]:
    """Train (or resume, or fine-tune from ``init_from``) and write a checkpoint per epoch.

    ``fold_gates``: fine-tune the gate-free model of ``init_from`` (its L-Net/C-Net saliences
    folded into constant scales, the family's ``static_for_fpga``): the model an FPGA builds."""
    cfg = cfg or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    warnings.filterwarnings("ignore", module="brevitas")
    torch.manual_seed(cfg.seed)
    start_epoch, history = 0, []
    state = None
    if resume and out_path.is_file():
        state = read_checkpoint(out_path)
    elif init_from is not None:
        state = fold_gates_of(init_from, train_set) if fold_gates else read_checkpoint(init_from)
    elif fold_gates:
        raise TinydynError("--fold-gates folds the gates of a trained model: give it with --init-from")
    if state is not None:  # the family and config of the run continued or fine-tuned
        family_name = state.get("family", DEFAULT_FAMILY)
    family = get_family(family_name)
    if state is not None:
        model_config = family.config_from_json(state["config"])
    model_config = model_config if model_config is not None else family.config_from_options()
    expected = family.input_shape(model_config)
    if tuple(train_set.input_shape) != expected:
        raise TinydynError(
            f"dataset images are {train_set.input_shape} but the model expects {expected}: "
            "pick the matching --dataset or model size"
        )
    classes = family.classes(model_config)
    if tuple(train_set.classes) != classes:
        raise TinydynError(
            f"dataset {train_set.name} has classes {', '.join(train_set.classes[:3])}, ... but the model "
            f"answers in {', '.join(classes[:3])}, ...: pick the matching --dataset"
        )
    model = family.build(model_config)
    optimizer = make_optimizer(family, model, cfg)
    if state is not None:
        model.train()
        model(to_float(train_set.images[:2]))  # let Brevitas build its runtime state first
        model.load_state_dict(state["state_dict"], strict=False)
        if resume and resume_path(out_path).is_file():
            optimizer.load_state_dict(torch.load(resume_path(out_path), weights_only=True)["optimizer"])
        if resume:
            start_epoch, history = resume_point(out_path, state)
    elif backbone_from is not None:
        copy_backbone(model, read_checkpoint(backbone_from)["state_dict"], train_set)
    total_steps = cfg.epochs * ((len(train_set) + cfg.batch_size - 1) // cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[cfg.lr, cfg.gate_lr], total_steps=max(total_steps, 1), pct_start=0.15
    )
    for _ in range(start_epoch * (total_steps // max(cfg.epochs, 1))):
        scheduler.step()  # resume the schedule where it stopped
    labels_all = torch.from_numpy(train_set.labels)
    # a gate-free model made from a gated one (here or in the run it continues): 'tinydyn fpga' says so
    folded_from = str(init_from) if fold_gates else (state or {}).get("train", {}).get("folded_from")
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(train_set), generator=generator)
        started = time.perf_counter()
        sums = np.zeros(3)
        bar = tqdm(
            range(0, len(order), cfg.batch_size),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            unit="batch",
        )
        for begin in bar:
            idx = order[begin : begin + cfg.batch_size]
            images = to_float(train_set.images[idx.numpy()])
            ce, penalty = family.loss_terms(model, images, labels_all[idx], cfg.exit_weight)
            loss = ce + cfg.l1 * penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            sums += (ce.item(), penalty.item(), 1)
            bar.set_postfix(ce=f"{sums[0] / sums[2]:.3f}", l1=f"{sums[1] / sums[2]:.3f}")
        history.append(
            {
                "epoch": epoch + 1,
                "ce": float(sums[0] / sums[2]),
                "penalty": float(sums[1] / sums[2]),
                "seconds": time.perf_counter() - started,
            }
        )
        model.eval()
        train_info = {
            "epochs_done": epoch + 1,
            "history": history,
            "config": {k: v for k, v in vars(cfg).items() if k != "extra"},
        }
        if folded_from:
            train_info["folded_from"] = folded_from
        # the checkpoint stays small (it can ship); the optimizer state for --resume sits beside it
        # the dataset is recorded: eval, run and measure default to it and refuse another
        extra = {"train": train_info, "dataset": train_set.name}
        save_checkpoint(out_path, model, {"train_history": history}, extra)
        torch.save({"optimizer": optimizer.state_dict()}, resume_path(out_path))
    return {"history": history, "path": str(out_path)}


def copy_backbone(model: nn.Module, state_dict: dict[str, torch.Tensor], train_set: Dataset) -> None:
    """Warm-start from another checkpoint (e.g. a static backbone): copy every tensor whose
    name and shape match; gates and exit heads the source lacks keep their initialisation."""
    model.train()
    with torch.no_grad():
        model(to_float(train_set.images[:2]))  # let Brevitas build its runtime state first
    own = model.state_dict()
    shared = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    if not any(k.endswith("weight") for k in shared):
        raise TinydynError(
            "the --backbone-from checkpoint shares no weights with this model: "
            "give one of the same family trained with the same --widths and --blocks"
        )
    model.load_state_dict(shared, strict=False)


def fold_gates_of(checkpoint: Path, train_set: Dataset, images: int = 1000) -> dict[str, Any]:
    """The checkpoint payload of ``checkpoint``'s gate-free model (saliences folded into constant
    channel/block scales: their mean over the first ``images`` training images)."""
    from tinydyn.models.checkpoint import load_model

    gated, _ = load_model(checkpoint)
    family = get_family(gated.family)
    if not family.has_gates(gated):
        raise TinydynError(f"{checkpoint} has no gates to fold: fine-tune it with --init-from alone")
    net = family.static_for_fpga(gated, train_set.images[:images]).module
    return {"family": family.name, "config": net.config.to_json(), "state_dict": net.state_dict()}


def resume_point(path: Path, state: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Epochs done and their history, from a checkpoint that --resume continues."""
    info = state.get("train")
    done = info.get("epochs_done") if isinstance(info, dict) else None
    history = info.get("history") if isinstance(info, dict) else None
    if isinstance(done, bool) or not isinstance(done, int) or done < 0 or not isinstance(history, list):
        raise TinydynError(
            f"{path} has no training record to resume from: train it anew without --resume, or give "
            "it with --init-from"
        )
    return done, list(history)


def resume_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".resume")
