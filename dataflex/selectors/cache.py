"""A keyed, atomic cache of per-example score tensors, and the identities that key it.

A cache entry is one safetensors file whose metadata holds the JSON fingerprint
of everything the scores depend on (model and adapter identity, step, data,
transform, projector). The file name is a hash of that fingerprint and the
fingerprint is compared in full on load, so a different model, data set or
projector never reuses an entry. Writes go to a temporary file renamed into
place; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dataflex.engines import full_numel, full_tensors

logger = logging.getLogger(__name__)

_FULL_HASH_LIMIT = 64_000_000
"""Above this many trainable values, :func:`model_identity` hashes a strided sample."""


def fingerprint_key(fingerprint: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable fingerprint."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _hash_tensor(h: Any, t: torch.Tensor, stride: int) -> None:
    flat = t.detach().reshape(-1)[::stride].to("cpu", torch.float32).contiguous()
    h.update(str(tuple(t.shape)).encode())
    h.update(flat.numpy().tobytes())


def model_identity(model: torch.nn.Module) -> dict[str, Any]:
    """What the model's per-example results depend on: class, source and trainable weights.

    The trainable parameters (the LoRA matrices under LoRA) are hashed by value, so
    two rounds of the same run get different identities once training changed them.
    Frozen weights are identified by the model's ``name_or_path`` and parameter
    count. Past 64M trainable values a strided sample of every tensor is hashed
    (full fine-tuning of large models), which still changes with every update.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum(full_numel(p) for _, p in named)
    stride = max(1, -(-total // _FULL_HASH_LIMIT))
    h = hashlib.blake2b(digest_size=16)
    for name, p in full_tensors(named):  # the full values also under ZeRO-3 / FSDP (collective)
        h.update(name.encode())
        _hash_tensor(h, p, stride)
    config = getattr(model, "config", None)
    return {
        "class": type(model).__name__,
        "name_or_path": str(getattr(config, "_name_or_path", "")),
        "num_parameters": sum(full_numel(p) for p in model.parameters()),
        "trainable": total,
        "trainable_hash": h.hexdigest(),
    }


def adam_identity(state: Any) -> str | None:
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


def data_identity(examples: Sequence[Mapping[str, Any]], indices: Sequence[int]) -> str:
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
        return self.directory / f"{self.kind}-{fingerprint_key(fingerprint)}.safetensors"

    def load(self, fingerprint: Mapping[str, Any]) -> dict[str, torch.Tensor] | None:
        """The cached tensors for ``fingerprint``, or ``None`` on a miss.

        A file whose stored fingerprint differs, or that cannot be read, is
        reported in the log and treated as a miss (it will be overwritten).
        """
        path = self.path(fingerprint)
        if path is None or not path.is_file():
            return None
        expected = json.dumps(fingerprint, sort_keys=True, default=str)
        try:
            with open(path, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(header_len))
            stored = header.get("__metadata__", {}).get("fingerprint")
            if stored != expected:
                logger.warning("Ignoring %s: it was written for a different fingerprint.", path)
                return None
            return load_file(path)
        except (OSError, ValueError, SafetensorError) as exc:
            logger.warning("Ignoring unreadable cache file %s (%s); recomputing.", path, exc)
            return None

    def save(self, fingerprint: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Path | None:
        """Write ``tensors`` for ``fingerprint`` atomically (temp file then rename)."""
        path = self.path(fingerprint)
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"fingerprint": json.dumps(fingerprint, sort_keys=True, default=str)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path
