"""Evaluation: accuracy, executed MACs and exits of the Brevitas model and the integer IR."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from tinydyn.data import Dataset
from tinydyn.host.skips import skip_lines, skip_summary
from tinydyn.ir import IRModel
from tinydyn.models.lcnet import LCNet
from tinydyn.quantize.executor import Results, execute, static_macs
from tinydyn.quantize.policy import ExitPolicy
from tinydyn.train.loop import to_float


@dataclass
class Summary:
    """What ``tinydyn eval`` reports; all figures per image over the dataset given."""

    images: int
    policy: str
    threshold: float
    reference_accuracy: float
    brevitas_accuracy: float | None
    agreement: float | None  # share of images where Brevitas and the reference predict alike
    mean_macs: float
    static_backbone_macs: int
    mac_reduction: float  # static / mean dynamic
    exit_histogram: list[int]
    mean_skipped_blocks: float
    mean_skipped_channels: float
    dataset: str = ""  # which images, and why those (--dataset, or the checkpoint's own)
    threshold_note: str = ""  # the policy's threshold, where it came from and how exits use it
    budget_unit: str = "macs"
    # skip ratios, MACs of gates / early heads / backbone, modelled costs (tinydyn.host.skips)
    dynamics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        hist = " ".join(f"exit{i}:{n}" for i, n in enumerate(self.exit_histogram))
        brevitas = "n/a" if self.brevitas_accuracy is None else f"{100 * self.brevitas_accuracy:.2f}%"
        agree = "n/a" if self.agreement is None else f"{100 * self.agreement:.2f}%"
        unit = {"macs": "MACs", "energy": "nJ (modelled)", "cycles": "cycles"}[self.budget_unit]
        threshold = f"{self.threshold:,.0f} {unit}" if self.policy == "budget" else f"{self.threshold:g}"
        head = [f"dataset                {self.dataset}"] if self.dataset else []
        if self.threshold_note:
            head.append(f"exit rule              {self.threshold_note}")
        return head + [
            f"images                 {self.images}  (policy {self.policy}, threshold {threshold})",
            f"accuracy brevitas      {brevitas}",
            f"accuracy int reference {100 * self.reference_accuracy:.2f}%   (agreement {agree})",
            f"mean executed MACs     {self.mean_macs:,.0f}",
            f"static backbone MACs   {self.static_backbone_macs:,}   ({self.mac_reduction:.2f}x fewer)",
            f"exit histogram         {hist}",
            f"skipped per image      {self.mean_skipped_blocks:.2f} blocks, "
            f"{self.mean_skipped_channels:.1f} channels",
            *(skip_lines(self.dynamics) if self.dynamics else []),
        ]


def brevitas_predictions(
    model: LCNet,
    data: Dataset,
    policy: ExitPolicy,
    reference: Results | None,
    batch: int = 500,
    own: list[float | None] | None = None,
) -> np.ndarray:
    """Predictions of the fake-quantised float model under the float form of the policy.

    A budget policy's decisions depend only on executed MACs, which the float model does not
    count; for it the exits the integer reference took are used. ``own``: per exit, its own
    confidence threshold (IR attr confidence_t16, e.g. S2DNAS's per stage) replacing the policy's.
    """
    if own is None:  # a model that carries its own per-exit thresholds (S2DNAS: one per stage)
        own = list(getattr(getattr(model, "config", None), "thresholds", None) or []) or None
    model.eval()
    preds = []
    warnings.filterwarnings("ignore", module="brevitas")
    with torch.no_grad():
        for start in range(0, len(data), batch):
            out = model(to_float(data.images[start : start + batch]))
            logits = [lg.double() for lg in out.logits]
            n = logits[0].shape[0]
            chosen = logits[-1].clone()
            taken = torch.zeros(n, dtype=torch.bool)
            if policy.kind == "budget" and reference is not None:
                exits = torch.from_numpy(reference.exits[start : start + n])
                for index, lg in enumerate(logits):
                    chosen[exits == index] = lg[exits == index]
            elif policy.kind in ("confidence", "margin"):
                for k, lg in enumerate(logits[:-1]):
                    if policy.kind == "confidence":
                        t = own[k] if own and own[k] is not None else policy.threshold
                        leave = torch.softmax(lg, dim=1).max(dim=1).values >= t
                    else:
                        top = torch.topk(lg, 2, dim=1).values
                        leave = top[:, 0] - top[:, 1] >= policy.threshold
                    leave &= ~taken
                    chosen[leave] = lg[leave]
                    taken |= leave
            preds.append(chosen.argmax(dim=1).numpy())
    return np.concatenate(preds)


def evaluate(
    ir: IRModel, data: Dataset, policy: ExitPolicy | None = None, model: LCNet | None = None
) -> tuple[Summary, Results]:
    policy = policy or ExitPolicy()
    results = execute(ir, data.images, policy)
    labels = data.labels
    brevitas_acc = agreement = None
    if model is not None:
        exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
        own = [op.attrs["confidence_t16"] / 65536 if "confidence_t16" in op.attrs else None for op in exits]
        preds = brevitas_predictions(model, data, policy, results, own=own)
        brevitas_acc = float((preds == labels).mean())
        agreement = float((preds == results.predictions).mean())
    static = int(ir.meta.get("static_backbone_macs", static_macs(ir)))
    mean_macs = float(results.macs.mean())
    summary = Summary(
        images=len(data),
        policy=policy.kind,
        threshold=policy.threshold,
        reference_accuracy=float((results.predictions == labels).mean()),
        brevitas_accuracy=brevitas_acc,
        agreement=agreement,
        mean_macs=mean_macs,
        static_backbone_macs=static,
        mac_reduction=static / mean_macs,
        exit_histogram=np.bincount(results.exits, minlength=len(ir.exits())).tolist(),
        mean_skipped_blocks=float(results.skipped_blocks.mean()),
        mean_skipped_channels=float(results.skipped_channels.mean()),
        budget_unit=policy.unit,
        dynamics=skip_summary(
            results, cycles_unit=policy.costs is not None and "cycles" in policy.costs.units
        ),
    )
    return summary, results
