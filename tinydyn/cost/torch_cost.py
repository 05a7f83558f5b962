"""Training-side costs, in torch: static MACs of an LC-Net from its architecture, the
salience L1 penalty weighted by MACs, and a differentiable form of the DDI energy model.

MACs are the multiply-accumulates of convolutions and fully connected layers (gates and
heads included); pooling, requantisation and adds are not counted. The integer executor
counts the same quantity op by op; this module gives the static figures and the
differentiable cost proxies a training loss weighs gates with. The only module of
:mod:`tinydyn.cost` that imports torch (the package loads it lazily).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from tinydyn.cost.energy import EnergyCoefficients, coefficients

if TYPE_CHECKING:  # cost sits below models: only the type is needed here
    from tinydyn.models.lcnet import LCNet

FJ_PER_NJ = 1e6


@dataclass(frozen=True)
class BlockCost:
    lnet: int  # L-Net FC
    cnet: int  # C-Net FC
    conv1_per_channel: int  # conv1 MACs per retained output channel
    conv2_per_channel: int  # conv2 MACs per retained input channel
    shortcut: int  # projection shortcut (0 for identity), runs even when the block is skipped
    channels: int


def conv_macs(conv: torch.nn.Conv2d, out_hw: int) -> int:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return conv.out_channels * conv.in_channels // conv.groups * k * out_hw


def block_costs(model: LCNet) -> tuple[int, list[BlockCost], int, dict[int, int]]:
    """(stem MACs, per-block costs, final head MACs, early-exit head MACs by block index)."""
    size = model.config.input_size
    stem = conv_macs(model.stem, size * size)
    costs = []
    for block in model.blocks:
        size = (size + 2 - 3) // block.conv1.stride[0] + 1
        hw, cin, cout = size * size, block.conv1.in_channels, block.conv1.out_channels
        costs.append(
            BlockCost(
                lnet=cin if block.gated else 0,
                cnet=cin * cout if block.gated else 0,
                conv1_per_channel=cin * 9 * hw,
                conv2_per_channel=cout * 9 * hw,
                shortcut=conv_macs(block.short_conv, hw) if block.projection else 0,
                channels=cout,
            )
        )
    heads = {int(k): head.fc.in_features * head.fc.out_features for k, head in model.exit_heads.items()}
    final = model.head.fc.in_features * model.head.fc.out_features
    return stem, costs, final, heads


def static_backbone_macs(model: LCNet) -> int:
    """The same backbone without gates or early exits: every block, every channel."""
    stem, costs, final, _ = block_costs(model)
    body = sum(c.channels * (c.conv1_per_channel + c.conv2_per_channel) + c.shortcut for c in costs)
    return stem + body + final


@dataclass(frozen=True)
class SalienceWeight:
    """What one gated block's saliences weigh in the penalty, as shares of the static model's cost."""

    block: float  # its block salience (L-Net)
    channel: float  # each of its channel saliences (C-Net)


def mac_salience_weights(model: LCNet) -> list[SalienceWeight]:
    """LC-Net's own weighting: a block salience controls its two convolutions, a channel salience
    one output channel of conv1 and one input channel of conv2. Both gates together control a
    block, so each takes half of what it controls (a block's saliences all at 1 weigh its MACs)."""
    _, costs, _, _ = block_costs(model)
    total = float(static_backbone_macs(model))
    weights = []
    for cost, block in zip(costs, model.blocks, strict=True):
        if block.gated:
            per_channel = (cost.conv1_per_channel + cost.conv2_per_channel) / total
            weights.append(SalienceWeight(cost.channels * per_channel / 2, per_channel / 2))
    return weights


def salience_penalty(
    model: LCNet,
    block_s: list[torch.Tensor],
    channel_s: list[torch.Tensor],
    weights: list[SalienceWeight] | None = None,
) -> torch.Tensor:
    """L1 of the saliences, each weighted by the share of the static model's cost it controls:
    MACs by default (:func:`mac_salience_weights`), or ``weights`` from another cost, e.g. the
    cycles of a ``tinydyn profile`` cost table. Shares of the static cost, so the coefficient
    trades (relative) cost for accuracy the same way for any model size."""
    if not block_s:
        return torch.zeros(())  # a static backbone (no gates) has nothing to penalise
    weights = mac_salience_weights(model) if weights is None else weights
    penalty = torch.zeros((), device=block_s[0].device)
    for weight, s_block, s_chan in zip(weights, block_s, channel_s, strict=True):
        penalty = penalty + s_block.abs().mean() * weight.block
        penalty = penalty + s_chan.abs().sum(dim=1).mean() * weight.channel
    return penalty


def expected_energy_nj(
    board: str | EnergyCoefficients,
    macs: torch.Tensor,
    flash_bytes: torch.Tensor,
    sram_read_bytes: torch.Tensor,
    sram_write_bytes: torch.Tensor,
    cycles: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """DDI's E = sum_i #acc_i * e_i + #MAC * e_MAC (+ cycles * e_cycle), differentiable, in nJ.

    The count tensors hold *expected* executed counts per layer, layers on the last axis,
    e.g. ``p * table.macs`` with ``p`` the soft gate probability of each layer's block and
    ``table`` the per-layer cost table (:func:`tinydyn.cost.traffic.layer_costs`). They
    broadcast together; leading axes (a batch) are averaged, so the result is a scalar a loss
    can add (``L + alpha * E``). ``cycles`` is per inference (no layer axis).

    With 0/1 gates it equals :func:`tinydyn.cost.energy.energy` on the same counts before
    that function floors fJ to nJ (float rounding aside: float64 is exact to well below 1 nJ,
    float32 to about 1e-7 relative). Coefficients are scaled to nJ first so that float32 sums
    stay in range.
    """
    c = coefficients(board)
    per_layer = (
        macs * (c.fj_per_mac / FJ_PER_NJ)
        + flash_bytes * (c.fj_per_flash_byte / FJ_PER_NJ)
        + sram_read_bytes * (c.fj_per_sram_read_byte / FJ_PER_NJ)
        + sram_write_bytes * (c.fj_per_sram_write_byte / FJ_PER_NJ)
    )
    per_inference = per_layer.sum(dim=-1) + torch.as_tensor(cycles) * (c.fj_per_cycle / FJ_PER_NJ)
    return per_inference.mean()
