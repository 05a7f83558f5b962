"""The timing model of the PS controller's batched, pipelined schedule (tinydyn.hw.schedule):
hand-computed small cases, the event-by-event simulation against the closed form, buffer
hazards, and the figures the report takes from it. (That the C controller runs exactly this
schedule is tests/test_hw.py::test_ps_controller_runs_the_batched_schedule_like_the_integer_reference.)
"""

from __future__ import annotations

import numpy as np
import pytest

from tinydyn.hw import schedule
from tinydyn.hw.schedule import (
    Partition,
    PsCosts,
    ScheduleError,
    Stage,
    arena_layout,
    closed_form,
    schedule_figures,
    simulate,
    single_image_latency,
    stage_regions,
)

SEG0, SEG1 = Partition("seg0", 100, 10), Partition("seg1", 50, 30)
# segment 0: 2-byte images -> 8-byte feature maps, exit head 0 on the PS (3 MACs); segment 1: the
# last, 4 bytes of final accumulators per image
STAGES = [Stage(SEG0, 2, 8, 0, 3), Stage(SEG1, 8, 0, 4)]
COSTS = PsCosts(setup=3, decide=2, copy_per_byte=0.5, head_per_byte=0.25, head_per_mac=1, cache_per_byte=0)
PATTERN = [0, 1, 1, 0]  # per batch of 4: images 1 and 2 stay, and both move forward


def test_two_batches_by_hand():
    """Two batches of four, every round worked out by hand (see the comments)."""
    run = simulate(STAGES, np.array(PATTERN * 2), 4, COSTS)
    # r0 seg0(b0): 3 + 100 + 3*10 = 133; r1 seg0(b1) = 133 while the PS runs head 0 on b0:
    # 4 decisions * 2 + 32 feature bytes * 0.25 + 12 MACs * 1 + 2 moved maps * 8 bytes * 0.5 = 36;
    # r2 seg1(b0) on the 2 stayers: 3 + 50 + 30 = 83 (PS: head 0 on b1, 36); r3 seg1(b1): 83 (PS:
    # final logits of b0, 2 * 2); r4: final logits of b1, 4 (no run)
    assert run.round_cycles == [133, 133, 83, 83, 4]
    assert run.cycles == 436
    assert run.done_at.tolist() == [266, 432, 432, 266, 349, 436, 436, 349]
    assert run.ps_cycles == [0, 36, 36, 4, 4]
    # layout: stage 0 three feature slots of 4 * 8 = 32 bytes, each on a 64-byte line boundary;
    # stage 1 (last) two accumulator slots of 4 * 4 = 16 -> 64: 320 bytes
    assert arena_layout(stage_regions(STAGES), 4) == ([(0, 64), (192, 64)], 320)
    got = [(r.round, r.partition, r.images, r.in_offset, r.out_offset) for r in run.runs]
    assert got == [
        (0, 0, [0, 1, 2, 3], 0, 0),
        (1, 0, [4, 5, 6, 7], 8, 64),  # second batch of images, feature slot 1
        (2, 1, [1, 2], 0, 192),  # the stayers, compacted to the front of slot 0
        (3, 1, [5, 6], 64, 256),
    ]


def test_single_image_latency_by_hand():
    # exit 0: seg0 3 + 100, then head 0 on the PS: 2 + 8 * 0.25 + 3; final: + seg1 3 + 50 and its
    # decision 2
    assert single_image_latency(STAGES, 0, COSTS) == 110
    assert single_image_latency(STAGES, 1, COSTS) == 165


def test_cache_maintenance_is_charged_around_each_run():
    # clean the 2 input bytes and invalidate the 8 output bytes before the start, invalidate the
    # output again after the wait: 3 + 10 + 100, + 8; then head 0, 7
    costs = PsCosts(
        setup=3, decide=2, copy_per_byte=0.5, head_per_byte=0.25, head_per_mac=1, cache_per_byte=1
    )
    assert single_image_latency(STAGES, 0, costs) == 128
    assert closed_form(STAGES, [4, 2], 4, costs) == pytest.approx(
        max(3 + 40 + 130, 3 + 40 + 3 + 2 * (8 + 4) + 80) + 32 + 8
    )


@pytest.mark.parametrize("decide", [2.0, 50.0])  # fabric-bound, then PS-bound
def test_simulation_reaches_the_closed_form(decide):
    costs = PsCosts(
        setup=3, decide=decide, copy_per_byte=0.5, head_per_byte=0.25, head_per_mac=1, cache_per_byte=0
    )
    batches = 40
    run = simulate(STAGES, np.array(PATTERN * batches), 4, costs)
    period = closed_form(STAGES, [4, 2], 4, costs, moved=[2])
    # by hand: fabric-bound 3 + 130; PS-bound 2 set-ups + (4 + 2) decisions * 50 + 32 * 0.25 + 12
    # + 16 * 0.5
    assert period == (133 if decide == 2 else 334)
    depth = schedule.pipeline_depth(len(STAGES))
    steady = run.round_cycles[depth - 1 : batches]  # every partition busy: the steady state
    assert len(steady) == batches - depth + 1 and all(r == period for r in steady)
    # the whole run approaches batch / period as the fill and drain amortise
    assert run.throughput(1.0) == pytest.approx(4 / period, rel=0.12)
    assert simulate(STAGES, np.array(PATTERN * 400), 4, costs).throughput(1.0) == pytest.approx(
        4 / period, rel=0.012
    )


def test_compaction_counts_only_images_that_move():
    # stayers already at the front move nowhere: only the heads and decisions cost the PS
    run = simulate(STAGES, np.array([1, 1, 0, 0]), 4, COSTS)
    assert run.ps_cycles[1] == 4 * 2 + 32 * 0.25 + 12
    assert [r.images for r in run.runs if r.partition == 1] == [[0, 1]]


def test_policy_none_runs_no_head_and_no_decision():
    run = simulate(STAGES, np.array([1] * 8), 4, COSTS, heads_run=[False, True])
    assert [r.partition for r in run.runs] == [0, 0, 1, 1]
    assert run.ps_cycles[1] == 0  # no exit head on the PS
    with pytest.raises(ScheduleError, match="images leave at stage 0, whose head does not run"):
        simulate(STAGES, np.array([0, 1]), 4, COSTS, heads_run=[False, True])


def test_two_feature_slots_would_overwrite_a_live_batch(monkeypatch):
    """Segment k+1 reads batch b's features two rounds after segment k wrote them, in the round
    segment k writes batch b+2: with two slots that is the same slot."""
    monkeypatch.setattr(schedule, "FEAT_SLOTS", 2)
    with pytest.raises(ScheduleError, match="feat slot 0 of stage 0 overwritten by batch 2 while batch 0"):
        simulate(STAGES, np.array(PATTERN * 5), 4, COSTS)


def test_bad_input_is_one_line():
    with pytest.raises(ScheduleError, match="batch size 0: give at least 1"):
        simulate(STAGES, np.array([0]), 0, COSTS)
    with pytest.raises(ScheduleError, match="exits must be stage indices 0..1"):
        simulate(STAGES, np.array([2]), 4, COSTS)
    with pytest.raises(ScheduleError, match="need 2 per-stage counts starting with the batch"):
        closed_form(STAGES, [3, 2], 4, COSTS)


def test_report_figures():
    static = Stage(Partition("static", 300, 40), 2, 0, 4)
    exits = np.array(PATTERN * 25)
    fig = schedule_figures(STAGES, static, [1.0, 0.5], exits, 4, COSTS, 100e6)
    ee = fig["early_exit"]
    assert ee["period_cycles"] == closed_form(STAGES, [4, 2], 4, COSTS)
    assert ee["fps"] == pytest.approx(4 / 133 * 100e6)
    # worst case: every image reaches segment 1 (4 images: 2 set-ups + 50 + 3*30)
    assert ee["worst_case_period_cycles"] == 2 * 3 + 50 + 3 * 30
    # the static design: one partition, 3 + 300 + 3*40
    assert fig["static"]["period_cycles"] == 423
    assert fig["speedup"] == pytest.approx(423 / 133)
    assert fig["single_image_us"]["per_exit"] == pytest.approx([1.10, 1.65])
    assert fig["single_image_us"]["mean"] == pytest.approx((1.10 + 1.65) / 2)
    assert fig["single_image_us"]["static"] == pytest.approx((3 + 300 + 2) / 100)
    # the fabric bound: min over segments of clock / (reach * II)
    assert ee["fabric_bound_fps"] == pytest.approx(100e6 / (0.5 * 30))
    assert ee["simulated_images"] == schedule.STEADY_BATCHES * 4
    assert ee["simulated_fps"] <= ee["fps"] + 1e-6  # fill and drain only cost
    assert [st["head_macs"] for st in fig["stages"]] == [3, 0]
