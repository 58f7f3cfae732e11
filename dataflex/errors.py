"""Exceptions shared by every layer of dataflex, and the "did you mean" their messages end with."""

from __future__ import annotations

import difflib


class DataflexError(Exception):
    """Base class of every error dataflex raises on purpose."""


class ConfigError(DataflexError, ValueError):
    """A configuration value is missing, misspelled, of the wrong type or out of range.

    The message always names where the bad value came from (file and key path when
    known), the bad value, and what would be valid instead.
    """


class RegistryError(DataflexError, KeyError):
    """A registry lookup or registration failed (unknown or duplicate name)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


def closest_names(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` closest to ``name`` (best first)."""
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(name: str, choices: list[str]) -> str:
    """A human suffix like ``" Did you mean 'less'?"`` or ``" Valid: a, b."``."""
    close = closest_names(name, choices)
    if close:
        return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    if choices:
        return " Valid choices: " + ", ".join(sorted(choices)) + "."
    return ""


class NonFiniteError(DataflexError, ValueError):
    """NaN or Inf values where training or scoring needs finite numbers: a diverged run.

    Raised where the values are found (a projection, a feature write); the training
    loop re-raises it with the step, the round and what to try
    (:mod:`dataflex.train.dynamic.divergence`).
    """
