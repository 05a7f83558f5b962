"""The PS schedule for models whose stages read the image (S2DNAS: one partition per stage,
each ending in its classifier's accumulators): hand-computed runs, buffer offsets and PS work,
the gather that replaces the compaction, stages not started under policy none, and the hazard
one gather slot would be. (That the C controller runs it: tests/test_fpga_s2dnas.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from tinydyn.hw import schedule
from tinydyn.hw.schedule import (
    Partition,
    PsCosts,
    ScheduleError,
    Stage,
    arena,
    closed_form,
    partition_runs,
    schedule_figures,
    simulate,
    stage_regions,
)

P0, P1, P2 = Partition("stage0", 100, 10), Partition("stage1", 50, 30), Partition("stage2", 40, 20)
# 2-byte images; every stage writes 4 bytes of accumulators; stages 1 and 2 read the image again
STAGES = [Stage(P0, 2, 0, 4), Stage(P1, 2, 0, 4, 0, True)]
THREE = [*STAGES, Stage(P2, 2, 0, 4, 0, True)]
COSTS = PsCosts(setup=3, decide=2, copy_per_byte=0.5, head_per_byte=0.25, head_per_mac=1, cache_per_byte=0)
PATTERN = [0, 1, 1, 0]  # per batch of 4: images 1 and 2 go on to stage 1


def test_two_batches_by_hand():
    run = simulate(STAGES, np.array(PATTERN * 2), 4, COSTS)
    # r0 stage0(b0): 3 + 100 + 3*10 = 133; r1 stage0(b1) = 133 while the PS finishes b0's
    # accumulators: 4 decisions * 2 + 2 gathered images * 2 bytes * 0.5 = 10 (no head in software);
    # r2 stage1(b0) on the 2 gathered images: 3 + 50 + 30 = 83; r3 stage1(b1): 83 (PS: 2 decisions);
    # r4: the last decisions of b1, 4
    assert run.round_cycles == [133, 133, 83, 83, 4]
    assert run.ps_cycles == [0, 10, 10, 4, 4]
    # layout: stage 0 two accumulator slots of 4 * 4 = 16 -> 64 bytes; stage 1 two gather slots
    # (4 * 2 = 8 -> 64) at 128, then its two accumulator slots at 256: 384 bytes
    outputs, inputs, size = arena(stage_regions(STAGES), 4)
    assert (outputs, inputs, size) == ([(0, 64), (256, 64)], [None, (128, 64)], 384)
    got = [(r.round, r.partition, r.images, r.in_buffer, r.in_offset, r.out_offset) for r in run.runs]
    assert got == [
        (0, 0, [0, 1, 2, 3], 0, 0, 0),  # the image array, in place
        (1, 0, [4, 5, 6, 7], 0, 8, 64),
        (2, 1, [1, 2], 1, 128, 256),  # gathered into stage 1's slot 0, in order
        (3, 1, [5, 6], 1, 192, 320),
    ]
    assert run.done_at.tolist() == [266, 432, 432, 266, 349, 436, 436, 349]


def test_closed_form_charges_the_gather_for_every_image_that_stays():
    # stage 0 on 4 images (busy 130), stage 1 on 2 (80); PS: 6 decisions * 2 + 2 images * 2 bytes
    # * 0.5 (always copied, wherever they sat in the batch): 14; fabric-bound
    assert closed_form(STAGES, [4, 2], 4, COSTS) == 133
    slow = PsCosts(setup=3, decide=50, copy_per_byte=0.5, head_per_byte=0, head_per_mac=0, cache_per_byte=0)
    assert closed_form(STAGES, [4, 2], 4, slow) == 3 + 3 + 6 * 50 + 2
    # "moved" counts compacted feature maps: a gather copies every image that stays regardless
    assert closed_form(STAGES, [4, 2], 4, slow, moved=[0, 0]) == 3 + 3 + 6 * 50 + 2


def test_policy_none_starts_only_the_last_stage_on_the_image_array():
    """No early head runs: the earlier partitions would compute nothing anyone reads."""
    heads = [False, False, True]
    assert partition_runs(THREE, heads) == [False, False, True]
    run = simulate(THREE, np.array([2] * 6), 4, COSTS, heads_run=heads)
    got = [(r.round, r.partition, r.images, r.in_buffer, r.in_offset) for r in run.runs]
    assert got == [(4, 2, [0, 1, 2, 3], 0, 0), (5, 2, [4, 5], 0, 8)]
    assert run.ps_cycles == [0, 0, 0, 0, 0, 8, 4]  # only the final decisions
    fig = schedule_figures(THREE, None, [1.0, 1.0, 1.0], np.array([2] * 8), 4, COSTS, 100e6, heads)
    assert fig["early_exit"]["fabric_bound_fps"] == pytest.approx(100e6 / 20)  # stage 2 alone


def test_a_skipped_stage_hands_on_the_gathered_images():
    """Stage 1's head does not run (a budget that ends at stage 2): stage 1 is not started and
    stage 2 reads the images the PS gathered after stage 0, where they are."""
    heads = [True, False, True]
    run = simulate(THREE, np.array([0, 2, 2, 0]), 4, COSTS, heads_run=heads)
    got = [(r.partition, r.images, r.in_buffer, r.in_offset) for r in run.runs]
    _, inputs, _ = arena(stage_regions(THREE), 4)
    assert got == [(0, [0, 1, 2, 3], 0, 0), (2, [1, 2], 1, inputs[1][0])]


def test_one_gather_slot_would_overwrite_a_batch_being_read(monkeypatch):
    """Stage 1 reads batch b's gathered images in the round the PS gathers batch b+1's."""
    monkeypatch.setattr(schedule, "IN_SLOTS", 1)
    with pytest.raises(ScheduleError, match="in slot 0 of stage 1 overwritten by batch 1 while batch 0"):
        simulate(STAGES, np.array(PATTERN * 3), 4, COSTS)


def test_accumulators_cannot_feed_a_feature_map_stage():
    bad = [Stage(P0, 2, 0, 4), Stage(P1, 8, 0, 4)]  # stage 1 would read a feature map nobody wrote
    with pytest.raises(ScheduleError, match="stage 0 ends in accumulators but stage 1 reads a feature map"):
        simulate(bad, np.array([1]), 1, COSTS)
