"""`tinydyn fpga` on an S2DNAS model: one dataflow partition per stage, each reading the image and
recomputing the earlier stages' channels it reuses (tinydyn.models.s2dnas_fpga), through the real
finn-plus front end; the PS controller (tinydyn/hw/ps/td_fpga.c) on the host against the IODMA
register model, checked against the integer reference (classes, exits, logits, MACs) with the
model's own per-stage thresholds; the checkpoints the FPGA path cannot build.

The build (a tiny 3-stage S2DNAS model on the VGG backbone, a few training batches; no HLS/RTL code
generation, one static baseline folding) runs once per module, about a minute on 2 idle cores. The ResNet
backbone's float residual joins cost ~4,000 LUT and 20 DSP per partition (finn-plus's float
ElementwiseMul/Add): three partitions of even the tiny ResNet model overflow the xc7z020's LUTs, so
its test maps one stage partition and checks it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.s2dnas_support import tiny_config
from tests.test_hw import c_bytes, pack_fields, require_finn
from tinydyn.models.s2dnas import S2DNASNet
from tinydyn.quantize.policy import ExitPolicy, IntegerPolicy, confident, lut_multiplier

STAGES = 3


def train_briefly(model: S2DNASNet, batches: int) -> S2DNASNet:
    """A few SGD batches on Fashion-MNIST: logits that tell images apart, trained scales."""
    from tinydyn.data import load_dataset

    train = load_dataset("fashion-mnist", "train")
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    model.train()
    for i in range(batches):
        x = torch.from_numpy(train.images[i * 64 : (i + 1) * 64].astype(np.float32) / 255)
        y = torch.from_numpy(train.labels[i * 64 : (i + 1) * 64]).long()
        loss = sum(torch.nn.functional.cross_entropy(z, y) for z in model(x).logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def split_thresholds(model: S2DNASNet, images: np.ndarray, shares: tuple[float, ...]) -> tuple[float, ...]:
    """Per early stage the confidence threshold that about ``shares[k]`` of ``images`` pass
    (integer confidence test on the integer reference's logits), on the 1/65536 grid."""
    from tinydyn.models.s2dnas_lower import lower
    from tinydyn.quantize.executor import every_head, trace

    ir = lower(model, "probe")
    run = trace(ir, images, every_head(), keep_tensors=False)
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    out = []
    for k, share in enumerate(shares):
        mult = lut_multiplier(ir.tensors[exits[k].attrs["logits"]].scale)
        lo, hi = 0, 65536
        while lo < hi:  # the share passing falls as the threshold rises
            mid = (lo + hi) // 2
            if confident(run.exit_logits[k], mult, mid).mean() > share:
                lo = mid + 1
            else:
                hi = mid
        out.append(lo / 65536)
    return tuple(out)


@pytest.fixture(scope="module")
def s2d_model(fashion_test):
    torch.manual_seed(0)
    model = train_briefly(S2DNASNet(tiny_config(fashion_test.classes, "vgg")), 60)
    model.config.thresholds = split_thresholds(model, fashion_test.images[:16], (0.35, 0.5))
    return model


@pytest.fixture(scope="module")
def s2d_build(s2d_model, tmp_path_factory):
    require_finn()
    from tinydyn.hw.build import build_fpga

    out = tmp_path_factory.mktemp("fpga_s2dnas")
    report = build_fpga(
        None,
        "zedboard",
        out,
        model=s2d_model,
        target_fps=300,
        eval_images=200,
        check_images=6,
        static_sweep=(1.0,),
        codegen=False,
        progress=lambda _msg: None,
    )
    return report, out


def test_stage_networks_are_the_stages(s2d_model, fashion_test):
    """The backbone cut to the channels of stages 1..k computes stage k's logits exactly (float
    Brevitas), and its dense MACs are what the masked model keeps plus the removed connections."""
    from tinydyn.models.s2dnas_fpga import S2DNASFpgaError, fabric_macs, stage_logits, stage_network

    images = fashion_test.images[:32]
    full = stage_logits(s2d_model, images)
    cfg = s2d_model.config
    for k in range(STAGES):
        net = stage_network(s2d_model, k)
        assert net.config.stages == 1 and net.config.widths == tuple(
            cfg.stage_ranges(w, r)[k][1] for r, w in enumerate(cfg.widths)
        )
        np.testing.assert_array_equal(stage_logits(net, images)[0], full[k])
    # widths 8/16 in 4 groups, splits 2,3: stage 0 owns 4/8 channels, stages 0-1 6/12, all 8/16
    assert [stage_network(s2d_model, k).config.widths for k in range(3)] == [(4, 8), (6, 12), (8, 16)]
    # the last stage network is the whole masked model: the static backbone's dense MACs + one FC
    from tinydyn.models.s2dnas_lower import static_macs

    assert fabric_macs(stage_network(s2d_model, 2)) == static_macs(cfg)
    with pytest.raises(S2DNASFpgaError, match="stage 3 is not one of the model's 3 stages"):
        stage_network(s2d_model, 3)


def test_one_partition_per_stage(s2d_build, s2d_model):
    """Three partitions, each reading the image; the checks tie each one's accumulators (the HW
    graph, finished as on the PS) to QONNX, Brevitas and the integer reference; the fabric MACs
    are finn-plus's count of the stage network, more than the integer reference's where the
    stage recomputes earlier channels (and the masked connections)."""
    import json

    from tinydyn.ir import IRModel
    from tinydyn.models.s2dnas_fpga import fabric_macs, stage_network
    from tinydyn.quantize.executor import execute

    report, out = s2d_build
    assert [s.name for s in report.stages] == ["stage0", "stage1", "stage2"]
    run = json.loads((out / "run.json").read_text())
    for k, row in enumerate(report.stages):
        check = run["checks"][row.name]
        assert check["kind"] == "logits" and check["images_unexplained"] == 0
        assert check["hw_python_class_vs_integer"] >= 5 and check["qonnx_class_vs_integer"] >= 5
        assert row.macs["fabric"] == fabric_macs(stage_network(s2d_model, k))
    ir = IRModel.load(out / "ir")
    images = out / "stages"
    assert sorted(p.name for p in images.iterdir()) == ["stage0", "stage1", "stage2"]
    # the integer reference's MACs of an image leaving at stage k, every head computed (LeaveAt)
    probe = np.zeros((1, 1, 28, 28), dtype=np.uint8)
    to_exit = [int(execute(ir, probe, LeaveAt("margin", 0.0, exit=k)).macs[0]) for k in range(STAGES)]
    assert [s.macs["reference_to_exit"] for s in report.stages] == to_exit
    assert report.stages[0].macs["fabric"] == to_exit[0]  # stage 0 reads only itself: nothing extra
    for k in (1, 2):
        assert report.stages[k].macs["fabric"] > to_exit[k] > to_exit[k - 1]
    text = report.text()
    assert "one partition per stage, each reading the image" in text
    thresholds = " / ".join(f"{t:.4g}" for t in s2d_model.config.thresholds)
    assert f"own confidence thresholds from the checkpoint ({thresholds})" in text


def test_estimates_fit_and_throughput(s2d_build):
    """Per-partition LUT/BRAM18/DSP (everything counted), the design fits the xc7z020 and the
    schedule's figures: early exit against every image running every stage (worst case) and
    against the static design (the last stage's network alone, the same budget)."""
    report, _ = s2d_build
    assert report.fits
    for row in report.stages:
        assert row.resources["LUT"] > 0 and row.resources["BRAM_18K"] >= 0
        assert row.breakdown["iodma"]["LUT"] == 1084 + 1397  # one IODMA pair per partition
    assert report.total["LUT"] <= 53200 and report.total["BRAM_18K"] <= 280 and report.total["DSP"] <= 220
    sched = report.schedule
    ee = sched["early_exit"]
    assert [st["in_bytes"] for st in sched["stages"]] == [28 * 28] * 3  # every stage reads the image
    assert all(st["feat_bytes"] == 0 and st["head_macs"] == 0 for st in sched["stages"])
    reach = [s.reach for s in report.stages]
    assert reach[0] == 1.0 and reach[1] < 1.0 and reach[2] < reach[1]  # images do leave early
    assert ee["fps"] > ee["worst_case_fps"] > 0  # leaving early beats running every stage
    assert sched["static"]["fps"] > 0 and report.static_resources["LUT"] <= report.total["LUT"]


def test_ps_header_carries_the_stage_thresholds(s2d_build, s2d_model):
    from tinydyn.models.s2dnas_lower import confidence_t16

    _, out = s2d_build
    header = (out / "ps" / "td_fpga_model.h").read_text()
    rows = [ln.strip() for ln in header.splitlines() if ln.strip().startswith("{TD_FPGA_STAGE")]
    assert len(rows) == STAGES
    own = [confidence_t16(t) for t in s2d_model.config.thresholds] + [-1]
    for k, row in enumerate(rows):
        reads, t16 = row.rstrip("},").split(", ")[-2:]
        assert (reads, int(t16)) == ("1u", own[k])
        assert ", NULL, " in row  # every head is in the fabric: no weights on the PS


@dataclasses.dataclass(frozen=True)
class LeaveAt(ExitPolicy):
    """A margin policy under which every image leaves at exit ``exit`` (every head computed up
    to it): the integer reference's MACs of an image leaving there."""

    exit: int = 0

    def to_integer(self, model) -> IntegerPolicy:  # noqa: ANN001
        integer = ExitPolicy("margin", 0.0).to_integer(model)
        integer.margins = [0 if k == self.exit else 1 << 40 for k in range(len(integer.margins))]
        return integer


def test_ps_controller_gathers_and_decides_like_the_integer_reference(s2d_build, fashion_test, tmp_path):
    """td_fpga_run_batch on the host, its IODMA registers going to tests/iodma_model, whose three
    partitions answer with finn-plus's python execution of their HW graphs: stage k's accumulators
    are finished as the integer reference does, the exit is decided with the stage's own
    threshold (the run-time one, 0, would let every image leave at stage 0), the images that stay
    are gathered bit for bit from the image array (the model finds each image among the known
    ones) and the runs, repeat counts and buffer offsets are tinydyn.hw.schedule's; policy none
    starts only the last partition, on the image array. Every image: class, exit, logits and MACs
    of the integer policy and reference."""
    from tests.conftest import require_tool
    from tinydyn.hw.build import accumulator_layout
    from tinydyn.hw.checks import finish_logits, run_hw_python
    from tinydyn.hw.controller import ps_source_dir
    from tinydyn.hw.schedule import (
        Partition,
        PsCosts,
        Stage,
        arena_layout,
        heads_for_policy,
        simulate,
        stage_regions,
    )
    from tinydyn.ir import IRModel
    from tinydyn.quantize.executor import execute

    cc = require_tool("gcc")
    _, out = s2d_build
    ir = IRModel.load(out / "ir")
    images = fashion_test.images[:16]
    n = len(images)
    names = ["stage0", "stage1", "stage2"]
    keys = ["stage0", "stage1", "final"]
    hw = [out / "stages" / p / "intermediate_models" / "step_convert_to_hw.onnx" for p in names]
    acc = [run_hw_python(path, images).reshape(n, -1) for path in hw]
    layouts = [accumulator_layout(out / "stages" / p) for p in names]
    logits = [finish_logits(a, ir, key) for a, key in zip(acc, keys, strict=True)]
    image_bytes = [im.transpose(1, 2, 0).tobytes() for im in images]
    outs = [[pack_fields(a, *lay) for a in accs] for accs, lay in zip(acc, layouts, strict=True)]
    vectors = [
        f"#define TD_TEST_PARTITIONS {STAGES}",
        f"#define TD_TEST_IMAGES {n}",
        *(
            f"static const uint32_t td_test_{kind}[3] = "
            + "{"
            + ", ".join(f"TD_FPGA_{kind.upper()}{p}_BASE" for p in range(STAGES))
            + "};"
            for kind in ("idma", "odma")
        ),
        f"static const uint32_t td_test_in_bytes[3] = {{{', '.join([str(len(image_bytes[0]))] * 3)}}};",
        f"static const uint32_t td_test_out_bytes[3] = {{{', '.join(str(len(o[0])) for o in outs)}}};",
        c_bytes("td_test_images", image_bytes),
        *(c_bytes(f"td_test_out{p}", outs[p]) for p in range(STAGES)),
        "static const uint8_t *const td_test_in[3] = {td_test_images, td_test_images, td_test_images};",
        "static const uint8_t *const td_test_out[3] = {td_test_out0, td_test_out1, td_test_out2};",
    ]
    (tmp_path / "vectors.h").write_text("\n".join(vectors) + "\n")
    exe = tmp_path / "ps_host"
    fw = Path(__file__).resolve().parents[1] / "tinydyn" / "firmware"
    model_dir = Path(__file__).resolve().parent / "iodma_model"
    res = subprocess.run(
        [cc, "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-DTD_FPGA_REG_HOOKS", f"-I{tmp_path}",
         f"-I{out / 'ps'}", f"-I{ps_source_dir()}", f"-I{fw}", str(model_dir / "iodma_model.c"),
         str(ps_source_dir() / "td_fpga.c"), "-o", str(exe)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr

    t = Partition("-", 1, 1)  # timing is irrelevant here: runs and offsets are
    stages = [Stage(t, len(image_bytes[0]), 0, len(outs[k][0]), 0, k > 0) for k in range(STAGES)]
    macs_at = [execute(ir, images, LeaveAt("margin", 0.0, exit=k)).macs for k in range(STAGES)]
    macs_none = execute(ir, images, ExitPolicy("none")).macs  # no early head computed
    # a margin about half of stage 0's images pass (logits of the HW graph)
    top2 = np.sort(logits[0], axis=1)[:, -2:]
    scale0 = ir.tensors[sorted(ir.exits(), key=lambda op: op.attrs["index"])[0].attrs["logits"]].scale
    margin = float(np.median(top2[:, 1] - top2[:, 0])) * scale0
    policies = [ExitPolicy("none"), ExitPolicy("confidence", 0.0), ExitPolicy("margin", margin)]
    left: dict[str, list[int]] = {}
    for policy, batch in zip(policies * 2, (5, 5, 5, 1, 3, 16), strict=True):
        integer = policy.to_integer(ir)
        args = {"none": [], "confidence": ["0"], "margin": [str(m) for m in integer.margins]}
        run = subprocess.run(
            [str(exe), str(batch), policy.kind, *args[policy.kind]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        exits = np.full(n, STAGES - 1)
        if policy.kind != "none":  # stage by stage, the images still running
            for k in range(STAGES - 1):
                leave = integer.decide(logits[k], k) & (exits == STAGES - 1)
                exits[leave] = k
        left[policy.kind] = np.bincount(exits, minlength=STAGES).tolist()
        count = 1 if batch == 1 else n  # batch 1: td_fpga_infer, one image
        assert lines[0] == f"arena {arena_layout(stage_regions(stages), batch)[1]}"
        assert lines[1 + sum(ln.startswith("run ") for ln in lines)] == "rc 0"  # after every run
        sim = simulate(stages, exits[:count], batch, PsCosts(), heads_for_policy(policy.kind, STAGES))
        want_runs = [
            f"run {r.partition} {len(r.images)} {r.in_buffer}:{r.in_offset} 1:{r.out_offset} "
            + ",".join(map(str, r.images))
            for r in sim.runs
        ]
        assert [ln for ln in lines if ln.startswith("run ")] == want_runs, (policy.kind, batch)
        rows = [ln.split()[1:] for ln in lines if ln.startswith("img ")]
        assert len(rows) == count
        for i, row in enumerate(rows):
            k = int(exits[i])
            macs = macs_none[i] if policy.kind == "none" else macs_at[k][i]
            assert row[:3] == [str(int(np.argmax(logits[k][i]))), str(k), str(int(macs))], (policy.kind, i)
            assert [int(x) for x in row[3:]] == logits[k][i].tolist(), (policy.kind, batch, i)
    # the own thresholds and the margin end inferences at every stage; none runs all to the end
    assert all(c > 0 for c in left["confidence"]) and left["margin"][0] > 0 and left["margin"][2] > 0
    assert left["none"] == [0, 0, n]


def test_resnet_backbone_maps_to_hardware(fashion_test, tmp_path):
    """The ResNet backbone (residual blocks, float joins as trained): its last stage partition maps
    fully and passes the export/HW-graph checks against Brevitas and the integer reference."""
    require_finn()
    from qonnx.core.modelwrapper import ModelWrapper

    from tinydyn.hw.boards import get_board, register_with_finn
    from tinydyn.hw.build import fabric_macs as finn_macs
    from tinydyn.hw.checks import block_features, check_partition, reference_tensors
    from tinydyn.hw.export import export_partition, run_qonnx
    from tinydyn.hw.finn_shims import load_finn
    from tinydyn.hw.flow import run_front_end
    from tinydyn.models.s2dnas_fpga import fabric_macs, partition_specs, stage_partition
    from tinydyn.models.s2dnas_lower import lower

    build_dataflow = load_finn(tmp_path)
    board = get_board("zedboard")
    register_with_finn(board)
    torch.manual_seed(0)
    model = train_briefly(S2DNASNet(tiny_config(fashion_test.classes, "resnet")), 20)
    ir = lower(model, "resnet")
    spec = partition_specs(model.config)[-1]
    module = stage_partition(model, spec)
    part = export_partition(module, spec, (1, 28, 28), tmp_path / spec.name / "model.onnx")
    x = fashion_test.images[:1].astype(np.float32)
    verify = (tmp_path / "in.npy", tmp_path / "out.npy")
    np.save(verify[0], x)
    np.save(verify[1], run_qonnx(part.path, x))
    run_front_end(build_dataflow, board, part.path, part.path.parent, 500.0, False, verify)
    hw_graph = part.path.parent / "intermediate_models" / "step_convert_to_hw.onnx"
    ops = [n.op_type for n in ModelWrapper(str(hw_graph)).graph.node]
    assert ops.count("ElementwiseAdd") == 2 * len(model.blocks)  # the float joins (scale, then add)
    assert finn_macs(part.path.parent) == fabric_macs(module.net)
    ref = reference_tensors(ir, fashion_test.images[:6])
    features = block_features(part, ref["input"], tmp_path / "features.onnx")
    check = check_partition(part, ir, ref, hw_graph, features)
    assert check.kind == "logits" and check.images_unexplained == 0 and check.hw_python_class_vs_integer >= 5


def test_a_checkpoint_the_fpga_path_cannot_build_is_one_line(tmp_path):
    """More classes than the PS controller keeps (TD_FPGA_MAX_CLASSES): `tinydyn fpga` stops with
    one line and exit 2 before anything is exported."""
    require_finn()
    from tinydyn.models.checkpoint import save_checkpoint

    many = S2DNASNet(tiny_config(tuple(f"c{i}" for i in range(40)), num_classes=40))
    with torch.no_grad():
        many.train()(torch.rand(2, 1, 28, 28))
    path = save_checkpoint(tmp_path / "wide.pt", many.eval(), {})
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "tinydyn", "fpga", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: {path} has 40 classes: the FPGA PS controller handles at most 32: train a model with "
        "fewer classes"
    ]
    assert not (out / "stages").exists()


def test_a_family_without_partitions_is_refused():
    """A model family that supplies no dataflow partitioning is named in one line."""
    from tinydyn.hw.build import check_buildable, fpga_families
    from tinydyn.hw.export import ExportError
    from tinydyn.models.family import ModelFamily

    class Bare(ModelFamily):
        name = "bare"

    assert {"lcnet", "s2dnas"} <= set(fpga_families())
    with pytest.raises(ExportError) as err:
        check_buildable(Bare(), torch.nn.Identity(), "x.pt")
    assert str(err.value) == (
        "x.pt is a bare model, which has no FPGA partitioning: tinydyn fpga builds "
        f"{' and '.join(fpga_families())} checkpoints"
    )
