"""The generic dynamic-selection sampler: any selector, one schedule.

The sampler owns the rounds' selections and yields, for the chunk of optimizer steps
being started, exactly the part of the current round's selection those steps train on.
It never computes a selection while it is being iterated: the trainer integration asks
it to select at the right step (:meth:`DynamicSelectionSampler.select_round`) and then
starts a fresh iteration, so a prefetching dataloader (worker processes, accelerate's
one-batch look-ahead) can never read indices of a round that has not been selected yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from dataflex.errors import ConfigError, DataflexError
from dataflex.selectors.base import Selection, SelectionContext, Selector
from dataflex.selectors.random_selector import round_rng
from dataflex.train.dynamic.plan import check_run_length
from dataflex.train.dynamic.schedule import SelectionSchedule

logger = logging.getLogger(__name__)


def check_dynamic_plan(
    schedule: SelectionSchedule,
    selector: Selector,
    pool_size: int,
    examples_per_step: int,
    *,
    has_eval_dataset: bool | None = None,
) -> int:
    """Reject a plan that cannot run, before any model is loaded; return the round budget.

    Args:
        schedule: The selection schedule.
        selector: The selector that will make rounds 1..update_times.
        pool_size: Number of candidate training examples.
        examples_per_step: Global batch: per-device batch × gradient accumulation × world size.
        has_eval_dataset: Whether an eval dataset is given; ``None`` skips that check.
            Selectors whose class sets ``requires_eval_dataset = True`` (LESS) need one.

    Returns:
        The per-round budget ``examples_per_step × update_step``.

    Raises:
        ConfigError: naming the value to change.
    """
    if (
        isinstance(examples_per_step, bool)
        or not isinstance(examples_per_step, int)
        or examples_per_step <= 0
    ):
        raise ConfigError(
            f"the global batch (per-device batch x gradient accumulation x world size) must be a positive "
            f"integer, got {examples_per_step!r}."
        )
    if pool_size <= 0:
        raise ConfigError("the training dataset is empty: dynamic selection needs candidates to choose from.")
    name = getattr(selector, "registry_name", type(selector).__name__)
    if has_eval_dataset is False and selector.requires_eval_dataset:
        raise ConfigError(
            f"selector {name!r} scores candidates against a target set: set eval_dataset "
            "(the examples of the task to select for)."
        )
    budget = examples_per_step * schedule.update_step
    selector.check_budget(pool_size, budget)
    check_run_length(schedule, examples_per_step, pool_size)
    return budget


@dataclass(frozen=True)
class DynamicPlan:
    """A selection plan that has been checked, with the numbers it was checked against.

    Built by :func:`dataflex.train.dynamic.trainer.check_plan` (``dataflex-cli train``
    builds it before the model loads); :class:`DynamicSelectTrainer` given one does not
    check again, it only confirms that it trains with the same pool and global batch.

    Attributes:
        schedule: The selection schedule.
        selector: The selector making rounds 1..update_times.
        pool_size: Number of candidate examples the plan was checked for.
        examples_per_step: The global batch it was checked for.
        has_eval_dataset: Whether the selector gets a target set.
    """

    schedule: SelectionSchedule
    selector: Selector
    pool_size: int
    examples_per_step: int
    has_eval_dataset: bool

    @property
    def budget(self) -> int:
        """The per-round budget ``examples_per_step × update_step``."""
        return self.examples_per_step * self.schedule.update_step


def warmup_indices(pool_size: int, num_samples: int, seed: int) -> list[int]:
    """The warm-up draw: a seeded uniform subset of ``range(pool_size)``, the same on every rank.

    When the warm-up needs more examples than the pool holds, further independent
    permutations are appended (several passes over the data, as plain epochs would).
    """
    rng = round_rng(seed, 0)
    parts: list[np.ndarray] = []
    remaining = num_samples
    while remaining > 0:
        perm = rng.permutation(pool_size)
        parts.append(perm[:remaining])
        remaining -= len(parts[-1])
    if len(parts) > 1:
        logger.info(
            "dataflex: the warm-up needs %d examples from a pool of %d; it makes %d passes over the pool.",
            num_samples,
            pool_size,
            len(parts),
        )
    return np.concatenate(parts).tolist() if parts else []


class DynamicSelectionSampler(Sampler[int]):
    """Indices of the current round's selection, one chunk of optimizer steps at a time.

    One iteration covers :attr:`SelectionSchedule.chunk_steps` optimizer steps, i.e.
    ``chunk_steps × examples_per_step`` indices, in selection order (a data-parallel
    dataloader deals consecutive batches to the ranks). Call :meth:`set_step` with the
    number of optimizer steps completed before each iteration.

    Args:
        selector: Any :class:`~dataflex.selectors.base.Selector` (rounds ≥ 1).
        schedule: The selection schedule.
        pool_size: Number of candidate examples (``len(train_dataset)``).
        examples_per_step: Global batch: per-device batch × gradient accumulation × world size.
        seed: Seed of the warm-up draw (the run's seed).
        has_eval_dataset: Whether the selector gets a target set (``None``: not checked);
            see :func:`check_dynamic_plan`.

    Raises:
        ConfigError: if the plan cannot run (:func:`check_dynamic_plan`). A plan checked
            already (:class:`DynamicPlan`) builds its sampler with :meth:`from_plan`.
    """

    def __init__(
        self,
        selector: Selector,
        schedule: SelectionSchedule,
        pool_size: int,
        examples_per_step: int,
        seed: int = 0,
        *,
        has_eval_dataset: bool | None = None,
    ) -> None:
        check_dynamic_plan(
            schedule, selector, pool_size, examples_per_step, has_eval_dataset=has_eval_dataset
        )
        self._setup(selector, schedule, pool_size, examples_per_step, seed)

    @classmethod
    def from_plan(cls, plan: DynamicPlan, seed: int = 0) -> DynamicSelectionSampler:
        """The sampler of a plan that has already been checked (no second check)."""
        sampler = cls.__new__(cls)
        sampler._setup(plan.selector, plan.schedule, plan.pool_size, plan.examples_per_step, seed)
        return sampler

    def _setup(
        self,
        selector: Selector,
        schedule: SelectionSchedule,
        pool_size: int,
        examples_per_step: int,
        seed: int,
    ) -> None:
        self.selector = selector
        self.schedule = schedule
        self.pool_size = int(pool_size)
        self.examples_per_step = int(examples_per_step)
        self.seed = int(seed)
        self.selections: dict[int, Selection] = {}
        self._step = 0

    def __len__(self) -> int:
        return self.schedule.chunk_steps * self.examples_per_step

    def set_step(self, step: int) -> None:
        """Declare that ``step`` optimizer steps are done; the next iteration starts at its chunk."""
        self._step = int(step)

    def __iter__(self) -> Iterator[int]:
        chunk = self.schedule.chunk_steps
        start = self._step - self._step % chunk
        round_ = self.schedule.round_of_step(start)
        if round_ not in self.selections:
            raise DataflexError(
                f"round {round_} (steps from {self.schedule.start_step(round_)}) has not been selected yet; "
                "the trainer must call select_round before iterating."
            )
        offset = (start - self.schedule.start_step(round_)) * self.examples_per_step
        indices = self.selections[round_].indices[offset : offset + len(self)]
        return iter(indices)

    def round_budget(self, round_: int) -> int:
        """Number of examples ``round_`` trains on."""
        return self.schedule.num_steps(round_) * self.examples_per_step

    def pending_round(self, step: int) -> int | None:
        """The round step ``step`` trains on, if it has not been selected yet; else ``None``."""
        if not 0 <= step < self.schedule.total_steps:
            return None
        round_ = self.schedule.round_of_step(step)
        return None if round_ in self.selections else round_

    def select_round(self, round_: int, ctx: SelectionContext | None) -> Selection:
        """Make and store ``round_``'s selection.

        Round 0 is the seeded warm-up draw (``ctx`` unused); rounds ≥ 1 call the selector.

        Raises:
            DataflexError: if the selector returns the wrong number of indices, indices
                outside the pool, or (under several processes) different selections on
                different ranks.
        """
        n = self.round_budget(round_)
        if round_ == 0:
            selection = Selection(
                indices=warmup_indices(self.pool_size, n, self.seed),
                metadata={"selector": "warmup", "seed": self.seed},
            )
        else:
            if ctx is None:
                raise ValueError(f"round {round_} needs a SelectionContext.")
            selection = self.selector.select(ctx, n)
            self._validate(selection, n, ctx)
        self.selections[round_] = selection
        return selection

    def _validate(self, selection: Selection, n: int, ctx: SelectionContext) -> None:
        name = getattr(self.selector, "registry_name", type(self.selector).__name__)
        if not isinstance(selection, Selection):
            raise DataflexError(f"selector {name!r} returned {type(selection).__name__}, not a Selection.")
        if len(selection.indices) != n:
            raise DataflexError(
                f"selector {name!r} returned {len(selection.indices)} indices for round {ctx.round}; "
                f"the round trains on exactly {n}."
            )
        bad = [i for i in selection.indices if not 0 <= i < self.pool_size]
        if bad:
            raise DataflexError(
                f"selector {name!r} returned indices outside the pool [0, {self.pool_size}): {bad[:5]}."
            )
        if ctx.dist.world_size > 1 and not ctx.dist.all_equal(selection.indices):
            raise DataflexError(
                f"selector {name!r} returned different selections on different ranks in round {ctx.round}; "
                "a selector must gather its shards so that every rank returns the same Selection."
            )

    def state_dict(self) -> dict[str, Any]:
        """Selections made so far and the selector's own state."""
        return {
            "rounds": {
                str(r): {"indices": s.indices, "scores": s.scores, "metadata": s.metadata}
                for r, s in sorted(self.selections.items())
            },
            "selector": self.selector.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.selections = {
            int(r): Selection(indices=list(s["indices"]), scores=s["scores"], metadata=dict(s["metadata"]))
            for r, s in state["rounds"].items()
        }
        self.selector.load_state_dict(state["selector"])
