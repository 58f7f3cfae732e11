"""Datasets for offline selection: tokenised examples that remember their source records.

A pool is read from one or more source datasets. Each tokenised example keeps the
position of the raw record it came from, so the selected subset can be written
back in the source's own format with its ``dataset_info.json`` entry.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataflex.errors import ConfigError


@dataclass
class SourceDataset:
    """One source dataset of a pool: its raw records and how it is described.

    Attributes:
        name: Dataset name (its ``dataset_info.json`` key, or the file stem).
        records: Raw records as stored in the file.
        info: Its ``dataset_info.json`` entry (``file_name``, ``formatting``, ``columns``...).
        suffix: File suffix of the source (``.json`` or ``.jsonl``).
    """

    name: str
    records: list[Any]
    info: dict[str, Any]
    suffix: str


@dataclass
class OfflineDataset:
    """Tokenised examples plus, for each, ``(source position, record position)``."""

    examples: list[dict[str, Any]]
    origin: list[tuple[int, int]]
    sources: list[SourceDataset] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)


def _read_jsonl(path: Path) -> list[Any]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{lineno}: not valid JSON ({exc.msg}).") from None
    return rows


def _resolve(name: str, dataset_dir: Path) -> tuple[str, Path, dict[str, Any]]:
    """``(name, file, dataset_info entry)`` for a dataset name or a file path."""
    as_path = Path(name)
    if as_path.suffix in (".json", ".jsonl") and as_path.is_file():
        return as_path.stem, as_path, {"file_name": as_path.name}
    info_path = dataset_dir / "dataset_info.json"
    if not info_path.is_file():
        raise ConfigError(
            f"dataset {name!r} is not a .json/.jsonl file and {info_path} does not exist; set "
            "dataset_dir to the folder holding dataset_info.json or give a file path."
        )
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if name not in info:
        from dataflex.registry import did_you_mean

        raise ConfigError(f"dataset {name!r} is not in {info_path}." + did_you_mean(name, list(info)))
    entry = dict(info[name])
    file = dataset_dir / entry.get("file_name", "")
    if not file.is_file():
        raise ConfigError(f"dataset {name!r}: file {file} (file_name in {info_path}) does not exist.")
    return name, file, entry


def is_tokenized(record: Any) -> bool:
    """True for a record that already holds ``input_ids`` and ``labels``."""
    return isinstance(record, dict) and "input_ids" in record and "labels" in record


def load_tokenized(names: str, dataset_dir: str | Path, max_samples: int | None = None) -> OfflineDataset:
    """Load comma-separated datasets of tokenised JSONL records (``input_ids``, ``labels``, ...).

    Each example gets a ``dataset`` key (its source name) unless it has one.

    Raises:
        ConfigError: for a missing file or entry, or records that are not tokenised.
    """
    out = OfflineDataset([], [])
    for raw_name in (n.strip() for n in names.split(",") if n.strip()):
        name, file, entry = _resolve(raw_name, Path(dataset_dir))
        records = _read_jsonl(file) if file.suffix == ".jsonl" else json.loads(file.read_text("utf-8"))
        if max_samples is not None:
            records = records[:max_samples]
        if not records:
            raise ConfigError(f"dataset {name!r} ({file}) is empty.")
        bad = next((i for i, r in enumerate(records) if not is_tokenized(r)), None)
        if bad is not None:
            raise ConfigError(
                f"dataset {name!r} ({file}) record {bad} has no input_ids/labels: offline selection "
                "reads tokenised JSONL records here."
            )
        src = len(out.sources)
        out.sources.append(SourceDataset(name, records, entry, file.suffix))
        for i, rec in enumerate(records):
            ex = {k: v for k, v in rec.items()}
            ex.setdefault("dataset", name)
            out.examples.append(ex)
            out.origin.append((src, i))
    if not out.examples:
        raise ConfigError(f"no dataset named in {names!r}.")
    return out


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Write ``rows`` as JSON lines, atomically."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_subset(data: OfflineDataset, indices: Sequence[int], output_dir: Path) -> dict[str, Any]:
    """Write the chosen examples' raw records, one file per source, plus ``dataset_info.json``.

    Each file keeps its source's format (records verbatim, same suffix, same
    ``dataset_info.json`` entry with a new ``file_name``), in the order of
    ``indices``. Returns the ``dataset_info.json`` written.
    """
    per_source: dict[int, list[Any]] = {}
    for i in indices:
        src, rec = data.origin[int(i)]
        per_source.setdefault(src, []).append(data.sources[src].records[rec])
    info: dict[str, Any] = {}
    for src, records in per_source.items():
        source = data.sources[src]
        key = f"{source.name}_selected"
        file_name = f"{key}{source.suffix}"
        if source.suffix == ".jsonl":
            write_jsonl(output_dir / file_name, records)
        else:
            write_text_atomic(output_dir / file_name, json.dumps(records, ensure_ascii=False, indent=2))
        entry = copy.deepcopy(source.info)
        entry["file_name"] = file_name
        info[key] = entry
    write_text_atomic(output_dir / "dataset_info.json", json.dumps(info, indent=2, ensure_ascii=False))
    return info
