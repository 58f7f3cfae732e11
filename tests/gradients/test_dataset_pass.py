"""compute_features: batched pass over a dataset, store filling and resume after a crash."""

from __future__ import annotations

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
        model, data, CountingCollator(), batch_size=2, projector=proj, indices=indices, normalize=True
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
