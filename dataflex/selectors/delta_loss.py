"""``delta_loss``: rank candidates by how much their loss changed, then take a moving window.

The rule of the original DataFlex system's ``delta_loss`` selector, on the
per-example loss ℓ(z; θ) of :mod:`dataflex.selectors.example_loss`:

* Δ(z) = ℓ_ref(z) − ℓ(z; θ_r): the drop of z's loss between a reference model
  state and the current one (``reference: previous``: the last round that scored
  z; ``initial``: the first round that scored z, the original's choice).
* Candidates are ranked by Δ, largest drop first; a candidate without a
  reference loss ranks last.
* Round r of R has progress x = (r − 1) / (R − 1). A window of
  w = ``window_size`` × C of the C ranked candidates starts at
  s = σ_k(x) · (C − w), σ_k(x) = 1 / (1 + exp(−k (x − ½))), k = ``steepness``:
  early rounds take the examples whose loss dropped most, late rounds slide
  towards those whose loss dropped least. With ``clip_negative`` the window ends
  at the first candidate whose loss rose (Δ < 0).
* n candidates are drawn without replacement, seeded by (seed, r), with weight 1
  inside the window and ``outside_weight`` outside it.

Round 1 has no reference losses: it records the losses and returns a seeded
uniform draw (the original's first call does the same), with a log line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from dataflex.errors import ConfigError
from dataflex.registry import register_selector
from dataflex.selectors.base import SelectionContext
from dataflex.selectors.pool import PoolParams, PoolRows, PoolSelector, RoundScores
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.scoring import gumbel_top_k, summarize, top_n

logger = logging.getLogger(__name__)


def window_bounds(progress: float, count: int, window_size: float, steepness: float) -> tuple[int, int]:
    """``[start, end)`` of the window over ``count`` ranked candidates at ``progress`` in [0, 1].

    start = int(σ(progress) · (count − w)), end = int(σ(progress) · (count − w) + w),
    w = window_size · count, σ(x) = 1 / (1 + exp(−steepness · (x − 0.5))).
    """
    sig = 1.0 / (1.0 + math.exp(-steepness * (progress - 0.5)))
    width = window_size * count
    offset = sig * (count - width)
    return int(offset), min(count, int(offset + width))


def delta_ranking(reference: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Δ = reference − current (−inf where the reference is NaN), and the ranking.

    Returns:
        ``(delta, order)``: the drops and the positions sorted by Δ, largest first
        (ties by position).
    """
    delta = (reference.to(torch.float64) - current.to(torch.float64)).nan_to_num(nan=-math.inf)
    return delta, top_n(delta, len(delta))


def window_draw(weights: np.ndarray, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` distinct positions drawn with probability ∝ ``weights``, one after another.

    Gumbel top-k: the n largest of log(w) + Gumbel noise are distributed exactly as n
    successive draws without replacement (``torch.multinomial(..., replacement=False)``).
    """
    with np.errstate(divide="ignore"):  # weight 0: log 0 = -inf, never drawn
        log_weights = np.log(np.asarray(weights, dtype=np.float64))
    return gumbel_top_k(torch.from_numpy(log_weights), n, rng)


@register_selector("delta_loss")
class DeltaLossSelector(PoolSelector):
    """Rank by the change of loss since a reference round; a sigmoid-scheduled window of it."""

    scoring_cost = 1 / 3  # a forward pass per scored example, no backward

    class Params(PoolParams):
        window_size: float = Field(
            default=0.2, gt=0.0, le=1.0, description="Window width as a share of the ranked candidates."
        )
        steepness: float = Field(
            default=10.0, ge=0.0, description="k of the sigmoid that moves the window with progress."
        )
        outside_weight: float = Field(
            default=0.025,
            gt=0.0,
            le=1.0,
            description="Draw weight of a candidate outside the window (inside: 1).",
        )
        reference: Literal["previous", "initial"] = Field(
            default="previous",
            description="Loss the change is measured from: the last round that scored the example, "
            "or the first (the original's).",
        )
        clip_negative: bool = Field(
            default=True, description="End the window at the first candidate whose loss rose."
        )
        total_rounds: int | None = Field(
            default=None, ge=1, description="R of the progress (r-1)/(R-1); None: the run's update_times."
        )

    params: Params  # what validate_params builds (Selector declares a BaseModel)

    def __init__(self, params: BaseModel | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self.reference_losses: torch.Tensor | None = None
        self.last_delta: torch.Tensor | None = None  # rescore_fraction < 1: each example's last Δ

    def _rounds(self, ctx: SelectionContext) -> int | None:
        """R, checked before any work; ``None`` (unknown) is allowed in round 1 only."""
        total = self.params.total_rounds if self.params.total_rounds is not None else ctx.total_rounds
        if total is None:
            if ctx.round <= 1:
                return None
            raise ConfigError(
                "delta_loss: the window follows training progress (round r of R), but R is unknown: "
                "set total_rounds in the selector's params (the dynamic trainer passes update_times)."
            )
        if ctx.round > total:
            raise ConfigError(f"delta_loss: round {ctx.round} is past total_rounds={total}.")
        return int(total)

    def check_context(self, ctx: SelectionContext) -> None:
        """A model, a collator and a known R, before any work."""
        super().check_context(ctx)
        self._rounds(ctx)

    def example_rows(self, ctx: SelectionContext, indices: np.ndarray) -> PoolRows:
        """Each example's loss under the current model (fp64; sharded, gathered, cached)."""
        losses, hit = self.candidate_losses(
            ctx, indices, cache_name="delta_loss-losses", selector="delta_loss"
        )
        return PoolRows(losses.to(torch.float64), {"cache_hit": hit})

    def score_rows(
        self, ctx: SelectionContext, cands: np.ndarray, rows: PoolRows, num_samples: int
    ) -> RoundScores:
        """Δ against the reference losses, the window's draw weights; the reference moves on."""
        total = self._rounds(ctx)
        pool = len(ctx.train_dataset)
        if self.reference_losses is None:
            self.reference_losses = torch.full((pool,), math.nan, dtype=torch.float64)
        elif len(self.reference_losses) != pool:
            raise ValueError(
                f"delta_loss: the pool changed size ({len(self.reference_losses)} -> {pool}) between rounds."
            )
        p = self.params
        current = rows.rows
        idx = torch.as_tensor(cands, dtype=torch.long)
        reference = self.reference_losses[idx]
        facts: dict[str, Any] = {"total_rounds": total, "reference": p.reference}
        weights = None
        if bool(torch.isnan(reference).all()):
            logger.warning(
                "delta_loss round %d (step %d): no earlier losses to compare with (first round); this round "
                "records the candidates' losses and draws a seeded uniform sample.",
                ctx.round,
                ctx.step,
            )
            scores = torch.full((len(cands),), math.nan, dtype=torch.float64)
            facts["delta"] = False
        else:
            scores, order = delta_ranking(reference, current)
            if rows.fresh is not None:  # rescore_fraction < 1: a row not recomputed keeps its last Δ
                stale = np.ones(len(cands), dtype=bool)
                stale[rows.fresh] = False
                last = self.last_delta
                if last is None:  # no round has recorded a Δ yet: none to carry
                    last = torch.full((pool,), math.nan, dtype=torch.float64)
                carried = last[idx[torch.from_numpy(stale)]]
                scores[torch.from_numpy(stale)] = carried.nan_to_num(nan=-math.inf)
                order = top_n(scores, len(scores))
            progress = 0.0 if total is None or total == 1 else (ctx.round - 1) / (total - 1)
            start, end = window_bounds(progress, len(cands), p.window_size, p.steepness)
            if p.clip_negative:
                rose = torch.nonzero(scores[order] < 0).flatten()
                if len(rose):
                    end = min(end, int(rose[0]))
            w = np.full(len(cands), p.outside_weight)
            if end > start:
                w[order[start:end].numpy()] = 1.0
            else:
                logger.warning(
                    "delta_loss round %d: the window [%d, %d) is empty (clip_negative: every candidate "
                    "from position %d on had its loss rise); the draw is uniform over the candidates.",
                    ctx.round,
                    start,
                    end,
                    end,
                )
            weights = torch.from_numpy(w)
            window = scores[order[start:end]] if end > start else scores[:0]
            facts.update(
                delta=True,
                progress=progress,
                window=[int(start), int(max(start, end))],
                window_delta=summarize(window[torch.isfinite(window)]),
            )
        if rows.fresh is not None:  # only the recomputed rows move their reference on
            keep = torch.as_tensor(rows.fresh, dtype=torch.long)
            if self.last_delta is None:
                self.last_delta = torch.full((pool,), math.nan, dtype=torch.float64)
            self.last_delta[idx[keep]] = scores[keep]
            idx, current = idx[keep], current[keep]
        fresh = torch.isnan(self.reference_losses[idx])
        if p.reference == "previous":
            self.reference_losses[idx] = current
        else:
            self.reference_losses[idx[fresh]] = current[fresh]
        facts.update(
            candidate_losses=summarize(current),
            cache_hit=rows.facts["cache_hit"],
            time_losses_s=round(rows.facts["time_rows_s"], 4),
        )
        return RoundScores(
            values=scores,
            reported=scores[torch.isfinite(scores)],
            weights=weights,
            priority=weights,
            facts=facts,
        )

    def pick(
        self, ctx: SelectionContext, cands: np.ndarray, scores: RoundScores, num_samples: int
    ) -> tuple[list[int], list[float] | None]:
        """A seeded draw: uniform in the first round, window-weighted after (:func:`window_draw`)."""
        rng = round_rng(self.seed_for(ctx), ctx.round)
        if scores.weights is None:
            pos = torch.from_numpy(rng.choice(len(cands), size=num_samples, replace=False))
        else:
            weights = scores.weights.numpy()
            if scores.allowed is not None:  # rescore_fraction < 1: only rows computed this round
                weights = np.where(scores.allowed.numpy(), weights, 0.0)
            pos = window_draw(weights, num_samples, rng)
            scores.facts["in_window"] = int(sum(1 for q in pos.tolist() if weights[q] == 1.0))
        chosen = scores.values[pos]
        return pos.tolist(), chosen.tolist() if bool(torch.isfinite(chosen).all()) else None

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        ref = self.reference_losses
        state["reference_losses"] = (
            None if ref is None else [None if math.isnan(v) else float(v) for v in ref.tolist()]
        )
        if self.last_delta is not None:
            state["last_delta"] = self.last_delta.clone()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        ref = state.pop("reference_losses", None)
        last_delta = state.pop("last_delta", None)
        super().load_state_dict(state)
        self.last_delta = (
            None if last_delta is None else torch.as_tensor(last_delta, dtype=torch.float64).clone()
        )
        self.reference_losses = (
            None
            if ref is None
            else torch.tensor([math.nan if v is None else float(v) for v in ref], dtype=torch.float64)
        )
