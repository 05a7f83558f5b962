"""Accuracy vs executed MACs of LC-Net checkpoints on the full Fashion-MNIST test set.

For each checkpoint and exit policy: accuracy of the Brevitas (fake-quantised) model and
of the integer reference, their agreement, mean executed MACs vs the static backbone, the
exit histogram, and the training epoch time recorded in the checkpoint. All figures are
measured on this machine (no modelled numbers here).

    .venv/bin/python benchmarks/foundation.py [CKPT ...] [--limit N]
Prints a table and writes benchmarks/results/foundation.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinydyn.data import load_dataset
from tinydyn.models.checkpoint import bundled_checkpoint, load_model
from tinydyn.models.lcnet_lower import lower
from tinydyn.quantize.policy import ExitPolicy
from tinydyn.train.evaluate import evaluate

POLICIES = [
    ExitPolicy("none"),
    ExitPolicy("confidence", 0.9),
    ExitPolicy("confidence", 0.99),
    ExitPolicy("margin", 4.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "foundation.json")
    args = parser.parse_args()
    data = load_dataset("fashion-mnist", "test")
    if args.limit:
        data = data.subset(args.limit)
    rows = []
    for path in args.checkpoints or [bundled_checkpoint()]:
        model, payload = load_model(path)
        ir = lower(model, name=path.stem)
        history = payload.get("train", {}).get("history", [])
        l1 = payload.get("train", {}).get("config", {}).get("l1")
        for policy in POLICIES:
            summary, _ = evaluate(ir, data, policy, model)
            rows.append(
                {
                    "checkpoint": str(path),
                    "l1": l1,
                    "epoch_seconds": [round(h["seconds"], 1) for h in history],
                    **summary.to_json(),
                }
            )
            r = rows[-1]
            print(
                f"{path.name:24s} l1={l1!s:5s} {policy.kind:10s} {policy.threshold:<5g} "
                f"brevitas {100 * r['brevitas_accuracy']:6.2f}%  int {100 * r['reference_accuracy']:6.2f}%  "
                f"agree {100 * r['agreement']:6.2f}%  MACs {r['mean_macs'] / 1e6:6.3f}M "
                f"({r['mac_reduction']:.2f}x)  exits {r['exit_histogram']}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": len(data), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
