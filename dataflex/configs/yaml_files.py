"""Reading a flat YAML config, applying ``key=value`` overrides, validating it.

Shared by every command-line config (``train``, ``export``, ``select``) so that all of
them read files, type overrides and report errors the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dataflex.configs.validation import format_validation_error
from dataflex.errors import ConfigError, did_you_mean
from dataflex.io import read_user_text

M = TypeVar("M", bound=BaseModel)


class _DuplicateKey(Exception):
    """A mapping key given twice (turned into a ConfigError naming the file)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(
                f"key {key!r} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                "YAML would silently keep the last value. Remove one of them."
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml_text(text: str, path: str | Path) -> object:
    """Parse YAML ``text`` (safe, duplicate keys refused); errors name ``path``.

    Raises:
        ConfigError: invalid YAML or a duplicate key.
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def split_names(value: str | Sequence[str]) -> list[str]:
    """``"a, b"`` or ``["a", " b", ""]`` → ``["a", "b"]``: entries stripped, empty ones dropped."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [p.strip() for p in parts if p.strip()]


def comma_separated(value: object) -> object:
    """Pydantic ``mode="before"`` validator of a list key: a string is split into names.

    Anything else is returned as it is, for the field's type to accept or reject.
    """
    return split_names(value) if isinstance(value, str) else value


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse ``path`` (safe YAML) into a mapping; an empty file is an empty mapping.

    Args:
        path: The YAML file.
        what: How messages name the file (``"config file"``, ``"select config"``).

    Raises:
        ConfigError: a missing file, a folder, a file that is not UTF-8, invalid YAML, a key
            given twice, or a top level that is not a mapping.
    """
    path = Path(path)
    raw = load_yaml_text(read_user_text(path, what), path)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}.")
    return raw


def _accepts_str(annotation: object) -> bool:
    return annotation is str or "str" in str(annotation)


def _is_list(annotation: object) -> bool:
    return "list[" in str(annotation)


def _override_list(value: str, parsed: object) -> object:
    """A list key's override: a YAML list (``[a, b]``), ``null``, or comma-separated text."""
    if parsed is None or isinstance(parsed, list):
        return parsed
    return split_names(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str], schema: type[BaseModel]) -> dict[str, Any]:
    """Apply ``key=value`` overrides, typing each value by the schema.

    Values are parsed as YAML (``1e-4`` → number, ``true``, ``null``) unless the key
    takes text and the value is not a YAML bool/null, in which case it stays text
    (``output_dir=123`` is the folder ``"123"``). A list key takes a YAML list
    (``checkpoints=[a,b]``) or comma-separated names (``dataset=alpaca_en_demo,identity``).

    Raises:
        ConfigError: a malformed override or an unknown key (closest key suggested).
    """
    out = dict(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value.")
        if key not in schema.model_fields:
            raise ConfigError(
                f"override {item!r}: unknown key {key!r}." + did_you_mean(key, list(schema.model_fields))
            )
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        annotation = schema.model_fields[key].annotation
        if _is_list(annotation):
            parsed = _override_list(value, parsed)
        elif _accepts_str(annotation) and not (parsed is None or isinstance(parsed, bool | dict)):
            parsed = value
        out[key] = parsed
    return out


def validate_model(schema: type[M], raw: dict[str, Any], where: str) -> M:
    """``schema.model_validate(raw)`` with errors turned into a :class:`ConfigError`.

    Args:
        schema: The pydantic model.
        raw: The mapping to validate.
        where: Prefix naming the source (e.g. ``"train.yaml:"``).
    """
    refuse_bools_for_numbers(schema, raw, where)
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, schema, where=where)) from None


def refuse_bools_for_numbers(schema: type[BaseModel], raw: object, where: str) -> None:
    """Pydantic reads ``true`` as 1 for a number key; a config almost never means that."""
    if not isinstance(raw, dict):
        return
    for key, value in raw.items():
        field = schema.model_fields.get(key)
        if field is None or not isinstance(value, bool):
            continue
        text = str(field.annotation)
        if "bool" not in text and ("int" in text or "float" in text):
            raise ConfigError(
                f"{where} {key}: expected a number, got {str(value).lower()} (a boolean would be read as "
                f"{int(value)}). Give the number."
            )
