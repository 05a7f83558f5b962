"""PS-side controller: copy the C sources and generate ``td_fpga_model.h`` for a build.

The header carries what the controller needs per stage k: the IODMA register bases of segment k
(partition k), as macros of ``td_fpga_addresses.h`` (predicted here as finn-plus's Zynq shell
assigns them, rewritten from the hardware handoff by ``build_bitstream.sh``); the sizes of the
segment's input and of the uint8 NHWC feature map it writes to DDR; exit head k, which the PS runs
in software (GAP, then the FC's int8 weights), or, for a head in the fabric (the last LC-Net
segment, every S2DNAS stage), the width of the packed accumulators the segment writes; whether
the segment reads the image again (S2DNAS: the PS gathers the images that stay); the exit's own
confidence threshold if the model has one (S2DNAS's t_i); MACs; and the integer requantisation
(bias, mult, shift) taken from the integer IR of the static model, so the PS computes logits bit
for bit like the integer reference executor, plus the confidence LUT of
:mod:`tinydyn.quantize.policy`.

Also the bare-metal bring-up for the ZedBoard (start-up, linker script, MMU/caches, UART) and a
Makefile that links ``td_fpga_ps.elf`` (docs/FPGA.md, "PS bring-up").
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from tinydyn.hw.link import addresses_header, predicted_addresses
from tinydyn.hw.schedule import Partition, Stage, arena_layout, stage_regions
from tinydyn.quantize.policy import exp_lut, lut_multiplier

PS_SOURCES = (
    "td_fpga.c",
    "td_fpga.h",
    "td_fpga_zynq.c",
    "td_zynq.h",
    "td_zynq_boot.S",
    "td_zynq_mmu.c",
    "td_zynq_uart.c",
    "td_zynq.ld",
)
ADDRESSES_HEADER = "td_fpga_addresses.h"
PROTOCOL_SOURCES = ("protocol.c", "protocol.h")
# the target (Zynq-7000 PS: Cortex-A9, NEON, hard float) stays fixed in the Makefile even when a
# user's CFLAGS (make CFLAGS=..., or one left in the environment) replaces the rest
ARCH_CFLAGS = "-mcpu=cortex-a9 -marm -mfpu=neon -mfloat-abi=hard"
CFLAGS = f"{ARCH_CFLAGS} -Wall -Wextra -Werror -std=c99 -O2"


@dataclass
class StageHead:
    """What the PS needs to run stage k: segment k in the fabric, then exit head k in software
    on its feature map (``head_weight``), or the accumulators of a head in the fabric (the last
    LC-Net segment; every S2DNAS stage)."""

    name: str
    bias: np.ndarray  # int32 (classes,)
    mult: np.ndarray  # int64
    shift: np.ndarray  # int (>= 1)
    logit_scale: float
    out_bits: int  # head in the fabric: width of one accumulator
    out_per_word: int  # accumulators per output stream word (the head's PE)
    out_word_bits: int  # that word's width padded to whole bytes (what the output IODMA writes)
    in_bytes: int  # the segment's packed input (image, or the previous segment's feature map)
    feat_bytes: int  # the uint8 NHWC feature map the segment writes (0: head in the fabric)
    seg_macs: int
    head_macs: int
    seg_partition: int  # partition index p: its IODMAs are idma<p> and odma<p>
    head_weight: np.ndarray | None = None  # int8 [classes, C] of exit head k on the PS (None: in the fabric)
    feat_c: int = 0  # channels of the feature map (the GAP's C; HW = feat_bytes / C)
    reads_image: bool = False  # stage k > 0 reads the image again (S2DNAS): the PS gathers those that stay
    confidence_t16: int | None = None  # the exit's own confidence threshold (x 65536); None: the policy's
    # DDI's RADI branch k: partition index of a head partition reading the segment's feature map
    # (feat_bytes) and writing the exit's accumulators (out_*); None: no such partition
    head_partition: int | None = None

    @property
    def macs(self) -> int:
        return self.seg_macs + self.head_macs

    @property
    def fabric_head(self) -> bool:
        return self.head_weight is None

    @property
    def branch(self) -> bool:
        return self.head_partition is not None

    @property
    def out_bytes(self) -> int:
        """Accumulator bytes per image the segment's output IODMA writes for a head in the fabric
        (whole stream words); 0 for a stage whose head runs on the PS."""
        if not self.fabric_head:
            return 0
        return -(-int(self.bias.size) // self.out_per_word) * self.out_word_bits // 8


MAX_STAGES = 8  # TD_FPGA_MAX_STAGES in td_fpga.h
MAX_BATCH = 4096  # TD_FPGA_MAX_BATCH
MAX_CHANNELS = 1024  # TD_FPGA_MAX_CHANNELS: feature-map channels of a PS exit head


def dma_arena_bytes(heads: list[StageHead], batch: int) -> int:
    """Bytes of the batched schedule's DMA arena (td_fpga_batch_dma_bytes)."""
    timing = Partition("-", 1, 1)  # the layout needs sizes only
    stages = [
        Stage(timing, hd.in_bytes, hd.feat_bytes, hd.out_bytes, reads_image=hd.reads_image, head=branch)
        for hd in heads
        for branch in [timing if hd.branch else None]
    ]
    return arena_layout(stage_regions(stages), batch)[1]


def dma_macro(kind: str, partition: int) -> str:
    """The ``td_fpga_addresses.h`` macro of IODMA ``<kind><partition>`` (kind idma or odma)."""
    return f"TD_FPGA_{kind.upper()}{partition}_BASE"


def ps_source_dir() -> Path:
    return Path(str(resources.files("tinydyn.hw") / "ps"))


def protocol_dir() -> Path:
    return Path(str(resources.files("tinydyn") / "firmware"))


def copy_sources(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in PS_SOURCES:
        copied.append(Path(shutil.copy2(ps_source_dir() / name, out_dir / name)))
    for name in PROTOCOL_SOURCES:
        src = protocol_dir() / name
        if src.is_file():  # the MCU firmware's protocol: same bytes on the wire
            copied.append(Path(shutil.copy2(src, out_dir / name)))
    return copied


def _array(ctype: str, name: str, values: np.ndarray) -> str:
    body = ", ".join(str(int(v)) for v in values.reshape(-1))
    return f"static const {ctype} {name}[{values.size}] = {{{body}}};"


def render_header(
    heads: list[StageHead],
    model_id: str,
    board: str,
    in_shape: tuple[int, int, int],
    cpu_hz: int,
    batch: int = 1,
) -> str:
    c, h, w = in_shape
    classes = int(heads[0].bias.size)
    if len(heads) > MAX_STAGES or not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"the PS controller runs 1..{MAX_STAGES} stages in batches of 1..{MAX_BATCH}")
    if any((not hd.fabric_head or hd.branch) and not 0 < hd.feat_c <= MAX_CHANNELS for hd in heads):
        raise ValueError(f"the PS exit heads take feature maps of 1..{MAX_CHANNELS} channels")
    if any(hd.confidence_t16 is not None and not 0 <= hd.confidence_t16 <= 65536 for hd in heads):
        raise ValueError("an exit's own confidence threshold must be 0..65536 (x 1/65536)")
    for k, hd in enumerate(heads[:-1]):
        nxt = heads[k + 1]
        if hd.branch and (nxt.reads_image or not hd.feat_bytes):
            raise ValueError(f"stage {k}'s RADI branch reads a feature map stage {k + 1} reads after it")
        if hd.fabric_head and not hd.branch and not (nxt.reads_image and nxt.in_bytes == heads[0].in_bytes):
            raise ValueError(f"stage {k} ends in accumulators: stage {k + 1} must read the image")
    lines = [
        "/* Generated by tinydyn fpga: do not edit. One entry per stage: segment k (FINN dataflow",
        " * partition k, with an input and an output IODMA) and exit head k, which the PS runs in",
        " * software (GAP + FC) or the segment holds (its accumulators: the final head; every stage",
        " * of a model whose stages read the image). */",
        "#ifndef TD_FPGA_MODEL_H",
        "#define TD_FPGA_MODEL_H",
        '#include "td_fpga.h"',
        f'#include "{ADDRESSES_HEADER}" /* IODMA register bases (idma<p>/odma<p>, partition p) */',
        f'#define TD_FPGA_MODEL_ID "{model_id[:16]:0<16}"',
        f'#define TD_FPGA_BOARD "{board}"',
        f"#define TD_FPGA_IN_C {c}u",
        f"#define TD_FPGA_IN_H {h}u",
        f"#define TD_FPGA_IN_W {w}u",
        f"#define TD_FPGA_CPU_HZ {cpu_hz}u",
        f"#define TD_FPGA_NUM_STAGES {len(heads)}u",
        f"#define TD_FPGA_STATIC_MACS {sum(hd.seg_macs for hd in heads) + heads[-1].head_macs}u",
        f"#define TD_FPGA_MAX_FEAT_BYTES {max(max(hd.in_bytes, hd.feat_bytes) for hd in heads)}u",
        f"#define TD_FPGA_MAX_OUT_BYTES {max(hd.out_bytes for hd in heads)}u",
        "/* batched schedule: images per batch and its DMA arena (td_fpga_batch_dma_bytes) */",
        f"#define TD_FPGA_BATCH {batch}u",
        f"#define TD_FPGA_BATCH_DMA_BYTES {dma_arena_bytes(heads, batch)}u",
    ]
    for hd in heads:
        up = hd.name.upper()
        lines += [
            f"#define TD_FPGA_{up}_IDMA {dma_macro('idma', hd.seg_partition)}",
            f"#define TD_FPGA_{up}_ODMA {dma_macro('odma', hd.seg_partition)}",
            _array("int32_t", f"td_{hd.name}_bias", hd.bias.astype(np.int64)),
            _array("int64_t", f"td_{hd.name}_mult", hd.mult.astype(np.int64)),
            _array("uint8_t", f"td_{hd.name}_shift", hd.shift.astype(np.int64)),
        ]
        if hd.branch:  # its RADI branch's IODMAs (a partition of its own)
            lines += [
                f"#define TD_FPGA_{up}_HEAD_IDMA {dma_macro('idma', hd.head_partition)}",
                f"#define TD_FPGA_{up}_HEAD_ODMA {dma_macro('odma', hd.head_partition)}",
            ]
        if not hd.fabric_head:
            lines.append(_array("int8_t", f"td_{hd.name}_weight", np.asarray(hd.head_weight, dtype=np.int64)))
    lines.append(_array("uint16_t", "td_exp_lut", exp_lut()))
    lines.append("static const td_fpga_stage_t td_fpga_stages[TD_FPGA_NUM_STAGES] = {")
    for hd in heads:
        up = hd.name.upper()
        weight = "NULL" if hd.fabric_head else f"td_{hd.name}_weight"
        feat_c = hd.feat_c if hd.branch or not hd.fabric_head else 0
        own_t16 = -1 if hd.confidence_t16 is None else int(hd.confidence_t16)
        head_dmas = f"TD_FPGA_{up}_HEAD_IDMA, TD_FPGA_{up}_HEAD_ODMA" if hd.branch else "0u, 0u"
        lines.append(
            f"    {{TD_FPGA_{up}_IDMA, TD_FPGA_{up}_ODMA, {hd.in_bytes}u, {hd.feat_bytes}u, {feat_c}u, "
            f"{weight}, {hd.out_bits}u, {hd.out_per_word}u, {hd.out_word_bits}u, {hd.out_bytes}u, "
            f"{hd.seg_macs}u, {hd.head_macs}u, td_{hd.name}_bias, td_{hd.name}_mult, "
            f"td_{hd.name}_shift, {lut_multiplier(hd.logit_scale)}u, {head_dmas}, {int(hd.reads_image)}u, "
            f"{own_t16}}},"
        )
    lines += [
        "};",
        f"static const td_fpga_model_t TD_FPGA_MODEL = {{TD_FPGA_NUM_STAGES, {classes}u, td_fpga_stages, "
        "td_exp_lut};",
        "#endif",
        "",
    ]
    return "\n".join(lines)


# 'make' builds the bare-metal ELF for the ZedBoard (start-up, linker script, MMU; docs/FPGA.md).
# Not 'CC ?=': GNU make predefines CC=cc, so '?=' never applies and a plain 'make' would build ARM
# code with the host compiler; only make's own default is replaced here, so 'make CC=...' and CC
# in the environment still choose the compiler. --specs=nosys.specs: newlib without an OS (the
# application uses memcpy/memmove/memset only); -nostartfiles: td_zynq_boot.S is the start-up.
MAKEFILE = """# Cross-compile the PS application for the ZedBoard: td_fpga_ps.elf (load it with the FSBL in
# BOOT.bin, or over JTAG: see boot/ in the build directory and docs/FPGA.md)
ifeq ($(origin CC),default)
CC = arm-none-eabi-gcc
endif
ARCH_CFLAGS = {arch}
CFLAGS ?= {cflags}
LDFLAGS ?= -Wl,--gc-sections -Wl,-Map=td_fpga_ps.map
OBJS = td_fpga.o td_fpga_zynq.o protocol.o td_zynq_mmu.o td_zynq_uart.o td_zynq_boot.o
all: td_fpga_ps.elf
td_fpga_ps.elf: $(OBJS) td_zynq.ld
\t$(CC) $(ARCH_CFLAGS) -nostartfiles --specs=nosys.specs -T td_zynq.ld $(LDFLAGS) $(OBJS) -o $@
%.o: %.c
\t$(CC) $(ARCH_CFLAGS) $(CFLAGS) -c $< -o $@
%.o: %.S
\t$(CC) $(ARCH_CFLAGS) $(CFLAGS) -c $< -o $@
clean:
\trm -f $(OBJS) td_fpga_ps.elf td_fpga_ps.map
"""


def write_controller(
    out_dir: Path,
    heads: list[StageHead],
    model_id: str,
    board: str,
    in_shape: tuple[int, int, int],
    cpu_hz: int,
    batch: int = 1,
) -> Path:
    copy_sources(out_dir)
    partitions = 1 + max(max(hd.seg_partition, hd.head_partition or 0) for hd in heads)
    (out_dir / ADDRESSES_HEADER).write_text(
        addresses_header(
            predicted_addresses(partitions),
            "predicted as finn-plus's Zynq shell assigns them; build_bitstream.sh rewrites this file "
            "from the built design's hardware handoff",
        )
    )
    (out_dir / "td_fpga_model.h").write_text(render_header(heads, model_id, board, in_shape, cpu_hz, batch))
    (out_dir / "Makefile").write_text(
        MAKEFILE.format(arch=ARCH_CFLAGS, cflags=CFLAGS[len(ARCH_CFLAGS) :].strip())
    )
    return out_dir
