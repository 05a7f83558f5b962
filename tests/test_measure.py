"""`tinydyn measure` and `tinydyn run` with real firmware on real ptys: the threshold sweep equals
the executor, mismatches are caught and counted, and the main job runs end to end under QEMU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydyn.host.boardproc import BoardProcess
from tinydyn.host.firmware import build_firmware
from tinydyn.host.results import load_records
from tinydyn.host.sweep import probe, sweep, sweep_policies
from tinydyn.ir import IRModel
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

from .codegen_support import gated_ir as gated_model_ir
from .conftest import make_model, require_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gated_ir(fashion_test) -> IRModel:
    return gated_model_ir(fashion_test, make_model)


def tinydyn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tinydyn", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def test_sweep_from_one_probe_equals_the_executor(gated_ir: IRModel, fashion_test) -> None:
    images, labels = fashion_test.images[:96], fashion_test.labels[:96]
    static = gated_ir.meta["static_backbone_macs"]
    pr = probe(gated_ir, images)
    policies = [
        ExitPolicy("none"),
        ExitPolicy("confidence", 0.3),
        ExitPolicy("confidence", 0.7),
        ExitPolicy("margin", 1.0),
        *(ExitPolicy("budget", f * static) for f in (0.2, 0.5, 0.8, 1.5)),
    ]
    exits_seen = set()
    for pol in policies:
        ref = execute(gated_ir, images, pol)
        pred, exits, macs = pr.outcome(gated_ir, pol)
        assert np.array_equal(pred, ref.predictions), pol
        assert np.array_equal(exits, ref.exits), pol
        assert np.array_equal(macs, ref.macs), pol
        exits_seen |= set(exits.tolist())
    assert exits_seen == {0, 1, 2}  # the policies above really exercise every exit
    points = sweep(gated_ir, images, labels, sweep_policies("confidence", static), pr)
    ref = execute(gated_ir, images, ExitPolicy("confidence", 0.9))
    point = next(p for p in points if p["threshold"] == 0.9)
    assert point["accuracy"] == pytest.approx((ref.predictions == labels).mean())
    assert point["mean_macs"] == pytest.approx(ref.macs.mean())


def test_measure_counts_and_reports_mismatches(gated_ir: IRModel, tmp_path: Path) -> None:
    """A board whose firmware differs from the reference (one class's multiplier 25 % larger)
    gives mismatches: reported on one line, counted in the summary, kept in the records."""
    require_tool("gcc")
    wrong = IRModel(
        gated_ir.name,
        gated_ir.input,
        dict(gated_ir.tensors),
        gated_ir.ops,
        dict(gated_ir.arrays),
        gated_ir.classes,
        dict(gated_ir.meta),
    )
    mult = wrong.arrays["final.fc.mult"].copy()
    mult[3] = mult[3] * 5 // 4
    wrong.arrays["final.fc.mult"] = mult
    exe = build_firmware(wrong, "host", tmp_path / "fw")
    ir_dir = gated_ir.save(tmp_path / "ir")
    out = tmp_path / "m.jsonl"
    args = ["--ir", str(ir_dir), "--limit", "30", "--out", str(out), "--policy", "none"]
    with BoardProcess([str(exe)]) as board:
        # the firmware reports the altered model's id: accepted only when asked for explicitly
        refused = tinydyn("measure", "--port", board.port, *args)
        assert refused.returncode == 2 and "runs model" in refused.stderr
        run = tinydyn("measure", "--port", board.port, *args, "--model-id", wrong.model_id(), "--overwrite")
    assert run.returncode == 2, run.stderr
    err = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "differ from the integer reference" in err[0]
    assert "MISMATCH image" in run.stdout
    records = [r for r in load_records(out) if "seq" in r]
    assert len(records) == 30
    bad = [r for r in records if not r["match"]]
    assert bad and all("logits" in r["diff"] for r in bad)
    summary = json.loads((tmp_path / "m.summary.json").read_text())
    assert summary["mismatches"] == len(bad) and summary["agreement"] == pytest.approx(1 - len(bad) / 30)
    assert summary["energy_kind"] == "modelled" and summary["counter_kind"] == "none"
    # an existing results file is never overwritten by accident
    again = tinydyn("measure", "--port", "/dev/null", *args)
    assert again.returncode == 2 and "already holds 31 records" in again.stderr


def test_run_is_the_main_job_end_to_end(tmp_path: Path) -> None:
    """`tinydyn run`: bundled checkpoint → IR → C → QEMU firmware → measure over the pty → report."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    out = tmp_path / "main"
    proc = tinydyn("run", "--limit", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for n in range(1, 7):
        assert f"[{n}/6]" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    m = summary["measurement"]
    assert m["images"] == 16 and m["agreement"] == 1.0 and m["mismatches"] == 0
    assert m["board"] == "qemu-mps2-an386" and m["counter_kind"] == "instructions"
    assert m["energy_kind"] == "modelled" and m["energy_model_agreement"] == 1.0
    assert m["mean_latency_ms"] > 0 and len(m["sweep"]) >= 5
    assert set(summary["stages_s"]) == {"quantize", "ir", "build", "boot", "measure", "report"}
    # the bundled checkpoint records its dataset (older ones are recognised by their class names)
    assert m["dataset"] == "fashion-mnist" and "recorded in the checkpoint" in m["dataset_note"]
    assert m["threshold_note"].startswith("confidence 0.9 (default)") and "exit rule" in proc.stdout
    assert 0 <= summary["brevitas_accuracy"] <= 1
    for png in m["plots"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(load_records(out / "results.jsonl")) == 17
