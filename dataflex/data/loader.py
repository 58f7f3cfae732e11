"""Loading named or local datasets into conversations, with clear errors for bad input."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataflex.configs.yaml_files import split_names
from dataflex.data.dataset_info import DatasetAttr, resolve_dataset
from dataflex.data.files import read_rows
from dataflex.data.readers import RowError, convert_row, required_columns
from dataflex.errors import ConfigError

logger = logging.getLogger(__name__)


def resolve_datasets(names_or_paths: str | list[str], dataset_dir: str | Path = "data") -> list[DatasetAttr]:
    """Resolve every name of a comma-separated list (all checked before any file is read)."""
    names = split_names(names_or_paths or [])
    if not names:
        raise ConfigError("no dataset given: set dataset to a dataset_info.json name or a .json/.jsonl path.")
    return [resolve_dataset(name, dataset_dir) for name in names]


@dataclass
class AttrRows:
    """The rows of one dataset file and the conversations made from them.

    Attributes:
        rows: The raw records, as stored (after ``max_samples``).
        examples: The conversations of the usable rows, in order.
        positions: For each example, the position of its row in ``rows``.
    """

    rows: list[Any]
    examples: list[dict[str, Any]]
    positions: list[int]


def load_attr_examples(
    attr: DatasetAttr,
    max_samples: int | None = None,
    strict: bool = False,
    skipped_out: Counter[str] | None = None,
) -> list[dict[str, Any]]:
    """Read and convert the rows of one resolved dataset (see :func:`read_attr_rows`)."""
    return read_attr_rows(attr, max_samples, strict, skipped_out).examples


def read_attr_rows(
    attr: DatasetAttr,
    max_samples: int | None = None,
    strict: bool = False,
    skipped_out: Counter[str] | None = None,
) -> AttrRows:
    """Read and convert the rows of one resolved dataset, remembering which row made which example.

    Args:
        attr: The resolved dataset.
        max_samples: Keep at most this many rows (the first ones).
        strict: Fail on the first bad row instead of skipping it.
        skipped_out: When given, the skipped rows are counted into it by reason.

    Raises:
        ConfigError: the file is not JSON, has no rows, no row has the needed columns,
            a bad row under ``strict``, or no usable row at all.
    """
    rows = read_rows(attr.path)
    if not rows:
        raise ConfigError(f"dataset {attr.name!r} ({attr.path}) is empty: it holds no examples.")
    if max_samples is not None:
        rows = rows[:max_samples]
    needed = required_columns(attr)
    if not any(isinstance(r, dict) and all(c in r for c in needed) for r in rows):
        found = sorted({k for r in rows[:100] if isinstance(r, dict) for k in r})
        raise ConfigError(
            f"dataset {attr.name!r} ({attr.path}): no row has the columns {needed} that "
            f"{attr.formatting} formatting needs; the rows have {found}. Map them with 'columns' "
            "(and 'formatting') in the dataset's dataset_info.json entry."
        )
    examples: list[dict[str, Any]] = []
    positions: list[int] = []
    skipped: Counter[str] = Counter()
    first_bad: dict[str, int] = {}
    for index, row in enumerate(rows):
        try:
            examples.append(convert_row(row, attr))
            positions.append(index)
        except RowError as exc:
            if strict:
                raise ConfigError(
                    f"dataset {attr.name!r} ({attr.path}): row {index}: {exc}; fix the row, or set "
                    "strict: false to skip bad rows."
                ) from None
            skipped[str(exc)] += 1
            first_bad.setdefault(str(exc), index)
    if skipped_out is not None:
        skipped_out.update(skipped)
    if skipped:
        detail = ", ".join(f"{n} × {r} (first: row {first_bad[r]})" for r, n in skipped.most_common())
        logger.warning(
            "dataset %r: skipped %d of %d rows: %s.", attr.name, sum(skipped.values()), len(rows), detail
        )
    if not examples:
        raise ConfigError(
            f"dataset {attr.name!r} ({attr.path}): all {len(rows)} rows are unusable "
            f"({', '.join(f'{n} × {r}' for r, n in skipped.most_common())})."
        )
    return AttrRows(rows, examples, positions)


def load_dataset_examples(
    names_or_paths: str | list[str],
    dataset_dir: str | Path = "data",
    max_samples: int | None = None,
    *,
    strict: bool = False,
) -> list[dict[str, Any]]:
    """Load datasets as conversations (see :mod:`dataflex.data.readers`).

    Args:
        names_or_paths: ``dataset_info.json`` names and/or ``.json``/``.jsonl`` paths, as a
            list or a comma-separated string.
        dataset_dir: Folder holding ``dataset_info.json`` (and the files it names).
        max_samples: Keep at most this many rows of *each* dataset (its first rows).
        strict: Fail on the first bad row instead of counting and skipping it.

    Returns:
        The examples of every dataset in order, each with its ``dataset`` name (and
        ``subtask`` when the row has one).

    Raises:
        ConfigError: an unknown name (closest names suggested), a missing or non-JSON
            file, wrong columns, an empty dataset, a bad row under ``strict``.
    """
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples must be >= 1, got {max_samples}.")
    attrs = resolve_datasets(names_or_paths, dataset_dir)
    examples: list[dict[str, Any]] = []
    for attr in attrs:
        examples += load_attr_examples(attr, max_samples=max_samples, strict=strict)
    return examples
