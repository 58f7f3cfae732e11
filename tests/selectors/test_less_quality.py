"""LESS on a synthetic pool of task families: projection keeps the ranking, the target is recovered."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from dataflex.data.collator import SFTDataCollator
from dataflex.registry import build_selector
from dataflex.selectors.base import SelectionContext
from tests.conftest import make_tiny_llama

FAMILIES = 10


def family_examples(n_per: int, seed: int) -> list[dict]:
    """Family f maps prompt tokens of its own 6-token range to the next token in that range."""
    rng = random.Random(seed)
    out = []
    for f in range(FAMILIES):
        lo = 4 + 6 * f
        for _ in range(n_per):
            prompt = [rng.randrange(lo, lo + 6) for _ in range(rng.randint(3, 6))]
            answer = [lo + (t - lo + 1) % 6 for t in prompt]
            out.append(
                {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer, "dataset": f"fam{f}"}
            )
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def warmed():
    """A tiny Llama after 5 AdamW steps on random batches of a pool where fam0 is 10%."""
    torch.set_num_threads(1)
    pool = family_examples(10, seed=1)
    val = [e for e in family_examples(4, seed=2) if e["dataset"] == "fam0"]
    model = make_tiny_llama(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    coll = SFTDataCollator(0)
    rng = random.Random(0)
    for _ in range(5):
        batch = coll(rng.sample(pool, 8))
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    ctx = SelectionContext(
        model=model,
        optimizer=opt,
        train_dataset=pool,
        eval_dataset=val,
        collator=coll,
        learning_rate=3e-3,
        round=1,
        step=5,
        seed=0,
    )
    return ctx


def scores(ctx, **params) -> torch.Tensor:
    sel = build_selector("less", **params)
    return sel.score_candidates(ctx, np.arange(len(ctx.train_dataset))).scores


def test_rademacher_8192_ranks_like_identity_and_recovers_the_target(warmed, record_property):
    exact = scores(warmed, projector="identity")
    projected = scores(warmed, projector="rademacher", proj_dim=8192, seed=0)
    rho = float(spearmanr(exact.numpy(), projected.numpy()).statistic)
    pearson = float(np.corrcoef(exact.numpy(), projected.numpy())[0, 1])
    err = float((exact - projected).abs().max())
    n = len(warmed.train_dataset) // 10
    top_exact = set(torch.argsort(exact, descending=True)[:n].tolist())
    top_proj = set(torch.argsort(projected, descending=True)[:n].tolist())
    record_property("spearman_rademacher_8192_vs_identity", rho)
    print(
        f"rademacher k=8192 vs identity over {len(exact)} examples: Spearman {rho:.3f}, "
        f"Pearson {pearson:.3f}, max |score error| {err:.4f}, top-10% overlap {len(top_exact & top_proj)}/{n}"
    )
    # A cosine through a k-dim JL projection is off by about sqrt(2/k) = 0.016: the order of
    # the 90 off-target examples, whose scores lie within ~0.01 of each other, is partly
    # noise, so the whole-pool Spearman is moderate while the top of the ranking is exact.
    assert err < 3 * (2 / 8192) ** 0.5
    assert pearson > 0.9
    assert rho > 0.4
    assert len(top_exact & top_proj) >= 0.9 * n

    for s in (exact, projected):
        top = torch.argsort(s, descending=True, stable=True)[:n]
        hits = sum(warmed.train_dataset[i]["dataset"] == "fam0" for i in top.tolist())
        assert hits >= 0.8 * n
    less = build_selector("less", projector="identity").select(warmed, n)
    rand = build_selector("random", seed=0).select(warmed, n)
    less_share = less.metadata["composition"].get("fam0", 0) / n
    rand_share = sum(warmed.train_dataset[i]["dataset"] == "fam0" for i in rand.indices) / n
    print(f"fam0 share of the top 10%: less {less_share:.2f}, random {rand_share:.2f} (pool: 0.10)")
    assert less_share >= 0.8
    assert less_share >= rand_share + 0.5


def test_proj_dim_above_trainable_count_warns(tiny_llama, examples, caplog):
    model = tiny_llama()
    for name, p in model.named_parameters():
        p.requires_grad_(name == "lm_head.weight")
    ctx = SelectionContext(
        model=model,
        optimizer=None,
        train_dataset=examples(4),
        eval_dataset=examples(2, seed=5),
        collator=SFTDataCollator(0),
        learning_rate=1e-3,
        round=1,
    )
    with caplog.at_level(logging.WARNING, logger="dataflex.selectors.less_features"):
        got = build_selector("less", projector="rademacher", proj_dim=4096).select(ctx, 2)
    assert "proj_dim=4096 is larger than the 2048 trainable parameters" in caplog.text
    assert "Use projector: identity for exact scores" in caplog.text
    assert len(got.indices) == 2
