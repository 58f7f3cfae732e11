"""The selection-quality benchmark's bookkeeping: per-seed summaries, the verdict, precision."""

from __future__ import annotations

import math

import pytest

from benchmarks.quality_arms import ArmResult, _share
from benchmarks.quality_settings import Target
from benchmarks.selection_quality import mean_spread, rounds_table, summarize, table, verdict


def arm(name: str, seed: int, precision: list[float], valid: float, **times: float) -> ArmResult:
    base = {"wall_s": 10.0, "train_s": 4.0}
    return ArmResult(
        arm=name, seed=seed, precision=precision, valid_loss=valid, test_loss=valid, **{**base, **times}
    )


def test_mean_spread_is_mean_and_sample_sd():
    assert mean_spread([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_spread([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_spread([]))
    assert all(math.isnan(v) for v in mean_spread([1.0, math.nan]))  # a run without the figure


def test_summary_averages_rounds_then_seeds_and_splits_wall_time():
    results = [
        arm("less", 0, [1.0, 0.5], 2.0, features_s=3.0, scoring_s=1.0),
        arm("less", 1, [0.5, 0.5], 2.2, features_s=5.0, scoring_s=1.0),
    ]
    row = summarize(results)["less"]
    assert row["precision"] == pytest.approx((0.625, math.sqrt(2 * 0.125**2)))
    assert row["precision_min_round"] == 0.5
    assert row["valid_loss"][0] == pytest.approx(2.1)
    assert row["features_s"] == (4.0, pytest.approx(math.sqrt(2.0)))
    # other = wall - train - features - scoring - warmup: 10-4-3-1 = 2 and 10-4-5-1 = 0
    assert row["other_s"][0] == pytest.approx(1.0)
    assert "| less | 0.62 ± 0.18; 0.50 |" in table(summarize(results))


def test_verdict_needs_the_gap_to_exceed_both_spreads():
    target = Target("t", "t_valid", "t_test", pool_share=0.09)
    apart = [arm("less", s, [0.7, 0.9, 1.0], v) for s, v in ((0, 1.0), (1, 1.2))] + [
        arm("random", s, [0.1], v) for s, v in ((0, 1.6), (1, 1.8))
    ]
    assert verdict(summarize(apart), target) == {
        "precision>=0.8": True,
        "every_round_after_first>=0.8": True,  # the first scored round (0.7) does not count
        "valid_loss<random": True,
        "test_loss<random": True,
    }
    overlapping = [arm("less", s, [0.9, 0.7, 0.5], v) for s, v in ((0, 1.0), (1, 1.4))] + [
        arm("random", s, [0.1], v) for s, v in ((0, 1.3), (1, 1.5))
    ]
    assert verdict(summarize(overlapping), target) == {
        "precision>=0.8": False,
        "every_round_after_first>=0.8": False,
        "valid_loss<random": False,
        "test_loss<random": False,
    }
    common = Target("t", "t_valid", "t_test", pool_share=0.2)  # no precision target above 10%
    assert "precision>=0.8" not in verdict(summarize(apart), common)
    one_round = [arm("less", 0, [0.9], 1.0)]  # nothing after the first round: no such verdict
    assert "every_round_after_first>=0.8" not in verdict(summarize(one_round), target)
    assert verdict(summarize(apart), target, arm="random")["precision>=0.8"] is False


def test_share_counts_the_target_family():
    assert _share({"arithmetic": 3, "reverse": 1}, "arithmetic") == 0.75
    assert _share({"reverse": 4}, "arithmetic") == 0.0
    assert math.isnan(_share(None, "arithmetic"))


def test_rounds_table_lists_each_rounds_mean_precision():
    results = [arm("less", 0, [0.5, 1.0], 2.0), arm("less", 1, [0.7, 0.8], 2.0), arm("full", 0, [0.1], 2.0)]
    text = rounds_table(summarize(results))
    assert text.splitlines()[0] == "| arm | round 1 | round 2 |"
    assert text.splitlines()[2] == "| less | 0.60 | 0.90 |"
    assert "full" not in text  # one figure, not a per-round series
