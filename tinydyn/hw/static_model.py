"""The static model the FPGA runs: LC-Net gates folded into constant per-block/per-channel scales.

FINN builds fixed dataflow pipelines, so the L-Net/C-Net gates cannot be built. Forcing every
salience to 1 breaks a model trained with gates (the branches were trained scaled down). We
instead replace each salience by its mean over calibration images:

    h   = relu(bn1(conv1(x)) · mean(s_C))        →  bn1.weight, bn1.bias  × mean(s_C)  (per channel)
    out = relu(short + mean(s_L) · bn2(conv2(h))) →  bn2.weight, bn2.bias × mean(s_L)  (per block)

Saliences are ReLU-1 outputs (≥ 0), so the scaled BNs stay valid BNs: the lowering folds them into
the integer weights' scales and FINN streamlines them into thresholds like any BN. The result is a
gate-free :class:`LCNet` (exits kept) that both the QONNX export and the integer reference
(:func:`tinydyn.quantize.lower.lower`, unchanged) take as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tinydyn.models.lcnet import LCNet, LCNetConfig


@dataclass
class Saliences:
    """Mean saliences per gated block (block index → values) over ``images`` images."""

    block: dict[int, float]
    channel: dict[int, np.ndarray]
    images: int

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "block": {str(k): round(v, 6) for k, v in self.block.items()},
            "channel": {str(k): [round(float(x), 6) for x in v] for k, v in self.channel.items()},
        }


def gates_note(saliences: Saliences | None, folded_from: str | None = None) -> str:
    head = "L-Net/C-Net gates are not built on the FPGA"
    tail = "every block and channel runs; early exits are built as backbone segments the PS chains"
    if folded_from:
        return (
            f"{head}: this checkpoint's gates were folded into static channel scales (from "
            f"{Path(folded_from).name}) and the gate-free model fine-tuned "
            f"(tinydyn train --fold-gates); {tail}"
        )
    if saliences is None or not saliences.block:
        return f"{head} (this model has none): {tail}"
    return (
        f"{head}: they are folded into static channel scales "
        f"(their mean over {saliences.images} calibration images); {tail}"
    )


def mean_saliences(model: LCNet, images: np.ndarray, batch: int = 250) -> Saliences:
    """Mean block/channel saliences of the trained model (eval mode, on the 1/255 grid)."""
    gated = [i for i, b in enumerate(model.blocks) if b.gated]
    sums_l = {i: 0.0 for i in gated}
    sums_c = {i: np.zeros(model.blocks[i].conv1.out_channels) for i in gated}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch].astype(np.float32) / 255.0)
            out = model(x)
            for i, s_l, s_c in zip(gated, out.block_saliences, out.channel_saliences, strict=True):
                sums_l[i] += float(s_l.sum())
                sums_c[i] += s_c.sum(dim=0).double().numpy()
    n = max(len(images), 1)
    return Saliences(
        {i: v / n for i, v in sums_l.items()}, {i: v / n for i, v in sums_c.items()}, len(images)
    )


def static_model(model: LCNet, saliences: Saliences | None) -> LCNet:
    """A gate-free LCNet (exits kept) computing the trained model with constant saliences."""
    cfg = LCNetConfig.from_json({**model.config.to_json(), "gates": False})
    net = LCNet(cfg)
    state = {k: v for k, v in model.state_dict().items() if ".lnet." not in k and ".cnet." not in k}
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("zero_hw_sentinel", "counter"))]
    if missing:
        from tinydyn.hw.export import ExportError

        raise ExportError(
            f"the gate-free model does not match the checkpoint ({missing[0]}): "
            "the checkpoint and this tinydyn disagree on the architecture"
        )
    if saliences is not None:
        with torch.no_grad():
            for i, block in enumerate(net.blocks):
                if i not in saliences.block:
                    continue
                s_c = torch.as_tensor(saliences.channel[i], dtype=block.bn1.weight.dtype)
                block.bn1.weight.mul_(s_c)
                block.bn1.bias.mul_(s_c)
                block.bn2.weight.mul_(saliences.block[i])
                block.bn2.bias.mul_(saliences.block[i])
    return net.eval()
