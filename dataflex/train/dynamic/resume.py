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

import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflex.errors import ConfigError
from dataflex.io import FingerprintError, IntegrityError, canonical_json, check_safetensors
from dataflex.train.dynamic.state import checkpoint_problem

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from dataflex.selectors.base import Selector

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


def _plain(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
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
    selector: Selector,
    train_dataset: Sequence[Mapping[str, Any]],
    eval_dataset: Sequence[Mapping[str, Any]] | None,
    args: TrainingArguments,
) -> dict[str, Any]:
    """What the recorded selections depend on beyond schedule, batch, seed and selector name."""
    params = selector.params.model_dump(mode="json") if hasattr(selector, "params") else {}
    params.pop("cache_dir", None)  # where the cache lives does not change a result
    return {
        "pool_digest": dataset_digest(train_dataset),
        "eval_digest": dataset_digest(eval_dataset),
        "selector_params": params,
        "training": {k: _plain(getattr(args, k, None)) for k in _TRAINING_KEYS},
    }


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


def check_checkpoint_files(folder: str | os.PathLike) -> None:
    """Every safetensors file of a checkpoint is whole (a truncated adapter is named, not a traceback).

    Raises:
        ConfigError: naming the damaged file.
    """
    for f in sorted(Path(folder).glob("*.safetensors")):
        try:
            check_safetensors(f)
        except IntegrityError as exc:
            raise ConfigError(
                f"cannot resume from {str(folder)!r}: {exc} Resume from another checkpoint."
            ) from None


def _step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str:
    """The newest ``checkpoint-N`` of ``output_dir`` whose state and files are complete.

    Newer, incomplete ones (a crash or a full disk while saving) are skipped with a warning.

    Raises:
        ConfigError: when no checkpoint is complete.
    """
    folders = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and _step(p) >= 0), key=_step
    )
    for folder in reversed(folders):
        problem = checkpoint_problem(folder)
        if problem is None:
            try:
                check_checkpoint_files(folder)
            except ConfigError as exc:
                problem = str(exc)
        if problem is None:
            return str(folder)
        logger.warning("dataflex: skipping incomplete checkpoint %s: %s", folder, problem)
    raise ConfigError(
        f"resume_from_checkpoint: true, but no checkpoint in {str(output_dir)!r} is complete "
        f"({len(folders)} checkpoint folder(s), each incomplete or damaged); start a fresh run."
    )
