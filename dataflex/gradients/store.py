"""``FeatureStore``: an (N, k) feature matrix on disk, keyed, resumable and verified.

A store is one directory::

    meta.json        fingerprint, shape, dtype and format (written last when created)
    index.json       completed row blocks [start, end, sha256], replaced atomically
    features.npy     (format "memmap") the whole matrix as a .npy memmap
    blocks/*.safetensors  (format "safetensors") one shard per completed block

Rows count as done only once listed in ``index.json``, and that file is replaced
(temp file + rename) after the block's bytes are on disk, so a crash loses at most
the block being written. Opening checks the fingerprint, the file sizes and every
block's checksum; a mismatch or damage is reported (logged, or raised with
``on_mismatch="raise"``) and the store starts empty instead of being reused.
meta.json and index.json carry SHA-256 sidecars (:mod:`dataflex.io.integrity`), checked on
opening. Nothing is ever unpickled (``np.load(allow_pickle=False)``, safetensors, JSON).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from dataflex.errors import ConfigError, DataflexError, NonFiniteError
from dataflex.io import (
    FingerprintError,
    IntegrityError,
    atomic_write,
    canonical_json,
    read_verified,
    write_verified,
)

logger = logging.getLogger(__name__)

_DTYPES = {"float16": np.float16, "float32": np.float32}
_FORMATS = ("memmap", "safetensors")
_VERSION = 1


class FeatureStoreError(DataflexError):
    """A store on disk cannot be reused (different fingerprint, damaged or truncated file)."""


def _canonical(fingerprint: dict[str, Any]) -> str:
    try:
        return canonical_json(fingerprint)
    except FingerprintError as exc:
        raise ConfigError(
            f"The feature-store fingerprint must be a JSON-serialisable dict of plain values: {exc}"
        ) from None


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class FeatureStore:
    """An on-disk (N, k) feature matrix filled block by block. Use :meth:`open`."""

    def __init__(
        self, directory: Path, fingerprint: dict[str, Any], num_rows: int, dim: int, dtype: str, fmt: str
    ) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.num_rows = num_rows
        self.dim = dim
        self.dtype = dtype
        self.format = fmt
        self.blocks: list[tuple[int, int, str]] = []
        self._memmap: np.memmap | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        directory: str | Path,
        fingerprint: dict[str, Any],
        *,
        num_rows: int,
        dim: int,
        dtype: Literal["float16", "float32"] = "float32",
        format: Literal["memmap", "safetensors"] = "memmap",
        on_mismatch: Literal["recompute", "raise"] = "recompute",
    ) -> FeatureStore:
        """Open the store in ``directory``, or create it there.

        Args:
            directory: The store's own directory (created if absent).
            fingerprint: JSON-serialisable dict of everything the features depend on
                (model/adapter identity, step, data, transform, projector fingerprint).
            num_rows: N.
            dim: k.
            dtype: ``"float16"`` (half the disk) or ``"float32"``.
            format: ``"memmap"`` (one .npy) or ``"safetensors"`` (one shard per block).
            on_mismatch: ``"recompute"`` logs why an existing store is not reused and
                starts it empty; ``"raise"`` raises :class:`FeatureStoreError` instead.

        Raises:
            ConfigError: on bad arguments.
            FeatureStoreError: with ``on_mismatch="raise"``, when the existing store
                cannot be reused.
        """
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
        if format not in _FORMATS:
            raise ConfigError(f"format must be 'memmap' or 'safetensors', got {format!r}.")
        if on_mismatch not in ("recompute", "raise"):
            raise ConfigError(f"on_mismatch must be 'recompute' or 'raise', got {on_mismatch!r}.")
        for name, value in (("num_rows", num_rows), ("dim", dim)):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(fingerprint, dict):
            raise ConfigError(f"fingerprint must be a dict, got {type(fingerprint).__name__}.")
        fingerprint = json.loads(_canonical(fingerprint))
        store = cls(Path(directory), fingerprint, num_rows, dim, dtype, format)
        store.directory.mkdir(parents=True, exist_ok=True)
        if (store.directory / "meta.json").exists():
            problem = store._check_existing()
            if problem is None:
                logger.info("Feature store %s: %d of %d rows already done.", directory, store.done, num_rows)
                return store
            message = f"Feature store {directory} cannot be reused: {problem}."
            if on_mismatch == "raise":
                raise FeatureStoreError(message)
            logger.warning("%s Discarding it and recomputing.", message)
        store._create()
        return store

    @property
    def _meta(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "fingerprint": self.fingerprint,
            "num_rows": self.num_rows,
            "dim": self.dim,
            "dtype": self.dtype,
            "format": self.format,
        }

    def _check_existing(self) -> str | None:
        """Why the store on disk cannot be reused, or None (and load its index) if it can."""
        try:
            meta = json.loads(read_verified(self.directory / "meta.json"))
            index = json.loads(read_verified(self.directory / "index.json"))
        except (OSError, ValueError, IntegrityError) as exc:
            return f"its meta.json/index.json is unreadable ({exc})"
        if meta.get("fingerprint") != self.fingerprint:
            old = meta.get("fingerprint") if isinstance(meta.get("fingerprint"), dict) else {}
            keys = sorted(
                k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k)
            )
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {self.fingerprint.get(k)!r}" for k in keys[:5])
            return f"it was made for a different fingerprint ({diffs})"
        for key in ("version", "num_rows", "dim", "dtype", "format"):
            if meta.get(key) != self._meta[key]:
                return f"its {key} is {meta.get(key)!r}, not {self._meta[key]!r}"
        try:
            blocks = [(int(s), int(e), str(h)) for s, e, h in index["blocks"]]
        except (KeyError, TypeError, ValueError) as exc:
            return f"its index.json is malformed ({exc})"
        if self.format == "memmap":
            problem = self._open_memmap()
            if problem:
                return problem
        for start, end, digest in blocks:
            if not 0 <= start < end <= self.num_rows:
                return f"index.json lists rows [{start}, {end}) outside [0, {self.num_rows})"
            try:
                values = self._read_block(start, end)
            except (OSError, ValueError, KeyError, SafetensorError) as exc:
                return f"block [{start}, {end}) is unreadable ({exc})"
            if _sha256(values) != digest:
                return f"block [{start}, {end}) is damaged (checksum mismatch)"
        self.blocks = sorted(blocks)
        return None

    def _create(self) -> None:
        self._remove_files()
        if self.format == "memmap":

            def allocate(tmp: str) -> None:
                arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=_DTYPES[self.dtype], shape=self._shape)
                arr.flush()
                del arr

            atomic_write(self._npy, allocate)
            self._open_memmap()
        else:
            (self.directory / "blocks").mkdir(exist_ok=True)
        self.blocks = []
        self._write_index()
        write_verified(self.directory / "meta.json", json.dumps(self._meta, indent=1))

    def _remove_files(self) -> None:
        for name in ("meta.json", "index.json", "features.npy", "meta.json.sha256", "index.json.sha256"):
            (self.directory / name).unlink(missing_ok=True)
        shards = self.directory / "blocks"
        if shards.is_dir():
            for f in shards.glob("*.safetensors"):
                f.unlink()

    @property
    def _shape(self) -> tuple[int, int]:
        return (self.num_rows, self.dim)

    @property
    def _npy(self) -> Path:
        return self.directory / "features.npy"

    def _open_memmap(self) -> str | None:
        # Check the size before mapping: numpy silently zero-extends a short file opened "r+".
        try:
            with open(self._npy, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }.get(version)
                if read_header is None:
                    return f"features.npy has an unsupported .npy version {version}"
                shape, _, dtype = read_header(fh)
                header_bytes = fh.tell()
        except (OSError, ValueError) as exc:
            return f"features.npy is unreadable ({exc})"
        if shape != self._shape or dtype != _DTYPES[self.dtype]:
            return f"features.npy holds {shape} {dtype}, not {self._shape} {self.dtype}"
        expected = header_bytes + self.num_rows * self.dim * np.dtype(dtype).itemsize
        size = self._npy.stat().st_size
        if size != expected:
            return f"features.npy is truncated or damaged ({size} bytes, expected {expected})"
        self._memmap = np.load(self._npy, mmap_mode="r+", allow_pickle=False)
        return None

    def _shard(self, start: int, end: int) -> Path:
        return self.directory / "blocks" / f"{start:010d}-{end:010d}.safetensors"

    def _read_block(self, start: int, end: int) -> np.ndarray:
        if self.format == "memmap":
            assert self._memmap is not None  # opened by __init__ for the memmap format
            return np.asarray(self._memmap[start:end])
        values = load_file(self._shard(start, end))["features"]
        if values.shape != (end - start, self.dim) or values.dtype != _DTYPES[self.dtype]:
            raise ValueError(f"shard holds {values.shape} {values.dtype}")
        return values

    def _write_index(self) -> None:
        body = {"blocks": [list(b) for b in self.blocks]}
        write_verified(self.directory / "index.json", json.dumps(body))

    # ------------------------------------------------------------------ rows
    @property
    def done(self) -> int:
        """Number of completed rows."""
        return sum(e - s for s, e, _ in self.blocks)

    @property
    def complete(self) -> bool:
        """Whether every row has been written."""
        return self.done == self.num_rows

    def missing_ranges(self) -> list[tuple[int, int]]:
        """Maximal ``[start, end)`` row ranges not yet written, in order."""
        out, pos = [], 0
        for s, e, _ in self.blocks:
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
        if pos < self.num_rows:
            out.append((pos, self.num_rows))
        return out

    def write(self, start: int, values: torch.Tensor | np.ndarray) -> None:
        """Write rows ``[start, start + len(values))`` and mark them done (atomically).

        Raises:
            ValueError: on a wrong shape, rows already written, or values that overflow fp16.
        """
        arr = (
            values.detach().cpu().float().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        )
        end = start + arr.shape[0]
        if arr.ndim != 2 or arr.shape[1] != self.dim or not 0 <= start < end <= self.num_rows:
            raise ValueError(
                f"Cannot write {arr.shape} at row {start} of a ({self.num_rows}, {self.dim}) store."
            )
        if any(s < end and start < e for s, e, _ in self.blocks):
            raise ValueError(f"Rows [{start}, {end}) overlap rows already written.")
        arr = arr.astype(_DTYPES[self.dtype])
        if not np.isfinite(arr).all():
            raise NonFiniteError(
                f"Features for rows [{start}, {end}) are not finite in {self.dtype}"
                + (
                    " (fp16 overflows above 65504: normalise or use dtype='float32')."
                    if self.dtype == "float16"
                    else "."
                )
            )
        if self.format == "memmap":
            assert self._memmap is not None  # opened by __init__ for the memmap format
            self._memmap[start:end] = arr
            self._memmap.flush()
        else:
            atomic_write(
                self._shard(start, end), lambda tmp: save_file({"features": np.ascontiguousarray(arr)}, tmp)
            )
        self.blocks = sorted([*self.blocks, (start, end, _sha256(arr))])
        self._write_index()

    def read(self) -> torch.Tensor:
        """The whole ``(N, k)`` matrix as fp32.

        Raises:
            FeatureStoreError: if some rows have not been written yet.
        """
        if not self.complete:
            raise FeatureStoreError(
                f"Feature store {self.directory} has {self.done} of {self.num_rows} rows; "
                "fill it (compute_features) before reading."
            )
        if self.format == "memmap":
            return torch.from_numpy(np.array(self._memmap, dtype=np.float32))
        return torch.from_numpy(
            np.concatenate([self._read_block(s, e) for s, e, _ in self.blocks]).astype(np.float32)
        )
