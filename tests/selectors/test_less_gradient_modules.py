"""LESS's ``gradient_modules``: features from the gradients of some parameters only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflex.errors import ConfigError
from dataflex.registry import build_selector
from dataflex.selectors.less_features import only_parameters
from tests.selectors.less_reference import less_round_scores
from tests.selectors.test_less import train_steps


@pytest.fixture
def warm(tiny_llama, examples):
    model = tiny_llama(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95), eps=1e-6)
    pool = examples(8, seed=11)
    val = examples(3, seed=12)
    train_steps(model, opt, pool, 2)
    return model, opt, pool, val


def names_matching(model, fragment: str) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad and fragment in n}


@pytest.mark.parametrize(("patterns", "fragment"), [(["*mlp*"], ".mlp."), (["*layers.1.*"], "layers.1.")])
def test_scores_equal_the_independent_computation_over_those_parameters(
    warm, ctx_factory, patterns, fragment
):
    model, opt, pool, val = warm
    sel = build_selector(
        "less", projector="identity", gradient_modules=patterns, score_accumulation="current", batch_size=4
    )
    ctx = ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=1)
    got = sel.score_candidates(ctx, np.arange(len(pool)))
    names = names_matching(model, fragment)
    assert 0 < len(names) < sum(p.requires_grad for p in model.parameters())
    ref, _ = less_round_scores(model, opt, pool, val, names=names)
    everything, _ = less_round_scores(model, opt, pool, val)
    for i in range(len(pool)):
        assert got.scores[i].item() == pytest.approx(ref[i].item(), abs=2e-5)
    assert not torch.allclose(ref, everything, atol=1e-3)  # the subset is not the whole
    # every parameter is trainable again afterwards
    assert all(p.requires_grad for p in model.parameters())


def test_same_size_subsets_never_share_a_cache_entry(warm, ctx_factory, tmp_path):
    """layers.0 and layers.1 have the same shapes, hence the same projector: only the key tells them apart."""
    model, opt, pool, val = warm
    for layer in (0, 1):
        sel = build_selector(
            "less",
            projector="identity",
            gradient_modules=[f"*layers.{layer}.*"],
            score_accumulation="current",
            cache_dir=str(tmp_path),
        )
        ctx = ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=1)
        got = sel.score_candidates(ctx, np.arange(len(pool)))
        assert got.metadata["cache_hit"] is False
        ref, _ = less_round_scores(model, opt, pool, val, names=names_matching(model, f"layers.{layer}."))
        assert got.scores.tolist() == pytest.approx(ref.tolist(), abs=2e-5)


def test_a_pattern_matching_nothing_is_refused_naming_the_field(warm, ctx_factory):
    model, opt, pool, val = warm
    sel = build_selector("less", projector="identity", gradient_modules=["*lora_B*"])
    ctx = ctx_factory(model, pool, val, optimizer=opt, learning_rate=1e-3, round=1)
    with pytest.raises(ConfigError, match=r"gradient_modules \['\*lora_B\*'\] matches none"):
        sel.select(ctx, 2)
    assert all(p.requires_grad for p in model.parameters())


def test_an_empty_list_is_refused_at_validation():
    with pytest.raises(ValueError, match="gradient_modules"):
        build_selector("less", gradient_modules=[])


def test_only_parameters_restores_the_flags_on_an_error(tiny_llama):
    model = tiny_llama(seed=0)
    model.model.embed_tokens.weight.requires_grad_(False)  # frozen before: stays frozen
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    inside: set[str] = set()

    def fail_inside() -> None:
        with only_parameters(model, ["*mlp*"]):
            inside.update(n for n, p in model.named_parameters() if p.requires_grad)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert inside == names_matching(model, ".mlp.")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    with only_parameters(model, None):
        assert {n: p.requires_grad for n, p in model.named_parameters()} == before
