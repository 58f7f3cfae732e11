"""``tsds``: the transport plan is the optimum of the paper's objective (checked by an LP), the KDE
is the paper's, and the selector's draw equals one from probabilities computed the slow way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.transport import kernel_density, objective, transport_plan
from tests.selectors.embedding_reference import slow_embeddings


def lp_plan(d: np.ndarray, rho: np.ndarray, alpha: float, c: float) -> tuple[float, np.ndarray]:
    """min alpha/C <gamma, d> + (1-alpha) M t  s.t. rho*gamma <= t, rows of gamma sum to 1/M, gamma >= 0."""
    m, k = d.shape
    n = m * k + 1
    cost = np.r_[alpha / c * d.ravel(), (1 - alpha) * m]
    a_ub = np.zeros((m * k, n))
    a_ub[np.arange(m * k), np.arange(m * k)] = rho.ravel()
    a_ub[:, -1] = -1.0
    a_eq = np.zeros((m, n))
    for j in range(m):
        a_eq[j, j * k : (j + 1) * k] = 1.0
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(m * k), A_eq=a_eq, b_eq=np.full(m, 1 / m), method="highs")
    assert res.status == 0
    return float(res.fun), res.x[:-1].reshape(m, k)


@pytest.mark.parametrize("uniform", [True, False])
def test_plan_is_the_optimum_of_the_objective(uniform):
    rng = np.random.default_rng(7)
    for _ in range(40):
        m, k = int(rng.integers(1, 5)), int(rng.integers(2, 7))
        d = np.sort(rng.random((m, k)) * 2, axis=1)
        rho = np.ones((m, k)) if uniform else 1 + 2 * rng.random((m, k))
        alpha, c = float(rng.random()), float(0.1 + 3 * rng.random())
        gamma = transport_plan(torch.tensor(d), torch.tensor(rho), alpha, c)
        best, _ = lp_plan(d, rho, alpha, c)
        assert gamma.sum(dim=1).numpy() == pytest.approx(np.full(m, 1 / m), abs=1e-12)
        assert (gamma >= 0).all()
        assert objective(gamma, torch.tensor(d), torch.tensor(rho), alpha, c) == pytest.approx(best, abs=1e-9)


def test_alpha_trades_alignment_for_spread():
    d = torch.tensor([[0.1, 0.2, 0.3, 0.9]])
    rho = torch.ones(1, 4)
    assert transport_plan(d, rho, 1.0, 1.0).tolist() == [[1.0, 0.0, 0.0, 0.0]]  # all on the nearest
    assert transport_plan(d, rho, 0.0, 1.0)[0].tolist() == pytest.approx([0.25] * 4)  # spread evenly


def test_kernel_density_is_the_papers():
    rng = np.random.default_rng(3)
    pts = torch.tensor(rng.random((9, 3)))
    for sigma, k in [(0.5, 4), (0.8, 9)]:
        got = kernel_density(pts, sigma, k, block=4)  # three blocks, the last one short
        for i in range(9):
            d2 = sorted(float(((pts[i] - pts[j]) ** 2).sum()) for j in range(9))[:k]
            assert float(got[i]) == pytest.approx(sum(max(0.0, 1 - x / sigma**2) for x in d2))
    assert kernel_density(pts, 0.0, 4).tolist() == [1.0] * 9


def slow_tsds_probs(train_emb, val_emb, alpha, c, sigma, max_k, kde_k):
    """Probabilities by the definitions: exact kNN, KDE by loops, plan by the LP."""
    x = train_emb / train_emb.norm(dim=1, keepdim=True)
    q = val_emb / val_emb.norm(dim=1, keepdim=True)
    n, k = x.shape[0], min(max_k, x.shape[0])
    nbrs, dists = [], []
    for v in q:
        dd = [float((v - x[i]).norm()) for i in range(n)]
        order = sorted(range(n), key=lambda i, dd=dd: (dd[i], i))[:k]
        nbrs.append(order)
        dists.append([dd[i] for i in order])
    union = sorted({i for row in nbrs for i in row})
    rho = {}
    for i in union:
        d2 = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in union)[:kde_k]
        rho[i] = sum(max(0.0, 1 - t / sigma**2) for t in d2)
    _, gamma = lp_plan(np.array(dists), np.array([[rho[i] for i in row] for row in nbrs]), alpha, c)
    probs = np.zeros(n)
    for j, row in enumerate(nbrs):
        for kk, i in enumerate(row):
            probs[i] += gamma[j, kk]
    return probs


@pytest.mark.parametrize("sampling", ["multinomial", "distinct"])
def test_selection_equals_slow_probabilities_and_seeded_draw(tiny_llama, examples, ctx_factory, sampling):
    model, pool, val = tiny_llama(seed=8), examples(14, seed=41), examples(3, seed=42)
    params = {"alpha": 0.3, "cost_scale": 1.0, "sigma": 0.1, "max_k": 8, "kde_k": 5}
    sel = build_selector("tsds", **params, sampling=sampling, seed=9, batch_size=5)
    got = sel.select(ctx_factory(model, pool, val, round=2), 5)
    probs = slow_tsds_probs(slow_embeddings(model, pool), slow_embeddings(model, val), 0.3, 1.0, 0.1, 8, 5)
    rng = round_rng(9, 2)
    if sampling == "multinomial":
        want = rng.choice(14, size=5, replace=True, p=probs / probs.sum()).tolist()
    else:
        with np.errstate(divide="ignore"):
            keys = np.log(probs) + rng.gumbel(size=14)
        want = np.lexsort((np.arange(14), -keys))[:5].tolist()
    assert got.indices == want
    assert got.scores == pytest.approx(probs[want], abs=1e-6)
    assert got.metadata["support"] == int((probs > 1e-12).sum())


def test_resume_and_eval_required(tiny_llama, examples, ctx_factory):
    model, pool, val = tiny_llama(seed=8), examples(10, seed=41), examples(2, seed=42)
    a = build_selector("tsds", sampling="distinct", alpha=0.2, max_k=10, kde_k=4)
    a.select(ctx_factory(model, pool, val, round=1), 3)
    saved = a.state_dict()
    r2 = a.select(ctx_factory(model, pool, val, round=2), 3)
    b = build_selector("tsds", sampling="distinct", alpha=0.2, max_k=10, kde_k=4)
    b.load_state_dict(json.loads(json.dumps(saved)))  # checkpoints store it as JSON
    assert b.select(ctx_factory(model, pool, val, round=2), 3).indices == r2.indices
    assert not set(saved["chosen"]) & set(r2.indices)
    with pytest.raises(ConfigError, match="eval_dataset"):
        b.select(ctx_factory(model, pool, None, round=3), 3)
