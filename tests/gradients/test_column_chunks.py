"""Large Linear weights made, transformed and projected in column chunks shared by all examples."""

from __future__ import annotations

import weakref

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.gradients import features as features_module
from dataflex.gradients import num_trainable, per_example_features
from dataflex.gradients.capture import GradientCapture
from dataflex.projectors import SJLTProjector, build_projector
from tests.gradients.conftest import random_adam_state
from tests.projectors.conftest import cpu_kernel_available


def _backend(name: str) -> str:
    if name == "cpu" and not cpu_kernel_available():
        pytest.skip("sjlt cpu kernel: no C compiler here")
    return name


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_column_chunks_equal_row_blocks_bit_for_bit_and_the_batch1_reference(
    llama, examples, slow, monkeypatch, kind, backend
):
    model = llama(kind)
    exs = examples(5, min_len=3, max_len=14, seed=9)
    batch = SFTDataCollator(0, "left")(exs)
    state = random_adam_state(model, seed=4)
    proj = SJLTProjector(num_trainable(model), 64, seed=2, backend=_backend(backend))
    monkeypatch.setattr(features_module, "ROW_BLOCK_ELEMENTS", 1)  # every parameter is "large"
    runs = []
    for elements in (1, 700, 1 << 19):  # one row of W per chunk, a few rows, the whole weight
        monkeypatch.setattr(features_module, "COLUMN_CHUNK_ELEMENTS", elements)
        monkeypatch.setattr(features_module, "FUSED_CHUNK_ELEMENTS", elements)  # the cpu kernel's
        runs.append(per_example_features(model, batch, transform="adam", adam_state=state, projector=proj))
    with monkeypatch.context() as m:  # the previous path: one example of the whole weight at a time
        m.setattr(GradientCapture, "column_chunks", lambda self, param: None)
        rows = per_example_features(model, batch, transform="adam", adam_state=state, projector=proj)
    # The scatter adds in the same order whatever the chunking; the bmm of a few rows of W
    # may not (BLAS picks kernels by shape: one row is a matrix-vector product), so equality
    # holds to fp32 rounding, and bit for bit at full FT's shapes here.
    for got in runs:
        torch.testing.assert_close(got, rows, atol=1e-6 * rows.abs().max(), rtol=1e-6)
    if kind == "full":
        assert torch.equal(runs[1], rows) and torch.equal(runs[2], rows)
    moments = {n: (m.exp_avg, m.exp_avg_sq, m.beta1, m.beta2, m.eps) for n, m in state.moments.items()}
    want = slow(model, exs, transform="adam", moments=moments) @ proj.matrix().t()
    scale = want.abs().max()
    assert scale > 1.0
    torch.testing.assert_close(runs[0], want, atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_one_column_chunk_alive_at_a_time_and_no_whole_weight(llama, examples, monkeypatch, backend):
    model = llama("full")
    bsz = 4
    monkeypatch.setattr(features_module, "ROW_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(features_module, "COLUMN_CHUNK_ELEMENTS", 500)
    monkeypatch.setattr(features_module, "FUSED_CHUNK_ELEMENTS", 500)
    alive: list[weakref.ref] = []
    sizes: list[tuple[int, int]] = []  # (elements, B × one row of W)
    whole: list[torch.nn.Parameter] = []
    original_rows, original_whole = GradientCapture.weight_rows_grad, GradientCapture.per_example_grad

    def rows_spy(self, param, batch_size, mask, r0, r1):
        assert all(r() is None for r in alive)  # the previous chunk is gone
        g = original_rows(self, param, batch_size, mask, r0, r1)
        alive.append(weakref.ref(g))
        sizes.append((g.numel(), batch_size * param.shape[1]))
        return g

    def whole_spy(self, param, batch_size, mask, rows=None):
        whole.append(param)
        return original_whole(self, param, batch_size, mask, rows)

    monkeypatch.setattr(GradientCapture, "weight_rows_grad", rows_spy)
    monkeypatch.setattr(GradientCapture, "per_example_grad", whole_spy)
    proj = SJLTProjector(num_trainable(model), 32, backend=_backend(backend))
    per_example_features(
        model,
        SFTDataCollator(0)(examples(bsz)),
        transform="adam",
        adam_state=random_adam_state(model),
        projector=proj,
    )
    linear_weights = [
        m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.requires_grad
    ]
    assert len(sizes) >= 2 * len(linear_weights)  # every Linear weight went in several chunks
    assert all(n <= max(500, row) for n, row in sizes)
    # Of the 2-D parameters, only the embedding went whole (in row blocks, one example each).
    assert {id(p) for p in whole if p.dim() == 2} == {id(model.get_input_embeddings().weight)}


@pytest.mark.parametrize("kind", ["full", "lora"])
@pytest.mark.parametrize("transform", ["adam", "sgd", "sign"])
def test_the_fused_cpu_kernel_gives_the_torch_backends_features_bit_for_bit(llama, examples, transform, kind):
    model = llama(kind)
    batch = SFTDataCollator(0)(examples(6, min_len=3, max_len=14, seed=2))
    state = random_adam_state(model, seed=1)
    dim = num_trainable(model)
    got, want = (
        per_example_features(
            model,
            batch,
            transform=transform,
            adam_state=state,
            projector=SJLTProjector(dim, 64, seed=5, backend=_backend(backend)),
        )
        for backend in ("cpu", "torch")
    )
    assert torch.equal(got, want)


def test_the_auto_projector_streams_large_weights_in_column_chunks(llama, examples, monkeypatch):
    """LESS's default projector (``auto``) takes the column-chunk path of the sjlt it wraps."""
    model = llama("full")
    monkeypatch.setattr(features_module, "ROW_BLOCK_ELEMENTS", 1)
    chunks = []
    original = GradientCapture.weight_rows_grad

    def spy(self, *args):
        chunks.append(args[0])
        return original(self, *args)

    monkeypatch.setattr(GradientCapture, "weight_rows_grad", spy)
    batch = SFTDataCollator(0)(examples(4))
    state = random_adam_state(model)
    auto = build_projector("auto", input_dim=num_trainable(model), proj_dim=32, seed=3)
    got = per_example_features(model, batch, transform="adam", adam_state=state, projector=auto)
    assert chunks  # the Linear weights went in column chunks
    direct = SJLTProjector(num_trainable(model), 32, seed=3)
    want = per_example_features(model, batch, transform="adam", adam_state=state, projector=direct)
    assert torch.equal(got, want)
