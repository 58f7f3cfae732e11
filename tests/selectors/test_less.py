import logging
import time

import numpy as np
import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from tests.selectors.less_reference import less_round_scores


def train_steps(model, opt, examples, steps):
    model.train()
    coll = SFTDataCollator(0)
    for s in range(steps):
        batch = coll(examples[(2 * s) % len(examples) :][:2] or examples[:2])
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()


@pytest.fixture
def warm(tiny_llama, examples):
    """A tiny Llama after two AdamW steps, its optimizer, a pool and a validation set."""
    model = tiny_llama(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95), eps=1e-6)
    pool = examples(10, seed=11)
    val = examples(4, seed=12)
    for i, ex in enumerate(val):
        ex["subtask"] = "a" if i % 2 else "b"
    train_steps(model, opt, pool, 2)
    return model, opt, pool, val


def all_scores(selection):
    return dict(zip(selection.indices, selection.scores))


@pytest.mark.parametrize(
    ("subtask_field", "transform"), [(None, "adam"), ("subtask", "adam"), (None, "sign")]
)
def test_round_scores_equal_independent_computation(warm, ctx_factory, subtask_field, transform):
    model, opt, pool, val = warm
    sel = build_selector(
        "less",
        projector="identity",
        gradient_type=transform,
        subtask_field=subtask_field,
        score_accumulation="current",
        batch_size=4,
    )
    ctx = ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=1)
    got = sel.select(ctx, len(pool))
    subtasks = [ex["subtask"] for ex in val] if subtask_field else None
    ref, per = less_round_scores(model, opt, pool, val, subtasks, transform=transform)
    parts = sel.score_candidates(ctx, np.arange(len(pool)))
    for i in range(len(pool)):
        for s, name in enumerate(parts.subtasks):
            assert parts.per_subtask[i, s].item() == pytest.approx(per[i][name], abs=2e-5)
    got_scores = all_scores(got)
    for i in range(len(pool)):
        assert got_scores[i] == pytest.approx(ref[i].item(), abs=2e-5)
    assert got.indices == torch.argsort(ref, descending=True, stable=True).tolist()
    assert got.metadata["transform"] == transform
    assert got.metadata["subtasks"] == (["b", "a"] if subtask_field else ["all"])


def test_cumulative_over_two_rounds_with_different_lrs(warm, ctx_factory):
    model, opt, pool, val = warm
    sel = build_selector("less", projector="identity", repeat_across_rounds=True, batch_size=5)
    sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=3e-3, round=1, step=2), 3)
    s1, _ = less_round_scores(model, opt, pool, val)
    train_steps(model, opt, pool, 1)
    got = sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=2, step=3), 10)
    s2, _ = less_round_scores(model, opt, pool, val)
    expected = 3e-3 * s1 + 1e-3 * s2
    got_scores = all_scores(got)
    for i in range(len(pool)):
        assert got_scores[i] == pytest.approx(expected[i].item(), abs=1e-7)
    restored = build_selector("less", projector="identity", repeat_across_rounds=True)
    restored.load_state_dict(sel.state_dict())
    assert restored.accumulator.total.tolist() == pytest.approx(expected.tolist(), abs=1e-7)


def test_without_adam_state_falls_back_to_sgd_and_says_so(tiny_llama, examples, ctx_factory, caplog):
    model = tiny_llama()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pool, val = examples(5, seed=1), examples(2, seed=2)
    with caplog.at_level(logging.WARNING, logger="dataflex.selectors.less"):
        got = build_selector("less", projector="identity", score_accumulation="current").select(
            ctx_factory(model, pool, val, optimizer=opt, round=1), 5
        )
    assert "no Adam state yet" in caplog.text
    assert got.metadata["transform"] == "sgd"
    ref, _ = less_round_scores(model, opt, pool, val, transform="sgd")
    assert [all_scores(got)[i] for i in range(5)] == pytest.approx(ref.tolist(), abs=2e-5)


def test_no_replacement_excludes_earlier_picks(warm, ctx_factory):
    model, opt, pool, val = warm
    sel = build_selector("less", projector="identity")
    a = sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=1), 4).indices
    b = sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=2), 6).indices
    assert sorted(a + b) == list(range(10))
    with pytest.raises(ConfigError, match="only 0 of the 10 were not chosen"):
        sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=3), 1)


def test_bad_input_fails_before_work(warm, ctx_factory):
    model, opt, pool, val = warm
    sel = build_selector("less", projector="identity")
    with pytest.raises(ConfigError, match="no eval dataset was given"):
        sel.select(ctx_factory(model, pool, None, optimizer=opt, learning_rate=1e-3), 2)
    with pytest.raises(ConfigError, match="eval example 0 has no 'task' key"):
        build_selector("less", subtask_field="task").select(
            ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3), 2
        )
    with pytest.raises(ConfigError, match="mean learning rate of round 0 is -0.1"):
        sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=-0.1), 2)
    with pytest.raises(ConfigError, match="asked for 11 examples from a pool of 10"):
        sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3), 11)
    with pytest.raises(ConfigError, match="gradient_type: Input should be 'adam', 'sgd' or 'sign'"):
        build_selector("less", gradient_type="adamw")
    with pytest.raises(ConfigError, match="unknown projector 'rademaker'"):
        build_selector("less", projector="rademaker")


def test_scores_cached_and_reused_only_for_the_same_round(warm, ctx_factory, tmp_path):
    model, opt, pool, val = warm
    mk = lambda: build_selector(  # noqa: E731
        "less", projector="identity", cache_dir=str(tmp_path), score_accumulation="current"
    )
    ctx = lambda: ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=1, step=2)  # noqa: E731
    a = mk().select(ctx(), 10)
    b = mk().select(ctx(), 10)
    assert not a.metadata["cache_hit"]
    assert b.metadata["cache_hit"]
    assert a.indices == b.indices
    assert a.scores == b.scores
    assert list((tmp_path / "features").iterdir())
    opt.param_groups[0]["betas"] = (0.5, 0.9)  # same weights and step, different Adam features
    assert not mk().select(ctx(), 10).metadata["cache_hit"]
    opt.param_groups[0]["betas"] = (0.8, 0.95)
    assert mk().select(ctx(), 10).metadata["cache_hit"]
    train_steps(model, opt, pool, 1)
    c = mk().select(ctx(), 10)
    assert not c.metadata["cache_hit"]
    ref, _ = less_round_scores(model, opt, pool, val)
    assert [all_scores(c)[i] for i in range(10)] == pytest.approx(ref.tolist(), abs=2e-5)


def test_metadata_reports_round_composition_and_timings(warm, ctx_factory):
    model, opt, pool, val = warm
    sel = build_selector("less", projector="identity", candidate_fraction=0.5, seed=3)
    t0 = time.perf_counter()
    got = sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=2e-4, round=1, step=2), 3)
    wall = time.perf_counter() - t0
    meta = got.metadata
    assert meta["round"] == 1
    assert meta["step"] == 2
    assert meta["learning_rate"] == 2e-4
    assert meta["candidates"] == 5
    assert sum(meta["composition"].values()) == 3
    # the phases are parts of this select call, not of earlier work or another unit
    assert meta["time_features_s"] > 0
    assert meta["time_features_s"] + meta["time_scoring_s"] <= wall + 2e-4  # rounded to 0.1 ms
    assert meta["time_io_s"] <= wall + 1e-4
    assert meta["feature_phases"]["forward"] > 0 and meta["feature_phases"]["backward"] > 0
    # the feature pass's disjoint phases are parts of the features' time
    assert sum(meta["feature_phases"].values()) <= meta["time_features_s"] + 1e-3
    assert set(meta["feature_phases"]) >= {"per_example", "projection", "io"}
    assert set(meta["candidate_scores"]) == {"min", "mean", "max", "std"}


def test_zero_learning_rate_round_weighs_nothing_but_breaks_ties(warm, ctx_factory, caplog):
    model, opt, pool, val = warm
    sel = build_selector("less", projector="identity", repeat_across_rounds=True)
    with caplog.at_level(logging.WARNING, logger="dataflex.selectors.less"):
        first = sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=0.0, round=1), 10)
    assert "get weight 0 in the cumulative score" in caplog.text
    ref, _ = less_round_scores(model, opt, pool, val)
    assert first.indices == torch.argsort(ref, descending=True, stable=True).tolist()
    assert first.scores == [0.0] * 10
    second = sel.select(ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=2), 10)
    assert [all_scores(second)[i] for i in range(10)] == pytest.approx((1e-3 * ref).tolist(), abs=1e-7)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_lora_scores_equal_independent_computation(tiny_llama, examples, ctx_factory, padding_side):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_llama(seed=4), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    pool, val = examples(8, seed=31), examples(3, seed=32)
    train_steps(model, opt, pool, 2)
    sel = build_selector("less", projector="identity", score_accumulation="current", batch_size=3)
    ctx = ctx_factory(
        model,
        pool,
        val,
        optimizer=opt,
        learning_rate=1e-2,
        round=1,
        collator=SFTDataCollator(0, padding_side=padding_side),
    )
    got = all_scores(sel.select(ctx, 8))
    ref, _ = less_round_scores(model, opt, pool, val)
    assert [got[i] for i in range(8)] == pytest.approx(ref.tolist(), abs=2e-5)
