"""Timing model of the batched, software-pipelined schedule the PS controller runs
(``td_fpga_run_batch`` in ``tinydyn/hw/ps/td_fpga.c``): the event-by-event simulation and the
closed form the report's throughput comes from, in one place.

The design: backbone segment k is a dataflow partition (input and output IODMA); early exit
head k (GAP + FC) runs on the PS in software on the feature map segment k left in DDR; the last
segment holds the final head and writes its accumulators. The schedule (the C code does exactly
this, round by round):

* images go through in batches of ``B``; segment k runs on a whole batch with the IODMA repeat
  count set to the number of images it holds;
* batch b's segment k starts in round ``b + 2k``; in round ``b + 2k + 1`` the PS computes exit
  head k on each of its feature maps, applies the exit policy and compacts the feature maps of
  the images that stay to the front of the same buffer (their ids with them), so segment k+1
  reads them with one repeat count in round ``b + 2k + 2``; the last segment (with the final
  head) runs in round ``b + 2(K-1)`` and its logits are finished in the next;
* in one round every segment with work starts (the PS cleans its input from the caches,
  invalidates its output and writes its IODMA registers, segment 0 first), then the PS does that
  round's heads, decisions and compactions while the fabric runs, then waits for the segments
  in start order, invalidating each one's output again when it is done (lines the CPU may have
  fetched meanwhile). So all segments work concurrently, each on a different batch; a segment
  with no image is not started;
* buffers: stage k's feature map lives from round ``b + 2k`` to ``b + 2k + 2``: 3 slots
  (``FEAT_SLOTS``, batch b uses slot b mod 3); the last segment's accumulators live two rounds:
  2 slots. Every slot starts on a cache line (``DMA_ALIGN``), so cache maintenance of one slot
  never touches a line of another.

Stages that read the image (``Stage.reads_image``, S2DNAS: each stage's partition recomputes the
earlier stages' channels from the image and ends in its own classifier's accumulators): there is
no feature map to hand on. Every stage writes accumulators (2 slots, read by the PS in the next
round); the PS finishes the logits, decides, and instead of compacting a feature map it gathers
the images that stay, in order, from the image array into stage k+1's input buffer (2 slots,
``IN_SLOTS``: written in round ``b + 2k + 1``, read by stage k+1 in round ``b + 2k + 2``). A stage
whose head does not run (policy none) then has nothing to do: its partition is not started, and
the next stage reads the same images where they are (:func:`partition_runs`).

Time of one round (fabric cycles): runs 0..m-1 started in order, run i costing the PS
``setup + cache · (in_i + out_i)`` to start (bytes of its input and output buffers), busy for
``latency_i + (n_i - 1) · II_i`` cycles (finn-plus's critical path and initiation interval,
``n_i`` images); then ``W`` cycles of PS work (heads, decisions, compaction); then the waits,
each followed by ``cache · out_i``:

    t = Σ_i start costs + W;  for i in order: t = max(t, end_i) + cache · out_i;  round = t

In steady state every round holds the same runs, so that is the period of one batch, and the
throughput is ``B / period``. :func:`closed_form` evaluates it for given per-stage image counts;
:func:`simulate` runs the schedule on real exit decisions (varying counts, ramp-up, drain,
partial last batch), checks that no buffer slot is overwritten before it is consumed, and records
every segment run with its buffer offsets (what the host test of the C controller compares).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

ROUNDS_PER_STAGE = 2  # segment, then the PS's head and decision
FEAT_SLOTS = 3  # a feature map lives from its segment's round to the next segment's (2 rounds later)
ACC_SLOTS = 2  # final accumulators: written by the last segment in one round, read by the PS in the next
IN_SLOTS = 2  # gathered images (stages that read the image): written by the PS, read in the next round
DMA_ALIGN = 64  # every buffer slot starts on a cache line (the C arena layout; A9 lines are 32 bytes)
STEADY_BATCHES = 100  # batches simulated for the report's simulated throughput


class ScheduleError(ValueError):
    """A schedule that the controller cannot run (or a hazard the model found)."""


@dataclass(frozen=True)
class Partition:
    """One dataflow partition's timing (fabric cycles, finn-plus estimates)."""

    name: str
    latency: int  # first image in to last output out, for one image (critical path)
    ii: int  # initiation interval: cycles between consecutive images

    def busy(self, images: float) -> float:
        """Cycles the partition is busy with ``images`` images started back to back."""
        return 0.0 if images <= 0 else self.latency + (images - 1) * self.ii


@dataclass(frozen=True)
class Stage:
    """Stage k: segment k in the fabric and its exit head: on the PS (``head_macs`` MACs of its
    FC, on the feature map the segment wrote) or in the fabric (the segment writes the head's
    accumulators: the last LC-Net segment, every S2DNAS stage), and the bytes per image its
    IODMAs move."""

    segment: Partition
    in_bytes: int  # segment input (image or previous feature map)
    feat_bytes: int  # feature map the segment writes (0: its head is in the fabric)
    out_bytes: int  # head in the fabric: its accumulators per image (whole stream words); else 0
    head_macs: int = 0  # exit head k's FC on the PS (0: the head is in the fabric)
    reads_image: bool = False  # k > 0: the segment reads the image again (gathered by the PS)
    # DDI's RADI branch k: a partition of its own that reads the segment's feature map (round
    # b + 2k + 1) and writes the exit's accumulators (out_bytes); the PS decides once it is done
    head: Partition | None = None

    @property
    def fabric_head(self) -> bool:
        """The segment itself ends in the head's accumulators (it writes no feature map)."""
        return self.feat_bytes == 0

    @property
    def branch(self) -> bool:
        return self.head is not None

    @property
    def written(self) -> int:
        """Bytes per image the segment's output IODMA writes."""
        return self.out_bytes if self.fabric_head else self.feat_bytes


@dataclass(frozen=True)
class PsCosts:
    """What the PS spends, in fabric cycles (100 MHz; the Cortex-A9 runs at 667 MHz, 6.67 CPU
    cycles per fabric cycle). Defaults: modelled assumptions, not measurements (docs/FPGA.md,
    "Schedule")."""

    setup: float = 100.0  # per segment run: 8 AXI-lite writes + IODMA start (~650 CPU cycles)
    decide: float = 300.0  # per image and exit: integer logits, policy, bookkeeping (~2,000 CPU cycles)
    copy_per_byte: float = 0.5  # compaction memmove at 200 MB/s (2 bytes per fabric cycle)
    head_per_byte: float = 0.6  # exit head's GAP: ~4 CPU cycles per feature-map byte, cache misses included
    head_per_mac: float = 0.15  # exit head's FC: ~1 CPU cycle per MAC
    cache_per_byte: float = 0.25  # L1 + PL310 maintenance by line: ~50 CPU cycles per 32-byte line

    def work(
        self, decisions: float, copied_bytes: float, head_bytes: float = 0.0, head_macs: float = 0.0
    ) -> float:
        """PS cycles for ``decisions`` exit decisions, ``copied_bytes`` moved (compaction or
        gathering), heads in software over ``head_bytes`` feature bytes and ``head_macs`` MACs."""
        return (
            decisions * self.decide
            + copied_bytes * self.copy_per_byte
            + head_bytes * self.head_per_byte
            + head_macs * self.head_per_mac
        )


@dataclass
class RunLog:
    """One segment run, as the controller starts it."""

    round: int
    partition: int  # segment k = partition k = IODMA pair k
    batch: int
    images: list[int]  # image ids in buffer order
    in_offset: int  # byte offsets in the DMA arena, or into the image array (in_buffer 0)
    out_offset: int
    in_buffer: int = 1  # 0: the image array, 1: the DMA arena
    start: float = 0.0
    end: float = 0.0


@dataclass
class ScheduleRun:
    """Result of :func:`simulate`."""

    cycles: float  # total, first round start to last round end
    round_cycles: list[float]
    runs: list[RunLog]
    done_at: np.ndarray  # per image: the end of the round its result was ready
    entered_at: np.ndarray  # per image: the start of its batch's first round
    ps_cycles: list[float] = field(default_factory=list)  # PS head/decision work per round

    def throughput(self, clock_hz: float) -> float:
        return len(self.done_at) / self.cycles * clock_hz


def _align(n: int) -> int:
    return -(-n // DMA_ALIGN) * DMA_ALIGN


Region = tuple  # (feat_bytes, out_bytes, fabric_head[, gathered input bytes[, branch accumulator bytes]])


def arena(
    regions: Sequence[Region], batch: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int] | None], int]:
    """The controller's DMA arena, as ``td_fpga_batch_dma_bytes`` in td_fpga.c lays it out: per
    stage its output slots (offset, stride), its gathered-input slots (offset, stride; None when
    the stage reads no gathered images) and the arena's size. ``regions``: per stage (feature-map
    bytes, accumulator bytes per image, whether the head is in the fabric, and optionally the
    input bytes per image the PS gathers for it, 0: none). A stage's IN_SLOTS gathered-input slots
    come first, then FEAT_SLOTS feature-map slots or ACC_SLOTS accumulator slots of ``batch``
    images; every slot cache-line aligned."""
    outputs: list[tuple[int, int]] = []
    inputs: list[tuple[int, int] | None] = []
    at = 0
    for region in regions:
        feat_bytes, out_bytes, fabric_head = region[:3]
        gathered = region[3] if len(region) > 3 else 0
        if gathered:
            stride = _align(batch * gathered)
            inputs.append((at, stride))
            at += stride * IN_SLOTS
        else:
            inputs.append(None)
        stride = _align(batch * (out_bytes if fabric_head else feat_bytes))
        outputs.append((at, stride))
        at += stride * (ACC_SLOTS if fabric_head else FEAT_SLOTS)
    for region in regions:  # RADI branches' accumulators after everything else (branch_slots)
        if len(region) > 4 and region[4]:
            at += _align(batch * region[4]) * ACC_SLOTS
    return outputs, inputs, at


def branch_slots(regions: Sequence[Region], batch: int) -> list[tuple[int, int] | None]:
    """Per stage the (offset, stride) of its RADI branch's ACC_SLOTS accumulator slots, laid out
    after every other slot of the arena (None: the stage has no branch partition)."""
    _, _, at = arena([r[:4] for r in regions], batch)
    out: list[tuple[int, int] | None] = []
    for region in regions:
        if len(region) > 4 and region[4]:
            stride = _align(batch * region[4])
            out.append((at, stride))
            at += stride * ACC_SLOTS
        else:
            out.append(None)
    return out


def arena_layout(regions: Sequence[Region], batch: int) -> tuple[list[tuple[int, int]], int]:
    """Per stage the byte offset and stride of its output slots, and the arena's size (:func:`arena`)."""
    outputs, _, size = arena(regions, batch)
    return outputs, size


def stage_regions(stages: Sequence[Stage]) -> list[Region]:
    return [
        (
            s.feat_bytes,
            s.out_bytes,
            s.fabric_head,
            s.in_bytes if s.reads_image and k > 0 else 0,
            s.out_bytes if s.branch else 0,
        )
        for k, s in enumerate(stages)
    ]


def partition_indices(stages: Sequence[Stage]) -> list[tuple[int, int | None]]:
    """Per stage the partition index of its segment and of its RADI branch (None: none), in the
    order the build lists them: seg0, branch0, seg1, … (without branches: segment k = partition k)."""
    out, p = [], 0
    for stage in stages:
        out.append((p, p + 1 if stage.branch else None))
        p += 2 if stage.branch else 1
    return out


def partition_runs(stages: Sequence[Stage], heads_run: Sequence[bool]) -> list[bool]:
    """Whether stage k's partition is started at all: always, but for a stage whose head does not
    run when the next stage reads the image anyway (nothing it computes would be used)."""
    for k, stage in enumerate(stages[:-1]):
        if stage.fabric_head and not stages[k + 1].reads_image:
            raise ScheduleError(
                f"stage {k} ends in accumulators but stage {k + 1} reads a feature map: nothing carries over"
            )
    return [k == len(stages) - 1 or heads_run[k] or not stages[k + 1].reads_image for k in range(len(stages))]


def pipeline_depth(stages: int) -> int:
    """Rounds from a batch's first segment to its final logits."""
    return ROUNDS_PER_STAGE * (stages - 1) + 2


def round_cycles(
    runs: Sequence[tuple[float, float, float]],
    setup: float,
    work: float,
    cache: float = 0.0,
    after: float = 0.0,
) -> float:
    """One round: runs (busy cycles, bytes flushed/invalidated at the start, bytes invalidated
    after the wait) started in order, PS work after the last start, then the waits in order,
    then ``after``: the PS work that needs this round's runs (decisions on RADI branches)."""
    t, ends = 0.0, []
    for busy, start_bytes, _ in runs:
        t += setup + cache * start_bytes
        ends.append(t + busy)
    t += work
    for end, (_, _, out_bytes) in zip(ends, runs, strict=True):
        t = max(t, end) + cache * out_bytes
    return t + after


def _branch_cost(stage: Stage, n: float) -> tuple[float, float, float]:
    """A RADI branch run: reads the feature maps, writes the exit's accumulators."""
    assert stage.head is not None
    return stage.head.busy(n), n * (stage.feat_bytes + stage.out_bytes), n * stage.out_bytes


def _run_cost(stage: Stage, n: float) -> tuple[float, float, float]:
    return stage.segment.busy(n), n * (stage.in_bytes + stage.written), n * stage.written


def steady_round(
    stages: Sequence[Stage],
    counts: Sequence[float],
    batch: int,
    costs: PsCosts,
    heads_run: Sequence[bool] | None = None,
    moved: Sequence[float] | None = None,
) -> tuple[list[tuple[float, float, float]], float, float]:
    """A steady-state round: its runs in start order (segments, then RADI branches; see
    :func:`round_cycles`), the PS's work while they run and its work after the waits (the
    decisions on the branches' accumulators and the compaction that follows)."""
    k_stages = len(stages)
    heads_run = list(heads_run) if heads_run is not None else [True] * k_stages
    if len(counts) != k_stages or counts[0] != batch:
        raise ScheduleError(f"need {k_stages} per-stage counts starting with the batch ({batch})")
    started = partition_runs(stages, heads_run)
    runs: list[tuple[float, float, float]] = []
    decisions = copied = head_bytes = head_macs = 0.0
    after_decisions = after_copied = 0.0
    for k, stage in enumerate(stages):
        n = counts[k]
        if n > 0 and started[k]:
            runs.append(_run_cost(stage, n))
        if k == k_stages - 1:
            decisions += n
        elif stage.branch:  # decided after the waits, on the branch's accumulators
            if heads_run[k] and n > 0:
                after_decisions += n
                after_copied += (moved[k] if moved is not None else counts[k + 1]) * stage.feat_bytes
        elif heads_run[k] and n > 0:
            decisions += n
            if not stage.fabric_head:
                head_bytes += n * stage.feat_bytes
                head_macs += n * stage.head_macs
            if stages[k + 1].reads_image:  # every image that stays is gathered for the next stage
                copied += counts[k + 1] * stages[k + 1].in_bytes
            else:
                copied += (moved[k] if moved is not None else counts[k + 1]) * stage.feat_bytes
    runs += [
        _branch_cost(stage, counts[k])
        for k, stage in enumerate(stages)
        if stage.branch and heads_run[k] and counts[k] > 0
    ]
    return (
        runs,
        costs.work(decisions, copied, head_bytes, head_macs),
        costs.work(after_decisions, after_copied),
    )


def closed_form(
    stages: Sequence[Stage],
    counts: Sequence[float],
    batch: int,
    costs: PsCosts,
    heads_run: Sequence[bool] | None = None,
    moved: Sequence[float] | None = None,
) -> float:
    """Steady-state period (fabric cycles per batch) for ``counts[k]`` images entering stage k per
    batch (``counts[0] == batch``) and ``moved[k]`` feature maps the PS moves when compacting
    after head k (default: every image that stays moves, an upper bound; images gathered for a
    stage that reads the image are always copied)."""
    runs, work, after = steady_round(stages, counts, batch, costs, heads_run, moved)
    return round_cycles(runs, costs.setup, work, costs.cache_per_byte, after)


def expected_counts(reach: Sequence[float], batch: int) -> list[float]:
    return [batch * r for r in reach]


def throughput(period: float, batch: int, clock_hz: float) -> float:
    return batch / period * clock_hz


def simulate(
    stages: Sequence[Stage],
    exits: np.ndarray,
    batch: int,
    costs: PsCosts,
    heads_run: Sequence[bool] | None = None,
) -> ScheduleRun:
    """Run the controller's schedule on images leaving at ``exits`` (stage index per image, the
    integer reference's decisions), round by round, as td_fpga_run_batch does."""
    k_stages = len(stages)
    heads_run = list(heads_run) if heads_run is not None else [True] * k_stages
    exits = np.asarray(exits, dtype=np.int64)
    if batch < 1:
        raise ScheduleError(f"batch size {batch}: give at least 1")
    if exits.size and (exits.min() < 0 or exits.max() >= k_stages):
        raise ScheduleError(f"exits must be stage indices 0..{k_stages - 1}")
    for k in range(k_stages - 1):
        if not heads_run[k] and np.any(exits == k):
            raise ScheduleError(f"images leave at stage {k}, whose head does not run")
    started_k = partition_runs(stages, heads_run)
    n_images = int(exits.size)
    n_batches = -(-n_images // batch)
    layout, gathered, _ = arena(stage_regions(stages), batch)
    branch_out = branch_slots(stage_regions(stages), batch)
    index = partition_indices(stages)
    slots: dict[tuple[int, int], list[int]] = {}  # (stage, feature slot) -> image ids in buffer order
    source: dict[tuple[int, int], tuple[int, int]] = {}  # (stage, feature slot) -> its input (buffer, offset)
    owner: dict[tuple[str, int, int], int] = {}  # (kind, stage, slot) -> batch holding it
    done_at = np.full(n_images, np.nan)
    entered_at = np.full(n_images, np.nan)
    runs: list[RunLog] = []
    rounds: list[float] = []
    ps: list[float] = []
    t = 0.0
    total_rounds = n_batches + pipeline_depth(k_stages) - 1 if n_batches else 0
    for r in range(total_rounds):
        started: list[RunLog] = []
        costs_i: list[tuple[float, float, float]] = []
        read_done: list[tuple[tuple[str, int, int], int]] = []  # gathered inputs read this round
        # 1. start every segment with work this round (in stage order)
        for k, stage in enumerate(stages):
            b = r - ROUNDS_PER_STAGE * k
            if not 0 <= b < n_batches:
                continue
            slot = b % FEAT_SLOTS
            if k == 0:
                ids = list(range(b * batch, min((b + 1) * batch, n_images)))
                entered_at[ids] = t
                src = (0, b * batch * stage.in_bytes)
            else:
                ids = slots.pop((k - 1, slot))
                before = source.pop((k - 1, slot))
                if stage.reads_image and not started_k[k - 1]:
                    src = before  # the previous stage did not run: the same images, where they are
                elif stage.reads_image:  # the images the PS gathered after head k-1
                    key = ("in", k, b % IN_SLOTS)
                    read_done.append((key, b))
                    offset, stride = gathered[k]  # type: ignore[misc]
                    src = (1, offset + (b % IN_SLOTS) * stride)
                else:
                    _release(owner, ("feat", k - 1, slot), b)
                    src = (1, layout[k - 1][0] + slot * layout[k - 1][1])
            slots[(k, slot)] = ids
            source[(k, slot)] = src
            if not started_k[k]:
                continue
            if stage.fabric_head:
                _claim(owner, ("acc", k, b % ACC_SLOTS), b)
                out_off = layout[k][0] + (b % ACC_SLOTS) * layout[k][1]
            else:
                _claim(owner, ("feat", k, slot), b)
                out_off = layout[k][0] + slot * layout[k][1]
            if ids:
                started.append(RunLog(r, index[k][0], b, list(ids), src[1], out_off, src[0]))
                costs_i.append(_run_cost(stage, len(ids)))
        # 1b. the RADI branches (DDI) on the feature maps their segments wrote in the last round
        for k, stage in enumerate(stages):
            b = r - ROUNDS_PER_STAGE * k - 1
            if not stage.branch or not heads_run[k] or not 0 <= b < n_batches:
                continue
            slot, acc_slot = b % FEAT_SLOTS, b % ACC_SLOTS
            _claim(owner, ("branch", k, acc_slot), b)
            ids = slots[(k, slot)]
            out_at, part = branch_out[k], index[k][1]
            assert out_at is not None and part is not None
            if ids:
                feat_at = layout[k][0] + slot * layout[k][1]
                started.append(RunLog(r, part, b, list(ids), feat_at, out_at[0] + acc_slot * out_at[1]))
                costs_i.append(_branch_cost(stage, len(ids)))
        # 2. the PS's heads, decisions, compactions and gathers for this round (while the fabric runs)
        decisions = copied = head_bytes = head_macs = 0
        after_decisions = after_copied = 0  # RADI branches: decided once the round's runs are done
        finished: list[int] = []
        for k, stage in enumerate(stages):
            b = r - ROUNDS_PER_STAGE * k - 1
            if not 0 <= b < n_batches:
                continue
            ids = slots[(k, b % FEAT_SLOTS)]
            if k == k_stages - 1:
                _release(owner, ("acc", k, b % ACC_SLOTS), b)
                slots.pop((k, b % FEAT_SLOTS))
                source.pop((k, b % FEAT_SLOTS))
                decisions += len(ids)
                finished += ids
                continue
            if not heads_run[k]:
                continue  # no head, no decision: every image stays, in place
            if stage.branch:
                after_decisions += len(ids)
                _release(owner, ("branch", k, b % ACC_SLOTS), b)
            else:
                decisions += len(ids)
            if stage.fabric_head:
                _release(owner, ("acc", k, b % ACC_SLOTS), b)
            else:
                head_bytes += len(ids) * stage.feat_bytes
                head_macs += len(ids) * stage.head_macs
            kept = [p for p, i in enumerate(ids) if exits[i] > k]  # positions of the images staying
            finished += [i for i in ids if exits[i] == k]
            nxt = stages[k + 1]
            if nxt.reads_image:  # every image that stays is copied into the next stage's input
                _claim(owner, ("in", k + 1, b % IN_SLOTS), b)
                copied += nxt.in_bytes * len(kept)
            elif stage.branch:
                after_copied += stage.feat_bytes * sum(1 for j, p in enumerate(kept) if p != j)
            else:
                copied += stage.feat_bytes * sum(1 for j, p in enumerate(kept) if p != j)  # moved forward
            slots[(k, b % FEAT_SLOTS)] = [ids[p] for p in kept]
        work = costs.work(decisions, copied, head_bytes, head_macs)
        after = costs.work(after_decisions, after_copied)
        # 3. the partitions' times: started in order, then waited for in order
        at = t
        for run, (busy, start_bytes, _) in zip(started, costs_i, strict=True):
            at += costs.setup + costs.cache_per_byte * start_bytes
            run.start, run.end = at, at + busy
        length = round_cycles(costs_i, costs.setup, work, costs.cache_per_byte, after)
        t += length
        done_at[finished] = t
        rounds.append(length)
        ps.append(work + after)
        runs += started
        for key, b in read_done:  # a gathered input is free once the run reading it is done
            _release(owner, key, b)
    return ScheduleRun(t, rounds, runs, done_at, entered_at, ps)


def _claim(owner: dict[tuple[str, int, int], int], key: tuple[str, int, int], batch: int) -> None:
    if key in owner:
        raise ScheduleError(
            f"{key[0]} slot {key[2]} of stage {key[1]} overwritten by batch {batch} while batch "
            f"{owner[key]} still needs it"
        )
    owner[key] = batch


def _release(owner: dict[tuple[str, int, int], int], key: tuple[str, int, int], batch: int) -> None:
    if owner.get(key) != batch:
        raise ScheduleError(
            f"{key[0]} slot {key[2]} of stage {key[1]} read by batch {batch} before it was written"
        )
    del owner[key]


def single_image_latency(stages: Sequence[Stage], exit_stage: int, costs: PsCosts) -> float:
    """Cycles for one image alone (batch of one) leaving at ``exit_stage``."""
    return simulate(stages, np.array([exit_stage]), 1, costs).cycles


def heads_for_policy(kind: str, stages: int, budget_exit: int | None = None) -> list[bool]:
    """Which heads the controller runs: none under policy ``none``; under a MAC budget only the
    one where the budget ends (``budget_exit``); every head otherwise."""
    if kind == "none":
        return [False] * stages
    if kind == "budget":
        return [k == budget_exit for k in range(stages)]
    return [True] * stages


def batch_rounds_latency(stages: int, exit_stage: int) -> int:
    """Rounds from a batch's first round to the end of the round its image at ``exit_stage`` is
    decided (steady state: multiply by the period)."""
    return ROUNDS_PER_STAGE * exit_stage + 2


def schedule_figures(
    stages: Sequence[Stage],
    static: Stage | None,
    reach: Sequence[float],
    exits: np.ndarray,
    batch: int,
    costs: PsCosts,
    clock_hz: float,
    heads_run: Sequence[bool] | None = None,
) -> dict:
    """Everything the report says about time, from the schedule the controller runs.

    ``reach``: measured share of images reaching each stage; ``exits``: the measured exit of
    each of those images (simulated as they come, batch by batch); ``static``: the one-partition
    static design (its head inside) at equal resources, run by the same controller."""
    k_stages = len(stages)
    heads = list(heads_run) if heads_run is not None else [True] * k_stages
    counts = expected_counts(reach, batch)
    period = closed_form(stages, counts, batch, costs, heads)
    worst = closed_form(stages, [float(batch)] * k_stages, batch, costs, heads, [0.0] * k_stages)
    # no static design within the budget: report it as 0 img/s
    static_period = closed_form([static], [float(batch)], batch, costs) if static else math.inf
    # the measured exits as they come, repeated to STEADY_BATCHES batches so that the pipeline's
    # fill and drain (depth rounds) do not dominate
    stream = np.resize(np.asarray(exits), max(len(exits), STEADY_BATCHES * batch)) if len(exits) else exits
    sim = simulate(stages, stream, batch, costs, heads)
    shares = [float(np.mean(np.asarray(exits) == k)) if len(exits) else 0.0 for k in range(k_stages)]
    single = [single_image_latency(stages, k, costs) for k in range(k_stages)]
    us = 1e6 / clock_hz
    fps = throughput(period, batch, clock_hz)
    static_fps = throughput(static_period, batch, clock_hz)
    return {
        "batch": batch,
        "clock_hz": clock_hz,
        "stages": [
            {
                "segment": st.segment.name,
                "latency": st.segment.latency,
                "ii": st.segment.ii,
                "in_bytes": st.in_bytes,
                "feat_bytes": st.feat_bytes,
                "out_bytes": st.out_bytes,
                "head_macs": st.head_macs,
                **(
                    {"branch": st.head.name, "branch_latency": st.head.latency, "branch_ii": st.head.ii}
                    if st.head is not None
                    else {}
                ),
            }
            for st in stages
        ],
        "costs": {k: getattr(costs, k) for k in PsCosts.__dataclass_fields__},
        "early_exit": {
            "period_cycles": period,
            "fps": fps,
            "ps_work_cycles": sum(steady_round(stages, counts, batch, costs, heads)[1:]),
            "simulated_fps": sim.throughput(clock_hz),
            "simulated_images": int(len(stream)),
            "worst_case_period_cycles": worst,
            "worst_case_fps": throughput(worst, batch, clock_hz),
            "fabric_bound_fps": min(
                clock_hz / (r * part.ii)
                for st, r, on, head in zip(stages, reach, partition_runs(stages, heads), heads, strict=True)
                for part in (st.segment, *((st.head,) if st.head is not None and head else ()))
                if r > 0 and on
            ),
        },
        "static": {"period_cycles": static_period, "fps": static_fps},
        "speedup": fps / static_fps if static_fps else math.inf,
        "worst_case_speedup": throughput(worst, batch, clock_hz) / static_fps if static_fps else math.inf,
        "single_image_us": {
            "per_exit": [c * us for c in single],
            "mean": sum(c * sh for c, sh in zip(single, shares, strict=True)) * us,
            "worst": single[-1] * us,
            "static": single_image_latency([static], 0, costs) * us if static else math.inf,
        },
        "batched_latency_us": {
            "per_exit": [batch_rounds_latency(k_stages, k) * period * us for k in range(k_stages)],
            "static": pipeline_depth(1) * static_period * us,
        },
    }


__all__ = [
    "ACC_SLOTS",
    "FEAT_SLOTS",
    "IN_SLOTS",
    "ROUNDS_PER_STAGE",
    "Partition",
    "PsCosts",
    "ScheduleError",
    "ScheduleRun",
    "Stage",
    "arena",
    "arena_layout",
    "branch_slots",
    "closed_form",
    "expected_counts",
    "partition_indices",
    "partition_runs",
    "simulate",
    "single_image_latency",
    "throughput",
]
