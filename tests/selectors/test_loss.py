import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from dataflex.selectors.example_loss import dataset_losses, per_example_loss


@pytest.mark.parametrize("side", ["right", "left"])
def test_per_example_loss_equals_single_example_hf_loss(tiny_llama, examples, side):
    model = tiny_llama().eval()
    exs = examples(6)
    batch = SFTDataCollator(0, padding_side=side)(exs)
    losses = per_example_loss(model, batch)
    for i, ex in enumerate(exs):
        one = SFTDataCollator(0)([ex])
        with torch.no_grad():
            ref = model(**one).loss
        assert losses[i].item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_per_example_loss_rejects_row_without_completion(tiny_llama):
    batch = SFTDataCollator(0)([{"input_ids": [5, 6, 7], "labels": [-100, -100, -100]}])
    with pytest.raises(ValueError, match="no completion token"):
        per_example_loss(tiny_llama(), batch)


@pytest.fixture
def pool(tiny_llama, examples):
    model = tiny_llama()
    exs = examples(20, seed=3)
    losses = dataset_losses(model, exs, range(20), SFTDataCollator(0), batch_size=5)
    return model, exs, losses


def test_deterministic_bands(pool, ctx_factory):
    model, exs, losses = pool
    order = torch.argsort(losses, descending=True).tolist()
    for focus, expected in [("high", order[:5]), ("low", order[::-1][:5])]:
        sel = build_selector("loss", focus=focus, batch_size=3).select(ctx_factory(model, exs), 5)
        assert sel.indices == expected
        assert sel.scores == pytest.approx(losses[expected].tolist(), rel=1e-5)
    med = losses.median()
    dist = (losses - med).abs()
    sel = build_selector("loss", focus="medium").select(ctx_factory(model, exs), 5)
    assert sorted(sel.indices) == sorted(torch.argsort(dist, stable=True)[:5].tolist())
    assert sel.metadata["composition"]
    assert sum(sel.metadata["composition"].values()) == 5


def test_sampled_bands_are_seeded_and_emphasise_their_band(pool, ctx_factory):
    model, exs, losses = pool
    picks = {}
    for focus in ("high", "low"):
        sel = build_selector("loss", focus=focus, temperature=0.5, seed=7)
        a = sel.select(ctx_factory(model, exs, round=1), 8).indices
        b = (
            build_selector("loss", focus=focus, temperature=0.5, seed=7)
            .select(ctx_factory(model, exs, round=1), 8)
            .indices
        )
        c = (
            build_selector("loss", focus=focus, temperature=0.5, seed=8)
            .select(ctx_factory(model, exs, round=1), 8)
            .indices
        )
        assert a == b
        assert a != c
        assert len(set(a)) == 8
        picks[focus] = losses[a].mean().item()
    assert picks["high"] > losses.mean().item() > picks["low"]


def test_no_replacement_across_rounds_then_clear_error(pool, ctx_factory):
    model, exs, _ = pool
    sel = build_selector("loss")
    first = sel.select(ctx_factory(model, exs, round=1), 12).indices
    second = sel.select(ctx_factory(model, exs, round=2), 8).indices
    assert not set(first) & set(second)
    assert len(set(first) | set(second)) == 20
    with pytest.raises(ConfigError, match="only 0 of the 20 were not chosen"):
        sel.select(ctx_factory(model, exs, round=3), 1)
    again = build_selector("loss", repeat_across_rounds=True)
    again.load_state_dict(sel.state_dict())
    assert again.select(ctx_factory(model, exs, round=3), 12).indices == first


def test_budget_larger_than_pool_fails_before_work(ctx_factory, examples):
    with pytest.raises(ConfigError, match="asked for 21 examples from a pool of 20"):
        build_selector("loss").select(ctx_factory(torch.nn.Linear(1, 1), examples(20)), 21)


def test_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match="focus"):
        build_selector("loss", focus="hgh")
    with pytest.raises(ConfigError, match=r"unknown key 'temprature'\. Did you mean 'temperature'"):
        build_selector("loss", temprature=1.0)


def test_losses_cached_per_model_and_data(pool, ctx_factory, tmp_path, examples):
    model, exs, _ = pool
    sel = build_selector("loss", cache_dir=str(tmp_path), repeat_across_rounds=True)
    a = sel.select(ctx_factory(model, exs, step=3), 4)
    b = sel.select(ctx_factory(model, exs, step=3), 4)
    assert not a.metadata["cache_hit"]
    assert b.metadata["cache_hit"]
    assert a.indices == b.indices
    with torch.no_grad():
        model.lm_head.weight.add_(0.1)
    assert not sel.select(ctx_factory(model, exs, step=3), 4).metadata["cache_hit"]
    other = examples(20, seed=4)
    assert not sel.select(ctx_factory(model, other, step=3), 4).metadata["cache_hit"]
    assert len(list(tmp_path.glob("loss-scores-*.safetensors"))) == 3


def test_candidate_fraction_scores_a_seeded_part(pool, ctx_factory):
    model, exs, _ = pool
    sel = build_selector("loss", candidate_fraction=0.5, seed=1).select(ctx_factory(model, exs, round=2), 3)
    assert sel.metadata["candidates"] == 10
