"""MAC accounting for LC-Net models, from the architecture alone.

MACs are the multiply-accumulates of convolutions and fully connected layers (gates and
heads included); pooling, requantisation and adds are not counted. The integer executor
counts the same quantity op by op; this module gives the static figures and the
differentiable cost proxy the L1 penalty weighs saliences with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tinydyn.models.lcnet import LCNet


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


def salience_penalty(
    model: LCNet, block_s: list[torch.Tensor], channel_s: list[torch.Tensor]
) -> torch.Tensor:
    """L1 of the saliences, each weighted by the share of the backbone's MACs it controls.

    A block salience controls its two convolutions; a channel salience controls one output
    channel of conv1 and one input channel of conv2. Normalised by the static MACs, so the
    coefficient trades (relative) MACs for accuracy the same way for any model size.
    """
    if not block_s:
        return torch.zeros(())  # a static backbone (no gates) has nothing to penalise
    _, costs, _, _ = block_costs(model)
    total = float(static_backbone_macs(model))
    penalty = torch.zeros((), device=block_s[0].device)
    for cost, s_block, s_chan in zip(costs, block_s, channel_s, strict=True):
        per_channel = (cost.conv1_per_channel + cost.conv2_per_channel) / total
        penalty = penalty + s_block.abs().mean() * cost.channels * per_channel / 2
        penalty = penalty + s_chan.abs().sum(dim=1).mean() * per_channel / 2
    return penalty
