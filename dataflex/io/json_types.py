"""The type of a value JSON can hold, for the seams that read or write JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

JSONValue: TypeAlias = "str | int | float | bool | Sequence[JSONValue] | Mapping[str, JSONValue] | None"
"""A JSON value: a scalar, a sequence of JSON values, or a mapping from names to them.

``Sequence`` and ``Mapping`` (not ``list`` and ``dict``) so that a ``dict[str, int]``
or a tuple is accepted where JSON is read; what JSON cannot hold is refused at run time
(:class:`~dataflex.io.digest.FingerprintError`, or ``json``'s ``TypeError``).
"""

JSONObject: TypeAlias = "Mapping[str, JSONValue]"
"""A JSON object: names to JSON values."""
