"""Token-budget batches, length-balanced shards and the causal inputs of a right-padded batch."""

from __future__ import annotations

import random

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.gradients import compute_features, num_trainable, per_example_features
from dataflex.gradients.batching import balanced_shards, causal_lm_inputs, right_padded, token_batches


@pytest.mark.parametrize("seed", range(20))
def test_token_batches_are_the_greedy_cover_within_both_caps(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    lengths = [rng.randint(1, 50) for _ in range(n)]
    if seed % 2:
        lengths.sort(reverse=True)  # the order compute_features batches in
    cut = rng.randint(0, n)
    ranges = [(0, cut), (cut, n)] if seed % 3 else [(0, n)]
    batch_size, budget = rng.randint(1, 9), rng.choice([None, 1, 30, 60, 200])
    batches = token_batches(lengths, ranges, batch_size, budget)
    assert [r for b in batches for r in b] == [r for s, e in ranges for r in range(s, e)]
    for b in batches:
        assert b == list(range(b[0], b[-1] + 1)) and len(b) <= batch_size
        assert not any(s < b[0] < e <= b[-1] for s, e in ranges)  # never across two ranges
        assert len(b) == 1 or budget is None or len(b) * max(lengths[r] for r in b) <= budget
        end = next(e for s, e in ranges if s <= b[0] < e)
        nxt = b[-1] + 1
        if nxt < end and len(b) < batch_size:  # greedy: the next row would break the budget
            assert budget is not None and (len(b) + 1) * max(lengths[r] for r in [*b, nxt]) > budget


def test_token_batches_put_short_rows_in_large_batches_and_a_long_row_alone():
    lengths = [50, 20, 20, 10, 10, 10, 10, 5, 5, 5, 5, 5, 5]
    got = token_batches(lengths, [(0, len(lengths))], batch_size=6, max_tokens=40)
    assert [[lengths[r] for r in b] for b in got] == [[50], [20, 20], [10] * 4, [5] * 6]
    assert token_batches(lengths, [(0, 13)], batch_size=6) == [list(range(0, 6)), list(range(6, 12)), [12]]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_balanced_shards_partition_and_even_out_tokens(world):
    rng = random.Random(world)
    lengths = [rng.randint(1, 2000) for _ in range(101)]
    shards = balanced_shards(lengths, world)
    assert len(shards) == world and sorted(j for s in shards for j in s) == list(range(101))
    assert all(s == sorted(s) for s in shards)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    totals = [sum(lengths[j] for j in s) for s in shards]
    assert max(totals) - min(totals) <= max(lengths)  # a contiguous split of random lengths is not bound
    # The i-th longest example of each rank are neighbours in the global length order.
    ranks = [sorted((lengths[j] for j in s), reverse=True) for s in shards]
    glob = sorted(lengths, reverse=True)
    for i in range(min(len(r) for r in ranks)):
        assert {r[i] for r in ranks} <= set(glob[i * world : (i + 1) * world])


def test_right_padded_masks():
    assert right_padded(torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    assert not right_padded(torch.tensor([[1, 1, 1], [0, 1, 1]]))
    assert not right_padded(torch.tensor([[1, 0, 1]]))


def test_a_right_padded_batch_reaches_the_model_without_mask_and_keeps_its_features(llama, examples):
    model = llama("lora")
    data = examples(5, min_len=3, max_len=14, seed=60)
    seen: list[set[str]] = []
    handle = model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append({k for k, v in kwargs.items() if v is not None}),
        with_kwargs=True,
    )
    try:
        right = per_example_features(model, SFTDataCollator(0)(data))
        left = per_example_features(model, SFTDataCollator(0, padding_side="left")(data))
    finally:
        handle.remove()
    assert "attention_mask" not in seen[0] and "position_ids" not in seen[0]  # causal kernel, no mask
    assert {"attention_mask", "position_ids"} <= seen[1]  # left padding needs both
    alone = torch.cat([per_example_features(model, SFTDataCollator(0)([ex])) for ex in data])
    torch.testing.assert_close(right, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(left, alone, atol=1e-6, rtol=1e-5)
    ids, mask = torch.ones(2, 3, dtype=torch.long), torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert causal_lm_inputs(ids, mask)["position_ids"].tolist() == [[0, 0, 1], [0, 1, 2]]


class SizeCollator(SFTDataCollator):
    """Records the (rows, width) of every batch it makes."""

    def __init__(self) -> None:
        super().__init__(pad_token_id=0)
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, examples):
        batch = super().__call__(examples)
        self.shapes.append(tuple(batch["input_ids"].shape))
        return batch


def test_token_budget_pass_equals_fixed_batches_and_keeps_the_order(llama, examples, dense_projector):
    model = llama("lora")
    data = examples(12, min_len=3, max_len=12, seed=61)
    data.append({"input_ids": list(range(3, 43)), "labels": [-100] * 10 + list(range(13, 43))})  # 40 tokens
    indices = [12, 4, 0, 9, 3, 11, 7, 1, 5, 10, 2, 8, 6]
    proj = dense_projector(num_trainable(model), 8)
    budget, fixed = SizeCollator(), SizeCollator()
    got = compute_features(
        model, data, budget, batch_size=6, max_batch_tokens=24, projector=proj, indices=indices
    )
    want = compute_features(model, data, fixed, batch_size=2, projector=proj, indices=indices)
    alone = per_example_features(model, SFTDataCollator(0)([data[indices[0]]]), projector=proj)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[:1], alone, atol=1e-6, rtol=1e-5)  # row j is still indices[j]
    assert budget.shapes[0] == (1, 40)  # longer than the budget: alone
    assert all(rows * width <= 24 and rows <= 6 for rows, width in budget.shapes[1:])
    assert len(budget.shapes) < len(fixed.shapes) and max(r for r, _ in budget.shapes) > 2
    assert sum(r for r, _ in budget.shapes) == len(indices)


def test_bad_max_batch_tokens_is_refused(llama, examples):
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        compute_features(llama("lora"), examples(2), SFTDataCollator(0), batch_size=2, max_batch_tokens=0)
