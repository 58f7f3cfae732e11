"""The raw rows of a dataset file (``.json`` list or ``.jsonl``), before any column mapping.

Below both :mod:`dataflex.data.dataset_info` (which reads a row to tell Alpaca from
ShareGPT) and :mod:`dataflex.data.readers` (which converts rows), so neither imports
the other's way round.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataflex.errors import ConfigError
from dataflex.io import read_user_text


def read_rows(path: Path, limit: int | None = None) -> list[Any]:
    """The rows of a ``.json`` file (a list of objects) or a ``.jsonl`` file (one object a line).

    Raises:
        ConfigError: the file is not valid JSON / JSONL or is not a list of rows.
    """
    text = read_user_text(path, "dataset file")
    if path.suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: line {lineno} is not valid JSON ({exc.msg}).") from None
            if limit is not None and len(rows) >= limit:
                break
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (one JSON object a line? name the file .jsonl)" if text.lstrip().startswith("{") else ""
        raise ConfigError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}{hint}."
        ) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise ConfigError(f"{path} must hold a JSON list of examples, got a JSON {type(data).__name__}.")
    return data[:limit] if limit is not None else data
