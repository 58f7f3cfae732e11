"""``cluster_less``: k-means is a Lloyd fixed point and the optimum on separated data; the selector's
choice equals the slow pipeline (one-example embeddings, slow LESS on the representatives)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from dataflex.selectors.kmeans import kmeans
from dataflex.selectors.random_selector import round_rng
from tests.selectors.embedding_reference import slow_embeddings
from tests.selectors.less_reference import less_round_scores
from tests.selectors.test_less import train_steps


def inertia(x, labels, k):
    return sum(
        ((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in range(k) if (labels == c).any()
    )


def test_kmeans_is_a_lloyd_fixed_point_and_deterministic():
    x = np.random.default_rng(0).normal(size=(30, 4))
    res = kmeans(x, 4, np.random.default_rng(5))
    for i in range(30):  # every point is nearest its own centroid
        d = [float(((x[i] - c) ** 2).sum()) for c in res.centroids]
        assert res.labels[i] == min(range(4), key=lambda c: (d[c], c))
    for c in range(4):  # every centroid is the mean of its members
        assert res.centroids[c] == pytest.approx(x[res.labels == c].mean(0))
    assert res.inertia == pytest.approx(inertia(x, res.labels, 4))
    again = kmeans(x, 4, np.random.default_rng(5))
    assert (again.labels == res.labels).all()


def test_kmeans_finds_the_best_partition_of_separated_points():
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [rng.normal(loc, 0.1, size=(s, 2)) for s, loc in ((2, [0, 0]), (3, [5, 0]), (3, [0, 5]))]
    )
    res = kmeans(x, 3, np.random.default_rng(2))
    best = min(
        (inertia(x, np.array(lab), 3), lab)
        for lab in itertools.product(range(3), repeat=len(x))
        if len(set(lab)) == 3 and lab[0] == 0
    )
    assert res.inertia == pytest.approx(best[0])


@pytest.fixture
def warm(tiny_llama, examples):
    model = tiny_llama(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pool, val = examples(12, seed=51), examples(3, seed=52)
    train_steps(model, opt, pool, 2)
    return model, opt, pool, val


@pytest.mark.parametrize("pick", ["centroid", "random"])
def test_choice_equals_slow_pipeline(warm, ctx_factory, pick):
    model, opt, pool, val = warm
    k, r, n = 3, 2, 5
    sel = build_selector(
        "cluster_less",
        num_clusters=k,
        representatives=r,
        pick=pick,
        projector="identity",
        seed=4,
        batch_size=5,
    )
    got = sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=1), n)
    # slow: embeddings one example at a time, unit rows, the same seeded k-means
    emb = slow_embeddings(model, pool)
    x = (emb / emb.norm(dim=1, keepdim=True)).numpy()
    res = kmeans(x, k, round_rng(4, 1))
    members = []
    for c in range(k):
        idx = [i for i in range(12) if res.labels[i] == c]
        members.append(
            sorted(idx, key=lambda i: (round(float(((x[i] - res.centroids[c]) ** 2).sum()), 6), i))
        )
    reps = [m[:r] for m in members]
    scores, _ = less_round_scores(model, opt, [pool[i] for rs in reps for i in rs], val)
    it = iter(scores.tolist())
    cluster_score = [float(np.mean([next(it) for _ in rs])) for rs in reps]
    order = sorted(range(k), key=lambda c: (-cluster_score[c], c))
    rng = round_rng(4, 1)
    want, want_scores = [], []
    for c in order:
        m = members[c] if pick == "centroid" else [members[c][j] for j in rng.permutation(len(members[c]))]
        take = m[: n - len(want)]
        want += take
        want_scores += [cluster_score[c]] * len(take)
        if len(want) == n:
            break
    assert got.indices == want
    assert got.scores == pytest.approx(want_scores, abs=1e-5)
    assert got.metadata["feature_rows"] == k * r + 3 and got.metadata["less_feature_rows"] == 12 + 3


def test_refresh_schedule_and_resume(warm, ctx_factory):
    model, opt, pool, val = warm

    def ctx(round_):
        return ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=round_)

    spec = {"num_clusters": 3, "representatives": 1, "refresh_every": 2, "projector": "identity"}
    a = build_selector("cluster_less", **spec)
    r1 = a.select(ctx(1), 3)
    saved = a.state_dict()
    r2 = a.select(ctx(2), 3)
    r3 = a.select(ctx(3), 3)
    assert [r1.metadata["refreshed"], r2.metadata["refreshed"], r3.metadata["refreshed"]] == [
        True,
        False,
        True,
    ]
    assert not set(r1.indices) & set(r2.indices)
    b = build_selector("cluster_less", **spec)
    b.load_state_dict(json.loads(json.dumps(saved)))  # checkpoints store it as JSON
    assert b.select(ctx(2), 3).indices == r2.indices
    assert b.state_dict()["clusters"] == saved["clusters"]  # round 2 reused round 1's clusters


def test_bad_inputs_fail_before_work(warm, ctx_factory):
    model, opt, pool, val = warm
    sel = build_selector("cluster_less", num_clusters=20)
    with pytest.raises(ConfigError, match="num_clusters is 20 but the pool has 12"):
        sel.check_budget(12, 4)
    with pytest.raises(ConfigError, match="eval_dataset"):
        build_selector("cluster_less", num_clusters=2).select(
            ctx_factory(model, pool, None, optimizer=opt), 2
        )
    few = build_selector("cluster_less", num_clusters=8, max_candidates=5)
    with pytest.raises(ConfigError, match="only 5 candidates"):
        few.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=1), 2)
