"""The plan printed before training: its figures against the rounds a selector really makes, the
run-length limits, and the divergence check before a round."""

from __future__ import annotations

import math

import pytest
import torch

from dataflex.errors import ConfigError, NonFiniteError
from dataflex.registry import build_selector
from dataflex.selectors.base import SelectionContext
from dataflex.train.dynamic import SelectionSchedule
from dataflex.train.dynamic.divergence import check_finite_weights
from dataflex.train.dynamic.plan import MAX_PASSES, MAX_TOTAL_STEPS, check_run_length, plan_summary
from dataflex.train.dynamic.sampler import DynamicPlan


@pytest.mark.parametrize(
    ("params", "pool", "budget", "rounds"),
    [
        ({}, 50, 8, 5),
        ({"candidate_fraction": 0.3}, 50, 4, 6),
        ({"candidate_fraction": 0.1}, 50, 8, 3),  # fewer candidates than the budget: the budget
        ({"max_candidates": 12}, 50, 4, 6),
        ({"repeat_across_rounds": True, "candidate_fraction": 0.5}, 30, 10, 4),
    ],
)
def test_examples_scored_is_what_each_round_really_scores(params, pool, budget, rounds):
    selector = build_selector("loss", **params)
    for round_ in range(1, rounds + 1):
        ctx = SelectionContext(model=None, optimizer=None, train_dataset=[{}] * pool, round=round_, seed=3)
        available = selector.check_request(ctx, budget)
        candidates = selector.draw_candidates(ctx, available, budget)
        assert selector.examples_scored(pool, budget, round_) == len(candidates), round_
        selector.chosen.update(int(i) for i in candidates[:budget])  # what a round records


def test_a_selector_that_scores_nothing_says_so():
    assert build_selector("random").examples_scored(100, 8, 1) == 0
    plan = DynamicPlan(SelectionSchedule(2, 3, 4), build_selector("random"), 100, 2, False)
    assert plan_summary(plan) == [
        "plan: 14 optimizer steps (warm-up 2 + 4 rounds x 3) of 2 examples: 28 examples trained, 0.28 passes "
        "over the pool of 100",
        "plan: random selects 6 examples a round and scores none",
    ]


def test_the_scoring_cost_is_examples_scored_times_cost_over_the_batch():
    selector = build_selector("loss", repeat_across_rounds=True)  # 1/3 of a training example each
    plan = DynamicPlan(SelectionSchedule(0, 5, 3), selector, 600, 4, False)
    line = plan_summary(plan)[1]
    assert "it scores 600 a round, 1800 in all" in line
    assert f"costing about {1800 / 3 / 4:.3g} training steps ({1800 / 3 / 4 / 15:.2g}x the training)" in line
    assert plan_summary(plan)[0].startswith("plan: 15 optimizer steps (3 rounds x 5) of 4 examples")


def test_a_selector_may_report_fewer_examples_scored():
    class Rescoring(type(build_selector("loss"))):
        def examples_scored(self, pool_size, num_samples, round_):
            return pool_size if round_ == 1 else pool_size // 10

    plan = DynamicPlan(SelectionSchedule(0, 1, 3), Rescoring(), 100, 2, False)
    assert "it scores 100 in round 1 to 10 in round 3, 120 in all" in plan_summary(plan)[1]


def test_run_length_limits():
    check_run_length(SelectionSchedule(0, 1, MAX_TOTAL_STEPS), 1, MAX_TOTAL_STEPS)  # at the limit: fine
    with pytest.raises(ConfigError, match="optimizer steps, more than the 10,000,000"):
        check_run_length(SelectionSchedule(1, 1, MAX_TOTAL_STEPS), 1, 10**9)
    check_run_length(SelectionSchedule(0, 10, MAX_PASSES), 10, 100)  # 1000 passes exactly: fine
    with pytest.raises(ConfigError, match="1,000.1 passes over the pool of 100 \\(more than 1000\\)"):
        check_run_length(SelectionSchedule(1, 10, MAX_PASSES), 10, 100)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weights_stop_the_run_before_a_round(tiny_llama, bad):
    model = tiny_llama()
    check_finite_weights(model, 2, 10, 1e-3)  # finite: nothing to say
    for p in model.parameters():
        p.requires_grad_(False)
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[3] = bad
    check_finite_weights(model, 2, 10, 1e-3)  # a frozen weight is not trained: not checked
    param.requires_grad_(True)
    with pytest.raises(
        NonFiniteError, match=f"after step 10, before selection round 2, the trainable weight '{name}'"
    ):
        check_finite_weights(model, 2, 10, 1e-3)
