"""The bundled searched S2DNAS checkpoint (tinydyn/checkpoints/fashion_s2dnas.pt): it is what
its recorded command trains, its thresholds are its own, and its firmware is the reference."""

from __future__ import annotations

import shlex

import numpy as np

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_host
from tinydyn.models.checkpoint import bundled_static_checkpoint
from tinydyn.models.s2dnas_lower import static_macs
from tinydyn.pipeline import load_ir
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

from .codegen_support import assert_same
from .conftest import require_tool

BUNDLED = bundled_static_checkpoint().parent / "fashion_s2dnas.pt"


def test_bundled_s2dnas_is_the_recorded_searched_transformation_of_the_static_resnet(fashion_test):
    loaded = load_ir(BUNDLED)
    cfg, payload = loaded.module.config, loaded.payload
    assert payload["family"] == "s2dnas" and cfg.backbone == "resnet" and cfg.stages == 3
    argv = shlex.split(payload["command"])
    option = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert option["--backbone-from"].endswith("fashion_static.pt")
    splits = "/".join(",".join(str(v) for v in s) for s in cfg.splits)
    concat = "/".join("".join("1" if f else "0" for f in c) for c in cfg.concat)
    assert (option["--splits"], option["--concat"], option["--groups"]) == (splits, concat, str(cfg.groups))
    # the static model it was transformed from is the bundled one: same architecture, same MACs
    static = load_ir(bundled_static_checkpoint())
    assert static_macs(cfg) == int(execute(static.ir, fashion_test.images[:1], ExitPolicy()).macs[0])
    tuned = payload["train"]["tuned"]
    assert list(cfg.thresholds) == tuned["thresholds"] and tuned["images"] == 5000
    early = sorted(
        (op for op in loaded.ir.exits() if not op.attrs["final"]), key=lambda op: op.attrs["index"]
    )
    assert [op.attrs["confidence_t16"] for op in early] == [round(t * 65536) for t in cfg.thresholds]


def test_bundled_s2dnas_host_firmware_equals_the_reference(fashion_test, tmp_path):
    require_tool("gcc")
    ir = load_ir(BUNDLED).ir
    build_project(ir, "host", tmp_path, compile=True)
    images, labels = fashion_test.images[:300], fashion_test.labels[:300]
    for policy in (ExitPolicy("none"), ExitPolicy("confidence", 0.9)):  # confidence: its own thresholds
        ref = execute(ir, images, policy)
        assert_same(ref, run_host(ir, tmp_path / "fw", images, policy))
    # dynamic inference saves most of the MACs and every stage is reachable
    full = execute(ir, images, ExitPolicy("none"))
    assert ref.macs.mean() < 0.5 * full.macs.mean()
    assert (ref.predictions == labels).mean() > 0.85
    assert np.bincount(ref.exits, minlength=3)[0] > 0 and ref.exits.max() >= 1
