"""The selection state saved in every checkpoint folder, written atomically.

``dataflex_selection.json`` holds everything JSON can (round, chosen indices, scores,
metadata, learning rates since the last round, the selector's state); tensors and
arrays in the selector's state (e.g. LESS's cumulative scores) go to
``dataflex_selection.safetensors`` and are referenced from the JSON. Nothing is ever
unpickled. The safetensors file is written first and the JSON last, each through a
temporary file and ``os.replace``, so a folder holds either a complete state or none.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dataflex.errors import ConfigError

STATE_FILE = "dataflex_selection.json"
TENSORS_FILE = "dataflex_selection.safetensors"
FORMAT_VERSION = 1


def _atomic_write(path: Path, write: Any) -> None:
    """Write via ``write(tmp_path)`` into a temporary file beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic_write(Path(path), write)


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": key}
    if isinstance(obj, Mapping):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise TypeError(f"selection state keys must be strings, got {bad[:3]!r}.")
        return {k: _encode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(
        f"cannot save {type(obj).__name__} in the selection state: use JSON values, tensors or arrays."
    )


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__ndarray__"}:
            return tensors[obj["__ndarray__"]].numpy()
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def save_selection_state(folder: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` into ``folder`` (tensors to safetensors, the rest to JSON); return the JSON path."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    payload = {"format": FORMAT_VERSION, **_encode(dict(state), tensors)}
    if tensors:
        _atomic_write(folder / TENSORS_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write_text(folder / STATE_FILE, json.dumps(payload, indent=1))
    return folder / STATE_FILE


def load_selection_state(folder: str | os.PathLike) -> dict[str, Any]:
    """Read what :func:`save_selection_state` wrote.

    Raises:
        ConfigError: if ``folder`` has no selection state (not a dynamic-selection checkpoint).
    """
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        raise ConfigError(
            f"checkpoint {str(folder)!r} has no {STATE_FILE}: it was not written by a dynamic-selection "
            "run, so its selections cannot be restored. Resume from a checkpoint of this run."
        )
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{path}: unsupported selection-state format {payload.get('format')!r}.")
    tensors = load_file(str(folder / TENSORS_FILE)) if (folder / TENSORS_FILE).is_file() else {}
    payload.pop("format")
    return _decode(payload, tensors)
