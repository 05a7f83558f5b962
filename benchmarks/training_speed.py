"""Training speed of the default LC-Net on this machine's CPUs, before and after the recipe work.

Each run calls the training loop (``tinydyn.train.loop.train``, what ``tinydyn train`` runs) in
a fresh interpreter whose PYTHONPATH points at the code measured, over ``--batches`` batches of
128 Fashion-MNIST images: the wall time of its epoch loop (the ``seconds`` the checkpoint
records) and the CPU time of the whole call (all threads; with 1 thread the least load-sensitive
figure), per batch and extrapolated to a full epoch (469 batches), labelled so. Two phases are
timed apart, because Brevitas spends its first 300 training steps collecting activation
statistics (a percentile per quantiser per step), which costs more than a later step:

* ``collecting``: from a fresh model (the first 300 steps of epoch 1);
* ``steady``: from the bundled checkpoint (``--init-from``: scales set), as every later step.

An epoch-1 estimate is 300 collecting steps + 169 steady ones; a later epoch is 469 steady ones.
"before" runs the code at git HEAD from a worktree (``git worktree add /tmp/train_before HEAD``)
through PYTHONPATH; "after" runs this checkout with its default recipe (SGD, crop + flip
augmentation in torch) and the environment 'tinydyn train' now sets (OMP_WAIT_POLICY=PASSIVE).
Runs alternate before/after and each is repeated ``--repeats`` times; the fastest repeat counts
(other jobs share the cores: the slower repeats measure them).

Then ``--breakdown`` batches are timed in-process, phase by phase (data, forward, backward,
optimizer), with Brevitas fake-quant on and fully off (activation scales replaced by a constant,
for this measurement only), and torch's profiler lists the costliest operators (a separate,
shorter run: its overhead is not in the timings).

    .venv/bin/python benchmarks/training_speed.py [--batches 30] [--repeats 1] [--threads 2] [--breakdown 60]
Prints tables and writes benchmarks/results/training_speed.json. Measured, on whatever load the
machine had (the load average is recorded with each figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = Path("/tmp/train_before")
BUNDLED = ROOT / "tinydyn" / "checkpoints" / "fashion_lcnet.pt"
EPOCH_BATCHES = 469  # 60,000 images / 128
COLLECT_STEPS = 300  # Brevitas's collect_stats_steps for its activation quantisers


def worktree() -> Path:
    if not (BEFORE / "tinydyn" / "cli.py").is_file():
        subprocess.run(["git", "worktree", "add", "--detach", str(BEFORE), "HEAD"], cwd=ROOT, check=True)
    return BEFORE


# run in a fresh interpreter with PYTHONPATH at the code measured: its own training loop over
# `batches` batches; wall seconds of the epoch loop (its history) and CPU seconds of the call
DRIVER = r"""
import json, sys, time, warnings
from pathlib import Path
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
warnings.filterwarnings("ignore")
from tinydyn.data import load_dataset
from tinydyn.models.registry import get_family
from tinydyn.train import loop
data = load_dataset("fashion-mnist", "train").subset(128 * args["batches"])
model = get_family("lcnet").config_from_options(classes=data.classes)  # the default LC-Net
fields = loop.TrainConfig.__dataclass_fields__
cfg = loop.TrainConfig(**{k: v for k, v in args["config"].items() if k in fields})
init = Path(args["init_from"]) if args["init_from"] else None
started = time.process_time()
result = loop.train(data, Path(args["out"]), model, cfg, init_from=init, progress=False)
cpu = time.process_time() - started
print(json.dumps({"wall": result["history"][-1]["seconds"], "cpu": cpu}))
"""


def timed_run(code: Path, batches: int, threads: int, config: dict, init_from: Path | None) -> dict:
    """Wall and CPU seconds of one training run of ``code`` (CPU: every thread of the process,
    model build and checkpoint write included), and the load average when it ended."""
    with tempfile.TemporaryDirectory() as tmp:
        args = {
            "batches": batches,
            "threads": threads,
            "config": {"epochs": 1, "batch_size": 128, "threads": threads, "eval_limit": 0, **config},
            "init_from": str(init_from) if init_from else None,
            "out": str(Path(tmp) / "m.pt"),
        }
        env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads)}
        if code == ROOT:  # what 'tinydyn train' now sets before torch loads (unless the user did)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        cmd = [sys.executable, "-c", DRIVER, json.dumps(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(f"training with {code} failed:\n{proc.stderr[-2000:]}")
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**figures, "load_average": os.getloadavg()[0]}


def speed(batches: int, repeats: int, threads: int) -> dict:
    before, after = worktree(), ROOT
    float_weights = {"epochs": 2, "qat_last_epochs": 1, "stop_after": 1}
    variants = {  # (code, phase): (code dir, threads, config, init_from)
        ("before", "collecting"): (before, threads, {}, None),
        ("after", "collecting"): (after, threads, {}, None),
        ("before", "steady"): (before, threads, {}, BUNDLED),
        ("after", "steady"): (after, threads, {}, BUNDLED),
        ("before, 1 thread", "steady"): (before, 1, {}, BUNDLED),
        ("after, 1 thread", "steady"): (after, 1, {}, BUNDLED),
        ("after, channels-last", "steady"): (after, threads, {"channels_last": True}, BUNDLED),
        ("after, float weights (--qat-last-epochs)", "steady"): (after, threads, float_weights, BUNDLED),
    }
    best: dict = {}
    for _ in range(repeats):
        for key, (code, run_threads, config, init_from) in variants.items():
            got = timed_run(code, batches, run_threads, config, init_from)
            if key not in best or got["wall"] < best[key]["wall"]:
                best[key] = got
            print(
                f"  {key[0]:<42} {key[1]:<11} {1000 * got['wall'] / batches:7.0f} ms/batch wall "
                f"{1000 * got['cpu'] / batches:7.0f} ms/batch CPU  (load {got['load_average']:.1f})"
            )
    rows = []
    for name in dict.fromkeys(k[0] for k in variants):
        steady = best[(name, "steady")]
        row = {
            "code": name,
            "threads": variants[(name, "steady")][1],
            "ms_per_batch_steady_wall": 1000 * steady["wall"] / batches,
            "ms_per_batch_steady_cpu": 1000 * steady["cpu"] / batches,
            "later_epoch_s_extrapolated": EPOCH_BATCHES * steady["wall"] / batches,
            "load_average_steady": steady["load_average"],
        }
        collecting = best.get((name, "collecting"))
        if collecting is not None:
            row["ms_per_batch_collecting_wall"] = 1000 * collecting["wall"] / batches
            row["ms_per_batch_collecting_cpu"] = 1000 * collecting["cpu"] / batches
            row["epoch1_s_extrapolated"] = (
                COLLECT_STEPS * collecting["wall"] + (EPOCH_BATCHES - COLLECT_STEPS) * steady["wall"]
            ) / batches
        rows.append(row)
    return {"batches_timed": batches, "repeats": repeats, "threads": threads, "rows": rows}


def breakdown(batches: int, threads: int) -> dict:
    """Per-phase milliseconds per batch of this checkout's loop body, steady phase."""
    import warnings

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as 'tinydyn train' sets it (torch not loaded yet)
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    import tinydyn.models.lcnet as lcnet
    from tinydyn.data import load_dataset
    from tinydyn.models.checkpoint import load_model
    from tinydyn.models.registry import get_family
    from tinydyn.train.augment import augment, draw_epoch, to_input
    from tinydyn.train.loop import TrainConfig, make_optimizer
    from tinydyn.train.recipe import exits_loss

    data = load_dataset("fashion-mnist", "train")
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    family = get_family("lcnet")
    cfg = TrainConfig().resolved("fashion-mnist", 28, warm_started=False)

    def run(quant: bool, n: int, profile: bool = False) -> tuple[dict, str]:
        model, _ = load_model(BUNDLED)
        model.train()
        original = lcnet.act_scale
        if not quant:
            from brevitas.graph.calibrate import QuantizationStatusManager as Q

            Q.disable_act_quantization(model, is_training=True)
            Q.disable_weight_quantization(model, is_training=True)
            lcnet.act_scale = lambda q: torch.tensor(1 / 255)  # measurement only: no quantiser scale
        optimizer = make_optimizer(family, model, cfg)
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(data), generator=generator)
        draws = draw_epoch(len(data), cfg.crop_padding, cfg.flip, generator)
        totals = dict.fromkeys(("data", "forward", "backward", "optimizer"), 0.0)
        table = ""
        try:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            ctx = torch_profile(activities=[ProfilerActivity.CPU]) if profile else None
            if ctx is not None:
                ctx.__enter__()
            for step in range(n + 2):
                t0 = time.perf_counter()
                pos = torch.arange(step * 128, (step + 1) * 128)
                idx = order[pos]
                x = to_input(
                    augment(images[idx], cfg.crop_padding, draws.dy[pos], draws.dx[pos], draws.flip[pos])
                )
                t1 = time.perf_counter()
                out = family.train_outputs(model, x)
                loss = exits_loss(out.logits, labels[idx], 1.0)
                t2 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t3 = time.perf_counter()
                optimizer.step()
                t4 = time.perf_counter()
                if step >= 2:  # two warm-up steps
                    for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                        totals[key] += dt
            if ctx is not None:
                ctx.__exit__(None, None, None)
                table = ctx.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        finally:
            lcnet.act_scale = original
        ms = {k: 1000 * v / n for k, v in totals.items()}
        ms["total"] = sum(ms.values())
        return ms, table

    quant, _ = run(True, batches)
    plain, _ = run(False, batches)
    _, table = run(True, max(batches // 6, 5), profile=True)  # apart: the profiler's overhead skews timings
    return {
        "batches": batches,
        "threads": threads,
        "ms_per_batch_brevitas": quant,
        "ms_per_batch_float_no_fake_quant": plain,
        "brevitas_share_of_forward_backward": 1
        - (plain["forward"] + plain["backward"]) / (quant["forward"] + quant["backward"]),
        "top_operators": table,
        "load_average": os.getloadavg()[0],
    }


def print_speed(speed: dict) -> None:
    print(
        f"\ndefault LC-Net, batch 128, Fashion-MNIST; {speed['batches_timed']} batches timed per run, "
        "extrapolated"
    )
    print(
        f"{'code':<44} {'thr':>3} {'collecting ms/b':>16} {'steady ms/b':>13} {'epoch 1 s':>10} {'later':>8}"
    )
    print(
        f"{'':<44} {'':>3} {'wall':>7} {'CPU':>8} {'wall':>6} {'CPU':>6} {'(extrap.)':>10} {'(extrap.)':>8}"
    )
    for row in speed["rows"]:
        if "ms_per_batch_collecting_wall" in row:
            collect = f"{row['ms_per_batch_collecting_wall']:7.0f} {row['ms_per_batch_collecting_cpu']:8.0f}"
            epoch1 = f"{row['epoch1_s_extrapolated']:10.0f}"
        else:
            collect, epoch1 = f"{'-':>7} {'-':>8}", f"{'-':>10}"
        print(
            f"{row['code']:<44} {row['threads']:>3} {collect} {row['ms_per_batch_steady_wall']:6.0f} "
            f"{row['ms_per_batch_steady_cpu']:6.0f} {epoch1} {row['later_epoch_s_extrapolated']:8.0f}"
        )


def print_breakdown(b: dict) -> None:
    print(f"\nwhere a steady batch goes (this checkout, {b['batches']} batches, {b['threads']} threads), ms")
    print(f"{'':<24} {'data':>7} {'forward':>8} {'backward':>9} {'optim':>7} {'total':>7}")
    phases = ("data", "forward", "backward", "optimizer", "total")
    for label, key in (
        ("Brevitas fake-quant", "ms_per_batch_brevitas"),
        ("float (no quant)", "ms_per_batch_float_no_fake_quant"),
    ):
        cells = " ".join(f"{b[key][k]:{w}.1f}" for k, w in zip(phases, (7, 8, 9, 7, 7), strict=True))
        print(f"{label:<24} {cells}")
    print(f"Brevitas share of forward+backward: {100 * b['brevitas_share_of_forward_backward']:.0f}%")
    print(b["top_operators"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="batches per timed run (0: breakdown only)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--breakdown", type=int, default=60, help="batches of the phase breakdown (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training_speed.json")
    args = parser.parse_args()
    result: dict = {"machine": f"{os.cpu_count()} CPUs"}
    if args.batches > 0:
        result["speed"] = speed(args.batches, args.repeats, args.threads)
    elif args.out.is_file():  # the breakdown alone: keep the speed figures written before
        result = {**json.loads(args.out.read_text()), **result}
    if "speed" in result:
        print_speed(result["speed"])
    if args.breakdown:
        result["breakdown"] = breakdown(args.breakdown, args.threads)
        print_breakdown(result["breakdown"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
