"""Exceptions shared by every layer of dataflex."""

from __future__ import annotations


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


class NonFiniteError(DataflexError, ValueError):
    """NaN or Inf values where training or scoring needs finite numbers: a diverged run.

    Raised where the values are found (a projection, a feature write); the training
    loop re-raises it with the step, the round and what to try
    (:mod:`dataflex.train.dynamic.divergence`).
    """
