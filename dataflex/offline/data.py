"""Datasets for offline selection: tokenised examples that remember their source records.

A pool is read from one or more source datasets. Each tokenised example keeps the
position of the raw record it came from, so the selected subset can be written
back in the source's own format with its ``dataset_info.json`` entry.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflex.data.dataset_info import DatasetAttr, load_dataset_info
from dataflex.data.loader import read_attr_rows, resolve_datasets
from dataflex.data.tokenize import tokenize_examples
from dataflex.io import atomic_write_text, path_inside, safe_file_name

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from dataflex.data.templates import ChatTemplate, Template

logger = logging.getLogger(__name__)


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


def _info_entry(attr: DatasetAttr, dataset_dir: Path) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of ``attr`` (rebuilt from ``attr`` for a direct file)."""
    info = load_dataset_info(dataset_dir)
    if attr.name in info:
        return dict(info[attr.name])
    entry: dict[str, Any] = {"file_name": attr.path.name}
    if attr.formatting != "alpaca":
        entry["formatting"] = attr.formatting
    columns = attr.columns.model_dump(exclude_defaults=True)
    if columns:
        entry["columns"] = columns
    return entry


def load_offline_dataset(
    names: str,
    dataset_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase,
    template: Template | ChatTemplate,
    cutoff_len: int,
    max_samples: int | None = None,
    strict: bool = False,
    num_workers: int | None = None,
) -> OfflineDataset:
    """Load comma-separated datasets, tokenised as in training, each example tied to its raw row.

    Rows are read, converted and tokenised by the training pipeline
    (:func:`dataflex.data.loader.read_attr_rows`, :func:`dataflex.data.tokenize_examples`),
    so the column diagnostics, the template-token check, ``strict`` and the skip counts
    are those of ``dataflex-cli train``.

    Raises:
        ConfigError: for a missing dataset or file, wrong columns, a bad row under
            ``strict``, or no usable row.
    """
    out = OfflineDataset([], [])
    for attr in resolve_datasets(names, dataset_dir):
        read = read_attr_rows(attr, max_samples=max_samples, strict=strict)
        examples, stats = tokenize_examples(
            read.examples,
            tokenizer,
            template,
            cutoff_len,
            num_workers=num_workers,
            strict=strict,
            name=f"dataset {attr.name!r}",
        )
        src = len(out.sources)
        out.sources.append(
            SourceDataset(attr.name, read.rows, _info_entry(attr, Path(dataset_dir)), attr.path.suffix)
        )
        out.examples += examples
        out.origin += [(src, read.positions[i]) for i in stats.kept_indices]
    return out


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Write ``rows`` as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def subset_file_name(source: SourceDataset) -> str:
    """The file a source's chosen rows go to (its name made safe; see :func:`dataflex.io.safe_file_name`).

    Raises:
        ConfigError: for a dataset name that would leave the output folder.
    """
    return safe_file_name(f"{source.name}_selected", f"dataset {source.name!r}") + source.suffix


def write_subset(data: OfflineDataset, indices: Sequence[int], output_dir: Path) -> dict[str, Any]:
    """Write the chosen examples' raw records, one file per source, plus ``dataset_info.json``.

    Each file keeps its source's format (records verbatim, same suffix, same
    ``dataset_info.json`` entry with a new ``file_name``), in the order of
    ``indices``. Dataset names become file names only through
    :func:`dataflex.io.safe_file_name`, and every path is checked to stay inside
    ``output_dir``. Returns the ``dataset_info.json`` written.

    Raises:
        ConfigError: for a dataset name that would leave ``output_dir``.
    """
    per_source: dict[int, list[Any]] = {}
    for i in indices:
        src, rec = data.origin[int(i)]
        per_source.setdefault(src, []).append(data.sources[src].records[rec])
    info: dict[str, Any] = {}
    for src, records in per_source.items():
        source = data.sources[src]
        key = f"{source.name}_selected"
        file_name = subset_file_name(source)
        target = path_inside(output_dir, file_name, f"dataset {source.name!r}")
        if source.suffix == ".jsonl":
            write_jsonl(target, records)
        else:
            atomic_write_text(target, json.dumps(records, ensure_ascii=False, indent=2))
        entry = copy.deepcopy(source.info)
        entry["file_name"] = file_name
        info[key] = entry
    atomic_write_text(output_dir / "dataset_info.json", json.dumps(info, indent=2, ensure_ascii=False))
    return info
