"""What dataflex may replace: folders it marked as its own, and names kept inside a folder.

A folder dataflex creates for an export (or another output it may later replace) gets
a ``.dataflex.json`` marker. Only a marked folder, or an empty one, is ever replaced;
anything else is refused with the flag that allows it, as ``git`` refuses to clobber.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dataflex import __version__
from dataflex.errors import ConfigError
from dataflex.io.atomic import atomic_write_json
from dataflex.io.json_types import JSONValue
from dataflex.io.lock import LOCK_FILE

MARKER = ".dataflex.json"


def write_marker(folder: str | os.PathLike, kind: str, **extra: JSONValue) -> Path:
    """Mark ``folder`` as written by dataflex (``kind``: ``"export"``, ``"select"``, ...)."""
    return atomic_write_json(
        Path(folder) / MARKER, {"written_by": "dataflex", "version": __version__, "kind": kind, **extra}
    )


def read_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of ``folder``, or ``None`` when it has none (or an unreadable one)."""
    path = Path(folder) / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == "dataflex" else None


def is_marked(folder: str | os.PathLike, kind: str) -> bool:
    """Whether ``folder`` carries dataflex's marker of ``kind``."""
    marker = read_marker(folder)
    return marker is not None and marker.get("kind") == kind


def foreign_entries(folder: str | os.PathLike, kind: str) -> list[str]:
    """The entries of ``folder`` that dataflex did not write as its ``kind`` output, sorted.

    A marked folder whose marker records its ``files`` (an export does) owns exactly
    those; one whose marker has no record (written by an older dataflex) owns all of its
    entries; an unmarked folder, or one marked for another ``kind``, owns none. The marker
    and the lock file never count.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.name not in (MARKER, LOCK_FILE))
    marker = read_marker(folder)
    if marker is None or marker.get("kind") != kind:
        return names
    files = marker.get("files")
    if not isinstance(files, list):
        return []
    owned = {str(f) for f in files}
    return [n for n in names if n not in owned]


def is_empty_dir(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is an existing folder with no entries."""
    folder = Path(folder)
    return folder.is_dir() and not any(folder.iterdir())


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_file_name(name: str, what: str) -> str:
    """``name`` made safe to use as one file name (no folder part, no hidden name).

    Characters outside ``A-Z a-z 0-9 . _ + -`` become ``_``; a name that would climb
    out of its folder (``..``, ``../x``, ``/abs``) is refused rather than rewritten.

    Raises:
        ConfigError: naming ``what`` for an empty name or one that leaves the folder.
    """
    text = str(name)
    parts = re.split(r"[\\/]", text)
    if not text.strip() or any(p in ("..", ".") for p in parts) or text.startswith(("/", "\\", "~")):
        raise ConfigError(
            f"{what}: {text!r} cannot become a file name inside the output folder (it is empty or "
            "points outside it); rename it."
        )
    safe = _UNSAFE.sub("_", text).lstrip(".")
    if not safe:
        raise ConfigError(f"{what}: {text!r} has no character usable in a file name; rename it.")
    return safe


def path_inside(folder: str | os.PathLike, name: str, what: str) -> Path:
    """``folder / name``, refused when it resolves outside ``folder``.

    Raises:
        ConfigError: naming ``what`` when the path would leave ``folder``.
    """
    root = Path(folder).resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"{what}: {name!r} would be written outside {str(folder)!r}; refused.")
    return target


def check_no_overlap(
    output: str | os.PathLike, key: str, inputs: Mapping[str, str | os.PathLike | Sequence[str] | None]
) -> None:
    """Refuse an output folder that is, lies inside, or contains one of the run's input folders.

    Writing there would change the input (a model folder gaining adapter files and a
    rewritten ``tokenizer_config.json``), or a later replace of the output would delete it.
    Inputs that are not local paths (hub ids) are skipped; symlinks are resolved.

    Args:
        output: The output folder.
        key: The config key naming it (for the message).
        inputs: Config key → input path (or list of paths, or ``None``).

    Raises:
        ConfigError: naming both keys and both folders.
    """
    if not str(output).strip():
        return  # no folder named: check_writable_dir says so
    out = Path(output).expanduser().resolve()
    for input_key, value in inputs.items():
        names = [value] if isinstance(value, str | os.PathLike) else list(value or [])
        for name in names:
            src = Path(name).expanduser()
            if not src.exists():
                continue
            src = src.resolve()
            if src == out or src in out.parents or out in src.parents:
                how = "is" if src == out else "is inside" if src in out.parents else "contains"
                raise ConfigError(
                    f"{key}: {str(output)!r} {how} the {input_key} folder {str(name)!r}; writing there would "
                    f"change or delete an input. Choose another {key}, outside every input folder."
                )


def check_replaceable(folder: str | os.PathLike, key: str, kind: str, flag: str | None = None) -> None:
    """Refuse to write into ``folder`` unless it is absent, empty, or dataflex's own ``kind`` output.

    Args:
        folder: The output folder.
        key: The config key naming it (for the message).
        kind: The marker kind of the outputs that may be replaced (``"export"``, ``"select"``).
        flag: The config key that allows writing anyway, if there is one.

    Raises:
        ConfigError: naming the folder, a few of its entries and the fix.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}: {str(folder)!r} is a file, not a folder.")
    if not folder.is_dir() or is_empty_dir(folder) or is_marked(folder, kind):
        return
    entries = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    fix = f"set {flag}: true to write into it (your files stay), or choose" if flag else "choose"
    raise ConfigError(
        f"{key}: {str(folder)!r} is not empty ({shown}) and was not written by dataflex-cli {kind}; "
        f"dataflex never deletes or overwrites files it did not write. {fix} an empty or new folder."
    )


def check_writable_dir(folder: str | os.PathLike, key: str) -> None:
    """Check that ``folder`` is, or can be created as, a folder this process can write into.

    Nothing is left behind: the probe file is created in the nearest existing folder and
    removed at once.

    Raises:
        ConfigError: naming ``key`` when the path is empty, is a file, lies below a file, or
            its nearest existing folder cannot be written.
    """
    import tempfile

    if not str(folder).strip():
        raise ConfigError(f"{key}: is empty; name the folder to write into.")
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}: {str(folder)!r} is a file, not a folder.")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}: {str(folder)!r} cannot be created: {str(probe)!r} is a file.")
    try:
        fd, name = tempfile.mkstemp(prefix=".dataflex-write-test-", dir=probe)
    except OSError as exc:
        raise ConfigError(
            f"{key}: {str(folder)!r} is not writable ({exc.strerror} in {str(probe)!r}); choose a folder "
            "you can write to."
        ) from None
    os.close(fd)
    os.unlink(name)
