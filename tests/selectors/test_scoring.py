import numpy as np
import pytest
import torch

from dataflex.errors import ConfigError
from dataflex.selectors.scoring import (
    ScoreAccumulator,
    aggregate,
    candidate_indices,
    subtask_groups,
    subtask_scores,
    top_n,
    unit_rows,
)


def test_subtask_scores_equal_mean_then_max_by_loops():
    g = torch.Generator().manual_seed(0)
    train = unit_rows(torch.randn(7, 5, generator=g))
    val = unit_rows(torch.randn(9, 5, generator=g))
    labels = ["a", "b", "a", "c", "b", "a", "c", "c", "a"]
    names, ids = subtask_groups(labels)
    assert names == ["a", "b", "c"]
    per = subtask_scores(train, val, ids)
    for n in range(7):
        for s, name in enumerate(names):
            cos = [
                float(torch.dot(train[n], val[m]) / (train[n].norm() * val[m].norm()))
                for m in range(9)
                if labels[m] == name
            ]
            assert per[n, s].item() == pytest.approx(sum(cos) / len(cos), abs=1e-6)
        assert aggregate(per)[n].item() == pytest.approx(max(per[n].tolist()), abs=0)


def test_unit_rows_keeps_zero_rows_zero():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(unit_rows(x), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


def test_accumulator_cumulative_and_current():
    acc = ScoreAccumulator(4)
    acc.add([0, 2], torch.tensor([1.0, 2.0]), lr=0.5)
    out = acc.add([2, 3], torch.tensor([1.0, -1.0]), lr=0.25)
    assert out.tolist() == [1.25, -0.25]
    assert acc.total.tolist() == [0.5, 0.0, 1.25, -0.25]
    state = acc.state_dict()
    other = ScoreAccumulator(4)
    other.load_state_dict(state)
    assert other.total.tolist() == acc.total.tolist()
    assert other.rounds == 2
    with pytest.raises(ValueError, match="cover 4 examples but the pool has 5"):
        ScoreAccumulator(5).load_state_dict(state)
    cur = ScoreAccumulator(4, mode="current")
    cur.add([0], torch.tensor([3.0]), lr=0.1)
    assert cur.add([0], torch.tensor([2.0]), lr=0.1).tolist() == [2.0]
    with pytest.raises(ConfigError, match="score_accumulation"):
        ScoreAccumulator(4, mode="sum")


def test_top_n_is_stable_on_ties():
    assert top_n(torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0]), 3).tolist() == [1, 2, 4]


def test_candidate_indices_seeded_sorted_subset():
    avail = np.arange(100) * 2
    a = candidate_indices(avail, fraction=0.25, max_candidates=None, rng=np.random.default_rng(1))
    b = candidate_indices(avail, fraction=0.25, max_candidates=None, rng=np.random.default_rng(1))
    c = candidate_indices(avail, fraction=0.25, max_candidates=None, rng=np.random.default_rng(2))
    assert len(a) == 25
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert set(a.tolist()) <= set(avail.tolist())
    assert a.tolist() == sorted(a.tolist())
    capped = candidate_indices(avail, fraction=1.0, max_candidates=10, rng=np.random.default_rng(1))
    assert len(capped) == 10
    assert candidate_indices(avail, fraction=1.0, max_candidates=None, rng=None).tolist() == avail.tolist()
