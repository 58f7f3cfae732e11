"""Large parameters streamed a few examples at a time into per-row projectors; in-place transforms."""

from __future__ import annotations

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.gradients import AdamMoments, num_trainable, per_example_features
from dataflex.gradients import features as features_module
from dataflex.gradients.transforms import apply_transform, inplace_transform
from dataflex.projectors import SJLTProjector
from tests.adam_reference import adam_direction
from tests.gradients.conftest import random_adam_state


@pytest.fixture
def row_dense(dense_projector):
    """The dense test projector, declared per-row, recording (offset, rows, width) of each call."""

    class RowDense(dense_projector):
        row_blocks = True

        def _project(self, x, offset):
            self.calls.append((offset, x.shape[0], x.shape[1]))
            return x.float() @ self.matrix[:, offset : offset + x.shape[1]].T

    return RowDense


@pytest.mark.parametrize("kind", ["full", "tied", "lora"])
def test_row_blocks_equal_the_batch1_reference(llama, examples, slow, row_dense, monkeypatch, kind):
    model = llama(kind)
    monkeypatch.setattr(features_module, "ROW_BLOCK_ELEMENTS", 300)
    monkeypatch.setattr(features_module, "COLUMN_CHUNK_ELEMENTS", 300)
    exs = examples(5, min_len=3, max_len=14, seed=7)
    state = random_adam_state(model)
    proj = row_dense(num_trainable(model), 12, seed=1)
    got = per_example_features(
        model, SFTDataCollator(0, "left")(exs), transform="adam", adam_state=state, projector=proj
    )
    moments = {n: (m.exp_avg, m.exp_avg_sq, m.beta1, m.beta2, m.eps) for n, m in state.moments.items()}
    want = slow(model, exs, transform="adam", moments=moments, projector=proj)
    scale = want.abs().max().clamp_min(1.0)
    torch.testing.assert_close(got, want, atol=2e-5 * scale, rtol=1e-4)
    # Every parameter larger than the budget went in pieces covering each of its 5 x numel
    # entries once: Linear weights in column chunks of all 5 rows (whole rows of W, at most
    # 300 elements unless one row of W is more), the rest (embeddings) in row blocks.
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    spans, at = [], 0
    for n, p in params:
        spans.append((n, at, p.numel(), p.shape[-1]))
        at += p.numel()
    cover = torch.zeros(at, dtype=torch.long)
    kinds = set()
    for offset, rows, width in proj.calls:
        cover[offset : offset + width] += rows
        _, start, size, row_len = next(s for s in spans if s[1] <= offset < s[1] + s[2])
        if rows < 5:
            kinds.add("row block")
            assert offset == start and width == size and rows * width <= max(300, width)
        elif width < size:
            kinds.add("column chunk")
            assert offset + width <= start + size
            assert (offset - start) % row_len == 0 and width % row_len == 0
            assert rows * width <= max(300, 5 * row_len)
    assert bool((cover == 5).all())
    assert "column chunk" in kinds
    if kind != "lora":
        assert "row block" in kinds  # the embedding


def test_sjlt_row_blocks_equal_whole_blocks(llama, examples, monkeypatch):
    model = llama("full")
    batch = SFTDataCollator(0)(examples(6, seed=8))
    state = random_adam_state(model, seed=2)
    proj = SJLTProjector(num_trainable(model), 64, seed=3)
    whole = per_example_features(model, batch, transform="adam", adam_state=state, projector=proj)
    monkeypatch.setattr(features_module, "ROW_BLOCK_ELEMENTS", 1)  # one example at a time
    rows = per_example_features(model, batch, transform="adam", adam_state=state, projector=proj)
    monkeypatch.setattr(SJLTProjector, "row_blocks", False)
    monkeypatch.setattr(features_module, "CHUNK_ELEMENTS", 1)  # whole, one parameter per call
    one_by_one = per_example_features(model, batch, transform="adam", adam_state=state, projector=proj)
    scale = whole.abs().max()
    assert scale > 1.0
    torch.testing.assert_close(rows, whole, atol=2e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(one_by_one, whole, atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("transform", ["sgd", "sign", "adam"])
def test_inplace_transform_is_apply_transform(transform):
    gen = torch.Generator().manual_seed(4)
    grads = torch.randn(6, 50, generator=gen) * 0.01
    grads[0, :3] = 0.0
    moments = AdamMoments(
        torch.randn(5, 10, generator=gen) * 0.01, torch.rand(5, 10, generator=gen) * 1e-4, 0.8, 0.95, 1e-6
    )
    m = moments
    gamma = adam_direction(grads, m.exp_avg, m.exp_avg_sq, m.beta1, m.beta2, m.eps)
    want = {"sgd": grads, "sign": torch.sign(grads), "adam": gamma}[transform]
    assert torch.equal(apply_transform(transform, grads.clone(), moments), want)
    f = inplace_transform(transform, moments, "cpu")
    block = grads[2:5].clone()
    out = f(block)
    assert out.data_ptr() == block.data_ptr()  # in place
    assert torch.equal(out, want[2:5])
    assert torch.equal(f(grads.clone()), want)  # the same f serves every row block
