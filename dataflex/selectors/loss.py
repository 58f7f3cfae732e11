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

import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from dataflex.errors import ConfigError
from dataflex.registry import register_selector
from dataflex.selectors.base import Selection, SelectionContext
from dataflex.selectors.pool import PoolParams, PoolSelector
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.scoring import score_histogram, top_n


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
) -> torch.Tensor:
    """Positions of ``n`` distinct entries of ``losses`` chosen by the band rule.

    With ``temperature == 0`` the ``n`` most preferred positions (ties by position);
    otherwise a draw without replacement with probabilities ∝ ``exp(u / temperature)``,
    in the order drawn.
    """
    u = band_preference(losses, focus)
    if temperature == 0:
        return top_n(u, n)
    gumbel = torch.from_numpy(rng.gumbel(size=len(u)))
    return top_n(u / temperature + gumbel, n)


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

    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        if ctx.model is None or ctx.collator is None:
            raise ConfigError("loss: the selection context needs a model and a collator.")
        available = self.check_request(ctx, num_samples)
        cands = self.draw_candidates(ctx, available, num_samples)
        p = self.params

        t0 = time.perf_counter()
        losses, cache_hit = self.candidate_losses(ctx, cands, cache_name="loss-scores", selector="loss")
        t1 = time.perf_counter()

        rng = round_rng(self.seed_for(ctx), ctx.round)
        pos = choose_by_loss(losses, num_samples, focus=p.focus, temperature=p.temperature, rng=rng)
        indices = [int(cands[i]) for i in pos]
        self.remember(indices)
        meta = self.report(
            ctx,
            indices,
            losses,
            len(cands),
            focus=p.focus,
            temperature=p.temperature,
            score_histogram=score_histogram(losses, pos),
            score_label="per-example loss under the current model",
            cache_hit=cache_hit,
            time_losses_s=round(t1 - t0, 4),
            time_scoring_s=round(time.perf_counter() - t1, 4),
        )
        return Selection(indices=indices, scores=losses[pos].tolist(), metadata=meta)
