"""per_example_features against an independent batch-1 loop, plus its argument checks."""

from __future__ import annotations

import logging

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.gradients import features as features_module
from dataflex.gradients import num_trainable, per_example_features

ATOL = 2e-5


def _close(a, b):
    scale = b.abs().max().clamp_min(1.0)
    torch.testing.assert_close(a, b, atol=ATOL * scale, rtol=1e-4)


@pytest.mark.parametrize("kind", ["full", "lora", "tied"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_exact_against_batch1_loop(llama, examples, slow, kind, side):
    model = llama(kind)
    model.train()  # dropout (lora_dropout=0.3) must be off inside the pass
    exs = examples(5, min_len=3, max_len=14, seed=1)
    batch = SFTDataCollator(0, padding_side=side)(exs)
    got = per_example_features(model, batch)
    want = slow(model, exs)
    assert got.shape == (5, num_trainable(model))
    assert want.abs().max() > 0.01
    _close(got, want)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_projected_stream_equals_projecting_the_whole(llama, examples, slow, dense_projector, kind):
    model = llama(kind)
    exs = examples(4, seed=2)
    proj = dense_projector(num_trainable(model), 16, seed=3)
    got = per_example_features(
        model, SFTDataCollator(0, "left")(exs), projector=proj, transform="sign", normalize=True
    )
    _close(got, slow(model, exs, transform="sign", projector=proj, normalize=True))
    torch.testing.assert_close(got.norm(dim=1), torch.ones(4))
    # Streamed in named_parameters order, covering [0, D) once, in several slices.
    ends = [o + w for o, w in proj.calls]
    assert [o for o, _ in proj.calls] == [0, *ends[:-1]]
    assert ends[-1] == num_trainable(model)


def test_stream_goes_parameter_by_parameter(llama, examples, dense_projector, monkeypatch):
    model = llama("lora")
    monkeypatch.setattr(features_module, "CHUNK_ELEMENTS", 1)  # one project call per parameter
    proj = dense_projector(num_trainable(model), 8)
    batch = SFTDataCollator(0)(examples(3))
    joined = per_example_features(model, batch, projector=dense_projector(num_trainable(model), 8))
    one_by_one = per_example_features(model, batch, projector=proj)
    sizes = [p.numel() for _, p in model.named_parameters() if p.requires_grad]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    assert proj.calls == list(zip(offsets, sizes))
    torch.testing.assert_close(one_by_one, joined, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_gradient_checkpointing(llama, examples, slow, kind, caplog):
    model = llama(kind)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    exs = examples(4, seed=4)
    with caplog.at_level(logging.INFO, logger="dataflex.gradients"):
        got = per_example_features(model, SFTDataCollator(0)(exs))
    assert "Gradient checkpointing is inactive" in caplog.text
    _close(got, slow(model, exs))
    assert model.training


def test_rows_independent_of_batch_mates_and_padding(llama, examples):
    model = llama("lora")
    exs = examples(6, seed=5)
    both = per_example_features(model, SFTDataCollator(0, "left")(exs))
    alone = per_example_features(model, SFTDataCollator(0, "right", pad_to_multiple_of=32)(exs[2:3]))
    _close(both[2:3], alone)


def test_example_without_completion_is_zero_and_logged(llama, examples, caplog):
    model = llama("lora")
    exs = examples(3, seed=6)
    exs[1] = {**exs[1], "labels": [-100] * len(exs[1]["labels"])}
    with caplog.at_level(logging.WARNING):
        got = per_example_features(model, SFTDataCollator(0)(exs))
    assert "Batch rows [1] have no completion tokens" in caplog.text
    assert torch.count_nonzero(got[1]) == 0
    assert torch.count_nonzero(got[0]) > 0


def test_functional_fallback_is_logged(llama, examples, caplog):
    model = llama("full")
    with caplog.at_level(logging.INFO, logger="dataflex.gradients"):
        per_example_features(model, SFTDataCollator(0)(examples(2)))
    assert "torch.func fallback" in caplog.text
    assert "model.norm" in caplog.text


def test_bad_arguments_are_refused_before_work(llama, examples, dense_projector):
    model = llama("lora")
    batch = SFTDataCollator(0)(examples(2))
    with pytest.raises(ConfigError, match=r"transform must be one of .*Did you mean 'adam'"):
        per_example_features(model, batch, transform="adm")
    wrong = dense_projector(num_trainable(model) + 1, 4)
    with pytest.raises(ConfigError, match=r"projector.input_dim is 4097 .*input_dim=num_trainable\(model\)"):
        per_example_features(model, batch, projector=wrong)
    assert wrong.calls == []
    with pytest.raises(ValueError, match=r"batch is missing \['labels'\]"):
        per_example_features(model, {"input_ids": batch["input_ids"]})
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        per_example_features(model, batch)


@pytest.mark.parametrize(("kind", "transform"), [("full", "sgd"), ("tied", "adam")])
def test_one_parameter_block_and_only_pending_layers_alive_at_a_time(
    llama, examples, dense_projector, monkeypatch, kind, transform
):
    """Full FT: no per-example block outlives its projection; a layer's records go when it is done."""
    import weakref

    from dataflex.gradients import AdamMoments, AdamState
    from dataflex.gradients.capture import GradientCapture

    model = llama(kind)
    monkeypatch.setattr(features_module, "CHUNK_ELEMENTS", 1)  # every block is "large"
    alive: list[weakref.ref] = []
    seen: list[tuple[int, list[str]]] = []
    original = GradientCapture.per_example_grad

    def spy(self, param, batch_size, mask, rows=None):
        still = [r for r in alive if r() is not None]
        recorded = [o.name for o in self.owners if o.calls]
        seen.append((len(still), recorded))
        g = original(self, param, batch_size, mask, rows)
        alive.append(weakref.ref(g))
        return g

    monkeypatch.setattr(GradientCapture, "per_example_grad", spy)
    state = None
    if transform == "adam":
        state = AdamState(
            {
                n: AdamMoments(torch.rand_like(p), torch.rand_like(p), 0.9, 0.999, 1e-8)
                for n, p in model.named_parameters()
                if p.requires_grad
            }
        )
    proj = dense_projector(num_trainable(model), 8)
    per_example_features(
        model, SFTDataCollator(0)(examples(3)), projector=proj, transform=transform, adam_state=state
    )
    assert len(seen) == sum(1 for p in model.parameters() if p.requires_grad)
    assert all(n == 0 for n, _ in seen), [n for n, _ in seen]
    # Records shrink as the stream passes layer after layer (all of them at the start).
    counts = [len(r) for _, r in seen]
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]
