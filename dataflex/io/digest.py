"""One content fingerprint: canonical JSON, SHA-256, and digests of files and folders.

Every cache key and every stored identity in dataflex is made here, so that two parts
never disagree on how a fingerprint is spelled or hashed. Values that JSON cannot
represent are refused, not stringified: a ``str()`` of an object can hide a change.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from dataflex.errors import DataflexError
from dataflex.io.json_types import JSONValue

KEY_LENGTH = 24
"""Hex digits of a :func:`fingerprint_key` (96 bits)."""

_SAMPLE_ABOVE = 256 * 2**20
"""Files larger than this (256 MiB) are digested from a sample, see :func:`file_digest`."""
_SAMPLES = 256
_SAMPLE_BYTES = 64 * 2**10

_FILE_DIGESTS: dict[tuple[str, int, int, int], str] = {}


class FingerprintError(DataflexError, TypeError):
    """A fingerprint holds a value that has no canonical JSON form."""


def canonical_json(obj: object) -> str:
    """The canonical JSON text of ``obj``: sorted keys, no spaces, no NaN.

    ``obj`` is any object, so that a caller may hand over what it cannot vouch for and
    catch the :class:`FingerprintError` (as the pool digest of a resumed run does).

    Raises:
        FingerprintError: for values JSON cannot represent (objects, NaN, bytes).
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise FingerprintError(f"a fingerprint must hold plain JSON values only: {exc}") from None


def sha256_hex(data: bytes | str) -> str:
    """SHA-256 of ``data`` (text encoded as UTF-8), as hex."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def fingerprint_digest(obj: JSONValue) -> str:
    """Full SHA-256 hex digest of :func:`canonical_json` of ``obj``."""
    return sha256_hex(canonical_json(obj))


def fingerprint_key(obj: JSONValue, length: int = KEY_LENGTH) -> str:
    """A short stable name for a fingerprint (e.g. a cache file or folder name)."""
    return fingerprint_digest(obj)[:length]


def _sampled(fh: BinaryIO, size: int) -> Iterable[bytes]:
    """The first and last block and ``_SAMPLES`` blocks spread evenly between them."""
    step = max(1, (size - _SAMPLE_BYTES) // (_SAMPLES - 1))
    for offset in range(0, size, step):
        fh.seek(offset)
        yield fh.read(_SAMPLE_BYTES)
    fh.seek(max(0, size - _SAMPLE_BYTES))
    yield fh.read(_SAMPLE_BYTES)


def file_digest(path: str | os.PathLike) -> str:
    """Content digest of a file, remembered for its (path, size, mtime, inode).

    Files up to 256 MiB are hashed whole. Larger ones (model shards) are hashed from
    their size, their first 1 MiB (a safetensors header lists every tensor's name,
    shape and offsets) and 256 blocks of 64 KiB spread over the file, so an edited or
    replaced weight file changes the digest without reading gigabytes.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    found = _FILE_DIGESTS.get(key)
    if found is not None:
        return found
    h = hashlib.sha256(str(st.st_size).encode())
    with open(path, "rb") as fh:
        if st.st_size <= _SAMPLE_ABOVE:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        else:
            h.update(fh.read(2**20))
            for block in _sampled(fh, st.st_size):
                h.update(block)
    digest = h.hexdigest()
    _FILE_DIGESTS[key] = digest
    return digest


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".jinja", ".model", ".txt")
"""Files of a model/adapter/tokenizer folder whose content a result can depend on."""


def folder_digest(folder: str | os.PathLike, suffixes: tuple[str, ...] = WEIGHT_SUFFIXES) -> str:
    """Digest of the names and contents of ``folder``'s files ending in ``suffixes``.

    Only the folder's own files are read (not sub-folders such as ``checkpoint-*``).
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffixes)):
        h.update(f"{f.name}:{file_digest(f)}\n".encode())
    return h.hexdigest()


def source_identity(name_or_path: str | None, commit: str | None = None) -> dict[str, Any]:
    """Identity of a model/adapter/tokenizer source by content.

    A local folder (or file) is identified by :func:`folder_digest` (:func:`file_digest`),
    so an edited ``model.safetensors`` gives another identity; a hub id by its name and
    the resolved commit (``config._commit_hash``) when known.
    """
    if not name_or_path:
        return {"source": None}
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        return {"source": "local", "digest": folder_digest(path)}
    if path.is_file():
        return {"source": "local", "digest": file_digest(path)}
    return {"source": "hub", "name": str(name_or_path), "commit": commit}
