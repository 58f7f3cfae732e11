"""Turning pydantic validation errors into :class:`~dataflex.errors.ConfigError` text."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from dataflex.errors import did_you_mean


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at the parent of ``loc`` (descending through nested models)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return []
        ann = current.model_fields[part].annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return list(current.model_fields) if current is not None else []


_NUMBER_TYPES = ("int_type", "int_parsing", "float_type", "float_parsing")
"""Pydantic's error types of a number key given something else."""


def _number_text(value: object) -> bool:
    """Whether ``value`` is text that reads as a number (``"512"``: a quoted number in YAML)."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def format_validation_error(exc: ValidationError, model: type[BaseModel], where: str = "") -> str:
    """Render a pydantic error as one line per problem: key path, bad value, fix.

    Args:
        exc: The pydantic error.
        model: The model that was validated (for listing valid keys).
        where: Prefix naming the source, e.g. ``"components.yaml: selectors.less.params"``.
    """
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc)
        sep = " " if where.endswith(":") else "."
        full = f"{where}{sep}{path}" if where and path else (where or path)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            lines.append(f"{full}: unknown key {key!r}.{did_you_mean(key, _fields_at(model, loc))}")
        elif err["type"] == "missing":
            lines.append(f"{full}: required key is missing.")
        elif err["type"] in _NUMBER_TYPES and _number_text(err.get("input")):
            kind = "an integer" if err["type"].startswith("int") else "a number"
            lines.append(
                f"{full}: expected {kind}, got the text {err['input']!r}; write the number without quotes."
            )
        elif err["type"] == "finite_number":
            lines.append(f"{full}: expected a finite number, got {err.get('input')!r}.")
        else:
            lines.append(f"{full}: {err['msg']} (got {err.get('input')!r}).")
    return "\n".join(lines)
