"""The training recipe's pieces as plain functions: learning-rate schedule, weight-decay groups,
the loss (label smoothing, knowledge distillation, early exits) and the gate schedule.

Each is a function of the global step, so a resumed run recomputes exactly where it stands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based) of ``total``:
    linear warm-up over ``warmup`` steps ((step+1)/warmup, so the first step already moves), then
    a cosine from 1 down to 0 at the end of the run."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(warmup_epochs: float, steps_per_epoch: int, total: int) -> int:
    """Warm-up length in steps: ``warmup_epochs`` of them, at most a fifth of the run (a short run
    still spends most of its steps decaying)."""
    return min(round(warmup_epochs * steps_per_epoch), total // 5)


def decay_groups(
    model: nn.Module, backbone: Iterable[nn.Parameter], gates: Iterable[nn.Parameter]
) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(backbone weights that decay, backbone parameters that do not, gate parameters).

    Weight decay is for conv and FC weight matrices. BN scales and shifts, biases and the
    quantisers' learned scales are one number per channel (or per tensor): shrinking them
    toward 0 changes what the layer computes rather than regularising it (and a BN scale pulled
    to 0 closes the channel). Gates never decay: their bias starts at 1 (open) and the L1
    penalty alone decides how far saliences fall."""
    gate_ids = {id(p) for p in gates}
    norm_ids = {
        id(p)
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
        for p in module.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for p in backbone:
        if id(p) in gate_ids:
            continue
        (no_decay if p.ndim <= 1 or id(p) in norm_ids else decay).append(p)
    return decay, no_decay, [p for p in gates]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's KD term: T² · KL(softmax(teacher/T) ‖ softmax(student/T)), mean over the batch
    (T² keeps its gradient on the scale of the cross-entropy's whatever T)."""
    t = temperature
    target = F.log_softmax(teacher.detach().float() / t, dim=1)
    log_student = F.log_softmax(student.float() / t, dim=1)
    return F.kl_div(log_student, target, reduction="batchmean", log_target=True) * (t * t)


def exits_loss(
    logits: list[torch.Tensor],
    labels: torch.Tensor,
    exit_weight: float,
    label_smoothing: float = 0.0,
    teacher: torch.Tensor | None = None,
    kd_weight: float = 0.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Loss over all exits (final classifier last, weight 1; early exits ``exit_weight``).

    Per exit: cross-entropy with ``label_smoothing``; with a teacher,
    (1 − kd_weight)·CE + kd_weight·KD against the teacher's final logits (every exit learns
    from the same teacher: the early ones need the soft targets most)."""
    total = logits[0].new_zeros(())
    for index, lg in enumerate(logits):
        term = F.cross_entropy(lg, labels, label_smoothing=label_smoothing)
        if teacher is not None and kd_weight > 0:
            term = (1.0 - kd_weight) * term + kd_weight * distillation_loss(lg, teacher, temperature)
        total = total + (1.0 if index == len(logits) - 1 else exit_weight) * term
    return total


def gate_phase(step: int, open_steps: int, ramp_steps: int) -> tuple[bool, float]:
    """(gates frozen open?, multiplier of the L1 coefficient) at ``step``.

    Gates stay frozen (their gradients dropped) and the penalty off for the first
    ``open_steps``; then the penalty rises linearly to its full coefficient over ``ramp_steps``."""
    if step < open_steps:
        return True, 0.0
    if ramp_steps <= 0:
        return False, 1.0
    return False, min((step - open_steps + 1) / ramp_steps, 1.0)
