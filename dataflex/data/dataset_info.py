"""``dataset_info.json``: LLaMA-Factory's registry of named datasets.

A training config names datasets (``dataset: alpaca_en_demo,identity``); each name is
looked up in ``<dataset_dir>/dataset_info.json`` or, when it is a path to a ``.json`` /
``.jsonl`` file, read directly (Alpaca format unless the rows hold ``conversations`` or
``messages``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dataflex.configs.validation import format_validation_error
from dataflex.data.files import read_rows
from dataflex.errors import ConfigError, did_you_mean
from dataflex.io import read_user_text

DATA_SUFFIXES = (".json", ".jsonl")


class Columns(BaseModel):
    """Which row keys hold which field (LLaMA-Factory's ``columns``).

    Alpaca uses ``prompt``/``query``/``response``/``system``/``history``; ShareGPT uses
    ``messages``/``system``/``tools``. ``subtask`` (a dataflex extension) names a column
    kept as the example's ``subtask`` metadata.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str = "instruction"
    query: str = "input"
    response: str = "output"
    history: str | None = None
    messages: str = "conversations"
    system: str | None = None
    tools: str | None = None
    subtask: str = "subtask"
    # LLaMA-Factory columns of data dataflex cannot train on (refused by resolve_dataset)
    images: str | None = None
    videos: str | None = None
    audios: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None

    def unsupported(self) -> list[str]:
        """Set columns of multimodal or preference data, which dataflex does not train on."""
        names = ("images", "videos", "audios", "chosen", "rejected", "kto_tag")
        return [n for n in names if getattr(self, n) is not None]


class Tags(BaseModel):
    """Role names of ShareGPT messages (LLaMA-Factory's ``tags``)."""

    model_config = ConfigDict(extra="forbid")

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"


class DatasetAttr(BaseModel):
    """One resolved dataset: where its file is and how to read its rows."""

    model_config = ConfigDict(extra="ignore")

    name: str
    path: Path
    formatting: Literal["alpaca", "sharegpt"] = "alpaca"
    columns: Columns = Field(default_factory=Columns)
    tags: Tags = Field(default_factory=Tags)


class _InfoEntry(BaseModel):
    """A ``dataset_info.json`` entry; hub/ranking keys are read so they can be refused clearly.

    Unknown keys (``formating``, ``file_nmae``) are refused with the closest known key:
    ignoring them would train on the default formatting or report a missing file.
    """

    model_config = ConfigDict(extra="forbid")

    file_name: str | None = None
    hf_hub_url: str | None = None
    ms_hub_url: str | None = None
    om_hub_url: str | None = None
    # LLaMA-Factory keys that only apply to hub/script datasets (which are refused below)
    script_url: str | None = None
    cloud_file_name: str | None = None
    subset: str | None = None
    split: str | None = None
    folder: str | None = None
    formatting: Literal["alpaca", "sharegpt"] = "alpaca"
    ranking: bool = False
    num_samples: int | None = None
    columns: Columns = Field(default_factory=Columns)
    tags: Tags = Field(default_factory=Tags)


def load_dataset_info(dataset_dir: str | Path) -> dict[str, dict]:
    """Read ``<dataset_dir>/dataset_info.json`` (an empty dict if the file is absent)."""
    info_path = Path(dataset_dir) / "dataset_info.json"
    if not info_path.is_file():
        return {}
    try:
        raw = json.loads(read_user_text(info_path, "dataset registry"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{info_path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{info_path} must hold a JSON object mapping dataset names to entries.")
    return raw


def _looks_like_path(name: str) -> bool:
    return name.endswith(DATA_SUFFIXES) or "/" in name or "\\" in name


def resolve_dataset(name: str, dataset_dir: str | Path = "data") -> DatasetAttr:
    """Find dataset ``name``: a ``dataset_info.json`` entry or a path to a JSON/JSONL file.

    Raises:
        ConfigError: the name is neither an entry (closest entries suggested) nor an
            existing file; the entry has no local ``file_name``; the file is missing.
    """
    dataset_dir = Path(dataset_dir)
    info = load_dataset_info(dataset_dir)
    if name in info:
        try:
            entry = _InfoEntry.model_validate(info[name])
        except ValidationError as exc:
            where = f"{dataset_dir / 'dataset_info.json'}: {name}"
            raise ConfigError(format_validation_error(exc, _InfoEntry, where=where)) from None
        if entry.ranking:
            raise ConfigError(
                f"dataset {name!r} is a preference (ranking) dataset; dataflex trains SFT only."
            )
        if entry.num_samples is not None:
            raise ConfigError(
                f"dataset {name!r}: 'num_samples' in dataset_info.json is not supported; "
                "use max_samples in the training config."
            )
        if entry.columns.unsupported():
            raise ConfigError(
                f"dataset {name!r} has {entry.columns.unsupported()} columns (multimodal or preference "
                "data); dataflex trains text-only SFT."
            )
        if entry.file_name is None:
            hub = entry.hf_hub_url or entry.ms_hub_url or entry.om_hub_url
            raise ConfigError(
                f"dataset {name!r} in {dataset_dir / 'dataset_info.json'} has no 'file_name' "
                f"(it points at the hub: {hub!r}); download it and add a 'file_name' entry, "
                "or pass a local .json/.jsonl path."
            )
        path = _inside_dataset_dir(name, entry.file_name, dataset_dir)
        if not path.exists():
            raise ConfigError(
                f"dataset {name!r}: file {str(path)!r} (file_name in "
                f"{dataset_dir / 'dataset_info.json'}) does not exist."
            )
        if path.is_dir():
            raise ConfigError(f"dataset {name!r}: {str(path)!r} is a folder; give a .json or .jsonl file.")
        return DatasetAttr(
            name=name, path=path, formatting=entry.formatting, columns=entry.columns, tags=entry.tags
        )

    for candidate in (Path(name), dataset_dir / name):
        if candidate.is_file():
            return _attr_for_file(candidate)

    if _looks_like_path(name):
        raise ConfigError(f"dataset file {name!r} does not exist (also looked in {str(dataset_dir)!r}).")
    if not info:
        raise ConfigError(
            f"dataset {name!r} not found: {str(dataset_dir / 'dataset_info.json')!r} does not exist "
            f"and {name!r} is not a file. Set dataset_dir to the folder holding dataset_info.json, "
            "or give a path to a .json/.jsonl file."
        )
    raise ConfigError(
        f"dataset {name!r} is not in {dataset_dir / 'dataset_info.json'}." + did_you_mean(name, sorted(info))
    )


def _inside_dataset_dir(name: str, file_name: str, dataset_dir: Path) -> Path:
    """``dataset_dir / file_name``, refused when ``file_name`` is absolute or climbs out with ``..``.

    A registry names files of its own folder: one copied from elsewhere must not make a
    run read (and train on) a file outside it. The check is on the name, not the resolved
    path, so a symlink inside ``dataset_dir`` to data stored elsewhere still works; a file
    outside is named directly in the config instead (``dataset: ../other/x.json``).

    Raises:
        ConfigError: naming the entry, its ``file_name`` and the fix.
    """
    parts = Path(file_name).parts
    if Path(file_name).is_absolute() or file_name.startswith("~") or ".." in parts:
        registry = dataset_dir / "dataset_info.json"
        direct = os.path.normpath(dataset_dir / file_name)
        raise ConfigError(
            f"dataset {name!r}: file_name {file_name!r} in {registry} points outside dataset_dir "
            f"{str(dataset_dir)!r}; dataset_info.json may only name files inside its folder. Move the file "
            f"into dataset_dir (a symlink there works), or name the file in the config (dataset: {direct})."
        )
    return dataset_dir / file_name


def _attr_for_file(path: Path) -> DatasetAttr:
    """A directly given file: ShareGPT if its first row has ``conversations``/``messages``."""
    rows = read_rows(path, limit=1)
    first = rows[0] if rows and isinstance(rows[0], dict) else {}
    if "conversations" in first or "messages" in first:
        key = "conversations" if "conversations" in first else "messages"
        return DatasetAttr(
            name=path.stem, path=path, formatting="sharegpt", columns=Columns(messages=key, tools="tools")
        )
    return DatasetAttr(name=path.stem, path=path, formatting="alpaca")
