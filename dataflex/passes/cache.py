"""A keyed, atomic cache of per-example score tensors, and the identities that key it.

A cache entry is one safetensors file whose metadata holds the JSON fingerprint
of everything the scores depend on (model and adapter identity, step, data,
transform, projector). The file name is a hash of that fingerprint and the
fingerprint is compared in full on load, so a different model, data set or
projector never reuses an entry. Files are written and read back through
:mod:`dataflex.io` (atomic write, SHA-256 sidecar checked on every load), so a
damaged or half-written entry is recomputed, never used; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from dataflex.engines import full_numel, full_tensors
from dataflex.io import (
    IntegrityError,
    canonical_json,
    fingerprint_key,
    read_verified,
    source_identity,
    write_verified,
)

if TYPE_CHECKING:
    from dataflex.gradients import AdamState

logger = logging.getLogger(__name__)

_FULL_HASH_LIMIT = 64_000_000
"""Above this many trainable values, :func:`model_identity` hashes a strided sample."""
_FROZEN_SAMPLE = 1_000_000
"""Values of the frozen weights :func:`model_identity` hashes (a strided sample)."""


class _Hasher(Protocol):
    """``hashlib``'s hash objects (``sha256``, ``blake2b``, ...): what ``_hash_tensor`` feeds."""

    def update(self, data: bytes, /) -> None: ...


def _hash_tensor(h: _Hasher, t: torch.Tensor, stride: int) -> None:
    # a copy: numpy must never share a parameter's storage (FSDP2 resizes it in place)
    flat = t.detach().reshape(-1)[::stride].to("cpu", torch.float32, copy=True).contiguous()
    h.update(str(tuple(t.shape)).encode())
    h.update(flat.numpy().tobytes())


def model_identity(model: torch.nn.Module) -> dict[str, Any]:
    """What the model's per-example results depend on: class, weights by content.

    The trainable parameters (the LoRA matrices under LoRA) are hashed by value, so
    two rounds of the same run get different identities once training changed them.
    Past 64M trainable values a strided sample of every tensor is hashed (full
    fine-tuning of large models), which still changes with every update. The frozen
    weights are identified by content twice over: a strided sample of their values
    in memory, and the digest of the weight files they were loaded from
    (:func:`dataflex.io.source_identity`; a hub model by its resolved commit), so a
    ``model.safetensors`` changed in place never reuses the old model's cache.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum(full_numel(p) for _, p in named)
    stride = max(1, -(-total // _FULL_HASH_LIMIT))
    h = hashlib.blake2b(digest_size=16)
    for name, p in full_tensors(named):  # the full values also under ZeRO-3 / FSDP (collective)
        h.update(name.encode())
        _hash_tensor(h, p, stride)
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    frozen_total = sum(p.numel() for _, p in frozen)
    frozen_stride = max(1, -(-frozen_total // _FROZEN_SAMPLE))
    f = hashlib.blake2b(digest_size=16)
    for name, p in frozen:  # this rank's values (a DTensor's local shard): no collective for frozen weights
        f.update(name.encode())
        _hash_tensor(f, p.to_local() if hasattr(p, "to_local") else p, frozen_stride)
    config = getattr(model, "config", None)
    name_or_path = str(getattr(config, "_name_or_path", "") or "")
    return {
        "class": type(model).__name__,
        "name_or_path": name_or_path,
        "base": source_identity(name_or_path, getattr(config, "_commit_hash", None)),
        "num_parameters": sum(full_numel(p) for p in model.parameters()),
        "trainable": total,
        "trainable_hash": h.hexdigest(),
        "frozen_sample_hash": f.hexdigest(),
    }


def adam_identity(state: AdamState | None) -> str | None:
    """Hash of an :class:`~dataflex.gradients.AdamState`: every moment and hyper-parameter."""
    if state is None:
        return None
    moments = state.moments
    total = sum(m.exp_avg.numel() for m in moments.values())
    stride = max(1, -(-total // _FULL_HASH_LIMIT))
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(moments):
        m = moments[name]
        h.update(f"{name}:{m.beta1}:{m.beta2}:{m.eps}".encode())
        _hash_tensor(h, m.exp_avg, stride)
        _hash_tensor(h, m.exp_avg_sq, stride)
    return h.hexdigest()


def data_identity(examples: Sequence[Mapping[str, Any]], indices: Sequence[int] | np.ndarray) -> str:
    """Hash of the tokens and labels of ``examples[i]`` for ``i`` in ``indices``, in order."""
    h = hashlib.blake2b(digest_size=16)
    for i in indices:
        ex = examples[int(i)]
        h.update(json.dumps([int(i), list(map(int, ex["input_ids"])), list(map(int, ex["labels"]))]).encode())
    return h.hexdigest()


class ScoreCache:
    """Tensors cached under ``directory``, each keyed by a fingerprint dict.

    Args:
        directory: Cache folder (created on first write); ``None`` disables caching.
        kind: Prefix of the file names, e.g. ``"less-scores"``.
    """

    def __init__(self, directory: str | Path | None, kind: str) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.kind = kind

    def path(self, fingerprint: Mapping[str, Any]) -> Path | None:
        """File that holds (or would hold) the entry for ``fingerprint``."""
        if self.directory is None:
            return None
        return self.directory / f"{self.kind}-{fingerprint_key(dict(fingerprint))}.safetensors"

    def load(self, fingerprint: Mapping[str, Any]) -> dict[str, torch.Tensor] | None:
        """The cached tensors for ``fingerprint``, or ``None`` on a miss.

        A file whose stored fingerprint differs, that fails its checksum or that cannot
        be read is reported in the log and treated as a miss (it will be overwritten).
        """
        path = self.path(fingerprint)
        if path is None or not path.is_file():
            return None
        expected = canonical_json(dict(fingerprint))
        try:
            data = read_verified(path)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            stored = header.get("__metadata__", {}).get("fingerprint")
            if stored != expected:
                logger.warning("Ignoring %s: it was written for a different fingerprint; recomputing.", path)
                return None
            return load_bytes(data)
        except (OSError, ValueError, SafetensorError, IntegrityError) as exc:
            logger.warning("Ignoring unusable cache file %s (%s); recomputing.", path, exc)
            return None

    def save(self, fingerprint: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Path | None:
        """Write ``tensors`` for ``fingerprint`` atomically, with its checksum."""
        path = self.path(fingerprint)
        if path is None:
            return None
        meta = {"fingerprint": canonical_json(dict(fingerprint))}
        data = save_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
        write_verified(path, data)
        return path
