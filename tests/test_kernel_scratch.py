"""Each kernel's scratch-size function (``td_<kind>_scratch_size``, beside the kernel in
tinydyn/firmware/kernels/) equals what the codegen reserves for the layer: the op kind's
``describe`` formula after ``plan`` (a masked conv's row group included).

The C side is read off the generated model.c itself: a probe program includes it with every
kernel call replaced by a print of the kernel's scratch size, for the very parameters and
gates that layer passes, and of the scratch offset the layer sets. A kind whose layers take
scratch needs a line in PROBES (the kernel's call and its size function), else the test fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tinydyn.codegen import build_project
from tinydyn.codegen.layers import ModelDesc, describe
from tinydyn.codegen.project import plan
from tinydyn.ir import IRModel, Op, validate

from .codegen_support import gated_ir
from .conftest import make_model, require_tool
from .test_codegen_property import NetBuilder, networks

# op kind -> (kernel call's parameters, its scratch size for them); the template calls td_<kind>
PROBES = {
    "conv2d": ("ctx, p, q, g, x, r, y", "td_conv2d_scratch_size(p, g)"),
    "linear": ("ctx, p, q, g, x, r, y", "td_linear_scratch_size(p)"),
    "gap": ("ctx, c, hw, type, x, y", "td_gap_scratch_size(c)"),
    "maxpool": ("ctx, p, x, y", "td_maxpool_scratch_size(p)"),
    "avgpool": ("ctx, p, x, y", "td_avgpool_scratch_size(p)"),
    "rescale": ("ctx, p, q, x, y", "td_rescale_scratch_size(p)"),
    "lstm_gate": ("ctx, p, x, h, c, s, h_out, c_out", "td_lstm_gate_scratch_size(p)"),
}


def probe_source(cnames: list[str]) -> str:
    macros = "\n".join(
        f"#define td_{kind}({args}) td_probe(__func__, ctx, {size})" for kind, (args, size) in PROBES.items()
    )
    calls = "\n".join(f"    ctx.scratch = NULL;\n    {name}(&ctx);" for name in cnames)
    return f"""#include <stdio.h>

#include "td_kernels.h"

static void td_probe(const char *layer, const td_ctx_t *ctx, uint32_t size);
{macros}
#include "model.c"

static void td_probe(const char *layer, const td_ctx_t *ctx, uint32_t size)
{{
    printf("%s %lu %ld\\n", layer, (unsigned long)size, ctx->scratch ? (long)(ctx->scratch - td_arena) : -1L);
}}

int main(void)
{{
    td_ctx_t ctx = {{0, 0, 0, NULL}};
{calls}
    return 0;
}}
"""


def check_scratch(ir: IRModel, out_dir: Path) -> tuple[ModelDesc, dict[str, int]]:
    """Build ``ir``'s project, run the probe, assert C sizes equal the planner's; the layer
    descriptions and the sizes."""
    gcc = require_tool("gcc")
    build_project(ir, "host", out_dir)
    desc = describe(ir)
    mem = plan(ir, desc)
    unprobed = {
        name: layer["kind"]
        for name, layer in desc.layers.items()
        if layer["kind"] not in PROBES and desc.scratch.get(name, 0)
    }
    assert not unprobed, f"layers take scratch but their kind has no probe in PROBES: {unprobed}"
    probed = {layer["cname"]: name for name, layer in desc.layers.items() if layer["kind"] in PROBES}
    (out_dir / "probe.c").write_text(probe_source(list(probed)))
    kernels = sorted(str(p) for p in (out_dir / "kernels").glob("*.c"))
    exe = out_dir / "probe"
    cmd = [gcc, "-std=c99", "-w", f"-I{out_dir}", "-o", str(exe), str(out_dir / "probe.c"),
           str(out_dir / "model_weights.c"), *kernels]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    rows = [lines[i : i + 3] for i in range(0, len(lines), 3)]
    assert [r[0] for r in rows] == list(probed), "every probed layer calls its kernel once"
    sizes = {}
    for cname, size, offset in rows:
        name, size, offset = probed[cname], int(size), int(offset)
        kind = desc.layers[name]["kind"]
        reserved = desc.scratch.get(name, 0)
        assert size == reserved, f"{kind} '{name}': td_{kind} takes {size} scratch bytes, planned {reserved}"
        if size:
            buf = mem.buffers[f"{name}#scratch"]
            assert buf.size >= size and offset == buf.offset, (name, buf, offset)
        sizes[name] = size
    return desc, sizes


def every_kernel_ir() -> IRModel:
    """One of each: pools, a depthwise conv, a gated block with a masked conv and a strided 1x1
    shortcut, gaps, gate linears, a skip rescale, a head."""
    nb = NetBuilder(np.random.default_rng(7))
    x = nb.tensor((3, 13, 13), "uint8", name="input")
    x, stem = nb.conv("stem", x, 6, 3, 1, 1)
    ops = [stem]
    for kind in ("maxpool", "avgpool"):
        c, h, w = nb.tensors[x].shape
        out = nb.tensor((c, h - 1, w - 1), "uint8")
        ops.append(Op(kind, f"pool_{out}", {"x": x}, out, {"kernel": 2, "stride": 1, "padding": 0}))
        x = out
    x, dw = nb.conv("dw", x, 6, 3, 1, 1, groups=6)
    pooled, gap = nb.gap(x)
    short, short_op = nb.conv("b0.short", x, 10, 1, 2, 0, dtype="int8")
    s_block, lnet = nb.linear("b0.lnet", pooled, 1, "salience", "gate")
    s_chan, cnet = nb.linear("b0.cnet", pooled, 10, "salience", "gate")
    _, lstm0, state = nb.lstm("l0.lstm", pooled, 5, None)  # an LSTM gate chain, zero then carried state
    _, lstm1, _ = nb.lstm("l1.lstm", pooled, 5, state)
    h, conv1 = nb.conv("b0.conv1", x, 10, 3, 2, 1, channel_gate=s_chan)
    out, conv2 = nb.conv("b0.conv2", h, 10, 3, 1, 1, block_gate=s_block, input_mask=s_chan, residual=short)
    skip = Op("rescale", "b0.skip", {"x": short}, out, {"out_range": [0, 255]})
    nb.arrays["b0.skip.res_mult"] = nb.arrays["b0.conv2.res_mult"]
    nb.arrays["b0.skip.shift"] = nb.arrays["b0.conv2.shift"]
    guard = Op("guard", "b0.guard", attrs={"gate": s_block}, then=[cnet, conv1, conv2], orelse=[skip])
    pooled2, gap2 = nb.gap(out)
    logits, fc = nb.linear("final.fc", pooled2, 4, "logits", "exit_head")
    final = Op("exit", "final", attrs={"index": 0, "final": True, "logits": logits}, then=[fc])
    ops += [dw, gap, short_op, lstm0, lstm1, lnet, guard, gap2, final]
    ir = IRModel("every_kernel", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {})
    validate(ir)
    return ir


def test_scratch_every_kernel(tmp_path):
    ir = every_kernel_ir()
    desc, sizes = check_scratch(ir, tmp_path)
    assert {desc.layers[name]["kind"] for name in sizes} == set(PROBES)
    masked = desc.layers["b0.conv2"]
    assert masked["gates"]["input_mask"] != "NULL" and masked["row_group"] >= 2  # compacted rows
    assert desc.layers["dw"]["groups"] == 6 and sizes["dw"] > 0
    assert desc.layers["b0.short"]["stride"] == 2 and sizes["b0.short"] > 0


def test_scratch_small_model(small_ir, tmp_path):
    check_scratch(small_ir, tmp_path)


def test_scratch_gated_model(fashion_test, tmp_path):
    check_scratch(gated_ir(fashion_test, make_model), tmp_path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scratch_nets")


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(net=networks())
def test_scratch_random_networks(net, workdir):
    check_scratch(net[0], workdir)
