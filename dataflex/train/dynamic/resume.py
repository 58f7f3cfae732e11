"""What a resumed dynamic-selection run must share with the run that wrote the checkpoint.

The selection state records the schedule, batch, seed and selector name, and (here) a
fingerprint of everything else the recorded selections depend on: the pool's and the
eval set's content, the selector's params and the optimisation settings. A resume
that differs in any of them is refused naming the key, instead of silently training
other examples than the checkpoint recorded. :func:`last_complete_checkpoint` is what
``resume_from_checkpoint: true`` resumes from: the newest checkpoint whose files are
all complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflex.errors import ConfigError
from dataflex.io import FingerprintError, IntegrityError, canonical_json, read_verified
from dataflex.train.adapter_files import check_checkpoint_folder
from dataflex.train.dynamic.state import load_selection_state

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from dataflex.selectors.base import Selector
    from dataflex.train.dynamic.schedule import SelectionSchedule

logger = logging.getLogger(__name__)

_TRAINING_KEYS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "optim",
)


_SCALAR_TYPES = frozenset({int, float, str, bool, type(None)})


def _plain(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if set(map(type, value)) <= _SCALAR_TYPES:  # token ids: JSON writes them as they are
            return value
        return [_plain(v) for v in value]
    return value


def dataset_digest(dataset: Sequence[Mapping[str, Any]] | None) -> str | None:
    """Digest of every row of ``dataset`` in order (tensors and arrays as lists); ``None`` for none."""
    if dataset is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    for i in range(len(dataset)):
        row = _plain(dataset[i])
        try:
            h.update(canonical_json(row).encode())
        except FingerprintError:
            h.update(repr(row).encode())  # rows with other objects: their repr is what we can compare
    return h.hexdigest()


def run_fingerprint(
    selector: Selector | None,
    train_dataset: Sequence[Mapping[str, Any]],
    eval_dataset: Sequence[Mapping[str, Any]] | None,
    args: TrainingArguments,
) -> dict[str, Any]:
    """What the recorded selections depend on beyond schedule, batch, seed and selector name.

    A static run (``selector=None``) records the same keys, its selector params empty.
    """
    params = selector.params.model_dump(mode="json") if selector is not None else {}
    params.pop("cache_dir", None)  # where the cache lives does not change a result
    return {
        "pool_digest": dataset_digest(train_dataset),
        "eval_digest": dataset_digest(eval_dataset),
        "selector_params": params,
        "training": {k: _plain(getattr(args, k, None)) for k in _TRAINING_KEYS},
    }


def run_settings(
    schedule: SelectionSchedule, examples_per_step: int, pool_size: int, seed: int, selector: Selector
) -> dict[str, Any]:
    """The settings a selection state records as they are, each compared by :func:`check_resumable`."""
    return {
        "schedule": dataclasses.asdict(schedule),
        "examples_per_step": int(examples_per_step),
        "pool_size": int(pool_size),
        "seed": seed,
        "selector": getattr(selector, "registry_name", type(selector).__name__),
    }


def check_resumable(
    state: Mapping[str, Any],
    expected: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    checkpoint: str | os.PathLike,
) -> None:
    """Refuse a selection ``state`` written with another schedule, batch, seed or selector, or fingerprint.

    Args:
        state: What :func:`~dataflex.train.dynamic.state.load_selection_state` read.
        expected: This run's ``schedule``, ``examples_per_step``, ``pool_size``, ``seed`` and
            ``selector`` (all required in the state).
        fingerprint: This run's :func:`run_fingerprint` (see :func:`check_same_run`).
        checkpoint: The folder ``state`` was read from (named in the message).

    Raises:
        ConfigError: naming the first differing key and both values.
    """
    for key, value in expected.items():
        if state.get(key) != value:
            raise ConfigError(
                f"cannot resume from {checkpoint}: it was written with {key}={state.get(key)!r}, "
                f"this run has {key}={value!r}. Resume with the same settings, or start a fresh run."
            )
    check_same_run(state, fingerprint, checkpoint)


def check_same_run(
    state: Mapping[str, Any], expected: Mapping[str, Any], checkpoint: str | os.PathLike
) -> None:
    """Refuse to resume when a recorded key differs from this run's.

    Keys missing from an older checkpoint's state are not compared.

    Raises:
        ConfigError: naming the first differing key and both values.
    """
    for key, value in expected.items():
        if key not in state:
            continue
        old = state[key]
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            for sub in sorted(set(value) | set(old)):
                if old.get(sub) != value.get(sub):
                    raise ConfigError(
                        f"cannot resume from {checkpoint}: it was written with {key}.{sub}="
                        f"{old.get(sub)!r}, this run has {key}.{sub}={value.get(sub)!r}. Resume with the "
                        "same settings, or start a fresh run."
                    )
        elif old != value:
            what = {"pool_digest": "the training pool", "eval_digest": "the eval set"}.get(key)
            detail = f" ({what} changed: other rows, order or tokenisation)" if what else ""
            raise ConfigError(
                f"cannot resume from {checkpoint}: it was written with {key}={old!r}, this run has "
                f"{key}={value!r}{detail}. Resume with the same settings, or start a fresh run."
            )


RUN_RECORD = "dataflex_run.json"
"""A static run's :func:`run_fingerprint` in each of its checkpoints (written verified)."""

DAMAGED_FIX = (
    "Resume from an earlier checkpoint (resume_from_checkpoint: true skips damaged ones), or delete this "
    "checkpoint folder."
)


def check_checkpoint_files(folder: str | os.PathLike) -> None:
    """Every file of a checkpoint is there and whole, so nothing fails half-way through loading it.

    See :func:`~dataflex.train.adapter_files.check_checkpoint_folder`: ``trainer_state.json``
    present, safetensors headers, ``torch.save`` zip directories, JSON files, the adapter's
    rank against its weights.

    Raises:
        ConfigError: naming the missing or damaged file and what to do.
    """
    try:
        check_checkpoint_folder(folder)
    except IntegrityError as exc:
        raise ConfigError(f"cannot resume from {str(folder)!r}: {exc} {DAMAGED_FIX}") from None


def checkpoint_problem(folder: str | os.PathLike, *, selection_state: bool = True) -> str | None:
    """Why ``folder`` cannot be resumed (a missing or damaged file), or ``None`` when it can.

    Args:
        folder: A ``checkpoint-N`` folder.
        selection_state: Whether it must hold a dynamic-selection state.
    """
    try:
        check_checkpoint_files(folder)
        if selection_state:
            load_selection_state(folder)
        elif (Path(folder) / RUN_RECORD).is_file():
            read_verified(Path(folder) / RUN_RECORD)
    except (IntegrityError, ConfigError) as exc:
        return str(exc)
    return None


def _step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def last_complete_checkpoint(output_dir: str | os.PathLike, *, selection_state: bool = True) -> str:
    """The newest ``checkpoint-N`` of ``output_dir`` whose state and files are complete.

    Newer, incomplete ones (a crash or a full disk while saving) are skipped with a warning.
    ``selection_state=False`` for a static run: its checkpoints hold no selection state.

    Raises:
        ConfigError: when no checkpoint is complete.
    """
    folders = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and _step(p) >= 0), key=_step
    )
    for folder in reversed(folders):
        problem = checkpoint_problem(folder, selection_state=selection_state)
        if problem is None:
            return str(folder)
        logger.warning("dataflex: skipping incomplete checkpoint %s: %s", folder, problem)
    raise ConfigError(
        f"resume_from_checkpoint: true, but no checkpoint in {str(output_dir)!r} is complete "
        f"({len(folders)} checkpoint folder(s), each incomplete or damaged); start a fresh run."
    )
