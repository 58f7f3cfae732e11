"""The selection state saved in every checkpoint folder, written atomically.

``dataflex_selection.json`` holds everything JSON can (round, chosen indices, scores,
metadata, learning rates since the last round, the selector's state); tensors and
arrays in the selector's state (e.g. LESS's cumulative scores) go to
``dataflex_selection.safetensors`` and are referenced from the JSON. Nothing is ever
unpickled. Both files go through :func:`dataflex.io.write_verified` (atomic write, then a
SHA-256 sidecar), the safetensors file first and the JSON last, so a folder holds either a
complete, verified state or an incomplete one that :func:`load_selection_state` names as
such; a truncated or edited file is refused, never half-read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from dataflex import stop_points
from dataflex.errors import ConfigError
from dataflex.io import IntegrityError, read_verified, remove_verified, write_verified

if TYPE_CHECKING:
    from dataflex.io.json_types import JSONValue

STATE_FILE = "dataflex_selection.json"
TENSORS_FILE = "dataflex_selection.safetensors"
FORMAT_VERSION = 1


def _encode(obj: object, tensors: dict[str, torch.Tensor]) -> JSONValue:
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


def _decode(obj: object, tensors: Mapping[str, torch.Tensor]) -> object:
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
    encoded = _encode(dict(state), tensors)
    assert isinstance(encoded, dict)  # a mapping encodes to a dict
    payload = {"format": FORMAT_VERSION, **encoded}
    remove_verified(folder / STATE_FILE)  # until the new JSON is complete, the folder has no state
    if tensors:
        write_verified(folder / TENSORS_FILE, save_bytes(tensors))
    else:
        remove_verified(folder / TENSORS_FILE)
    stop_points.reached("checkpoint-save")
    write_verified(folder / STATE_FILE, json.dumps(payload, indent=1))
    return folder / STATE_FILE


def has_selection_state(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a selection state file (complete or not)."""
    return (Path(folder) / STATE_FILE).is_file()


def load_selection_state(folder: str | os.PathLike) -> dict[str, Any]:
    """Read what :func:`save_selection_state` wrote, verified.

    Raises:
        ConfigError: if ``folder`` has no selection state (not a dynamic-selection
            checkpoint, or one whose writing never finished), or a file fails its
            checksum or cannot be parsed; the message names the file.
    """
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        others = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if others:
            raise ConfigError(
                f"checkpoint {str(folder)!r} has no {STATE_FILE}: either it was not written by a "
                "dynamic-selection run, or it is incomplete (the run stopped or the disk filled while "
                "it was saved), so its selections cannot be restored. Resume from a complete checkpoint "
                "of this run (resume_from_checkpoint: true picks the last complete one)."
            )
        raise ConfigError(
            f"checkpoint {str(folder)!r} has no {STATE_FILE}: it was not written by a dynamic-selection "
            "run, so its selections cannot be restored. Resume from a checkpoint of this run."
        )
    try:
        payload = json.loads(read_verified(path).decode("utf-8"))
        if payload.get("format") != FORMAT_VERSION:
            raise ConfigError(f"{path}: unsupported selection-state format {payload.get('format')!r}.")
        tensors = load_bytes(read_verified(folder / TENSORS_FILE)) if _needs_tensors(payload) else {}
        payload.pop("format")
        return cast("dict[str, Any]", _decode(payload, tensors))  # a JSON object decodes to a dict
    except IntegrityError as exc:
        raise ConfigError(
            f"cannot resume from {str(folder)!r}: {exc} Resume from another checkpoint."
        ) from None
    except (ValueError, UnicodeDecodeError, SafetensorError, KeyError, AttributeError) as exc:
        raise ConfigError(
            f"cannot resume from {str(folder)!r}: its selection state is unreadable ({type(exc).__name__}: "
            f"{exc}). Resume from another checkpoint."
        ) from None


def _needs_tensors(obj: object) -> bool:
    if isinstance(obj, dict):
        return bool({"__tensor__", "__ndarray__"} & set(obj)) or any(_needs_tensors(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_needs_tensors(v) for v in obj)
    return False
