"""Nothing stale is reused: caches are keyed by content and verified on every read."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from dataflex.gradients import FeatureStore
from dataflex.io import IntegrityError, read_verified, write_verified
from dataflex.passes.cache import ScoreCache, model_identity
from dataflex.registry import build_selector
from tests.conftest import make_examples
from tests.reliability.conftest import QUICKSTART


def frozen(folder):
    """The model as LESS sees a LoRA base: every weight frozen."""
    return AutoModelForCausalLM.from_pretrained(folder).requires_grad_(False)


def test_a_model_changed_in_place_gets_another_identity(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(QUICKSTART / "model", folder)
    before = model_identity(frozen(folder))
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1.0  # one value: same names, shapes, parameter count and file size
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    after = model_identity(frozen(folder))
    assert before["name_or_path"] == after["name_or_path"]
    assert before["num_parameters"] == after["num_parameters"]
    assert before["trainable_hash"] == after["trainable_hash"]  # nothing trainable: the old key
    assert before["base"] != after["base"]  # the weight files' digest changed
    cache = ScoreCache(tmp_path / "cache", "less-scores")
    assert cache.path({"model": before}) != cache.path({"model": after})


def test_a_bit_flipped_score_cache_is_recomputed_not_used(tmp_path, caplog):
    cache = ScoreCache(tmp_path, "less-scores")
    fingerprint = {"model": "m", "step": 3}
    path = cache.save(fingerprint, {"per_subtask": torch.arange(6.0).reshape(3, 2)})
    assert torch.equal(cache.load(fingerprint)["per_subtask"], torch.arange(6.0).reshape(3, 2))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # a bit flip inside the score values
    path.write_bytes(bytes(data))
    assert cache.load(fingerprint) is None
    assert "checksum mismatch" in caplog.text


def test_a_score_cache_written_for_another_fingerprint_is_not_used(tmp_path, caplog):
    cache = ScoreCache(tmp_path, "less-scores")
    old, new = {"model": "m", "step": 3}, {"model": "m", "step": 4}
    written = cache.save(old, {"per_subtask": torch.ones(2, 1)})
    # a complete, checksummed file under the new key (a copied cache folder, a key collision)
    write_verified(cache.path(new), written.read_bytes())
    assert cache.load(new) is None  # the checksum holds, but the stored fingerprint is the old one
    assert "written for a different fingerprint" in caplog.text
    assert torch.equal(cache.load(old)["per_subtask"], torch.ones(2, 1))


def test_a_score_cache_without_checksum_is_not_used(tmp_path, caplog):
    cache = ScoreCache(tmp_path, "less-scores")
    path = cache.save({"k": 1}, {"per_subtask": torch.ones(2, 1)})
    (tmp_path / (path.name + ".sha256")).unlink()  # the write never finished
    assert cache.load({"k": 1}) is None
    assert "is incomplete" in caplog.text


def test_a_tampered_feature_store_index_is_not_reused(tmp_path, caplog):
    store = FeatureStore.open(tmp_path / "s", {"k": 1}, num_rows=4, dim=3)
    store.write(0, np.ones((4, 3), dtype=np.float32))
    index = tmp_path / "s" / "index.json"
    index.write_text(index.read_text().replace("[[0, 4,", "[[0, 2,"))  # claims other rows
    again = FeatureStore.open(tmp_path / "s", {"k": 1}, num_rows=4, dim=3)
    assert again.done == 0
    assert "cannot be reused" in caplog.text and "checksum mismatch" in caplog.text


def test_verified_files_refuse_changed_bytes(tmp_path):
    path = write_verified(tmp_path / "state.json", '{"round": 1}')
    assert read_verified(path) == b'{"round": 1}'
    path.write_text('{"round": 2}')
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        read_verified(path)


def test_candidate_fraction_below_the_budget_warns_that_the_round_is_random(caplog):
    from dataflex.selectors.base import SelectionContext

    selector = build_selector("loss", candidate_fraction=0.0001)
    ctx = SelectionContext(
        model=None, optimizer=None, train_dataset=make_examples(100), eval_dataset=None, collator=None,
        learning_rate=1.0, step=0, round=1, seed=0,
    )  # fmt: skip
    cands = selector.draw_candidates(ctx, np.arange(100), 10)
    assert len(cands) == 10
    assert "so this round's selection is random" in caplog.text
    assert caplog.records[-1].levelname == "WARNING"
