"""What dynamic inference skipped and what its gates cost, from any model's IR tags.

Generic over families (LC-Net, DDI, …): the reference executor's cost meter
(tinydyn/cost/budget.py) counts, per image, the guarded blocks reached and the channel-gated
channels offered (the denominators), the gates' own MACs (ops ``OpKind.is_gate`` marks) and the
exit heads' MACs; the backbone is the rest. ``tinydyn eval``, ``run`` and ``measure`` print it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinydyn.quantize.executor import Results


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def skip_summary(
    ref: Results,
    rows: np.ndarray | None = None,
    board_gate_macs: np.ndarray | None = None,
    board_macs: np.ndarray | None = None,
    cycles_unit: bool = False,
) -> dict[str, Any]:
    """Layer- and channel-skip ratios, and MACs split into gates, exit heads and backbone, over
    the images ``rows`` of ``ref`` (all by default). ``board_*``: the board's own counts
    (RESULT v2) where it gives them; the reference's otherwise. ``cycles_unit``: the cost model
    had a cost table, so the gates' modelled cycles are meaningful."""
    rows = np.arange(len(ref)) if rows is None else np.asarray(rows)
    extra = {k: v[rows] for k, v in ref.extra.items()}
    macs = board_macs if board_macs is not None else ref.macs[rows]
    gate = board_gate_macs if board_gate_macs is not None else extra.get("gate_macs", np.zeros(len(rows)))
    head = extra.get("head_macs", np.zeros(len(rows)))
    reached = int(extra.get("blocks_reached", np.zeros(1)).sum())
    offered = int(extra.get("channels_offered", np.zeros(1)).sum())
    out: dict[str, Any] = {
        "layer_skip_ratio": float(ref.skipped_blocks[rows].sum() / reached) if reached else None,
        "blocks_reached_per_image": reached / max(len(rows), 1),
        "channel_skip_ratio": float(ref.skipped_channels[rows].sum() / offered) if offered else None,
        "channels_offered_per_image": offered / max(len(rows), 1),
        "mean_gate_macs": _mean(gate),
        "mean_head_macs": _mean(head),
        "mean_backbone_macs": _mean(macs - gate - head),
        "gate_mac_share": float(gate.sum() / macs.sum()) if macs.sum() else 0.0,
        "gate_macs_source": "board" if board_gate_macs is not None else "reference",
    }
    if "energy_cost_nj" in extra:
        out["mean_energy_cost_nj"] = _mean(extra["energy_cost_nj"])  # modelled (budget cost model)
    if cycles_unit and "cycles_cost" in extra:
        out["mean_cycles_cost"] = _mean(extra["cycles_cost"])  # modelled (cost table)
        out["mean_gate_cycles"] = _mean(extra["gate_cycles_cost"])
    return out


def skip_lines(s: dict[str, Any]) -> list[str]:
    """The summary lines (aligned with tinydyn measure's and eval's)."""

    def ratio(v: float | None, what: str) -> str:
        return f"{100 * v:.1f}% of {what}" if v is not None else f"n/a (no {what})"

    lines = [
        f"layer skip ratio       {ratio(s['layer_skip_ratio'], 'gated blocks reached')} "
        f"({s['blocks_reached_per_image']:.2f} per image)",
        f"channel skip ratio     {ratio(s['channel_skip_ratio'], 'gated channels offered')} "
        f"({s['channels_offered_per_image']:.1f} per image)",
        f"MACs by role           backbone {s['mean_backbone_macs']:,.0f}, gates {s['mean_gate_macs']:,.0f} "
        f"({100 * s['gate_mac_share']:.2f}%, {s['gate_macs_source']}), exit heads {s['mean_head_macs']:,.0f}",
    ]
    if "mean_energy_cost_nj" in s:
        lines.append(
            f"budget cost model      {s['mean_energy_cost_nj']:,.0f} nJ per image (modelled, per op)"
            + (
                f", {s['mean_cycles_cost']:,.0f} cycles of which gates {s['mean_gate_cycles']:,.0f} "
                "(modelled, cost table)"
                if "mean_cycles_cost" in s
                else ""
            )
        )
    return lines
