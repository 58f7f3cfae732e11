"""An adapter or checkpoint folder's files, checked before any model loads.

A truncated ``optimizer.pt`` or ``adapter_model.safetensors``, or an ``adapter_config.json``
whose rank is not that of its weights, would otherwise fail deep inside torch, safetensors
or peft (``PytorchStreamReader failed reading zip archive``, ``invalid header length``,
``Error(s) in loading state_dict``). These checks read only headers and small files, and
name the file.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from dataflex.errors import ConfigError
from dataflex.io import IntegrityError, check_folder_files

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
ADAPTER_FIX = (
    "Re-run the training that wrote it, or point adapter_name_or_path at one of its complete "
    "checkpoint-* folders (an adapter of this base model)."
)


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape, from the header of a safetensors file already checked whole."""
    with open(path, "rb") as fh:
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def check_adapter_rank(folder: str | os.PathLike) -> None:
    """A LoRA adapter's ``adapter_config.json`` gives the rank its weights have.

    ``lora_A`` weights are ``(r, ...)`` and ``lora_B`` weights ``(..., r, ...)``; adapters
    with a ``rank_pattern`` (per-module ranks) or weights in ``.bin`` are not compared.

    Raises:
        IntegrityError: naming the config, the weight and both ranks.
    """
    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise IntegrityError(f"{folder / ADAPTER_CONFIG} is not a JSON object; it is damaged.")
    weights = folder / ADAPTER_WEIGHTS[0]
    rank = config.get("r")
    if config.get("peft_type") != "LORA" or config.get("rank_pattern") or not weights.is_file():
        return
    for name, shape in sorted(_safetensors_shapes(weights).items()):
        found = None
        if ".lora_A." in name and len(shape) >= 2:
            found = shape[0]
        elif ".lora_B." in name and len(shape) >= 2:
            found = shape[1]
        if found is not None and found != rank:
            raise IntegrityError(
                f"{folder / ADAPTER_CONFIG} does not match its weights: it says r={rank!r}, but {name} in "
                f"{weights.name} has rank {found} (the config was edited or belongs to another adapter)."
            )


def check_adapter_folder(folder: str | os.PathLike) -> None:
    """A LoRA adapter folder is usable: its config parses, its weights exist and are whole, the ranks agree.

    Raises:
        IntegrityError: naming the missing, damaged or mismatching file.
    """
    folder = Path(folder)
    check_folder_files(folder)
    if not any((folder / w).is_file() for w in ADAPTER_WEIGHTS):
        raise IntegrityError(f"{folder} has {ADAPTER_CONFIG} but no adapter weights ({ADAPTER_WEIGHTS[0]}).")
    check_adapter_rank(folder)


def check_adapter(folder: str | os.PathLike, key: str = "adapter_name_or_path") -> None:
    """:func:`check_adapter_folder`, reported as a :class:`ConfigError` naming ``key``, the file and the fix.

    Raises:
        ConfigError: the adapter's config is unreadable, its weights missing, damaged or of another rank.
    """
    try:
        check_adapter_folder(folder)
    except IntegrityError as exc:
        raise ConfigError(f"{key}: {str(folder)!r}: {exc} {ADAPTER_FIX}") from None


def check_checkpoint_folder(folder: str | os.PathLike) -> None:
    """A Trainer checkpoint folder is whole: ``trainer_state.json``, readable files, a consistent adapter.

    Raises:
        IntegrityError: naming the missing or damaged file.
    """
    folder = Path(folder)
    if not (folder / "trainer_state.json").is_file():
        raise IntegrityError(
            f"{folder} has no trainer_state.json (the Trainer writes it last, so its saving never finished)."
        )
    if (folder / ADAPTER_CONFIG).is_file():
        check_adapter_folder(folder)
    else:
        check_folder_files(folder)


def _load_error_summary(exc: BaseException) -> str | None:
    """A one-line account of an error torch, safetensors or peft raise for a bad file, else ``None``."""
    if isinstance(exc, SafetensorError):
        return f"a safetensors file is damaged: {exc}"
    if isinstance(exc, (EOFError, pickle.UnpicklingError)):
        return f"a torch file is damaged: {type(exc).__name__}: {exc}"
    if isinstance(exc, RuntimeError):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if lines and lines[0].startswith("Error(s) in loading state_dict"):
            detail = next((line for line in lines[1:] if line.startswith("size mismatch")), lines[-1])
            return f"its weights do not fit the model ({detail})"
        if lines and "PytorchStreamReader" in lines[0]:
            return f"a torch file is damaged: {lines[0]}"
    return None


@contextmanager
def load_errors_named(what: str, fix: str) -> Iterator[None]:
    """Report the errors of loading a damaged or mismatching checkpoint or adapter as a :class:`ConfigError`.

    Wraps dataflex's own calls that load one (``PeftModel.from_pretrained``, a resuming
    ``Trainer.train``); other errors pass through unchanged.

    Args:
        what: The folder and the key that named it, e.g. ``"adapter_name_or_path: 'out'"``.
        fix: What to do, appended to the message.
    """
    try:
        yield
    except (SafetensorError, EOFError, pickle.UnpicklingError, RuntimeError) as exc:
        summary = _load_error_summary(exc)
        if summary is None:
            raise
        raise ConfigError(f"{what}: {summary}. {fix}") from None
