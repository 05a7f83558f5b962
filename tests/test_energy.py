"""The modelled energy (tinydyn.cost): DDI's E = sum accesses*e + MACs*e_MAC + static, traffic
from layer shapes, the generated C that firmware uses (compared bit for bit), and the
differentiable torch form a training loss uses (equal on hard gates, gradients to the gates)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_tool
from tinydyn.cost import energy as em
from tinydyn.cost.traffic import layer_costs
from tinydyn.ir import IRModel, Op, TensorSpec

U32 = 2**32 - 1


def test_no_torch_import() -> None:
    # the IR side, the host's firmware writer and the C header rendering never load torch
    code = (
        "import sys, tinydyn.cost, tinydyn.host.firmware; tinydyn.cost.c_header('host'); "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    code = "import sys, tinydyn.cost as c; c.expected_energy_nj; sys.exit('torch' not in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # loaded lazily, on use


def test_energy_by_hand() -> None:
    c = em.coefficients("nucleo-l4r5zi")
    est = em.energy(c, 1_000_000, em.MemoryTraffic(500_000, 600_000, 100_000), 700_000)
    fj = 1_000_000 * 1_100 + 500_000 * 15_000 + 600_000 * 5_000 + 100_000 * 6_000 + 700_000 * 363_000
    assert sum(est.breakdown_fj.values()) == fj == 266_300_000_000
    assert est.energy_nj == 266_300  # 266.3 uJ
    # 700k cycles at 120 MHz = 5.8333 ms: 266.3 uJ / 5.8333 ms = 45.651 mW
    assert est.power_uw == 45_651
    assert est.kind == "modelled" and est.to_json()["kind"] == "modelled"
    assert em.energy(c, 0, em.MemoryTraffic(0, 0, 0), 0).power_uw == 0


def test_host_board_matches_its_firmware() -> None:
    # boards/host/board_host.c: energy = macs * 10 pJ, power 0 (no clock)
    for macs in (0, 99, 100, 123_456_789, U32):
        est = em.energy(em.coefficients("host"), macs, em.MemoryTraffic(7, 7, 7), 12345)
        assert (est.energy_nj, est.power_uw) == (macs * 10 // 1000, 0)


def test_errors_name_the_problem() -> None:
    with pytest.raises(em.EnergyModelError, match="no energy model for board 'esp32'.*nucleo-l4r5zi"):
        em.coefficients("esp32")
    with pytest.raises(em.EnergyModelError, match="macs=4294967296"):
        em.energy(em.coefficients("host"), 2**32, em.MemoryTraffic(0, 0, 0), 0)
    with pytest.raises(em.EnergyModelError, match="fj_per_mac"):
        em.EnergyCoefficients("x", 1000, 2**24, 0, 0, 0, 0, 1, 1)
    with pytest.raises(em.EnergyModelError, match="multiple of 1 kHz"):
        em.EnergyCoefficients("x", 1500, 1, 0, 0, 0, 0, 1, 1)


def tiny_model() -> IRModel:
    """conv 1->4 3x3 pad 1 on 8x8, a gated residual block (conv 4->4), gap, linear 4->3."""
    t = {
        "in": TensorSpec("in", (1, 8, 8), "uint8", 1.0),
        "a": TensorSpec("a", (4, 8, 8), "uint8", 1.0),
        "g": TensorSpec("g", (1,), "uint8", 1 / 255, "salience"),
        "b": TensorSpec("b", (4, 8, 8), "uint8", 1.0),
        "p": TensorSpec("p", (4,), "uint8", 1.0, "vector"),
        "y": TensorSpec("y", (3,), "int16", 1.0, "logits"),
    }
    conv1 = Op("conv2d", "c1", {"x": "in"}, "a", {"macs": 4 * 1 * 9 * 64})
    conv2 = Op("conv2d", "c2", {"x": "a", "residual": "a"}, "b", {"macs": 4 * 4 * 9 * 64})
    skip = Op("rescale", "r2", {"x": "a"}, "b")
    guard = Op("guard", "g2", {"gate": "g"}, None, {}, then=[conv2], orelse=[skip])
    gap = Op("gap", "gap", {"x": "b"}, "p")
    fc = Op("linear", "fc", {"x": "p"}, "y", {"macs": 12})
    exit_ = Op("exit", "e0", {}, None, {"index": 0, "final": True, "logits": "y"}, then=[fc])
    arrays = {
        "c1.weight": np.zeros((4, 1, 3, 3), np.int8),
        "c2.weight": np.zeros((4, 4, 3, 3), np.int8),
        "fc.weight": np.zeros((3, 4), np.int8),
    }
    return IRModel("tiny", "in", t, [conv1, guard, gap, exit_], arrays, ["a", "b", "c"])


def test_traffic_profile_from_layer_shapes() -> None:
    model = tiny_model()
    macs = 2304 + 9216 + 12
    # flash: weights fetched once per 2 MACs, 9 B of requant constants per output channel,
    # 8 B more per channel for the residual multiplier
    flash = 1152 + 36 + 4608 + 36 + 32 + 6 + 27
    # sram reads: one input byte per 2 MACs, the residual tensor, the whole gap input
    read = 1152 + 4608 + 256 + 256 + 6
    write = 256 + 256 + 4 + 3 * 2  # conv outputs, pooled vector, int16 logits
    prof = em.traffic_profile(model, "nucleo-l4r5zi")
    assert prof == em.TrafficProfile((flash << 16) // macs, (read << 16) // macs, (write << 16) // macs)
    # the portable kernels (host) reuse nothing
    host = em.traffic_profile(model, "host")
    assert host.flash_q16 == ((2304 + 36 + 9216 + 36 + 32 + 12 + 27) << 16) // macs
    t = prof.traffic(macs)
    assert abs(t.flash_bytes - flash) <= 1 and abs(t.sram_read_bytes - read) <= 1
    with pytest.raises(em.EnergyModelError, match="no MACs"):
        em.traffic_profile(IRModel("empty", "in", model.tensors, [], {}, []), "host")


def test_skipping_saves_modelled_energy() -> None:
    prof = em.traffic_profile(tiny_model(), "qemu-mps2-an386")
    full = em.energy_from_macs("qemu-mps2-an386", prof, 11_532, 40_000)
    skipped = em.energy_from_macs("qemu-mps2-an386", prof, 2_316, 9_000)
    assert 0 < skipped.energy_nj < full.energy_nj
    assert full.breakdown_fj["flash"] > 0 and full.breakdown_fj["sram_write"] > 0


DRIVER_C = r"""
#include <inttypes.h>
#include <stdio.h>
#include "energy_model.h"
int main(void)
{
    uint32_t a, b, c, d, e, nj, uw, nj2, uw2;
    while (scanf("%" SCNu32 " %" SCNu32 " %" SCNu32 " %" SCNu32 " %" SCNu32, &a, &b, &c, &d, &e) == 5) {
        td_emodel_energy(a, b, c, d, e, &nj, &uw);
        td_emodel_from_macs(a, e, &nj2, &uw2);
        if (TD_ENERGY_MODEL_NJ(a, e) != nj2) return 1;
        printf("%" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32 "\n", nj, uw, nj2, uw2);
    }
    return 0;
}
"""


def random_inputs(rng: random.Random, n: int) -> list[tuple[int, ...]]:
    edges = [0, 1, 999_999, 1_000_000, U32 - 1, U32]
    pick = [
        lambda: rng.choice(edges),
        lambda: rng.randrange(2**32),
        lambda: rng.randrange(2**20),
        lambda: rng.randrange(2**8),
    ]
    return [tuple(rng.choice(pick)() for _ in range(5)) for _ in range(n)]


@pytest.mark.parametrize("board", sorted(em.COEFFICIENTS))
def test_c_header_is_bit_identical(tmp_path: Path, board: str) -> None:
    require_tool("gcc")
    prof = em.TrafficProfile(45_000, 70_000, 3_000) if board != "host" else em.TrafficProfile(1, 2, 3)
    (tmp_path / "energy_model.h").write_text(em.c_header(board, prof))
    (tmp_path / "main.c").write_text(DRIVER_C)
    exe = tmp_path / "emodel"
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Wconversion", "-pedantic"]
    subprocess.run(["gcc", *flags, f"-I{tmp_path}", str(tmp_path / "main.c"), "-o", str(exe)], check=True)
    inputs = random_inputs(random.Random(board), 3000)
    stdin = "".join(" ".join(map(str, row)) + "\n" for row in inputs)
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )
    coeffs = em.coefficients(board)
    for row, line in zip(inputs, out, strict=False):
        macs, flash, rd, wr, cycles = row
        py = em.energy(coeffs, macs, em.MemoryTraffic(flash, rd, wr), cycles)
        py2 = em.energy_from_macs(board, prof, macs, cycles)
        assert line.split() == [str(v) for v in (py.energy_nj, py.power_uw, py2.energy_nj, py2.power_uw)], row


def test_c_header_saturation_paths(tmp_path: Path) -> None:
    """Coefficients at their limits and a 1 GHz clock drive the 64-bit and saturation paths."""
    require_tool("gcc")
    big = em.EnergyCoefficients(
        "big", 999_999_000, 2**24 - 1, 2**24 - 1, 2**24 - 1, 2**24 - 1, 2**24 - 1, 1, 1
    )
    prof = em.TrafficProfile(2**24 - 1, 2**24 - 1, 2**24 - 1)
    (tmp_path / "energy_model.h").write_text(em.c_header(big, prof))
    (tmp_path / "main.c").write_text(DRIVER_C)
    exe = tmp_path / "emodel"
    subprocess.run(
        ["gcc", "-std=c99", "-O2", f"-I{tmp_path}", str(tmp_path / "main.c"), "-o", str(exe)], check=True
    )
    inputs = random_inputs(random.Random(7), 2000)
    stdin = "".join(" ".join(map(str, row)) + "\n" for row in inputs)
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )
    saturated = 0
    for row, line in zip(inputs, out, strict=False):
        py = em.energy(big, row[0], em.MemoryTraffic(*row[1:4]), row[4])
        py2 = em.energy_from_macs(big, prof, row[0], row[4])
        assert line.split() == [str(v) for v in (py.energy_nj, py.power_uw, py2.energy_nj, py2.power_uw)], row
        saturated += py.power_uw == U32
    assert saturated > 0


def test_c_header_builds_for_cortex_m4(tmp_path: Path) -> None:
    cc = require_tool("arm-none-eabi-gcc")
    prof = em.traffic_profile(tiny_model(), "nucleo-l4r5zi")
    (tmp_path / "energy_model.h").write_text(em.c_header("nucleo-l4r5zi", prof))
    src = tmp_path / "use.c"
    src.write_text(
        '#include "energy_model.h"\n'
        "void f(uint32_t m, uint32_t c, uint32_t *e, uint32_t *p);\n"
        "void f(uint32_t m, uint32_t c, uint32_t *e, uint32_t *p) { td_emodel_from_macs(m, c, e, p); }\n"
    )
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-std=c99"]
    flags += ["-Wall", "-Wextra", "-Werror", "-c", f"-I{tmp_path}", str(src), "-o", str(tmp_path / "use.o")]
    subprocess.run([cc, *flags], check=True)


def _defines(text: str) -> dict[str, str]:
    return {
        line.split()[1]: line.split()[2]
        for line in text.splitlines()
        if line.startswith("#define TD_EMODEL_")
    }


@pytest.mark.parametrize("board", sorted(em.COEFFICIENTS))
def test_c_header_carries_the_board_values(board: str) -> None:
    """What the firmware relies on: the coefficients and Q16 ratios as unsigned literals, one
    include guard, td_emodel_from_macs/TD_ENERGY_MODEL_NJ only when a profile is given."""
    c = em.coefficients(board)
    prof = em.traffic_profile(tiny_model(), board)
    bare, full = em.c_header(board), em.c_header(board, prof)
    want = {
        "TD_EMODEL_CLOCK_KHZ": c.clock_khz,
        "TD_EMODEL_FJ_PER_MAC": c.fj_per_mac,
        "TD_EMODEL_FJ_PER_FLASH_BYTE": c.fj_per_flash_byte,
        "TD_EMODEL_FJ_PER_SRAM_READ_BYTE": c.fj_per_sram_read_byte,
        "TD_EMODEL_FJ_PER_SRAM_WRITE_BYTE": c.fj_per_sram_write_byte,
        "TD_EMODEL_FJ_PER_CYCLE": c.fj_per_cycle,
    }
    assert _defines(bare) == {k: f"{v}u" for k, v in want.items()}
    want |= {
        "TD_EMODEL_FLASH_Q16": prof.flash_q16,
        "TD_EMODEL_SRAM_READ_Q16": prof.sram_read_q16,
        "TD_EMODEL_SRAM_WRITE_Q16": prof.sram_write_q16,
    }
    assert _defines(full) == {k: f"{v}u" for k, v in want.items()}
    assert f"MODELLED energy of board '{board}'" in full.splitlines()[0]
    for text in (bare, full):
        assert text.count("#ifndef TD_ENERGY_MODEL_H") == 1 and text.endswith(
            "#endif /* TD_ENERGY_MODEL_H */\n"
        )
        assert "static inline void td_emodel_energy(" in text
    assert "td_emodel_from_macs" not in bare and "TD_ENERGY_MODEL_NJ" not in bare
    assert "static inline void td_emodel_from_macs(" in full and "#define TD_ENERGY_MODEL_NJ(" in full
    assert full.startswith(bare.removesuffix("#endif /* TD_ENERGY_MODEL_H */\n") + "\n/* bytes per")


def test_c_header_board_name_cannot_leave_its_comment() -> None:
    odd = em.EnergyCoefficients("x */ int evil; /*", 0, 1, 0, 0, 0, 0, 1, 1)
    first = em.c_header(odd).splitlines()[0]
    assert first.count("*/") == 0 and "int evil" in first  # defused, still readable


def test_layer_costs_sum_to_the_profile() -> None:
    model = tiny_model()
    rows = layer_costs(model, em.coefficients("nucleo-l4r5zi"))
    assert [(r.op, r.kind) for r in rows] == [
        ("c1", "conv2d"),
        ("c2", "conv2d"),
        ("gap", "gap"),
        ("fc", "linear"),
    ]
    macs = sum(r.macs for r in rows)
    flash = sum(r.traffic.flash_bytes for r in rows)
    assert macs == 11_532 and em.traffic_profile(model, "nucleo-l4r5zi").flash_q16 == (flash << 16) // macs


def _table(board: str) -> tuple[list[em.MemoryTraffic], list[int], int]:
    rows = layer_costs(tiny_model(), em.coefficients(board))
    return [r.traffic for r in rows], [r.macs for r in rows], [r.op for r in rows].index("c2")


@pytest.mark.parametrize("board", sorted(em.COEFFICIENTS))
def test_torch_energy_equals_integer_model_on_hard_gates(board: str) -> None:
    torch = pytest.importorskip("torch")
    from tinydyn.cost.torch_cost import expected_energy_nj

    traffic, macs, gated = _table(board)
    cols = [
        torch.tensor(v, dtype=torch.float64)
        for v in (
            macs,
            [t.flash_bytes for t in traffic],
            [t.sram_read_bytes for t in traffic],
            [t.sram_write_bytes for t in traffic],
        )
    ]
    cycles = 40_000
    for gate in (0.0, 1.0):
        keep = torch.ones(len(macs), dtype=torch.float64)
        keep[gated] = gate  # the gated block's conv runs or not; the rest always runs
        soft = expected_energy_nj(board, *(keep * col for col in cols), cycles=float(cycles))
        run = [i for i in range(len(macs)) if keep[i] == 1]
        hard = em.energy(
            em.coefficients(board),
            sum(macs[i] for i in run),
            em.MemoryTraffic(
                sum(traffic[i].flash_bytes for i in run),
                sum(traffic[i].sram_read_bytes for i in run),
                sum(traffic[i].sram_write_bytes for i in run),
            ),
            cycles,
        )
        # the integer model floors fJ to nJ; the float form keeps the fraction
        assert soft.item() * 1e6 == pytest.approx(sum(hard.breakdown_fj.values()), abs=1e-3)
        assert hard.energy_nj <= soft.item() < hard.energy_nj + 1


def test_torch_energy_gradients_reach_the_gate_probabilities() -> None:
    torch = pytest.importorskip("torch")
    from tinydyn.cost.torch_cost import expected_energy_nj

    board = "nucleo-l4r5zi"
    c = em.coefficients(board)
    traffic, macs, gated = _table(board)
    # a batch of 3 soft gate probabilities (float32, as in training) for the gated block
    prob = torch.tensor([0.2, 0.5, 0.9], requires_grad=True)
    keep = torch.ones(3, len(macs))
    keep = torch.cat([keep[:, :gated], prob[:, None], keep[:, gated + 1 :]], dim=1)

    def col(values: list[int]) -> torch.Tensor:
        return keep * torch.tensor(values, dtype=torch.float32)

    e = expected_energy_nj(
        c,
        col(macs),
        col([t.flash_bytes for t in traffic]),
        col([t.sram_read_bytes for t in traffic]),
        col([t.sram_write_bytes for t in traffic]),
        cycles=torch.tensor([1e4, 2e4, 3e4]),
    )
    assert e.shape == () and e.requires_grad
    (grad,) = torch.autograd.grad(e, prob)
    t = traffic[gated]
    layer_fj = (
        macs[gated] * c.fj_per_mac
        + t.flash_bytes * c.fj_per_flash_byte
        + t.sram_read_bytes * c.fj_per_sram_read_byte
        + t.sram_write_bytes * c.fj_per_sram_write_byte
    )
    # dE/dp_b = the gated layer's energy, averaged over the batch
    assert torch.allclose(grad, torch.full((3,), layer_fj / 1e6 / 3), rtol=1e-5)
