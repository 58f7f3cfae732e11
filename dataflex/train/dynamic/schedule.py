"""The selection schedule: warm-up, then ``update_times`` rounds of ``update_step`` steps.

Steps are counted in optimizer steps. Step *k* (0-based) is the optimizer step taken
after *k* steps have completed. Round 0 is the warm-up (only when ``warmup_step > 0``);
round *r* ≥ 1 covers steps ``[warmup_step + (r-1)·update_step, warmup_step + r·update_step)``
and its selection is computed from the model and optimizer state after exactly
``warmup_step + (r-1)·update_step`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dataflex.errors import ConfigError


def _check_int(name: str, value: object, minimum: int, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__}); {meaning}.")
    if value < minimum:
        bound = "a positive integer" if minimum == 1 else "an integer >= 0"
        raise ConfigError(f"{name} must be {bound}, got {value}; {meaning}.")


@dataclass(frozen=True)
class SelectionSchedule:
    """When selections happen, in optimizer steps.

    Args:
        warmup_step: Optimizer steps trained on a seeded random subset before the first
            selection (0: select from the initial model).
        update_step: Optimizer steps trained on each round's selection.
        update_times: Number of selection rounds.

    Raises:
        ConfigError: when ``warmup_step`` is negative or ``update_step`` / ``update_times``
            is not a positive integer.
    """

    warmup_step: int
    update_step: int
    update_times: int

    def __post_init__(self) -> None:
        _check_int(
            "warmup_step",
            self.warmup_step,
            0,
            "it counts the optimizer steps on a random subset before round 1",
        )
        _check_int(
            "update_step", self.update_step, 1, "it counts the optimizer steps trained on each selection"
        )
        _check_int("update_times", self.update_times, 1, "it counts the selection rounds")

    @property
    def total_steps(self) -> int:
        """``warmup_step + update_step × update_times``: the run's ``max_steps``."""
        return self.warmup_step + self.update_step * self.update_times

    @property
    def chunk_steps(self) -> int:
        """Greatest common divisor of ``warmup_step`` and ``update_step``.

        Every round boundary is a multiple of it, so the trainer can iterate the data in
        chunks of this many steps and start each chunk with the right round's indices.
        """
        return math.gcd(self.warmup_step, self.update_step)

    @property
    def first_round(self) -> int:
        """0 when there is a warm-up round, else 1."""
        return 0 if self.warmup_step > 0 else 1

    @property
    def rounds(self) -> range:
        """Every round of the run, warm-up (0) included when present."""
        return range(self.first_round, self.update_times + 1)

    def start_step(self, round_: int) -> int:
        """Optimizer steps completed when ``round_``'s selection is made."""
        self._check_round(round_)
        return 0 if round_ == 0 else self.warmup_step + (round_ - 1) * self.update_step

    def num_steps(self, round_: int) -> int:
        """Optimizer steps trained on ``round_``'s selection."""
        self._check_round(round_)
        return self.warmup_step if round_ == 0 else self.update_step

    @property
    def selection_steps(self) -> list[int]:
        """The step at which each round ≥ 1 is selected (round 1 first)."""
        return [self.start_step(r) for r in range(1, self.update_times + 1)]

    def round_of_step(self, step: int) -> int:
        """The round whose selection step ``step`` (0-based) trains on."""
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} is outside the schedule [0, {self.total_steps}).")
        if step < self.warmup_step:
            return 0
        return 1 + (step - self.warmup_step) // self.update_step

    def _check_round(self, round_: int) -> None:
        if round_ not in self.rounds:
            raise ValueError(
                f"round {round_} is not in this schedule (rounds {self.rounds.start}..{self.update_times})."
            )


def check_max_steps(max_steps: int, schedule: SelectionSchedule, *, yaml_key: bool) -> None:
    """The one rule of ``max_steps`` under dynamic selection: unset (≤ 0) or the schedule's total.

    Args:
        max_steps: The configured value.
        schedule: The run's schedule.
        yaml_key: Name the key as a training config writes it (``max_steps: 100``) rather
            than as ``TrainingArguments`` does (``max_steps=100``).

    Raises:
        ConfigError: naming the total and how to fix it.
    """
    total = schedule.total_steps
    if max_steps <= 0 or max_steps == total:
        return
    said, fix = (
        (f"max_steps: {max_steps}", f"Remove max_steps (or set it to {total}).")
        if yaml_key
        else (f"max_steps={max_steps}", f"Leave max_steps unset (-1) or set it to {total}.")
    )
    raise ConfigError(
        f"{said} contradicts the selection schedule: dynamic selection trains warmup_step + update_step x "
        f"update_times = {schedule.warmup_step} + {schedule.update_step} x {schedule.update_times} = {total} "
        f"steps. {fix}"
    )
