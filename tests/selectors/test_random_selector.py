import numpy as np
import pytest
from scipy import stats

from dataflex.distributed import DistributedView
from dataflex.errors import ConfigError
from dataflex.selectors import RandomSelector, SelectionContext


def ctx(n: int, seed: int = 0, round_: int = 1, rank: int = 0, world: int = 1) -> SelectionContext:
    data = [{"input_ids": [1], "labels": [1]}] * n
    return SelectionContext(
        model=None,
        optimizer=None,
        train_dataset=data,
        seed=seed,
        round=round_,
        dist=DistributedView(rank=rank, world_size=world),
    )


def test_same_seed_same_indices_and_identical_on_every_rank():
    a = RandomSelector().select(ctx(100, seed=3), 20).indices
    b = RandomSelector().select(ctx(100, seed=3), 20).indices
    ranks = [RandomSelector().select(ctx(100, seed=3, rank=r, world=4), 20).indices for r in range(4)]
    assert a == b
    assert all(r == a for r in ranks)


def test_different_seeds_and_rounds_differ():
    base = RandomSelector().select(ctx(1000, seed=1), 50).indices
    assert RandomSelector().select(ctx(1000, seed=2), 50).indices != base
    assert RandomSelector().select(ctx(1000, seed=1, round_=2), 50).indices != base


def test_params_seed_overrides_run_seed():
    fixed = RandomSelector(seed=11)
    assert fixed.select(ctx(500, seed=1), 10).indices == fixed.select(ctx(500, seed=2), 10).indices


def test_no_duplicates_without_replacement_and_whole_pool_is_a_permutation():
    sel = RandomSelector().select(ctx(64), 64).indices
    assert sorted(sel) == list(range(64))


def test_with_replacement_may_exceed_pool():
    sel = RandomSelector(repeat_within_round=True).select(ctx(5), 50).indices
    assert len(sel) == 50 and set(sel) <= set(range(5))
    assert len(set(sel)) < 50


def test_more_than_pool_without_replacement_is_a_clear_error():
    with pytest.raises(
        ConfigError,
        match=r"asked for 11 examples from a pool of 10 without replacement.*repeat_within_round: true",
    ):
        RandomSelector().select(ctx(10), 11)


@pytest.mark.parametrize("replacement", [False, True])
def test_draw_is_uniform_chi_square(replacement):
    n, k, rounds = 20, 5, 2000
    counts = np.zeros(n)
    sel = RandomSelector(repeat_within_round=replacement)
    for r in range(rounds):
        for i in sel.select(ctx(n, seed=0, round_=r), k).indices:
            counts[i] += 1
    expected = np.full(n, rounds * k / n)
    _, p = stats.chisquare(counts, expected)
    assert p > 1e-3, f"counts look non-uniform: {counts}"
    # A biased draw (always the first k) is rejected by the same test.
    biased = np.zeros(n)
    biased[:k] = rounds
    assert stats.chisquare(biased, expected)[1] < 1e-6
