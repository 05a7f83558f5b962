"""`tinydyn fpga` on a DDI model: gates not mapped (the FPGA model is the gating-off network),
backbone segments cut after the units RADI branches follow, each branch a partition of its own
reading its segment's feature map (tinydyn.models.ddi_fpga), through the real finn-plus front end;
the PS controller (tinydyn/hw/ps/td_fpga.c) on the host against the IODMA register model, checked
against the integer reference (classes, exits, logits, MACs) and the schedule model. The DenseNet
backbone: tests/test_fpga_ddi_densenet.py (it reuses the helpers here).

The build (a tiny 2-stage DDI ResNet with two RADI branches, after units 0 and 1, of which it builds
branch 0 only (--branches 0): seg0, branch0, seg1, where seg1 starts inside stage 0 at unit 1, whose
identity shortcut forks the segment's input; a few training batches; no HLS/RTL code generation, one
static baseline folding) runs once per module, ~1.5 minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_ddi_models import make_ddi, small_config
from tests.test_fpga_s2dnas import LeaveAt
from tests.test_hw import c_bytes, pack_fields, require_finn
from tinydyn.models.ddi import DDINet
from tinydyn.quantize.policy import ExitPolicy

BUILT = (0,)  # the RADI branches the build holds: seg1 then starts mid-stage (unit 1, identity shortcut)


def train_briefly(model: DDINet, batches: int) -> DDINet:
    """A few SGD batches on Fashion-MNIST, every exit's loss (gates deciding as they were set):
    logits that tell images apart, trained scales."""
    from tinydyn.data import load_dataset

    train = load_dataset("fashion-mnist", "train")
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    model.train()
    for i in range(batches):
        x = torch.from_numpy(train.images[i * 64 : (i + 1) * 64].astype(np.float32) / 255)
        y = torch.from_numpy(train.labels[i * 64 : (i + 1) * 64]).long()
        loss = sum(torch.nn.functional.cross_entropy(z, y) for z in model(x, with_branches=True).logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def ddi_model(fashion_test):
    # stage 0 of two units, a branch after each (one max pool); stage 1: one unit, the final classifier
    model = make_ddi(small_config(widths=(8, 12), blocks=(2, 1), stem_width=8), fashion_test.images, seed=1)
    torch.manual_seed(0)
    return train_briefly(model, 40)


def small_build(model: DDINet, out: Path, built: tuple[int, ...]):  # noqa: ANN201 - (FpgaReport, Path)
    """The test builds' settings: fixed rate, 200 reach/accuracy images, 6 check images, one static
    baseline folding, no HLS/RTL code generation (tests/test_fpga_ddi_densenet.py too)."""
    require_finn()
    from tinydyn.hw.build import build_fpga

    report = build_fpga(
        None,
        "zedboard",
        out,
        model=model,
        target_fps=300,
        eval_images=200,
        check_images=6,
        static_sweep=(1.0,),
        codegen=False,
        branches=built,
        progress=lambda _msg: None,
    )
    return report, out


@pytest.fixture(scope="module")
def ddi_build(ddi_model, tmp_path_factory):
    return small_build(ddi_model, tmp_path_factory.mktemp("fpga_ddi"), BUILT)


def check_gating_off(model: DDINet, images: np.ndarray, exits: int) -> None:
    """The gate-free model the FPGA builds (every unit and channel, branches kept) computes
    exactly what the gated integer model computes with gating off (tinydyn eval --no-gating):
    every exit's logits, every image; it has no gate op; the gated model does skip."""
    from tinydyn.models.ddi_fpga import static_model
    from tinydyn.models.ddi_lower import lower
    from tinydyn.quantize.executor import every_head, execute, trace

    gated, static = lower(model, "gated"), lower(static_model(model), "static")
    assert not any(op.attrs.get("role") == "gate" for op in static.walk())
    off = trace(gated, images, ExitPolicy("margin", 1e12, gating=False), keep_tensors=False)
    fpga = trace(static, images, every_head(), keep_tensors=False)
    assert off.exit_logits.keys() == fpga.exit_logits.keys() == set(range(exits))
    for k in off.exit_logits:
        np.testing.assert_array_equal(off.exit_logits[k], fpga.exit_logits[k])
    policy = ExitPolicy("confidence", 0.9)
    a = execute(gated, images, ExitPolicy("confidence", 0.9, gating=False))
    b = execute(static, images, policy)
    np.testing.assert_array_equal(a.exits, b.exits)
    np.testing.assert_array_equal(a.macs, b.macs)
    assert execute(gated, images, policy).skipped_blocks.sum() > 0  # the MCU model's gates do skip


def test_fpga_model_is_the_gating_off_network(ddi_model, fashion_test):
    check_gating_off(ddi_model, fashion_test.images[:200], 3)


@dataclasses.dataclass(frozen=True)
class Never(ExitPolicy):
    """A margin policy whose exits ``never`` let no image leave (an unbuilt branch: continue)."""

    never: tuple[int, ...] = ()

    def to_integer(self, model):  # noqa: ANN001
        integer = super().to_integer(model)
        integer.margins = [1 << 40 if k in self.never else m for k, m in enumerate(integer.margins)]
        return integer


def test_branch_subset_is_the_model_with_unbuilt_exits_continuing(ddi_model, fashion_test):
    """The FPGA model with only branch 0 built (branch 1 left out) is the gate-free model with
    every exit whose decision at branch 1 is forced to 'continue': the same logits at the built
    exits and the final one, the same exit and class for every image; it computes exactly the
    MACs of the built heads (branch 1's head not at all). That pruned IR is the reference the PS
    controller is checked against below."""
    from tinydyn.models.ddi_fpga import branch_subset, keep_branches, static_model
    from tinydyn.models.ddi_lower import lower
    from tinydyn.quantize.executor import every_head, execute, trace

    images = fashion_test.images[:200]
    full = lower(static_model(ddi_model), "static")
    sub = lower(keep_branches(static_model(ddi_model), branch_subset(ddi_model.config, BUILT)), "fpga")
    assert len(sub.exits()) == 2 and len(full.exits()) == 3
    a, b = trace(full, images, every_head()), trace(sub, images, every_head())
    np.testing.assert_array_equal(a.exit_logits[0], b.exit_logits[0])
    np.testing.assert_array_equal(a.exit_logits[2], b.exit_logits[1])
    top2 = np.sort(a.exit_logits[0], axis=1)[:, -2:]
    margin = float(np.median(top2[:, 1] - top2[:, 0])) * sub.tensors[sub.exits()[0].attrs["logits"]].scale
    ref = execute(full, images, Never("margin", margin, never=(1,)))
    got = execute(sub, images, ExitPolicy("margin", margin))
    assert 0 < (got.exits == 0).sum() < len(images)
    np.testing.assert_array_equal(got.exits, np.where(ref.exits == 2, 1, ref.exits))
    np.testing.assert_array_equal(got.predictions, ref.predictions)
    head1 = sum(op.attrs.get("macs", 0) for op in full.walk(full.exits()[1].then))
    stayed = ref.exits == 2
    assert head1 > 0
    np.testing.assert_array_equal(got.macs[stayed], ref.macs[stayed] - head1)
    np.testing.assert_array_equal(got.macs[~stayed], ref.macs[~stayed])


def test_default_branch_rule(ddi_model, fashion_test):
    """The default (--branches left out): on the xc7z020 the shell and IODMAs leave room for one
    branch (3 partitions: 24,956 LUT of fixed part; 5 partitions: 41,300); of the candidates, the
    one with the fewest mean MACs per image, where the rule's MACs are those the integer reference
    of each pruned model counts."""
    from tinydyn.hw.branch_choice import (
        branch_count,
        choose_branches,
        exit_costs,
        exit_decisions,
        fixed_part,
        mean_macs,
    )
    from tinydyn.hw.report import FIT_KEYS
    from tinydyn.models.ddi_fpga import branch_subset, keep_branches, partition_specs, static_model
    from tinydyn.models.ddi_lower import lower
    from tinydyn.quantize.executor import every_head, execute, trace

    assert round(fixed_part(3)["LUT"]) == 24956 and round(fixed_part(5)["LUT"]) == 41300
    cfg = small_config(blocks=(3, 3, 3), widths=(16, 32, 64))
    zynq = {"LUT": 53200.0, "FF": 106400.0, "BRAM_18K": 280.0, "DSP": 220.0}

    def partitions(b: int) -> int:
        return len(partition_specs(branch_subset(cfg, tuple(range(b)))))

    assert branch_count(6, partitions, zynq, FIT_KEYS) == 1
    assert branch_count(6, partitions, {k: 2 * v for k, v in zynq.items()}, FIT_KEYS) == 3
    images = fashion_test.images[:100]
    full = lower(static_model(ddi_model), "static")
    logits = trace(full, images, every_head(), keep_tensors=False).exit_logits[0]
    top2 = np.sort(logits, axis=1)[:, -2:]
    scale = full.tensors[full.exits()[0].attrs["logits"]].scale
    policy = ExitPolicy("margin", float(np.median(top2[:, 1] - top2[:, 0])) * scale)  # about half leave
    leave = exit_decisions(full, images, policy)
    assert 0 < leave[0].sum() < len(images)
    means = {}
    for built in ((0,), (1,), (0, 1)):
        sub = lower(keep_branches(static_model(ddi_model), branch_subset(ddi_model.config, built)), "s")
        means[built] = float(execute(sub, images, policy).macs.mean())
        assert mean_macs(built, leave, exit_costs(full)) == pytest.approx(means[built], rel=1e-12)
    assert choose_branches(full, images, policy, 1) == min(((0,), (1,)), key=means.__getitem__)
    assert choose_branches(full, images, policy, 2) == (0, 1)


def test_partitions_are_segments_and_branches():
    from tinydyn.models.ddi_fpga import DDIFpgaError, branch_subset, partition_specs, whole_network_spec

    specs = partition_specs(small_config(blocks=(3, 3, 3), widths=(16, 32, 64)))
    # branches after units 0, 1 | 3, 4 | 6, 7 (not after 8, the last: the final classifier)
    assert [s.name for s in specs] == [
        "seg0", "branch0", "seg1", "branch1", "seg2", "branch2", "seg3", "branch3", "seg4", "branch4",
        "seg5", "branch5", "seg6",
    ]  # fmt: skip
    rows = [(s.kind, s.stage, s.input_tensor, s.output_tensor, s.head, s.mac_prefixes) for s in specs[:5]]
    assert rows == [
        ("segment", 0, "input", "u0.out", None, ("stem", "u0")),
        ("branch", 0, "u0.out", None, "stage0", ()),
        ("segment", 1, "u0.out", "u1.out", None, ("u1",)),
        ("branch", 1, "u1.out", None, "stage1", ()),
        ("segment", 2, "u1.out", "u3.out", None, ("u2", "u3")),
    ]
    last = specs[-1]
    assert (last.input_tensor, last.output_tensor, last.head, last.mac_prefixes) == (
        "u7.out", None, "final", ("u8",)
    )  # fmt: skip
    whole = whole_network_spec(small_config())
    assert (whole.input_tensor, whole.head, list(whole.units)) == ("input", "final", list(range(6)))
    # a subset: branches 1 and 3 (after units 1 and 4); the others are left out
    sub = partition_specs(branch_subset(small_config(blocks=(3, 3, 3), widths=(16, 32, 64)), (3, 1)))
    assert [(s.name, s.input_tensor, s.output_tensor, s.mac_prefixes, s.head) for s in sub] == [
        ("seg0", "input", "u1.out", ("stem", "u0", "u1"), None),
        ("branch0", "u1.out", None, (), "stage0"),
        ("seg1", "u1.out", "u4.out", ("u2", "u3", "u4"), None),
        ("branch1", "u4.out", None, (), "stage1"),
        ("seg2", "u4.out", None, ("u5", "u6", "u7", "u8"), "final"),
    ]
    assert [s.name for s in partition_specs(branch_subset(small_config(), ()))] == ["seg0"]
    for bad in ((6,), (1, 1)):
        with pytest.raises(DDIFpgaError) as err:
            branch_subset(small_config(blocks=(3, 3, 3), widths=(16, 32, 64)), bad)
        assert (
            str(err.value)
            == f"--branches {','.join(map(str, bad))}: give distinct RADI branch indices (0..5)"
        )


def test_build_report(ddi_build, ddi_model):
    """Three partitions, checked against Brevitas and the integer reference; the report says the
    gates are not mapped and gives the FPGA model's accuracy next to the gated model's; the
    schedule runs the branch as a partition of its own."""
    report, out = ddi_build
    assert [(r.name, r.stage) for r in report.stages] == [("seg0", 0), ("branch0", 0), ("seg1", 1)]
    assert any("gates are not mapped on the FPGA" in n for n in report.notes)
    assert any("RADI branch k, a partition of its own" in n for n in report.notes)
    assert any(
        n.startswith("RADI branches built: 0 (after unit 0) of 2; NOT built: 1 (after unit 1): no partition")
        and "chosen with --branches" in n
        for n in report.notes
    )
    assert set(report.accuracy) == {
        "FPGA model (gates not mapped), early exit",
        "FPGA model, final exit only",
        "dynamic model (gates, integer reference), early exit",
    }
    import json

    checks = json.loads((out / "run.json").read_text())["checks"]
    assert checks["seg0"]["kind"] == "features" and checks["seg0"]["hw_python_vs_qonnx_equal"] >= 0.999
    for name in ("branch0", "seg1"):
        assert checks[name]["kind"] == "logits" and checks[name]["images_unexplained"] == 0
        assert checks[name]["hw_python_class_vs_integer"] >= 5
    # seg1 starts inside stage 0 (unit 1: its identity shortcut forks the input) and streams NHWC:
    # no Shuffle layer is left in it, the layout transposes only at the graph's input edge
    from qonnx.core.modelwrapper import ModelWrapper

    seg1 = ModelWrapper(str(out / "stages" / "seg1" / "intermediate_models" / "step_convert_to_hw.onnx"))
    kinds = [node.op_type for node in seg1.graph.node]
    assert "Shuffle" not in kinds and kinds[:2] == ["Transpose", "DuplicateStreams"]
    assert kinds.count("Transpose") == 1
    stages = report.schedule["stages"]
    assert [s["segment"] for s in stages] == ["seg0", "seg1"] and stages[0]["branch"] == "branch0"
    assert "branch" not in stages[1] and stages[0]["head_macs"] == 0  # the branch is not PS work
    assert report.early_exit_fps > 0 and report.static_fps > 0
    header = (out / "ps" / "td_fpga_model.h").read_text()
    assert "#define TD_FPGA_STAGE0_HEAD_IDMA TD_FPGA_IDMA1_BASE" in header
    assert "#define TD_FPGA_STAGE1_IDMA TD_FPGA_IDMA2_BASE" in header
    assert "TD_FPGA_IDMA2_BASE" in (out / "ps" / "td_fpga_addresses.h").read_text()


def test_ps_controller_runs_the_branch_partitions_like_the_integer_reference(
    ddi_build, fashion_test, tmp_path
):
    check_ps_controller(ddi_build[1], fashion_test.images[:16], tmp_path)


def check_ps_controller(out: Path, images: np.ndarray, tmp_path: Path) -> None:
    """td_fpga_run_batch on the host, its IODMA registers going to tests/iodma_model, whose three
    partitions answer with finn-plus's python execution of their HW graphs: segment 0 writes its
    feature maps, branch 0 (partition 1) reads them in the next round and writes exit 0's
    accumulators, the PS finishes them as the integer reference does, decides, and compacts the
    feature maps of the images that stay, which segment 1 (partition 2) reads. The runs, repeat
    counts and buffer offsets are tinydyn.hw.schedule's; policy none starts no branch. Every image:
    class, exit, logits and MACs of the integer policy and reference. ``out``: a build of seg0,
    branch0, seg1 (the ResNet here, the DenseNet in tests/test_fpga_ddi_densenet.py)."""
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
    ir = IRModel.load(out / "ir")
    n = len(images)
    hw = {
        p: out / "stages" / p / "intermediate_models" / "step_convert_to_hw.onnx"
        for p in ("seg0", "branch0", "seg1")
    }
    feat = run_hw_python(hw["seg0"], images)  # NHWC, what segment 0 streams to DDR
    nchw = feat.transpose(0, 3, 1, 2)
    acc = {p: run_hw_python(hw[p], nchw).reshape(n, -1) for p in ("branch0", "seg1")}
    lay = {p: accumulator_layout(out / "stages" / p) for p in acc}
    logits = [finish_logits(acc["branch0"], ir, "stage0"), finish_logits(acc["seg1"], ir, "final")]
    feat_bytes = [f.astype(np.uint8).tobytes() for f in feat]
    parts_in = [[im.transpose(1, 2, 0).tobytes() for im in images], feat_bytes, feat_bytes]
    parts_out = [feat_bytes, *([pack_fields(a, *lay[p]) for a in acc[p]] for p in ("branch0", "seg1"))]
    vectors = [
        "#define TD_TEST_PARTITIONS 3",
        f"#define TD_TEST_IMAGES {n}",
        *(
            f"static const uint32_t td_test_{kind}[3] = "
            + "{" + ", ".join(f"TD_FPGA_{kind.upper()}{p}_BASE" for p in range(3)) + "};"
            for kind in ("idma", "odma")
        ),
        f"static const uint32_t td_test_in_bytes[3] = {{{', '.join(str(len(p[0])) for p in parts_in)}}};",
        f"static const uint32_t td_test_out_bytes[3] = {{{', '.join(str(len(p[0])) for p in parts_out)}}};",
    ]  # fmt: skip
    for p in range(3):
        vectors += [c_bytes(f"td_test_in{p}", parts_in[p]), c_bytes(f"td_test_out{p}", parts_out[p])]
    vectors += [
        "static const uint8_t *const td_test_in[3] = {td_test_in0, td_test_in1, td_test_in2};",
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
    stages = [
        Stage(t, len(parts_in[0][0]), len(feat_bytes[0]), len(parts_out[1][0]), head=t),
        Stage(t, len(feat_bytes[0]), 0, len(parts_out[2][0])),
    ]
    macs_at = [execute(ir, images, LeaveAt("margin", 0.0, exit=k)).macs for k in range(2)]
    macs_none = execute(ir, images, ExitPolicy("none")).macs  # the branch not computed
    scale = ir.tensors[sorted(ir.exits(), key=lambda op: op.attrs["index"])[0].attrs["logits"]].scale
    top2 = np.sort(logits[0], axis=1)[:, -2:]
    margin = float(np.median(top2[:, 1] - top2[:, 0])) * scale  # about half leave at exit 0
    z = np.exp((logits[0] - logits[0].max(axis=1, keepdims=True)) * scale)
    confidence = float(np.median(z.max(axis=1) / z.sum(axis=1)))
    policies = [ExitPolicy("none"), ExitPolicy("confidence", confidence), ExitPolicy("margin", margin)]
    left: dict[str, int] = {}
    for policy, batch in zip(policies * 2, (5, 5, 5, 1, 3, 16), strict=True):
        integer = policy.to_integer(ir)
        args = {
            "none": [],
            "confidence": [str(integer.confidence_t16)],
            "margin": [str(m) for m in integer.margins],
        }
        run = subprocess.run(
            [str(exe), str(batch), policy.kind, *args[policy.kind]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        leave = integer.decide(logits[0], 0) if policy.kind != "none" else np.zeros(n, dtype=bool)
        left[policy.kind] = int(leave.sum())
        count = 1 if batch == 1 else n  # batch 1: td_fpga_infer, one image
        exits = (~leave[:count]).astype(int)
        assert lines[0] == f"arena {arena_layout(stage_regions(stages), batch)[1]}"
        assert lines[1 + sum(ln.startswith("run ") for ln in lines)] == "rc 0"  # after every run
        sim = simulate(stages, exits, batch, PsCosts(), heads_for_policy(policy.kind, 2))
        want_runs = [
            f"run {r.partition} {len(r.images)} {r.in_buffer}:{r.in_offset} 1:{r.out_offset} "
            + ",".join(map(str, r.images))
            for r in sim.runs
        ]
        got_runs = [ln for ln in lines if ln.startswith("run ")]
        assert got_runs == want_runs, (policy.kind, batch)
        assert any(ln.startswith("run 1 ") for ln in got_runs) == (policy.kind != "none")
        rows = [ln.split()[1:] for ln in lines if ln.startswith("img ")]
        assert len(rows) == count
        for i, row in enumerate(rows):
            k = int(exits[i])
            macs = macs_none[i] if policy.kind == "none" else macs_at[k][i]
            assert row[:3] == [str(int(np.argmax(logits[k][i]))), str(k), str(int(macs))], (policy.kind, i)
            assert [int(x) for x in row[3:]] == logits[k][i].tolist(), (policy.kind, batch, i)
    assert 0 < left["confidence"] < n and 0 < left["margin"] < n and left["none"] == 0


def test_a_partition_that_does_not_stream_nhwc_is_one_line(tmp_path):
    """check_partition stops with one line naming the partition and the Shuffle layer (finn-plus's
    form of a transpose it could not absorb), or the feature output's layout, before any check runs
    on arrays of the wrong layout."""
    import onnx
    from onnx import TensorProto, helper

    from tinydyn.hw.checks import check_partition
    from tinydyn.hw.export import ExportError
    from tinydyn.ir import TensorSpec

    def graph(path: Path, shuffle: bool) -> Path:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 6])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 8] if shuffle else [1, 8, 4, 6])
        node = (
            helper.make_node("Shuffle", ["x"], ["y"], name="Shuffle_Transpose_2",
                             domain="finn.custom_op.fpgadataflow")
            if shuffle else helper.make_node("Identity", ["x"], ["y"], name="Identity_0")
        )  # fmt: skip
        onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y])), path)
        return path

    # what check_partition reads before the layout check: the partition's names, the IR's output shape
    ir = SimpleNamespace(tensors={"u1.out": TensorSpec("u1.out", (8, 4, 6), "uint8", 0.1)})
    part = SimpleNamespace(spec=SimpleNamespace(name="seg1", input_tensor="u0.out", output_tensor="u1.out"))
    ref = {"u0.out": np.zeros((2, 8, 4, 6), dtype=np.int64)}
    for shuffle, what in (
        (True, "Shuffle layers Shuffle_Transpose_2"),
        (False, "an output of shape [1, 8, 4, 6]"),
    ):
        with pytest.raises(ExportError) as err:
            check_partition(part, ir, ref, graph(tmp_path / f"hw{shuffle}.onnx", shuffle))
        message = str(err.value)
        assert message.startswith(f"seg1: the partition does not stream NHWC ({what} in hw{shuffle}.onnx)")
        assert "\n" not in message


def test_bad_branches_option_is_one_line(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "tinydyn", "fpga", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"),
         "--branches", "1,x"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: --branches '1,x': give RADI branch indices separated by commas (e.g. 1,3), 'all' or 'none'"
    ]
