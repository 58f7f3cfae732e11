"""``tsds``: TSDS (Liu et al., NeurIPS 2024), optimal-transport alignment to the target with diversity.

Each round, from the current model's embeddings (:mod:`dataflex.embeddings`) of the
candidates and of the validation examples (the "query" examples of the paper):

1. every query keeps its K = min(``max_k``, candidates) nearest candidates by L2 distance
   (on unit-normalised embeddings unless ``normalize: false``), exact search;
2. every candidate among those neighbours gets a kernel density estimate over its
   ``kde_k`` nearest neighbours in that set, ρ = Σ max(0, 1 - d²/σ²) (``sigma: 0``: ρ = 1);
3. the transport plan that minimises α/C · transport cost + (1 - α) · M · max ρ·γ
   (:mod:`dataflex.selectors.transport`) gives each candidate a selection probability;
4. n examples are drawn from those probabilities with a generator seeded by
   (``seed``, round): i.i.d. (``sampling: multinomial``, the paper's) or distinct
   (``sampling: distinct``, Gumbel top-n); the same draw on every rank.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from dataflex.errors import ConfigError
from dataflex.registry import register_selector
from dataflex.selectors.base import SelectionContext
from dataflex.selectors.embedding_pool import EmbeddingParams, EmbeddingPoolSelector
from dataflex.selectors.pool import PoolRows, RoundScores
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.scoring import gumbel_top_k, unit_rows
from dataflex.selectors.transport import candidate_probabilities, kernel_density, transport_plan


def tsds_probabilities(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    *,
    alpha: float,
    c: float,
    sigma: float,
    max_k: int,
    kde_k: int,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Selection probability of every candidate row, ``(N,)`` fp64 summing to 1, and facts for reports."""
    q, x = queries.to(torch.float64), candidates.to(torch.float64)
    k = min(max_k, x.shape[0])
    if k < 2:
        raise ConfigError(f"tsds needs at least 2 candidates per query (max_k and the pool), got {k}.")
    dist = torch.round(torch.cdist(q, x), decimals=6)  # fp32 batch noise (~1e-7) does not reorder ties
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    near = torch.gather(dist, 1, order)
    union, inverse = torch.unique(order, return_inverse=True)
    rho_union = kernel_density(x[union], sigma, kde_k)
    rho = rho_union[inverse]
    gamma = transport_plan(near, rho, alpha, c)
    probs = candidate_probabilities(gamma, order, x.shape[0])
    facts = {
        "neighbours_per_query": k,
        "support": int((probs > 0).sum()),
        "mean_density": float(rho_union.mean()),
    }
    return probs, facts


@register_selector("tsds")
class TsdsSelector(EmbeddingPoolSelector):
    """TSDS: probabilities from regularised optimal transport to the target, then a seeded draw."""

    requires_eval_dataset = True

    class Params(EmbeddingParams):
        alpha: float = Field(
            default=0.5,
            ge=0.0,
            le=1.0,
            description="Trade-off: 1 pure alignment to the target, 0 pure diversity.",
        )
        cost_scale: float = Field(
            default=1.0,
            gt=0.0,
            description="The paper's C: a constant on the scale of embedding distances.",
        )
        sigma: float = Field(
            default=0.1,
            ge=0.0,
            description="KDE kernel size; 0 turns the density term off (KNN-Uniform).",
        )
        max_k: int = Field(default=5000, ge=2, description="Nearest candidates kept per eval example.")
        kde_k: int = Field(default=1000, ge=1, description="Neighbourhood size of the density estimate.")
        normalize: bool = Field(default=True, description="Scale embeddings to unit length before distances.")
        sampling: Literal["multinomial", "distinct"] = Field(
            default="multinomial",
            description="multinomial: n i.i.d. draws (the paper's); distinct: n different examples.",
        )

    params: Params  # what validate_params builds (Selector declares a BaseModel)

    @property
    def repeats_within_round(self) -> bool:
        """Multinomial draws (the paper's) may repeat an example within a round; distinct ones not."""
        return self.params.sampling == "multinomial"

    def round_candidates(self, ctx: SelectionContext, available: np.ndarray, num_samples: int) -> np.ndarray:
        """The seeded draw; a multinomial round may ask for more than the pool (repeats)."""
        return self.draw_candidates(ctx, available, min(num_samples, len(available)))

    def example_rows(self, ctx: SelectionContext, indices: np.ndarray) -> PoolRows:
        """Each example's embedding under the current model (sharded, gathered, cached)."""
        rows = self.embed(ctx, ctx.train_dataset, indices.tolist())
        return PoolRows(rows.rows, {"cache_hit": rows.cache_hit})

    def score_rows(
        self, ctx: SelectionContext, cands: np.ndarray, rows: PoolRows, num_samples: int
    ) -> RoundScores:
        """Each candidate's selection probability from the transport plan to the eval set."""
        p = self.params
        t0 = time.perf_counter()
        val_set = self.eval_examples(ctx)
        val_rows = self.embed(ctx, val_set, range(len(val_set)))
        q, x = val_rows.rows, rows.rows
        if p.normalize:
            q, x = unit_rows(q, torch.float64), unit_rows(x, torch.float64)
        embed_s = rows.facts["time_rows_s"] + time.perf_counter() - t0
        t1 = time.perf_counter()
        probs, facts = tsds_probabilities(
            q, x, alpha=p.alpha, c=p.cost_scale, sigma=p.sigma, max_k=p.max_k, kde_k=p.kde_k
        )
        return RoundScores(
            values=probs,
            facts={
                **facts,
                "sampling": p.sampling,
                "cache_hit": val_rows.cache_hit and rows.facts["cache_hit"],
                "time_embeddings_s": round(embed_s, 4),
                "time_scoring_s": round(time.perf_counter() - t1, 4),
            },
        )

    def pick(
        self, ctx: SelectionContext, cands: np.ndarray, scores: RoundScores, num_samples: int
    ) -> tuple[list[int], list[float] | None]:
        """``num_samples`` seeded draws from the probabilities: i.i.d. or distinct (Gumbel top-n)."""
        probs = scores.values
        if scores.allowed is not None:  # rescore_fraction < 1: only rows computed this round
            probs = probs * scores.allowed.to(probs.dtype)
        rng = round_rng(self.seed_for(ctx), ctx.round)
        if self.params.sampling == "multinomial":
            pos = rng.choice(len(probs), size=num_samples, replace=True, p=(probs / probs.sum()).numpy())
        else:
            support = int((probs > 0).sum())
            if support < num_samples:
                raise ConfigError(
                    f"tsds: sampling: distinct needs {num_samples} examples with a positive probability but "
                    f"only {support} have one; raise alpha's diversity share (lower alpha), raise max_k, or "
                    "use sampling: multinomial."
                )
            pos = gumbel_top_k(torch.log(probs), num_samples, rng).numpy()
        scores.facts["distinct_selected"] = len({int(cands[i]) for i in pos})
        return [int(i) for i in pos], probs[pos].tolist()
