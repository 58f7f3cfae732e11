"""``random``: a seeded uniform draw, the baseline every other selector must beat."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from dataflex.registry import register_selector
from dataflex.selectors.base import Selection, SelectionContext, Selector, SelectorParams


def round_rng(seed: int, round_: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, round_)``: identical on every rank."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(round_)]))


@register_selector("random")
class RandomSelector(Selector):
    """Uniform random choice of examples, seeded, the same on every rank."""

    class Params(SelectorParams):
        seed: int | None = Field(default=None, description="Seed of the draw; None uses the run's seed.")
        repeat_within_round: bool = Field(
            default=False, description="Draw with replacement: an example may repeat within a round."
        )

    params: Params

    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        pool = len(ctx.train_dataset)
        self.check_budget(pool, num_samples)
        seed = ctx.seed if self.params.seed is None else self.params.seed
        rng = round_rng(seed, ctx.round)
        if self.params.repeat_within_round:
            indices = rng.integers(0, pool, size=num_samples)
        else:
            indices = rng.choice(pool, size=num_samples, replace=False)
        return Selection(
            indices=indices.tolist(),
            metadata={
                "candidates": pool,
                "seed": seed,
                "repeat_within_round": self.params.repeat_within_round,
            },
        )
