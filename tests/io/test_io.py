"""dataflex.io: the one atomic write, fingerprint and integrity scheme."""

from __future__ import annotations

import os
import stat

import pytest

from dataflex.io import (
    FingerprintError,
    atomic_write,
    canonical_json,
    file_digest,
    fingerprint_key,
    folder_digest,
)
from dataflex.io import digest as digest_module


def test_atomic_write_respects_the_umask_and_leaves_no_temp_file(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "a" / "f.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "f.bin", b"old")

    def fail(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_fingerprints_are_canonical_and_refuse_what_json_cannot_hold():
    assert fingerprint_key({"a": 1, "b": [1, 2]}) == fingerprint_key({"b": [1, 2], "a": 1})
    assert fingerprint_key({"a": 1}) != fingerprint_key({"a": 2})
    assert len(fingerprint_key({"a": 1})) == 24
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    for bad in ({"x": object()}, {"x": float("nan")}, {"x": b"bytes"}):
        with pytest.raises(FingerprintError):
            fingerprint_key(bad)


def test_file_digest_sees_an_edit_in_a_large_file_with_the_same_size(tmp_path, monkeypatch):
    monkeypatch.setattr(digest_module, "_SAMPLE_ABOVE", 1024)  # sample files above 1 KiB
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"h" * 2048 + bytes(10 * 2**20))
    before = file_digest(path)
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(5 * 2**20)  # a sampled block in the middle of the data
        fh.write(b"\x01")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only content differs
    digest_module._FILE_DIGESTS.clear()  # a new process: nothing remembered
    assert file_digest(path) != before
    assert folder_digest(tmp_path) == folder_digest(tmp_path)
