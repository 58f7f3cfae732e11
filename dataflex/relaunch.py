"""Errors of processes relaunched under ``torchrun``: reported once, without tracebacks.

``dataflex-cli train`` relaunches itself under torchrun (:mod:`dataflex.train.dynamic.launch`).
A :class:`~dataflex.errors.DataflexError` found after the relaunch happens on every rank;
each rank writes its message to a file in ``DATAFLEX_ERROR_DIR`` instead of printing it,
torchrun is run in-process by :func:`torchrun_quietly` (so its ``ChildFailedError``
traceback is not printed), and the launcher prints each distinct message once and exits
with the ranks' exit code.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from dataflex.io import atomic_write_text

ERROR_DIR_ENV = "DATAFLEX_ERROR_DIR"


def report_error(prefix: str, exc: BaseException) -> None:
    """Print ``prefix: error: exc`` on stderr, or hand it to the launcher when there is one."""
    folder = os.environ.get(ERROR_DIR_ENV)
    message = f"{prefix}: error: {exc}"
    if folder and Path(folder).is_dir():
        atomic_write_text(Path(folder) / f"rank-{os.environ.get('RANK', '0')}.txt", message)
        return
    print(message, file=sys.stderr)


def run_relaunched(torchrun_args: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """Run ``torchrun <torchrun_args>`` quietly; print the ranks' errors once; return the exit code."""
    env = dict(os.environ if environ is None else environ)
    with tempfile.TemporaryDirectory(prefix="dataflex-errors-") as folder:
        env[ERROR_DIR_ENV] = folder
        proc = subprocess.Popen([sys.executable, "-m", "dataflex.relaunch", *torchrun_args], env=env)
        try:
            code = proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM here: torchrun passes SIGTERM on to the ranks
            proc.terminate()
            proc.wait()
            raise
        seen: list[str] = []
        for f in sorted(Path(folder).glob("rank-*.txt"), key=lambda p: int(p.stem.split("-")[1])):
            text = f.read_text(encoding="utf-8")
            if text not in seen:
                seen.append(text)
    for text in seen:
        print(text, file=sys.stderr)
    return code if code or not seen else 1


class _ReportedFailures(logging.Filter):
    """Drops torchrun's "failed (exitcode: N)" and "closing signal" lines once a rank reported its error."""

    def filter(self, record: logging.LogRecord) -> bool:
        folder = os.environ.get(ERROR_DIR_ENV)
        reported = bool(folder and any(Path(folder).glob("rank-*.txt")))
        message = record.getMessage()
        return not (reported and ("failed (exitcode" in message or "closing signal" in message))


def torchrun_quietly(argv: Sequence[str]) -> int:
    """``torchrun argv``, returning the first failed rank's exit code instead of a traceback."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_ReportedFailures())

    try:
        run(parse_args(list(argv)))
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode]
        return int(codes[0]) if codes and codes[0] > 0 else 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(torchrun_quietly(sys.argv[1:]))
