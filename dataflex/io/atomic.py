"""The one way dataflex writes a file: a temporary file beside it, fsync, rename.

A reader therefore sees the old file or the new one, never a half-written one, and
after a crash (or a full disk) the file is either complete or absent. Files get the
permissions any other tool would give them (``0o666`` less the umask), not the
``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from dataflex.io.json_types import JSONValue

Writer = Callable[[str], None]
"""A function that writes the whole content to the path it is given."""


def current_umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets under the current umask (0o644 by default)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode a new folder gets under the current umask (0o755 by default)."""
    return 0o777 & ~current_umask()


def apply_default_modes(root: str | os.PathLike) -> None:
    """Give ``root`` and everything below it the umask's default modes.

    For trees built in a :func:`tempfile.mkdtemp` folder (created ``0o700``).
    """
    root = Path(root)
    os.chmod(root, dir_mode())
    for base, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(base, d), dir_mode())
        for f in files:
            os.chmod(os.path.join(base, f), file_mode())


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, content: bytes | str | Writer, *, encoding: str = "utf-8") -> Path:
    """Write ``content`` to ``path`` atomically and durably.

    Args:
        path: Destination; its folder is created if needed.
        content: Bytes, text (encoded with ``encoding``), or a function that writes the
            whole file to the temporary path it is given (e.g. ``safetensors.save_file``).
        encoding: Encoding of text content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if callable(content):
            os.close(fd)
            fd = -1
            content(tmp)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            data = content.encode(encoding) if isinstance(content, str) else bytes(content)
            with os.fdopen(fd, "wb", closefd=False) as fh:
                fh.write(data)
                fh.flush()
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, text)


def atomic_write_json(path: str | os.PathLike, obj: JSONValue, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON (non-ASCII kept) to ``path`` atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
