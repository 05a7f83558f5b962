"""The modelled energy (tinydyn.host.energy): DDI's E = sum accesses*e + MACs*e_MAC + static,
traffic from layer shapes, and the generated C that firmware uses, compared bit for bit."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_tool
from tinydyn.host import energy as em
from tinydyn.ir import IRModel, Op, TensorSpec

U32 = 2**32 - 1


def test_no_torch_import() -> None:
    code = "import sys, tinydyn.host.energy; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


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
