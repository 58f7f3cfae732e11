"""Where a dynamic-selection run keeps its own files under ``output_dir``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import TrainingArguments


def output_dir(args: TrainingArguments) -> str:
    """``args.output_dir``: typed optional, but ``TrainingArguments`` fills in a default."""
    assert args.output_dir is not None
    return args.output_dir


def report_dir(output_dir: str | os.PathLike) -> Path:
    """``output_dir/dataflex``: ``selections.jsonl``, the plots, ``log_history.json``."""
    return Path(output_dir) / "dataflex"


def selection_cache_dir(output_dir: str | os.PathLike) -> Path:
    """``output_dir/dataflex/cache``: the run's ``SelectionContext.cache_dir``."""
    return report_dir(output_dir) / "cache"
