"""The schedule arithmetic, the warm-up draw, the sampler's chunks and the plan checks."""

from __future__ import annotations

import itertools
import math

import pytest

from dataflex.configs.components import load_components
from dataflex.errors import ConfigError, DataflexError
from dataflex.registry import build_selector
from dataflex.selectors.base import Selection, SelectionContext, Selector
from dataflex.train.dynamic import DynamicSelectionSampler, SelectionSchedule, warmup_indices
from dataflex.train.dynamic.sampler import check_dynamic_plan


@pytest.mark.parametrize(
    ("warmup", "update", "times"), [(0, 3, 2), (2, 3, 2), (4, 2, 3), (6, 4, 1), (1, 1, 1)]
)
def test_round_of_step_matches_a_step_by_step_walk(warmup, update, times):
    s = SelectionSchedule(warmup, update, times)
    assert s.total_steps == warmup + update * times
    walk = [0] * warmup + [r for r in range(1, times + 1) for _ in range(update)]
    assert [s.round_of_step(k) for k in range(s.total_steps)] == walk
    for r in s.rounds:
        assert walk[s.start_step(r)] == r
        assert walk.count(r) == s.num_steps(r)
    assert s.selection_steps == [warmup + (r - 1) * update for r in range(1, times + 1)]
    assert all(b % s.chunk_steps == 0 for b in [*s.selection_steps, s.total_steps])
    assert s.chunk_steps == math.gcd(warmup, update)
    assert list(s.rounds) == ([0] if warmup else []) + list(range(1, times + 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"warmup_step": -1, "update_step": 2, "update_times": 1},
            "warmup_step must be an integer >= 0, got -1",
        ),
        (
            {"warmup_step": 0, "update_step": 0, "update_times": 1},
            "update_step must be a positive integer, got 0",
        ),
        ({"warmup_step": 0, "update_step": -3, "update_times": 1}, "update_step must be a positive integer"),
        (
            {"warmup_step": 0, "update_step": 2, "update_times": 0},
            "update_times must be a positive integer, got 0",
        ),
        (
            {"warmup_step": 0, "update_step": 2.5, "update_times": 1},
            "update_step must be an integer, got 2.5",
        ),
        ({"warmup_step": True, "update_step": 2, "update_times": 1}, "warmup_step must be an integer"),
    ],
)
def test_bad_schedule_is_rejected_with_the_field_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SelectionSchedule(**kwargs)


def test_round_of_step_outside_the_schedule_raises():
    s = SelectionSchedule(2, 3, 1)
    with pytest.raises(ValueError, match="outside the schedule"):
        s.round_of_step(5)
    with pytest.raises(ValueError, match="round 0 is not in this schedule"):
        SelectionSchedule(0, 3, 1).start_step(0)


def test_warmup_draw_is_a_seeded_subset_and_wraps_with_fresh_permutations():
    a = warmup_indices(20, 12, seed=3)
    assert a == warmup_indices(20, 12, seed=3)
    assert a != warmup_indices(20, 12, seed=4)
    assert len(set(a)) == 12 and set(a) <= set(range(20))
    long = warmup_indices(5, 12, seed=3)
    assert sorted(long[:5]) == list(range(5)) and sorted(long[5:10]) == list(range(5))
    assert len(long) == 12


class FixedSelector(Selector):
    """Returns whatever it is told to (to exercise the sampler's checks)."""

    def __init__(self, indices):
        super().__init__()
        self.indices = indices

    def select(self, ctx, num_samples):
        return Selection(indices=self.indices)


def _ctx(round_=1):
    return SelectionContext(model=None, optimizer=None, train_dataset=list(range(10)), round=round_)


def test_sampler_yields_each_chunk_of_the_current_round():
    schedule = SelectionSchedule(2, 4, 2)  # chunks of 2 steps
    selector = FixedSelector(list(range(10))[::-1] * 2)
    sampler = DynamicSelectionSampler(selector, schedule, pool_size=10, examples_per_step=2, seed=1)
    assert len(sampler) == 4
    sampler.select_round(0, None)
    sampler.set_step(0)
    assert list(sampler) == warmup_indices(10, 4, 1)
    sampler.set_step(2)
    with pytest.raises(DataflexError, match="round 1 .* has not been selected yet"):
        list(sampler)
    selector.indices = list(range(8))
    sampler.select_round(1, _ctx())
    for step, expected in [(2, [0, 1, 2, 3]), (3, [0, 1, 2, 3]), (4, [4, 5, 6, 7])]:
        sampler.set_step(step)  # step 3 is mid-chunk: a resumed run restarts the chunk and skips batches
        assert list(sampler) == expected
    assert (
        sampler.pending_round(6) == 2
        and sampler.pending_round(4) is None
        and sampler.pending_round(10) is None
    )


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        ([1, 2, 3], "returned 3 indices for round 1; the round trains on exactly 4"),
        ([1, 2, 3, 10], "outside"),
    ],
)
def test_sampler_rejects_a_malformed_selection(indices, match):
    sampler = DynamicSelectionSampler(FixedSelector(indices), SelectionSchedule(0, 2, 1), 10, 2)
    with pytest.raises(DataflexError, match=match):
        sampler.select_round(1, _ctx())


def test_round_budget_larger_than_the_pool_is_rejected_before_training():
    with pytest.raises(ConfigError, match="asked for 24 examples from a pool of 20 without replacement"):
        check_dynamic_plan(SelectionSchedule(0, 3, 1), build_selector("random"), 20, 8)
    repeats = build_selector("random", repeat_within_round=True)
    assert check_dynamic_plan(SelectionSchedule(0, 3, 1), repeats, 20, 8) == 24
    # repeating across rounds does not let one round repeat an example
    for name in ("less", "loss"):
        with pytest.raises(
            ConfigError, match=rf"{name}: asked for 24 .* without replacement.* or add data\."
        ):
            check_dynamic_plan(
                SelectionSchedule(0, 3, 1), build_selector(name, repeat_across_rounds=True), 20, 8
            )


@pytest.mark.parametrize(
    ("name", "takes"), [("random", "repeat_within_round"), ("less", "repeat_across_rounds")]
)
def test_the_old_replacement_key_names_the_two_that_replace_it(name, takes):
    with pytest.raises(ConfigError, match=rf"replacement: this key was split in two: .*takes {takes}\."):
        build_selector(name, replacement=True)


def test_selector_needing_a_target_set_requires_eval_dataset():
    class NeedsTarget(FixedSelector):
        requires_eval_dataset = True

    with pytest.raises(ConfigError, match="set eval_dataset"):
        check_dynamic_plan(SelectionSchedule(0, 1, 1), NeedsTarget([]), 10, 2, has_eval_dataset=False)
    check_dynamic_plan(SelectionSchedule(0, 1, 1), NeedsTarget([]), 10, 2, has_eval_dataset=True)


def test_component_key_and_components_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no selector 'randon'.*Did you mean 'random'"):
        load_components(None).build_selector("randon")
    with pytest.raises(ConfigError, match="components_cfg_file"):
        load_components(tmp_path / "missing.yaml")
    assert load_components(None).build_selector("random").registry_name == "random"


def test_chunks_cover_the_whole_schedule_exactly_once():
    for warmup, update, times in itertools.product([0, 2, 3], [1, 2, 4], [1, 3]):
        schedule = SelectionSchedule(warmup, update, times)
        eps = 3
        pool = 100
        sampler = DynamicSelectionSampler(build_selector("random"), schedule, pool, eps, seed=5)
        seen = []
        for start in range(0, schedule.total_steps, schedule.chunk_steps):
            r = sampler.pending_round(start)
            if r is not None:
                ctx = SelectionContext(None, None, list(range(pool)), round=r, seed=5)
                sampler.select_round(r, None if r == 0 else ctx)
            sampler.set_step(start)
            seen.extend(sampler)
        expected = [i for r in schedule.rounds for i in sampler.selections[r].indices]
        assert seen == expected


@pytest.mark.parametrize(("batch", "accum"), [(2, 3), (5, 1)])
def test_the_early_global_batch_is_the_trainers(tmp_path, tiny_llama, batch, accum):
    from transformers import Trainer, TrainingArguments

    from dataflex.train.dynamic.trainer import global_batch_size

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        report_to=[],
        use_cpu=True,
    )
    trainer = Trainer(model=tiny_llama(), args=args)
    assert global_batch_size(args) == trainer.get_total_train_batch_size(args) == batch * accum
