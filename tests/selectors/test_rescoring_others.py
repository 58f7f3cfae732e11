"""``rescore_fraction`` for the embedding selectors (``tsds``, ``near``, ``cluster_less``) and ``nice``.

test_rescoring.py checks LESS, loss and delta_loss. Here each selector runs several rounds,
with a training step between them, and each round is checked against the rule of
docs/rescoring.md written out independently (``reference_rescored``, applied to the
table's last rounds and rankings as they stood before the round): the rows it
recomputed, its ``scored`` count, and that its pick took only rows computed this round
(``cluster_less`` picks by cluster, so only its rows and count are checked). With
``rescore_fraction: 1.0`` every selection equals the one with the param left out.
"""

from __future__ import annotations

import math

import pytest
import torch

from dataflex.registry import build_selector
from dataflex.selectors.nice_metrics import METRICS, register_metric
from tests.conftest import make_examples, make_tiny_llama
from tests.selectors.conftest import make_ctx
from tests.selectors.test_rescoring import reference_rescored, reference_rotation, train_steps

SEED = 9
ROUNDS = 4

# selector: (params, pool size, budget); small settings so that every round is fast
SETUPS = {
    "tsds": (
        {"alpha": 0.3, "cost_scale": 1.0, "sigma": 0.1, "max_k": 8, "kde_k": 5, "sampling": "distinct"},
        14,
        3,
    ),
    "near": ({}, 12, 3),
    "cluster_less": ({"num_clusters": 3, "representatives": 2, "projector": "identity"}, 12, 3),
    "nice": (
        {"projector": "identity", "metric": "test_even_share", "mc_samples": 2, "max_new_tokens": 3},
        8,
        2,
    ),
}
KINDS = list(SETUPS)


@pytest.fixture(scope="module", autouse=True)
def graded_metric():
    """NICE's reward: the share of even generated tokens (graded, so rewards differ)."""

    @register_metric("test_even_share")
    def even_share(prediction, reference, example):
        return sum(t % 2 == 0 for t in prediction) / max(1, len(prediction))

    yield
    METRICS.unregister("test_even_share")


def run_rounds(kind: str, **extra):
    """Each round's selection, the table before it (last round, priority) and the rows it computed."""
    params, pool_size, budget = SETUPS[kind]
    vocab = 32 if kind == "nice" else 64
    model = make_tiny_llama(seed=6, vocab_size=vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.85, 0.95), eps=1e-7)
    pool = make_examples(pool_size, vocab_size=vocab, seed=41)
    val = make_examples(3, vocab_size=vocab, seed=42)
    train_steps(model, opt, pool, 1)
    sel = build_selector(kind, **params, **extra, batch_size=4, seed=SEED, repeat_across_rounds=True)
    out = []
    for r in range(1, ROUNDS + 1):
        table = sel.table
        before = (
            ([-1] * pool_size, [math.nan] * pool_size)
            if table is None
            else (table.scored_round.tolist(), table.priority.tolist())
        )
        ctx = make_ctx(model, pool, val, optimizer=opt, learning_rate=1e-3 * r, step=r, round=r, seed=3)
        got = sel.select(ctx, budget)
        fresh = (
            None if sel.table is None else set(torch.nonzero(sel.table.scored_round == r).flatten().tolist())
        )
        out.append((got, before, fresh))
        train_steps(model, opt, pool, 1, offset=r)  # the model moves between rounds
    return sel, out


@pytest.mark.parametrize("kind", KINDS)
def test_each_round_recomputes_the_rule_and_picks_only_fresh_rows(kind):
    fraction = 0.5
    _, pool_size, budget = SETUPS[kind]
    sel, results = run_rounds(kind, rescore_fraction=fraction)
    count = math.floor(fraction * pool_size)
    rotation = reference_rotation(SEED, pool_size)
    reps = SETUPS[kind][0].get("num_clusters", 0) * SETUPS[kind][0].get("representatives", 0)
    stale_seen = False
    for r, (got, (last_round, priority), fresh) in enumerate(results, start=1):
        expected = reference_rescored(last_round, priority, budget, count, rotation)
        assert fresh == expected, f"round {r}"
        assert len(fresh) == (pool_size if r == 1 else count)
        # cluster_less: its representatives' LESS features on top of the embeddings it recomputed
        assert got.metadata["scored"] == len(fresh) + reps == sel.examples_scored(pool_size, budget, r)
        assert len(got.indices) == budget
        if kind != "cluster_less":  # picks by cluster, on kept embeddings too (docs/rescoring.md)
            assert set(got.indices) <= fresh, f"round {r}: a pick on a stale row"
        stale_seen |= r > 1 and len(fresh) < pool_size
    assert stale_seen


@pytest.mark.parametrize("kind", KINDS)
def test_fraction_one_equals_the_param_left_out(kind):
    _, exact = run_rounds(kind, rescore_fraction=1.0)
    sel, default = run_rounds(kind)
    assert sel.params.rescore_fraction == 1.0 and sel.table is None
    pool_size = SETUPS[kind][1]
    for (a, _, _), (b, _, _) in zip(exact, default):
        assert a.indices == b.indices
        assert a.scores == b.scores
        assert a.metadata["scored"] == b.metadata["scored"]
        assert a.metadata["scored"] >= pool_size  # every candidate, every round
