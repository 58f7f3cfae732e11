"""The shared embeddings: equal to a one-example computation, padding-free, gradient-free, cached."""

from __future__ import annotations

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.embeddings import EmbeddingSpec, embed_examples, embedding_rows
from dataflex.errors import ConfigError
from tests.selectors.embedding_reference import slow_embeddings


@pytest.fixture
def setup(tiny_llama, examples):
    return tiny_llama(seed=4), examples(7, seed=3)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("layer", [-1, 1])
def test_batched_rows_equal_one_example_at_a_time(setup, side, layer):
    model, exs = setup
    got = embed_examples(model, exs, range(7), SFTDataCollator(0, padding_side=side), EmbeddingSpec(layer, 4))
    ref = slow_embeddings(model, exs, layer=layer)
    assert got.shape == (7, model.config.hidden_size)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_named_module_equals_its_hidden_state_index(setup):
    model, exs = setup
    coll = SFTDataCollator(0)
    by_name = embed_examples(model, exs, range(7), coll, EmbeddingSpec("model.layers.0", 3))
    by_index = embed_examples(model, exs, range(7), coll, EmbeddingSpec(1, 3))
    torch.testing.assert_close(by_name, by_index)


def test_no_gradients_and_mode_restored(setup):
    model, exs = setup
    model.train()
    rows = embed_examples(model, exs, [2, 0], SFTDataCollator(0), EmbeddingSpec())
    assert not rows.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_bad_layers_are_config_errors(setup):
    model, exs = setup
    with pytest.raises(ConfigError, match="model.layers.0"):
        embed_examples(model, exs, [0], SFTDataCollator(0), EmbeddingSpec("model.layer.0"))
    with pytest.raises(ConfigError, match="out of range"):
        embed_examples(model, exs, [0], SFTDataCollator(0), EmbeddingSpec(9))


def test_cached_by_model_and_data(setup, tmp_path):
    model, exs = setup
    coll, spec = SFTDataCollator(0), EmbeddingSpec(batch_size=4)
    first = embedding_rows(model, exs, [1, 3, 5], coll, spec, cache_dir=tmp_path)
    again = embedding_rows(model, exs, [1, 3, 5], coll, spec, cache_dir=tmp_path)
    assert not first.cache_hit and again.cache_hit
    torch.testing.assert_close(first.rows, again.rows)
    other_rows = embedding_rows(model, exs, [1, 3, 6], coll, spec, cache_dir=tmp_path)
    assert not other_rows.cache_hit
    with torch.no_grad():
        model.lm_head.weight.add_(0.1)  # trainable weights changed: a new model identity
        model.model.norm.weight.mul_(1.5)
    changed = embedding_rows(model, exs, [1, 3, 5], coll, spec, cache_dir=tmp_path)
    assert not changed.cache_hit
    assert not torch.allclose(changed.rows, first.rows)


def test_left_padding_with_absolute_positions(examples):
    """GPT-2 adds absolute position embeddings: left padding must not shift a row's positions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=16, n_layer=1, n_head=2))
    exs = examples(5, seed=9)
    got = embed_examples(model, exs, range(5), SFTDataCollator(0, padding_side="left"), EmbeddingSpec(-1, 5))
    torch.testing.assert_close(got.double(), slow_embeddings(model, exs), atol=1e-5, rtol=1e-5)
