"""``delta_loss`` against a slow computation: single-example losses, the window by hand."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from dataflex.selectors.delta_loss import window_bounds, window_draw
from dataflex.selectors.random_selector import round_rng


def slow_losses(model, pool) -> list[float]:
    """Each example's loss alone, through the HF model's own loss."""
    model.eval()
    with torch.no_grad():
        return [float(model(**SFTDataCollator(0)([ex])).loss) for ex in pool]


def nudge(model, pool, steps=3, lr=3e-2):
    """A few SGD steps on part of the pool, so some losses drop and others rise."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for s in range(steps):
        opt.zero_grad()
        model(**SFTDataCollator(0)(pool[s % 3 :: 4])).loss.backward()
        opt.step()
    opt.zero_grad()


def slow_window(before, after, progress, size, k, clip):
    """The original's rule written out: sort by drop, sigmoid offset, cut at the first rise."""
    drops = [b - a for b, a in zip(before, after)]
    order = sorted(range(len(drops)), key=lambda i: (-drops[i], i))
    count = len(drops)
    offset = (1 / (1 + math.exp(-k * (progress - 0.5)))) * (count - size * count)
    start, end = int(offset), int(offset + size * count)
    if clip:
        rises = [p for p, i in enumerate(order) if drops[i] < 0]
        if rises:
            end = min(end, rises[0])
    return order[start:end]


def test_window_bounds_are_the_original_formula():
    assert window_bounds(0.0, 100, 0.2, 10.0) == (0, 20)  # σ(−5)·80 = 0.54
    assert window_bounds(0.5, 100, 0.2, 10.0) == (40, 60)
    assert window_bounds(1.0, 100, 0.2, 10.0) == (79, 99)  # σ(5)·80 = 79.46
    assert window_bounds(0.25, 10, 0.5, 0.0) == (2, 7)  # k = 0: the window stays centred


def test_draw_probabilities_are_proportional_to_weights():
    weights = np.array([1.0, 1.0, 0.5, 0.025, 0.025])
    rng = np.random.default_rng(0)
    counts = np.zeros(len(weights))
    for _ in range(20000):
        counts[int(window_draw(weights, 1, rng)[0])] += 1
    assert counts / counts.sum() == pytest.approx(weights / weights.sum(), abs=0.01)
    picks = window_draw(weights, 5, rng).tolist()
    assert sorted(picks) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("reference", ["previous", "initial"])
def test_rounds_equal_slow_computation(tiny_llama, examples, ctx_factory, caplog, reference):
    model = tiny_llama(seed=4)
    pool = examples(12, seed=31)
    sel = build_selector(
        "delta_loss",
        window_size=0.25,
        outside_weight=1e-12,  # inside the window only, to compare sets exactly
        clip_negative=False,
        reference=reference,
        repeat_across_rounds=True,
        batch_size=5,
        seed=3,
    )
    with caplog.at_level(logging.WARNING, logger="dataflex"):
        first = sel.select(ctx_factory(model, pool, round=1, total_rounds=3), 3)
    assert "no earlier losses to compare with" in caplog.text
    assert first.indices == round_rng(3, 1).choice(12, size=3, replace=False).tolist()
    assert first.metadata["delta"] is False and first.scores is None
    losses = [slow_losses(model, pool)]
    assert sel.reference_losses.tolist() == pytest.approx(losses[0], rel=1e-5)

    for round_, progress in ((2, 0.5), (3, 1.0)):
        nudge(model, pool)
        losses.append(slow_losses(model, pool))
        got = sel.select(ctx_factory(model, pool, round=round_, total_rounds=3), 3)
        before = losses[-2] if reference == "previous" else losses[0]
        window = slow_window(before, losses[-1], progress, 0.25, 10.0, clip=False)
        assert len(window) == 3
        assert sorted(got.indices) == sorted(window)
        drops = {i: b - a for i, (b, a) in enumerate(zip(before, losses[-1]))}
        assert got.scores == pytest.approx([drops[i] for i in got.indices], abs=1e-5)
        assert got.metadata["progress"] == progress and got.metadata["in_window"] == 3


def test_clip_negative_ends_window_at_first_rise(tiny_llama, examples, ctx_factory):
    model = tiny_llama(seed=4)
    pool = examples(12, seed=31)
    sel = build_selector("delta_loss", window_size=0.5, outside_weight=1e-12, repeat_across_rounds=True)
    sel.select(ctx_factory(model, pool, round=1, total_rounds=2), 2)
    before = slow_losses(model, pool)
    nudge(model, pool, steps=4, lr=0.1)
    after = slow_losses(model, pool)
    got = sel.select(ctx_factory(model, pool, round=2, total_rounds=2), 2)  # progress 1: the tail
    window = slow_window(before, after, 1.0, 0.5, 10.0, clip=True)
    start, end = got.metadata["window"]
    assert end - start == len(window)
    assert any(b - a < 0 for b, a in zip(before, after)), "the test needs some losses to rise"
    if window:
        assert set(got.indices) <= set(window)


def test_resume_from_state_dict_gives_the_same_round(tiny_llama, examples, ctx_factory):
    model = tiny_llama(seed=4)
    pool = examples(12, seed=31)
    kw = {"repeat_across_rounds": False, "batch_size": 4}
    a = build_selector("delta_loss", **kw)
    a.select(ctx_factory(model, pool, round=1, total_rounds=3, seed=9), 3)
    saved = json.loads(json.dumps(a.state_dict()))
    nudge(model, pool)
    b = build_selector("delta_loss", **kw)
    b.load_state_dict(saved)
    ctx = ctx_factory(model, pool, round=2, total_rounds=3, seed=9)
    expected = a.select(ctx, 4)
    resumed = b.select(ctx, 4)
    assert resumed.indices == expected.indices and resumed.metadata["delta"] is True
    assert b.state_dict() == a.state_dict()
    fresh = build_selector("delta_loss", **kw).select(ctx, 4)
    assert fresh.metadata["delta"] is False  # without the state there is nothing to compare


def test_bad_input_fails_before_any_model_work(examples, ctx_factory):
    not_a_model = torch.nn.Linear(1, 1)  # any forward would fail
    with pytest.raises(ConfigError, match="R is unknown: set total_rounds"):
        build_selector("delta_loss").select(ctx_factory(not_a_model, examples(5), round=2), 2)
    with pytest.raises(ConfigError, match="round 4 is past total_rounds=3"):
        build_selector("delta_loss", total_rounds=3).select(ctx_factory(not_a_model, examples(5), round=4), 2)
    with pytest.raises(ConfigError, match="window_size"):
        build_selector("delta_loss", window_size=0.0)
    with pytest.raises(ConfigError, match="reference"):
        build_selector("delta_loss", reference="first")


def test_round_one_needs_no_round_count(tiny_llama, examples, ctx_factory):
    """Offline (one round, no schedule): the uniform first round, no error."""
    sel = build_selector("delta_loss", seed=2).select(ctx_factory(tiny_llama(), examples(6), round=1), 2)
    assert sel.indices == round_rng(2, 1).choice(6, size=2, replace=False).tolist()
    assert sel.metadata["total_rounds"] is None
