"""FeatureStore: round trip, resume, fingerprint mismatch, damaged and truncated files."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import torch

from dataflex.errors import ConfigError
from dataflex.gradients import FeatureStore, FeatureStoreError
from dataflex.io import fingerprint_key
from dataflex.io.digest import FingerprintError

FP = {"model": "tiny", "step": 10, "transform": "adam", "projector": {"kind": "test", "seed": 1}}


def _open(path, fp=FP, **kw):
    kw = {"num_rows": 10, "dim": 6, **kw}
    return FeatureStore.open(path, fp, **kw)


@pytest.mark.parametrize("fmt", ["memmap", "safetensors"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_and_reopen(tmp_path, fmt, dtype):
    values = torch.randn(10, 6)
    store = _open(tmp_path / "s", dtype=dtype, format=fmt)
    assert store.missing_ranges() == [(0, 10)]
    store.write(0, values[:4])
    store.write(4, values[4:])
    assert store.complete
    want = values.half().float() if dtype == "float16" else values
    assert torch.equal(store.read(), want)
    again = _open(tmp_path / "s", dtype=dtype, format=fmt)
    assert again.complete
    assert torch.equal(again.read(), want)
    assert not list((tmp_path / "s").rglob("*.pkl"))


@pytest.mark.parametrize("fmt", ["memmap", "safetensors"])
def test_resume_keeps_completed_rows_only(tmp_path, fmt):
    values = torch.randn(10, 6)
    store = _open(tmp_path / "s", format=fmt)
    store.write(0, values[:3])
    store.write(6, values[6:8])
    # Simulated crash mid-write: bytes of rows 3..5 reached disk but the index never listed them.
    if fmt == "memmap":
        mm = np.load(tmp_path / "s" / "features.npy", mmap_mode="r+")
        mm[3:6] = 7.0
        mm.flush()
    reopened = _open(tmp_path / "s", format=fmt)
    assert reopened.done == 5
    assert reopened.missing_ranges() == [(3, 6), (8, 10)]
    with pytest.raises(FeatureStoreError, match="has 5 of 10 rows"):
        reopened.read()
    reopened.write(3, values[3:6])
    reopened.write(8, values[8:])
    assert torch.equal(reopened.read(), values)
    with pytest.raises(ValueError, match="overlap rows already written"):
        reopened.write(2, values[:2])


def test_fingerprint_mismatch_refused_then_recomputed(tmp_path, caplog):
    store = _open(tmp_path / "s")
    store.write(0, torch.randn(10, 6))
    other = {**FP, "step": 20}
    with pytest.raises(FeatureStoreError, match=r"different fingerprint \(step: 10 -> 20\)"):
        _open(tmp_path / "s", fp=other, on_mismatch="raise")
    with caplog.at_level(logging.WARNING):
        fresh = _open(tmp_path / "s", fp=other)
    assert "different fingerprint (step: 10 -> 20)" in caplog.text
    assert "Discarding it and recomputing" in caplog.text
    assert fresh.done == 0
    with pytest.raises(FeatureStoreError, match=r"its dim is 6, not 7"):
        _open(tmp_path / "s", fp=other, dim=7, on_mismatch="raise")


@pytest.mark.parametrize("fmt", ["memmap", "safetensors"])
def test_truncated_file_detected(tmp_path, fmt):
    store = _open(tmp_path / "s", format=fmt)
    store.write(0, torch.randn(5, 6))
    target = (
        tmp_path / "s" / "features.npy" if fmt == "memmap" else next((tmp_path / "s").rglob("*.safetensors"))
    )
    data = target.read_bytes()
    target.write_bytes(data[: len(data) - 16])
    with pytest.raises(FeatureStoreError, match=r"truncated|unreadable"):
        _open(tmp_path / "s", format=fmt, on_mismatch="raise")
    fresh = _open(tmp_path / "s", format=fmt)
    assert fresh.done == 0


@pytest.mark.parametrize("fmt", ["memmap", "safetensors"])
def test_damaged_block_detected(tmp_path, fmt):
    store = _open(tmp_path / "s", format=fmt)
    store.write(0, torch.randn(5, 6))
    target = (
        tmp_path / "s" / "features.npy" if fmt == "memmap" else next((tmp_path / "s").rglob("*.safetensors"))
    )
    data = bytearray(target.read_bytes())
    pos = 128 + 10 if fmt == "memmap" else len(data) - 30  # inside rows 0..4 (a .npy header is 128 bytes)
    data[pos] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(FeatureStoreError, match=r"block \[0, 5\) is damaged \(checksum mismatch\)"):
        _open(tmp_path / "s", format=fmt, on_mismatch="raise")
    (tmp_path / "s" / "index.json").write_text("{not json")
    with pytest.raises(FeatureStoreError, match="unreadable"):
        _open(tmp_path / "s", format=fmt, on_mismatch="raise")


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="dtype must be 'float16' or 'float32'"):
        _open(tmp_path / "s", dtype="bfloat16")
    with pytest.raises(ConfigError, match="format must be 'memmap' or 'safetensors'"):
        _open(tmp_path / "s", format="pickle")
    with pytest.raises(ConfigError, match="fingerprint must be a JSON-serialisable dict"):
        _open(tmp_path / "s", fp={"model": object()})
    with pytest.raises(ConfigError, match="num_rows must be a positive integer"):
        _open(tmp_path / "s", num_rows=0)
    store = _open(tmp_path / "s", dtype="float16")
    with pytest.raises(ValueError, match="fp16 overflows above 65504"):
        store.write(0, torch.full((2, 6), 1e6))
    with pytest.raises(ValueError, match=r"Cannot write \(2, 5\) at row 0"):
        store.write(0, torch.zeros(2, 5))


def test_fingerprint_key_is_stable_and_order_free():
    a = fingerprint_key({"a": 1, "b": [1, 2]})
    assert a == fingerprint_key({"b": [1, 2], "a": 1})
    assert a != fingerprint_key({"a": 2, "b": [1, 2]})
    # the SHA-256 of the canonical JSON text, cut to 24 hex digits: a stable name across versions
    assert a == hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()[:24]
    assert fingerprint_key({"a": 1}) != fingerprint_key({"a": "1"})  # types are part of the key
    assert fingerprint_key({"b": [1, 2]}) != fingerprint_key({"b": [2, 1]})  # lists keep their order
    with pytest.raises(FingerprintError, match="plain JSON values only"):
        fingerprint_key({"model": object()})  # refused, not stringified
