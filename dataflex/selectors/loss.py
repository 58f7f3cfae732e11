"""``loss``: choose examples by their loss under the current model.

Each round the candidates' per-example losses are computed (batched, no
gradients, each rank on its shard), and a rule turns them into a selection:

* ``focus`` names the band to emphasise: ``high`` (hard examples), ``low``
  (easy ones) or ``medium`` (those nearest the median loss).
* ``temperature: 0`` picks deterministically: the n highest losses, the n
  lowest, or the n nearest the median.
* ``temperature > 0`` samples n distinct examples, seeded by ``(seed, round)``,
  with probability proportional to ``exp(u / temperature)`` where ``u`` is the
  standardised loss ``z = (loss - median) / std`` for ``high``, ``-z`` for
  ``low`` and ``-|z|`` for ``medium`` (Gumbel top-k sampling).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from dataflex.registry import register_selector
from dataflex.selectors.base import SelectionContext
from dataflex.selectors.pool import PoolParams, PoolRows, PoolSelector, RoundScores
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.scoring import gumbel_top_k, score_histogram, top_n


def band_preference(losses: torch.Tensor, focus: Literal["high", "medium", "low"]) -> torch.Tensor:
    """The standardised preference ``u`` of each loss for a ``focus`` band (higher = preferred)."""
    losses = losses.to(torch.float64)
    std = losses.std(unbiased=False)
    z = (losses - losses.median()) / std if float(std) > 0 else torch.zeros_like(losses)
    if focus == "high":
        return z
    if focus == "low":
        return -z
    return -z.abs()


def choose_by_loss(
    losses: torch.Tensor,
    n: int,
    *,
    focus: Literal["high", "medium", "low"],
    temperature: float,
    rng: np.random.Generator,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Positions of ``n`` distinct entries of ``losses`` chosen by the band rule.

    With ``temperature == 0`` the ``n`` most preferred positions (ties by position);
    otherwise a draw without replacement with probabilities ∝ ``exp(u / temperature)``,
    in the order drawn. Positions outside ``allowed`` (a bool mask) are never chosen.
    """
    u = band_preference(losses, focus)
    if allowed is not None:
        u = u.masked_fill(~allowed, -math.inf)
    if temperature == 0:
        return top_n(u, n)
    return gumbel_top_k(u / temperature, n, rng)


@register_selector("loss")
class LossSelector(PoolSelector):
    """Per-example loss under the current model; high, medium or low band, seeded sampling."""

    scoring_cost = 1 / 3  # a forward pass per scored example, no backward

    class Params(PoolParams):
        focus: Literal["high", "medium", "low"] = Field(
            default="high", description="Loss band to emphasise: high (hard), medium or low (easy)."
        )
        temperature: float = Field(
            default=0.0,
            ge=0.0,
            description="0: deterministic top/bottom/median-n; > 0: seeded sampling ∝ exp(u / T).",
        )

    params: Params  # what validate_params builds (Selector declares a BaseModel)

    def example_rows(self, ctx: SelectionContext, indices: np.ndarray) -> PoolRows:
        """Each example's loss under the current model (sharded, gathered, cached)."""
        losses, cache_hit = self.candidate_losses(ctx, indices, cache_name="loss-scores", selector="loss")
        return PoolRows(losses, {"cache_hit": cache_hit})

    def score_rows(
        self, ctx: SelectionContext, cands: np.ndarray, rows: PoolRows, num_samples: int
    ) -> RoundScores:
        """The losses themselves; the band rule is the pick."""
        p = self.params
        return RoundScores(
            values=rows.rows,
            priority=band_preference(rows.rows, p.focus),
            facts={
                "focus": p.focus,
                "temperature": p.temperature,
                "score_label": "per-example loss under the current model",
                "cache_hit": rows.facts["cache_hit"],
                "time_losses_s": round(rows.facts["time_rows_s"], 4),
            },
        )

    def pick(
        self, ctx: SelectionContext, cands: np.ndarray, scores: RoundScores, num_samples: int
    ) -> tuple[list[int], list[float] | None]:
        """The band rule of :func:`choose_by_loss`, seeded by ``(seed, round)``."""
        p = self.params
        rng = round_rng(self.seed_for(ctx), ctx.round)
        losses = scores.values
        pos = choose_by_loss(
            losses, num_samples, focus=p.focus, temperature=p.temperature, rng=rng, allowed=scores.allowed
        )
        scores.facts["score_histogram"] = score_histogram(losses, pos)
        return pos.tolist(), losses[pos].tolist()
