"""compute_features: batched pass over a dataset, store filling and resume after a crash."""

from __future__ import annotations

import time

import pytest
import torch

from dataflex.data.collator import SFTDataCollator
from dataflex.errors import ConfigError
from dataflex.gradients import FeatureStore, compute_features, num_trainable, per_example_features


class CountingCollator(SFTDataCollator):
    """Counts the examples it collates; raises once it has collated ``crash_after`` batches."""

    def __init__(self, crash_after: int | None = None) -> None:
        super().__init__(pad_token_id=0, padding_side="left")
        self.crash_after = crash_after
        self.batches = 0
        self.examples = 0

    def __call__(self, examples):
        if self.crash_after is not None and self.batches == self.crash_after:
            raise KeyboardInterrupt("simulated crash")
        self.batches += 1
        self.examples += len(examples)
        return super().__call__(examples)


def test_pass_equals_per_batch_features_for_any_batch_size(llama, examples, dense_projector, capsys):
    model = llama("lora")
    data = examples(9, seed=50)
    indices = [8, 0, 3, 5, 1]
    proj = dense_projector(num_trainable(model), 8)
    got = compute_features(
        model,
        data,
        CountingCollator(),
        batch_size=2,
        projector=proj,
        indices=indices,
        normalize=True,
        progress=True,
    )
    want = per_example_features(
        model, SFTDataCollator(0)([data[i] for i in indices]), projector=proj, normalize=True
    )
    assert got.shape == (5, 8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert "per-example gradients" in capsys.readouterr().err  # the progress bar


def test_resume_after_crash_computes_only_missing_rows(llama, examples, dense_projector, tmp_path):
    model = llama("lora")
    data = examples(10, seed=51)
    proj = dense_projector(num_trainable(model), 8)
    fp = {"model": "lora-test", "data": "examples-51", "projector": proj.fingerprint()}

    def store():
        return FeatureStore.open(tmp_path / "store", fp, num_rows=10, dim=8, format="safetensors")

    crashing = CountingCollator(crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        compute_features(model, data, crashing, batch_size=3, projector=proj, store=store(), progress=False)
    assert store().done == 6
    resumed = CountingCollator()
    got = compute_features(model, data, resumed, batch_size=3, projector=proj, store=store(), progress=False)
    assert resumed.examples == 4  # rows 6..9 only
    uninterrupted = compute_features(
        model, data, CountingCollator(), batch_size=4, projector=proj, progress=False
    )
    torch.testing.assert_close(got, uninterrupted, atol=1e-5, rtol=1e-4)
    again = CountingCollator()
    compute_features(model, data, again, batch_size=3, projector=proj, store=store(), progress=False)
    assert again.examples == 0  # complete store: nothing recomputed


def test_bad_arguments(llama, examples, tmp_path):
    model = llama("lora")
    data = examples(4)
    coll = SFTDataCollator(0)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        compute_features(model, data, coll, batch_size=0)
    with pytest.raises(ConfigError, match=r"indices \[7\] are outside the dataset of 4 examples"):
        compute_features(model, data, coll, batch_size=2, indices=[0, 7])
    store = FeatureStore.open(tmp_path / "s", {"x": 1}, num_rows=4, dim=3)
    with pytest.raises(ConfigError, match=r"store has shape \(4, 3\) but this pass makes \(4, \d+\)"):
        compute_features(model, data, coll, batch_size=2, store=store)


class PaddingCollator(CountingCollator):
    """Records the padded width of every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.widths: list[int] = []

    def __call__(self, examples):
        batch = super().__call__(examples)
        self.widths.append(batch["input_ids"].shape[1])
        return batch


def test_length_sorted_batches_pad_less_and_keep_the_order(llama, examples, dense_projector, tmp_path):
    model = llama("lora")
    data = examples(8, min_len=3, max_len=20, seed=52)
    indices = [7, 2, 5, 0, 3, 6, 1, 4]
    lengths = [len(data[i]["input_ids"]) for i in indices]
    proj = dense_projector(num_trainable(model), 8)
    sorted_coll, plain_coll = PaddingCollator(), PaddingCollator()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    got = compute_features(
        model, data, sorted_coll, batch_size=3, projector=proj, indices=indices, timings=timings
    )
    wall = time.perf_counter() - t0
    plain = compute_features(
        model, data, plain_coll, batch_size=3, projector=proj, indices=indices, sort_by_length=False
    )
    want = per_example_features(model, SFTDataCollator(0)([data[i] for i in indices]), projector=proj)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)  # row j is indices[j], as before
    torch.testing.assert_close(plain, want, atol=1e-5, rtol=1e-4)
    by_length = sorted(lengths, reverse=True)
    assert sorted_coll.widths == [max(by_length[a : a + 3]) for a in range(0, 8, 3)]
    assert sum(sorted_coll.widths) < sum(plain_coll.widths)
    assert set(timings) >= {"forward", "backward", "per_example", "projection", "io"}
    # disjoint parts of the pass: together within the wall time measured around it
    assert timings["forward"] > 0 and timings["backward"] > 0
    assert sum(timings.values()) <= wall
    # A store holds the rows in length order and is resumed in it.
    fp = {"model": "lora-test", "data": "examples-52"}
    store = FeatureStore.open(tmp_path / "s", fp, num_rows=8, dim=8, format="safetensors")
    stored = compute_features(
        model, data, CountingCollator(), batch_size=3, projector=proj, indices=indices, store=store
    )
    torch.testing.assert_close(stored, want, atol=1e-5, rtol=1e-4)
    order = sorted(range(8), key=lambda j: -lengths[j])
    torch.testing.assert_close(store.read(), want[order], atol=1e-5, rtol=1e-4)


def test_progress_bar_is_silent_off_a_terminal_by_default(llama, examples, dense_projector, capsys):
    model = llama("lora")
    proj = dense_projector(num_trainable(model), 8)
    compute_features(model, examples(3, seed=53), SFTDataCollator(0), batch_size=2, projector=proj)
    assert "per-example gradients" not in capsys.readouterr().err  # pytest's stderr is no terminal
