"""Reading a text file the user gave, with an error that names it instead of a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from dataflex.errors import ConfigError


def read_user_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path``.

    Args:
        path: The file.
        what: How messages name it (``"config file"``, ``"dataset file"``).

    Raises:
        ConfigError: the path does not exist, is a folder, cannot be read, or is not UTF-8.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder, not a file; give the file inside it.")
    if not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {exc.strerror}.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}, line {line}); save it as UTF-8."
        ) from None
