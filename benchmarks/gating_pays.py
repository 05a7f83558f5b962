"""Does gating pay on the device, block by block? (issue 15, item 2)

Profiles the bundled LC-Net (or --checkpoint) on the QEMU Cortex-M4 board with per-layer
attribution (tinydyn.host.profile.take_profile: static = gating off, gated = gating on, both
with policy none, every run bit-exact checked) and reports, per image and per gated block:

  block work gated   instructions of the block's then-branch layers but its gates (the convs)
                     when it ran, its else-branch (the skip rescale) when it was skipped;
  block work static  the same image's instructions of those layers with gating off (the
                     then-branch in full);
  ratio              gated / static: "a gated block never costs more than the same block
                     ungated" is max ratio <= 1;
  with gates         the same ratio with the block's gate layers (L-Net, C-Net) added to its
                     gated cost: a block whose gates switch nothing off on an image costs its
                     gates more than ungated (informational: the gates are the bookkeeping below)

and the share of the gated run's instructions spent on skip bookkeeping: the gate layers
(every linear with role gate: L-Nets and C-Nets) plus td_infer's own control code (gate
checks, exit decisions), target <= 2%. The per-channel bookkeeping inside a conv (active-channel lists,
td_write_skipped for switched-off outputs) is attributed to the conv and not separable here.

Instructions are measured (exact retired counts under QEMU -icount via the plugin).

    .venv/bin/python benchmarks/gating_pays.py [--images N] [--checkpoint PATH]
Prints a table and writes benchmarks/results/gating_pays.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from tinydyn.host.profile import layer_specs, take_profile

warnings.filterwarnings("ignore")


def analyse(ir, profile) -> dict:
    specs, blocks = layer_specs(ir)
    index = {s.name: i for i, s in enumerate(specs)}
    modes = profile.summary["modes"]
    static = np.asarray(modes["static"]["per_image"]["layer_instructions"], dtype=np.float64)
    gated = np.asarray(modes["gated"]["per_image"]["layer_instructions"], dtype=np.float64)
    total_gated = np.asarray(modes["gated"]["per_image"]["instructions"], dtype=np.float64)
    ops = {op.name: op for op in ir.walk()}
    gate_layers = [s.name for s in specs if ops[s.name].attrs.get("role") == "gate"]
    rows = []
    for b in blocks:
        members = ([b.gate_layer] if b.gate_layer in index else []) + list(b.run) + list(b.skip)
        gates = [index[m] for m in members if m in index and m in gate_layers]
        work = [index[m] for m in members if m in index and m not in gate_layers]
        g = gated[:, work].sum(axis=1)
        s = static[:, work].sum(axis=1)
        ratio = g / np.maximum(s, 1)
        with_gates = (g + gated[:, gates].sum(axis=1)) / np.maximum(s, 1)
        ran = gated[:, [index[m] for m in b.run if m in index]].sum(axis=1) > 0
        rows.append(
            {
                "block": b.name,
                "layers": members,
                "gate_layers": [m for m in members if m in gate_layers],
                "gates_mean": float(gated[:, gates].sum(axis=1).mean()),
                "ratio_max_with_gates": float(with_gates.max()),
                "gated_mean": float(g.mean()),
                "static_mean": float(s.mean()),
                "ratio_max": float(ratio.max()),
                "ratio_mean": float(ratio.mean()),
                "ratio_max_when_run": float(ratio[ran].max()) if ran.any() else None,
                "ratio_max_when_skipped": float(ratio[~ran].max()) if (~ran).any() else None,
                "images_run": int(ran.sum()),
                "images_skipped": int((~ran).sum()),
                "per_image_ratio": [float(r) for r in ratio],
            }
        )
    gate_cols = [index[n] for n in gate_layers]
    control = gated[:, len(specs)]  # per image, the last column is control
    bookkeeping = gated[:, gate_cols].sum(axis=1) + control
    share = bookkeeping / total_gated
    return {
        "blocks": rows,
        "max_block_ratio": max(r["ratio_max"] for r in rows) if rows else None,
        "max_block_ratio_with_gates": max(r["ratio_max_with_gates"] for r in rows) if rows else None,
        "gate_layers": gate_layers,
        "bookkeeping_share_mean": float(share.mean()),
        "bookkeeping_share_max": float(share.max()),
        "totals": {
            mode: {"macs": modes[mode]["macs"], "instructions": modes[mode]["instructions"]} for mode in modes
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--checkpoint", type=Path, default=None, help="LC-Net checkpoint (default: bundled)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gating_pays.json")
    args = parser.parse_args()
    from tinydyn.data import load_dataset
    from tinydyn.models.checkpoint import bundled_checkpoint, load_model
    from tinydyn.models.lcnet_lower import lower

    path = args.checkpoint or bundled_checkpoint()
    model, _ = load_model(path)
    ir = lower(model, name=path.stem)
    images = load_dataset("fashion-mnist", "test").images[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        profile = take_profile(ir, images, Path(tmp), compare_default=False, dataset="fashion-mnist")
    exact = all(profile.summary["modes"][m]["bit_exact"] for m in profile.summary["modes"])
    result = {"model": ir.name, "images": len(images), "bit_exact": exact, **analyse(ir, profile)}
    print(
        f"{'block':<10}{'static work':>14}{'gated work':>13}{'ratio max':>11}"
        f"{'max (run)':>11}{'max (skip)':>11}{'gates':>8}{'w/ gates':>10}{'run/skip':>10}"
    )
    for r in result["blocks"]:
        fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"{r['block']:<10}{r['static_mean']:>14,.0f}{r['gated_mean']:>13,.0f}{r['ratio_max']:>11.3f}"
            f"{fmt(r['ratio_max_when_run']):>11}{fmt(r['ratio_max_when_skipped']):>11}"
            f"{r['gates_mean']:>8,.0f}{r['ratio_max_with_gates']:>10.3f}"
            f"{r['images_run']:>5}/{r['images_skipped']:<4}"
        )
    t = result["totals"]
    print(
        f"max gated/static block work ratio {result['max_block_ratio']:.3f} (target <= 1; with the "
        f"block's gates {result['max_block_ratio_with_gates']:.3f}); skip bookkeeping "
        f"(gate layers + control) {result['bookkeeping_share_mean']:.2%} of instructions, max "
        f"{result['bookkeeping_share_max']:.2%} (target <= 2%); bit-exact {exact}"
    )
    print(
        "totals: "
        + ", ".join(
            f"{m} {v['macs'] / 1e6:.3f} M MACs {v['instructions'] / 1e6:.3f} M instr" for m, v in t.items()
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
