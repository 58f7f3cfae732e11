"""dataflex's log output, in the manner of ``transformers.utils.logging``.

Every module logs to a child of the ``dataflex`` logger. On import, dataflex gives that
logger one handler of its own (stderr, ``[dataflex] message``) at level INFO, so that a
Python API user sees the per-round lines without configuring logging, and it does not
propagate to the root logger (a ``logging.basicConfig`` in the user's script does not
print each line twice). Under ``torchrun`` the handler passes only rank 0's records
below ERROR, so every log line and warning is printed once.

Silence or widen it::

    from dataflex.logging_utils import set_verbosity_warning
    set_verbosity_warning()          # or: DATAFLEX_VERBOSITY=warning in the environment
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TextIO

LIBRARY_LOGGER = "dataflex"
VERBOSITY_ENV = "DATAFLEX_VERBOSITY"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_lock = threading.Lock()
_handler: logging.Handler | None = None
_said_once: set[tuple[str, int, str]] = set()


def process_rank() -> int:
    """This process's global rank: ``torch.distributed``'s when initialised, else ``$RANK`` (0)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class RankZeroFilter(logging.Filter):
    """Pass every record on rank 0; on other ranks only ERROR and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or process_rank() == 0


class _StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is at each record (capture-friendly)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


class _Formatter(logging.Formatter):
    """``[dataflex] message`` (``[dataflex] WARNING: message`` from WARNING up)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if message.startswith("dataflex: "):  # older messages carry their own prefix
            message = message[len("dataflex: ") :]
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        text = f"[dataflex] {level}{message}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _default_level() -> int:
    value = os.environ.get(VERBOSITY_ENV, "").strip().lower()
    if not value:
        return logging.INFO
    if value not in LEVELS:
        logging.getLogger(LIBRARY_LOGGER).warning(
            "%s=%r is not a level; use one of %s. Using info.", VERBOSITY_ENV, value, ", ".join(LEVELS)
        )
        return logging.INFO
    return LEVELS[value]


def configure_library_logger() -> None:
    """Give the ``dataflex`` logger its handler and level (once; called on ``import dataflex``)."""
    global _handler
    with _lock:
        if _handler is not None:
            return
        _handler = _StderrHandler()
        _handler.setFormatter(_Formatter())
        _handler.addFilter(RankZeroFilter())
        root = logging.getLogger(LIBRARY_LOGGER)
        root.addHandler(_handler)
        root.setLevel(_default_level())
        root.propagate = False


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``dataflex`` logger, or its child ``name`` (e.g. ``__name__`` of a dataflex module)."""
    configure_library_logger()
    return logging.getLogger(name or LIBRARY_LOGGER)


def log_once(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """Log ``msg % args`` at ``level`` the first time this process says it; later calls say nothing.

    For a note that holds for the whole process (a fallback path, a mode) but comes from
    code that runs every selection round, as transformers' ``warning_once`` does. A record
    the logger's level drops is not counted as said.
    """
    if not logger.isEnabledFor(level):
        return
    key = (logger.name, level, msg % args if args else msg)
    with _lock:
        if key in _said_once:
            return
        _said_once.add(key)
    logger.log(level, msg, *args)


def get_verbosity() -> int:
    """The level of the ``dataflex`` logger."""
    return get_logger().getEffectiveLevel()


def set_verbosity(level: int | str) -> None:
    """Set the level of the ``dataflex`` logger: a ``logging`` level or debug/info/warning/error."""
    if isinstance(level, str):
        if level.lower() not in LEVELS:
            raise ValueError(f"unknown verbosity {level!r}; use one of {', '.join(LEVELS)}.")
        level = LEVELS[level.lower()]
    get_logger().setLevel(level)


def set_verbosity_info() -> None:
    """Per-round lines and notes (the default)."""
    set_verbosity(logging.INFO)


def set_verbosity_warning() -> None:
    """Warnings and errors only: silences the per-round lines."""
    set_verbosity(logging.WARNING)


def set_verbosity_error() -> None:
    """Errors only."""
    set_verbosity(logging.ERROR)


def set_verbosity_debug() -> None:
    """Everything."""
    set_verbosity(logging.DEBUG)


def enable_propagation() -> None:
    """Let records reach the root logger's handlers too (e.g. pytest's ``caplog``)."""
    get_logger().propagate = True


def disable_propagation() -> None:
    """Keep records to dataflex's own handler (the default)."""
    get_logger().propagate = False


def disable_default_handler() -> None:
    """Remove dataflex's handler (configure the ``dataflex`` logger yourself)."""
    configure_library_logger()
    if _handler is not None:
        get_logger().removeHandler(_handler)


def enable_default_handler() -> None:
    """Put dataflex's handler back."""
    configure_library_logger()
    if _handler is not None and _handler not in get_logger().handlers:
        get_logger().addHandler(_handler)
