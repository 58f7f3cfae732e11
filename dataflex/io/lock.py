"""A lock on an output folder, so two runs never write into the same one.

The lock is a file ``.dataflex.lock`` created with ``O_EXCL`` that names its holder
(pid, host, start time, command). A second run gets a :class:`~dataflex.errors.ConfigError`
naming the first. A lock left by a process that no longer runs on this host is taken
over with a warning. Under ``torchrun`` rank 0 takes it for all ranks.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

from dataflex.errors import ConfigError

logger = logging.getLogger(__name__)

LOCK_FILE = ".dataflex.lock"

_HELD: dict[Path, int] = {}
"""Lock files this process holds, with how many reentrant users share each."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class OutputLock:
    """Exclusive use of ``folder`` by this process.

    Use as a context manager or call :meth:`acquire` / :meth:`release`.

    Args:
        folder: The output folder (created if absent).
        key: The config key that named it, for messages (``"output_dir"``).
        lock_path: Where the lock file goes (default ``folder/.dataflex.lock``); beside the
            folder for one that is swapped as a whole (an export).
        reentrant: Share a lock this process already holds on the folder instead of refusing
            (the trainer inside ``dataflex-cli train``, which holds it already).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        key: str = "output_dir",
        lock_path: str | os.PathLike | None = None,
        *,
        reentrant: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.key = key
        self.path = Path(lock_path) if lock_path is not None else self.folder / LOCK_FILE
        self.reentrant = reentrant
        self._shared = False
        self.token: str | None = None
        self._created: list[Path] = []

    def acquire(self) -> OutputLock:
        """Take the lock.

        Raises:
            ConfigError: when another live run holds it, naming that run.
        """
        held = self.path.absolute()
        if self.reentrant and held in _HELD:
            _HELD[held] += 1
            self._shared = True
            return self
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._created = missing
        token = uuid.uuid4().hex
        body = {
            "token": token,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if self._stale(holder):
                    logger.warning(
                        "%s: taking over %s left by pid %s, which no longer runs.",
                        self.key,
                        self.path,
                        holder.get("pid"),
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                raise ConfigError(
                    f"{self.key}: {str(self.folder)!r} is in use by another dataflex run (pid "
                    f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                    f"{holder.get('started', '?')}: {holder.get('command', '?')}). Wait for it to finish "
                    f"or choose another {self.key}; if no such run exists, delete {self.path}."
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh)
            self.token = token
            _HELD[held] = 1
            return self
        raise ConfigError(f"{self.key}: could not take the lock {self.path}; try again.")

    @staticmethod
    def _stale(holder: dict) -> bool:
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False
        return pid != os.getpid() and not _alive(pid)

    def release(self) -> None:
        """Give the lock up (only if this object took it).

        Folders that :meth:`acquire` created and that are still empty are removed, so a
        run refused after taking the lock leaves no trace.
        """
        held = self.path.absolute()
        if self._shared:
            _HELD[held] -= 1
            self._shared = False
            return
        if self.token is not None:
            _HELD.pop(held, None)
            if _read(self.path).get("token") == self.token:
                self.path.unlink(missing_ok=True)
        self.token = None
        for folder in self._created:
            try:
                folder.rmdir()  # only succeeds when empty
            except OSError:
                break
        self._created = []

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
