"""Where a dynamic-selection run keeps its own files under ``output_dir``."""

from __future__ import annotations

import os
from pathlib import Path


def report_dir(output_dir: str | os.PathLike) -> Path:
    """``output_dir/dataflex``: ``selections.jsonl``, the plots, ``log_history.json``."""
    return Path(output_dir) / "dataflex"


def selection_cache_dir(output_dir: str | os.PathLike) -> Path:
    """``output_dir/dataflex/cache``: the run's ``SelectionContext.cache_dir``."""
    return report_dir(output_dir) / "cache"
