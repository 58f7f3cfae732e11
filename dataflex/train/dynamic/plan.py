"""What a selection plan will do, said before training: its length checked, its figures printed.

:func:`check_run_length` refuses a schedule no run could finish as written (a trillion
steps, thousands of passes over the pool); :func:`plan_summary` is the one place the
plan's figures are put into words: steps, rounds, examples selected and scored, and a
rough cost of the scoring in training steps. The figures of scoring come from the
selector (:meth:`~dataflex.selectors.base.Selector.examples_scored`,
:attr:`~dataflex.selectors.base.Selector.scoring_cost`), so a selector that scores
fewer examples in some rounds says so itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dataflex.errors import ConfigError

if TYPE_CHECKING:
    from dataflex.train.dynamic.sampler import DynamicPlan
    from dataflex.train.dynamic.schedule import SelectionSchedule

logger = logging.getLogger(__name__)

MAX_TOTAL_STEPS = 10_000_000
"""More optimizer steps than any fine-tuning run takes (over three months at one step a second)."""

MAX_PASSES = 1000
"""More passes over the pool than fine-tuning ever makes: a schedule asking for them is a typo."""


_ROUNDS_COUNTED = 10_000
"""Up to this many rounds, the plan asks the selector about every round's scoring."""


def passes_over_pool(schedule: SelectionSchedule, examples_per_step: int, pool_size: int) -> float:
    """Examples the run trains on (every step's global batch), in passes over the pool."""
    return schedule.total_steps * examples_per_step / max(pool_size, 1)


def check_run_length(schedule: SelectionSchedule, examples_per_step: int, pool_size: int) -> None:
    """Refuse a schedule whose length no run could finish as written.

    Raises:
        ConfigError: more than :data:`MAX_TOTAL_STEPS` optimizer steps, or more than
            :data:`MAX_PASSES` passes over the pool, naming the schedule's keys.
    """
    total = schedule.total_steps
    formula = (
        f"warmup_step + update_step x update_times = {schedule.warmup_step} + {schedule.update_step} x "
        f"{schedule.update_times} = {total} optimizer steps"
    )
    if total > MAX_TOTAL_STEPS:
        raise ConfigError(
            f"update_times: the schedule trains {formula}, more than the {MAX_TOTAL_STEPS:,} any fine-tuning "
            "run takes; lower update_times or update_step."
        )
    passes = passes_over_pool(schedule, examples_per_step, pool_size)
    if passes > MAX_PASSES:
        raise ConfigError(
            f"update_times: the schedule trains {formula} of {examples_per_step} examples, {passes:,.1f} "
            f"passes over the pool of {pool_size} (more than {MAX_PASSES}); lower update_times or "
            "update_step, or add data."
        )


def plan_summary(plan: DynamicPlan) -> list[str]:
    """The plan in words: length, rounds, examples selected and scored, scoring cost.

    The cost of scoring is counted in training steps: examples scored x the selector's
    :attr:`~dataflex.selectors.base.Selector.scoring_cost` / the global batch.
    """
    schedule, selector = plan.schedule, plan.selector
    name = getattr(selector, "registry_name", type(selector).__name__)
    steps, batch, pool = schedule.total_steps, plan.examples_per_step, plan.pool_size
    warmup = f"warm-up {schedule.warmup_step} + " if schedule.warmup_step else ""
    lines = [
        f"plan: {steps} optimizer steps ({warmup}{schedule.update_times} rounds x {schedule.update_step}) of "
        f"{batch} examples: {steps * batch} examples trained, "
        f"{passes_over_pool(schedule, batch, pool):.3g} passes over the pool of {pool}"
    ]
    rounds = range(1, schedule.update_times + 1)
    if len(rounds) <= _ROUNDS_COUNTED:
        scored = [selector.examples_scored(pool, plan.budget, r) for r in rounds]
    else:  # too many to ask one by one: rounds 1, 2 and the last; those between as 2's and the last's mean
        # (round 1 may differ from all later ones, e.g. under rescore_fraction, so it is not averaged in)
        first, second, last = (selector.examples_scored(pool, plan.budget, r) for r in (1, 2, rounds[-1]))
        scored = [first, second] + [(second + last) // 2] * (len(rounds) - 3) + [last]
    if len(set(scored)) == 1:
        per_round = f"{scored[0]} a round"
    else:
        per_round = f"{scored[0]} in round 1 to {scored[-1]} in round {rounds[-1]}"
    total_scored = sum(scored)
    if total_scored == 0:
        lines.append(f"plan: {name} selects {plan.budget} examples a round and scores none")
    else:
        cost = total_scored * float(selector.scoring_cost) / batch
        lines.append(
            f"plan: {name} selects {plan.budget} examples a round; it scores {per_round}, {total_scored} in "
            f"all, costing about {cost:.3g} training steps ({cost / steps:.2g}x the training)"
        )
    return lines


def log_plan(plan: DynamicPlan) -> None:
    """Log :func:`plan_summary` on the ``dataflex`` logger, once, before the model loads."""
    for line in plan_summary(plan):
        logger.info("dataflex: %s", line)
