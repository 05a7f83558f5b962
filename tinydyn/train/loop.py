"""Training: the recipe of :mod:`tinydyn.train.recipe` (SGD Nesterov, warm-up + cosine, batch
augmentation in torch, distillation, gate schedule) over any model family.

Plain PyTorch: ``torchrun`` runs the same command data-parallel (:mod:`tinydyn.train.distributed`).
Seeded, shows a progress bar, checkpoints after every epoch and resumes from such a checkpoint
exactly where the schedule stood: every schedule is a function of the global step and every
random draw comes from a generator seeded by (seed, epoch).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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
from tinydyn.train import distributed
from tinydyn.train.augment import augment, default_crop_padding, default_flip, draw_epoch, to_input
from tinydyn.train.recipe import decay_groups, exits_loss, gate_phase, lr_factor, warmup_steps

OPTIMIZERS = ("sgd", "adamw")
# recipe fields a resumed run takes from its checkpoint when left to their automatic default
RECORDED_DEFAULTS = (
    "lr",
    "gate_lr",
    "gate_optimizer",
    "crop_padding",
    "flip",
    "gate_open_epochs",
    "l1_ramp_epochs",
)
DEFAULT_LR = {"sgd": 0.1, "adamw": 2e-3}


@dataclass
class TrainConfig:
    """The recipe; ``None`` fields are resolved by :meth:`resolved` (what a checkpoint records)."""

    epochs: int = 15
    batch_size: int = 128  # the global batch, however many processes share it
    optimizer: str = "sgd"
    lr: float | None = None  # None: 0.1 for SGD, 2e-3 for AdamW
    gate_lr: float | None = None  # None: --lr (or the gate optimizer's default when it differs)
    gate_optimizer: str | None = None  # None: --optimizer
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    crop_padding: int | None = None  # None: input size // 8
    flip: bool | None = None  # None: Fashion-MNIST and CIFAR-10 yes, MNIST no
    l1: float = 0.0  # salience penalty coefficient: more → fewer MACs, less accuracy
    exit_weight: float = 1.0  # weight of each early exit's loss (final gets 1)
    teacher: str | None = None  # checkpoint whose final logits the student distils
    kd_temperature: float = 4.0
    kd_weight: float = 0.5
    gate_open_epochs: float | None = None  # None: 1 with a --backbone-from start, else 0
    l1_ramp_epochs: float | None = None  # None: 2 with a --backbone-from start, else 0
    qat_last_epochs: int | None = None  # None: weight fake-quant in every epoch
    micro_batches: int = 1
    device: str = "auto"
    threads: int = 0  # 0: torch's default (OMP_NUM_THREADS, else the cores)
    channels_last: bool = False
    seed: int = 0
    eval_limit: int = 1000  # test images evaluated when training ends (0: none)
    stop_after: int | None = None  # end this session after that many epochs (--resume continues)
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self, dataset: str, input_size: int, warm_started: bool) -> TrainConfig:
        if self.optimizer not in OPTIMIZERS:
            raise TinydynError(f"unknown optimizer '{self.optimizer}': use {' or '.join(OPTIMIZERS)}")
        gate_optimizer = self.optimizer if self.gate_optimizer is None else self.gate_optimizer
        if gate_optimizer not in OPTIMIZERS:
            raise TinydynError(f"unknown gate optimizer '{gate_optimizer}': use {' or '.join(OPTIMIZERS)}")
        lr = DEFAULT_LR[self.optimizer] if self.lr is None else self.lr
        default_gate_lr = lr if gate_optimizer == self.optimizer else DEFAULT_LR[gate_optimizer]
        cfg = replace(
            self,
            lr=lr,
            gate_optimizer=gate_optimizer,
            gate_lr=default_gate_lr if self.gate_lr is None else self.gate_lr,
            crop_padding=default_crop_padding(input_size) if self.crop_padding is None else self.crop_padding,
            flip=default_flip(dataset) if self.flip is None else self.flip,
            gate_open_epochs=(1.0 if warm_started else 0.0)
            if self.gate_open_epochs is None
            else self.gate_open_epochs,
            l1_ramp_epochs=(2.0 if warm_started else 0.0)
            if self.l1_ramp_epochs is None
            else self.l1_ramp_epochs,
        )
        cfg.check(input_size)
        return cfg

    def defaults_from(self, recorded: Any) -> TrainConfig:
        """A resumed run: options left to their automatic default take the value the run
        started with (a run warm-started from a backbone keeps its gate schedule)."""
        if not isinstance(recorded, dict):
            return self
        taken: dict[str, Any] = {}
        for name in RECORDED_DEFAULTS:
            value = recorded.get(name)  # a checkpoint is untrusted: only well-typed values count
            if getattr(self, name) is not None:
                continue
            if name == "flip":
                ok = isinstance(value, bool)
            elif name == "gate_optimizer":
                ok = value in OPTIMIZERS
            elif name == "crop_padding":
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if ok:
                taken[name] = value
        return replace(self, **taken)

    def check(self, input_size: int) -> None:
        problems = []
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("--epochs and --batch-size must be at least 1")
        if self.micro_batches < 1 or self.micro_batches > self.batch_size:
            problems.append("--micro-batches must be in 1..--batch-size")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append("--label-smoothing must be in [0, 1)")
        if not 0.0 <= self.kd_weight <= 1.0 or self.kd_temperature <= 0:
            problems.append("--kd-weight must be in [0, 1] and --kd-temperature positive")
        if self.crop_padding is not None and not 0 <= self.crop_padding <= input_size:
            problems.append(f"--crop-padding must be in 0..{input_size}")
        if min(self.warmup_epochs, self.gate_open_epochs or 0, self.l1_ramp_epochs or 0) < 0:
            problems.append("epoch counts must not be negative")
        if self.qat_last_epochs is not None and self.qat_last_epochs < 1:
            problems.append("--qat-last-epochs must be at least 1 (omit it for QAT from the start)")
        if self.stop_after is not None and self.stop_after < 1:
            problems.append("--stop-after must be at least 1")
        if any(not math.isfinite(v) for v in (self.lr or 0, self.gate_lr or 0, self.weight_decay, self.l1)):
            problems.append("learning rates, --weight-decay and --l1 must be finite numbers")
        if problems:
            raise TinydynError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        recorded = {k: v for k, v in asdict(self).items() if k != "extra"}
        if self.extra:  # a family's own options (e.g. DDI's --target-skip), recorded with the recipe
            recorded["family_options"] = dict(self.extra)
        return recorded


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 pixels → the float input the Brevitas model sees (pixel / 255, exact grid)."""
    return torch.from_numpy(images.astype(np.float32) / 255.0)


def _torch_optimizer(kind: str, groups: list[dict[str, Any]], momentum: float) -> torch.optim.Optimizer:
    for group in groups:
        group["lr"] = group["base_lr"]
    if kind == "adamw":
        return torch.optim.AdamW(groups)
    return torch.optim.SGD(groups, momentum=momentum, nesterov=momentum > 0)


class GatedOptimizer:
    """The backbone's optimizer and the gates' own (``--gate-optimizer``), stepped together.
    Why: a gate's share of the cost gradient scales with what it decides, so a channel gate's is
    1/k of its unit's; SGD moves it k times slower than the layer gate, while Adam's step does
    not depend on the gradient's scale. The loop sees one optimizer (param_groups, step, state)."""

    def __init__(self, main: torch.optim.Optimizer, gates: torch.optim.Optimizer) -> None:
        self.main, self.gates = main, gates

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.main.param_groups + self.gates.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.main.zero_grad(set_to_none=set_to_none)
        self.gates.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.main.step()
        self.gates.step()

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(), "gates": self.gates.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != {"main", "gates"}:
            raise KeyError("not a gated optimizer's state")
        self.main.load_state_dict(state["main"])
        self.gates.load_state_dict(state["gates"])


def make_optimizer(
    family: ModelFamily, model: nn.Module, cfg: TrainConfig
) -> torch.optim.Optimizer | GatedOptimizer:
    """Three groups: decaying weights, non-decaying backbone parameters (BN, biases, quantiser
    scales), gates (own learning rate, no decay; their own optimizer with ``--gate-optimizer``).
    ``base_lr`` is what the schedule multiplies."""
    backbone, gates = family.parameter_groups(model)
    decay, no_decay, gate_params = decay_groups(model, backbone, gates)
    groups = [
        {"params": decay, "base_lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "base_lr": cfg.lr, "weight_decay": 0.0},
    ]
    gate_group = {"params": gate_params, "base_lr": cfg.gate_lr, "weight_decay": 0.0}
    if cfg.gate_optimizer in (None, cfg.optimizer):
        return _torch_optimizer(cfg.optimizer, [*groups, gate_group], cfg.momentum)
    return GatedOptimizer(
        _torch_optimizer(cfg.optimizer, groups, cfg.momentum),
        _torch_optimizer(str(cfg.gate_optimizer), [gate_group], cfg.momentum),
    )


def set_weight_quant(model: nn.Module, enabled: bool) -> None:
    """Brevitas weight fake-quant on or off (activation quantisers stay: LC-Net's gates pool on
    their grid, and the integer model's requantisation needs their learned scales)."""
    from brevitas.graph.calibrate import QuantizationStatusManager as Q

    if enabled:
        Q.enable_weight_quantization(model, is_training=model.training)
    else:
        Q.disable_weight_quantization(model, is_training=model.training)


def brevitas_collecting(model: nn.Module) -> bool:
    """Whether an activation quantiser still initialises its scale from batch statistics."""
    return any(
        m.counter <= m.collect_stats_steps
        for m in model.modules()
        if hasattr(m, "collect_stats_steps") and isinstance(getattr(m, "counter", None), int)
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
    command: str | None = None,
    test_set: Callable[[], Dataset] | None = None,
    held_out: Dataset | None = None,
    int_joins: bool = False,
) -> dict[str, Any]:
    """Train (or resume, or fine-tune from ``init_from``) and write a checkpoint per epoch.

    ``fold_gates``: fine-tune the gate-free model of ``init_from`` (its L-Net/C-Net saliences
    folded into constant scales, the family's ``static_for_fpga``): the model an FPGA builds.
    ``command``: the command line, recorded. ``test_set``: loads the images evaluated when
    training ends (the first ``cfg.eval_limit``). ``held_out``: training images kept out of
    training for the family's ``after_training`` (S2DNAS's per-stage thresholds)."""
    cfg = cfg or TrainConfig()
    where = distributed.launched()
    device = distributed.pick_device(cfg.device, where)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    warnings.filterwarnings("ignore", module="brevitas")
    distributed.start(where, device)
    try:
        return _train(
            train_set, out_path, model_config, cfg, resume, init_from, progress, backbone_from,
            fold_gates, family_name, command, test_set, where, device, held_out, int_joins,
        )  # fmt: skip
    finally:
        distributed.stop(where)


def _train(
    train_set: Dataset,
    out_path: Path,
    model_config: Any,
    cfg: TrainConfig,
    resume: bool,
    init_from: Path | None,
    progress: bool,
    backbone_from: Path | None,
    fold_gates: bool,
    family_name: str,
    command: str | None,
    test_set: Callable[[], Dataset] | None,
    where: distributed.Dist,
    device: torch.device,
    held_out: Dataset | None = None,
    int_joins: bool = False,
) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    start_epoch, history, commands = 0, [], []
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
    if int_joins:  # LC-Net's shared join quantisers (integer adds on the FPGA): also on a fine-tuned model
        model_config = family.config_from_json({**model_config.to_json(), "int_joins": True})
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
    warm_started = backbone_from is not None and state is None
    if resume and state is not None:
        cfg = cfg.defaults_from(state.get("recipe"))
    cfg = cfg.resolved(train_set.name, expected[1], warm_started)
    if train_set.images.shape[0] == 0:
        raise TinydynError("no training images: give a --limit of at least 1")
    per_process = cfg.batch_size // where.world
    if cfg.batch_size % where.world or per_process < cfg.micro_batches:
        raise TinydynError(
            f"--batch-size {cfg.batch_size} does not split over {where.world} processes x "
            f"{cfg.micro_batches} micro-batches: give a multiple of {where.world} of at least "
            f"{where.world * cfg.micro_batches}"
        )
    teacher = load_teacher(Path(cfg.teacher), classes, expected, device) if cfg.teacher else None

    model = family.build(model_config)
    if state is not None:
        model.train()
        model(to_float(train_set.images[:2]))  # let Brevitas build its runtime state first
        model.load_state_dict(state["state_dict"], strict=False)
        if resume:
            start_epoch, history = resume_point(out_path, state)
            recorded = state.get("train", {}).get("commands")
            commands = list(recorded) if isinstance(recorded, list) else []
    elif backbone_from is not None:
        source = read_checkpoint(backbone_from)
        if not family.warm_start(model, source, train_set.images):
            copy_backbone(model, source["state_dict"], train_set)
            family.open_gates(model)  # the dynamic model starts as exactly the static backbone
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(family, model, cfg)
    if state is not None and resume and resume_path(out_path).is_file():
        try:
            optimizer.load_state_dict(torch.load(resume_path(out_path), weights_only=True)["optimizer"])
        except (ValueError, KeyError):
            raise TinydynError(
                f"{resume_path(out_path)} holds the optimizer state of another recipe (--optimizer, "
                "--gate-optimizer or model changed): resume with the recipe it was trained with, or give "
                "--init-from instead"
            ) from None
        for group, fresh in zip(
            optimizer.param_groups, make_optimizer(family, model, cfg).param_groups, strict=True
        ):
            group["base_lr"], group["weight_decay"] = fresh["base_lr"], fresh["weight_decay"]
    _, gate_params = family.parameter_groups(model)
    net: nn.Module = model
    if where.active:
        # find_unused_parameters: a family's phases may leave parts unused for a while (DDI's
        # branches before its DDI phase); without it DDP stalls waiting for their gradients
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True
        )

    images_all = torch.from_numpy(train_set.images).to(device)  # uint8 stays uint8: 47 MB for MNIST
    labels_all = torch.from_numpy(train_set.labels).to(device)
    count = len(train_set)
    padded_count = math.ceil(count / where.world) * where.world  # DistributedSampler pads by wrapping
    per_rank = padded_count // where.world
    steps_per_epoch = math.ceil(per_rank / per_process)
    total_steps = cfg.epochs * steps_per_epoch
    warm = warmup_steps(cfg.warmup_epochs, steps_per_epoch, total_steps)
    open_steps = round(cfg.gate_open_epochs * steps_per_epoch)
    ramp_steps = round(cfg.l1_ramp_epochs * steps_per_epoch)
    qat_from = cfg.epochs - cfg.qat_last_epochs if cfg.qat_last_epochs else 0
    family.start_training(model, cfg, steps_per_epoch, total_steps)  # e.g. DDI's phases and cost table
    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + cfg.stop_after)
    # a gate-free model made from a gated one (here or in the run it continues): 'tinydyn fpga' says so
    folded_from = str(init_from) if fold_gates else (state or {}).get("train", {}).get("folded_from")
    if command:
        commands.append(command)
    show = progress and where.main
    evaluation = None
    for epoch in range(start_epoch, last_epoch):
        model.train()
        if cfg.qat_last_epochs:
            set_weight_quant(model, epoch >= qat_from)
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(count, generator=generator)
        draws = draw_epoch(padded_count, cfg.crop_padding, cfg.flip, generator)
        if padded_count > count:
            order = torch.cat([order, order[: padded_count - count]])
        mine = torch.arange(where.rank, padded_count, where.world)  # positions in the epoch's order
        started = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, unit="batch"
        )
        collecting = brevitas_collecting(model)
        for step_in_epoch in bar:
            step = epoch * steps_per_epoch + step_in_epoch
            factor = lr_factor(step, total_steps, warm)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            frozen, l1_factor = gate_phase(step, open_steps, ramp_steps)
            plan = family.step_plan(model, step)  # a family's own schedule replaces the gate schedule
            coefficient = cfg.l1 * l1_factor if plan is None else plan.coefficient
            positions = mine[step_in_epoch * per_process : (step_in_epoch + 1) * per_process]
            parts = [positions[j :: cfg.micro_batches] for j in range(cfg.micro_batches)]
            parts = [p for p in parts if len(p)]
            optimizer.zero_grad(set_to_none=True)
            for index, part in enumerate(parts):
                idx = order[part].to(device)
                x = to_input(
                    augment(
                        images_all[idx], cfg.crop_padding, draws.dy[part], draws.dx[part], draws.flip[part]
                    )
                )
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                target = teacher(x) if teacher is not None else None
                sync = where.active and index < len(parts) - 1
                with net.no_sync() if sync else contextlib.nullcontext():  # type: ignore[operator]
                    out = family.train_outputs(model, x, forward=net)
                    ce = exits_loss(
                        out.logits, labels_all[idx], cfg.exit_weight, cfg.label_smoothing, target,
                        cfg.kd_weight, cfg.kd_temperature,
                    )  # fmt: skip
                    loss = ce + coefficient * out.penalty
                    (loss * (len(part) / len(positions))).backward()
                sums += torch.stack(
                    [ce.detach() * len(part), out.penalty.detach() * len(part), ce.new_tensor(len(part))]
                ).double()
            for p in plan.frozen if plan is not None else []:
                p.grad = None
            if frozen and plan is None:
                for p in gate_params:
                    p.grad = None  # SGD and AdamW skip a parameter without a gradient
            optimizer.step()
            if collecting and not brevitas_collecting(model):
                collecting = False  # each process set its scales from its own images: take process 0's
                distributed.broadcast_module(model, where)
            if show and step_in_epoch % 20 == 0:
                ce_mean, pen_mean = (sums[:2] / sums[2].clamp(min=1)).tolist()
                shown = {k: f"{v:.3f}" for k, v in out.shown.items()}
                bar.set_postfix(
                    loss=f"{ce_mean:.3f}", l1=f"{pen_mean:.3f}", lr=f"{factor * cfg.lr:.3g}", **shown
                )
        sums = distributed.all_sum(sums, where)
        distributed.broadcast_module(model, where)
        seconds = time.perf_counter() - started
        history.append(
            {
                "epoch": epoch + 1,
                "ce": float(sums[0] / sums[2]),  # classification loss (with distillation) per image
                "penalty": float(sums[1] / sums[2]),
                "lr": factor * cfg.lr,  # at the epoch's last step
                "l1": cfg.l1 * l1_factor,
                "seconds": seconds,
                "images_per_second": float(sums[2]) / seconds,
            }
        )
        if cfg.qat_last_epochs:
            set_weight_quant(model, True)  # the checkpoint and its evaluation are the int8 model
        model.eval()
        if where.main:
            done = epoch + 1 == cfg.epochs
            tuned = None
            if done:  # e.g. S2DNAS's thresholds: into the config the checkpoint records
                on_cpu = _cpu(model)
                tuned = family.after_training(on_cpu, held_out)
                model.config = on_cpu.config  # type: ignore[union-attr]
            evaluation = (
                evaluate_end(family, model, out_path.stem, test_set, cfg.eval_limit) if done else None
            )
            train_info: dict[str, Any] = {
                "epochs_done": epoch + 1,
                "history": history,
                "config": cfg.to_json(),
                "commands": commands,
                "processes": where.world,
                "device": device.type,
            }
            if folded_from:
                train_info["folded_from"] = folded_from
            if tuned is not None:
                train_info["tuned"] = tuned
            # the dataset is recorded: eval, run and measure default to it and refuse another
            extra: dict[str, Any] = {"train": train_info, "dataset": train_set.name, "recipe": cfg.to_json()}
            if command:
                extra["command"] = command
            if evaluation is not None:
                extra["evaluation"] = evaluation
            # the checkpoint stays small (it can ship); the optimizer state for --resume sits beside it
            save_checkpoint(out_path, _cpu(model), {"train_history": history}, extra)
            torch.save({"optimizer": optimizer.state_dict()}, resume_path(out_path))
        distributed.barrier(where)
    return {
        "history": history,
        "path": str(out_path),
        "recipe": cfg.to_json(),
        "evaluation": evaluation,
        "main": where.main,
    }


def _cpu(model: nn.Module) -> nn.Module:
    return model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()


def load_teacher(
    path: Path, classes: tuple[str, ...], input_shape: tuple[int, int, int], device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The final-exit logits of any tinydyn checkpoint, in eval mode and without gradients."""
    from tinydyn.models.checkpoint import load_model

    module, _ = load_model(path)
    family = get_family(module.family)
    config = module.config  # type: ignore[attr-defined]
    if tuple(family.classes(config)) != tuple(classes) or tuple(family.input_shape(config)) != tuple(
        input_shape
    ):
        raise TinydynError(
            f"--teacher {path} was trained on other classes or image shapes than this model: give a "
            "teacher trained on the same dataset"
        )
    module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)

    def logits(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return family.train_outputs(module, images).logits[-1]

    return logits


def evaluate_end(
    family: ModelFamily, model: nn.Module, name: str, test_set: Callable[[], Dataset] | None, limit: int
) -> dict[str, Any] | None:
    """Accuracy of the integer reference and of Brevitas on the first ``limit`` test images, with
    every exit taken at the end (policy none) and, with early exits, under confidence 0.9."""
    if test_set is None or limit <= 0:
        return None
    from tinydyn.quantize.policy import ExitPolicy
    from tinydyn.train.evaluate import evaluate

    try:
        data = test_set().subset(limit)
    except TinydynError as exc:  # no test files: the checkpoint says so instead of failing the run
        return {"error": str(exc)}
    module = _cpu(model)
    ir = family.lower(module, name)
    policies = [ExitPolicy("none")]
    if len(ir.exits()) > 1:
        policies.append(ExitPolicy("confidence", 0.9))
    record: dict[str, Any] = {"dataset": f"{data.name} test split", "images": len(data)}
    for policy in policies:
        summary, _ = evaluate(ir, data, policy, module)  # type: ignore[arg-type]
        key = policy.kind if policy.kind == "none" else f"{policy.kind} {policy.threshold:g}"
        record[key] = summary.to_json()
    return record


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
