"""Test-only: stop this process at a chosen point of a run, to prove what an interruption leaves.

Not for users, and not a way to stop a run cleanly. The reliability tests set
``DATAFLEX_TEST_STOP_AT=<point>[:<n>][@<signal>]`` in the environment of a training process;
the ``n``-th time (default 1, counted in this process) the code reaches ``point``, the
process sends itself ``signal`` (``KILL`` by default, ``TERM`` or ``INT`` for Ctrl-C), so the
signal lands exactly there rather than after a guessed delay. Unset, :func:`reached` costs
one dictionary lookup. The points:

* ``optimizer-step``: after an optimizer step, before the step ends (mid warm-up when
  ``n`` is within it);
* ``feature-batch``: after a batch of a feature (scoring) pass was stored, mid-pass;
* ``round-selected``: after a round's selection was made, before it is recorded
  (the features of the round are written by then); round 0 (the warm-up) counts;
* ``checkpoint-save``: after the Trainer wrote a checkpoint's files, before dataflex's
  selection state is complete in it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "DATAFLEX_TEST_STOP_AT"
POINTS = ("optimizer-step", "feature-batch", "round-selected", "checkpoint-save")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}

_reached: Counter[str] = Counter()


def parse(spec: str) -> tuple[str, int, signal.Signals]:
    """``"feature-batch:2@TERM"`` → ``("feature-batch", 2, SIGTERM)``.

    Raises:
        ValueError: an unknown point or signal, or a count below 1 (a mistyped test must fail).
    """
    rest, _, sig = spec.partition("@")
    point, _, count = rest.partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown point {point!r}; one of {', '.join(POINTS)}.")
    if (sig or "KILL") not in SIGNALS:
        raise ValueError(f"{ENV}={spec!r}: unknown signal {sig!r}; one of {', '.join(SIGNALS)}.")
    n = int(count or 1)
    if n < 1:
        raise ValueError(f"{ENV}={spec!r}: the count must be at least 1.")
    return point, n, SIGNALS[sig or "KILL"]


def reached(point: str) -> None:
    """Mark that the run reached ``point``; the chosen time, signal this process (see the module)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, n, sig = parse(spec)
    if point not in POINTS:
        raise ValueError(f"unknown stop point {point!r}")
    _reached[point] += 1
    if point == target and _reached[point] == n:
        os.kill(os.getpid(), sig)
