"""What the pool-scoring selectors (every built-in but ``random``) share: candidates, shards, cache.

A :class:`PoolSelector` scores a seeded part of the pool each round (all of it by
default), splits the per-example work across ranks with ``ctx.dist.shard``,
gathers the results so that every rank holds the same scores, and remembers
which examples earlier rounds chose (for ``repeat_across_rounds: false``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from dataflex.data.sft_dataset import composition
from dataflex.errors import ConfigError
from dataflex.gradients.batching import balanced_shards
from dataflex.io import check_writable_dir
from dataflex.passes.cache import ScoreCache, data_identity, model_identity
from dataflex.selectors.base import PreflightPlan, SelectionContext, Selector, SelectorParams
from dataflex.selectors.example_loss import dataset_losses
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.scoring import candidate_indices, summarize

logger = logging.getLogger(__name__)


class PoolParams(SelectorParams):
    """Params shared by the selectors that score examples of the pool."""

    seed: int | None = Field(
        default=None, description="Seed of the candidate draw (and projection); None uses the run's seed."
    )
    cache_dir: str | None = Field(
        default=None,
        description="Where features and scores are cached; None uses the run's cache dir (or no cache).",
    )
    candidate_fraction: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Share of the pool scored each round (seeded draw)."
    )
    max_candidates: int | None = Field(
        default=None, ge=1, description="Upper bound on the number of examples scored each round."
    )
    repeat_across_rounds: bool = Field(
        default=False, description="May an example chosen in an earlier round be chosen again."
    )
    batch_size: int = Field(default=8, ge=1, description="Examples per forward/backward pass.")


class PoolSelector(Selector):
    """Base of selectors that score candidates of the pool on every rank's shard."""

    Params = PoolParams
    params: PoolParams  # what validate_params builds (Selector declares a BaseModel)

    def __init__(self, params: BaseModel | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self.chosen: set[int] = set()

    # -- candidates -------------------------------------------------------------------------
    def seed_for(self, ctx: SelectionContext) -> int:
        """The configured seed, or the run's seed when ``seed`` is null."""
        return ctx.seed if self.params.seed is None else int(self.params.seed)

    def check_request(self, ctx: SelectionContext, num_samples: int) -> np.ndarray:
        """Validate the request and return the pool indices that may be chosen this round.

        Raises:
            ConfigError: before any work, when ``num_samples`` exceeds what may be
                chosen (the pool, less earlier rounds' picks without replacement).
        """
        pool = len(ctx.train_dataset)
        name = self.registry_name
        self.check_budget(pool, num_samples)
        available = np.arange(pool, dtype=np.int64)
        if not self.params.repeat_across_rounds and self.chosen:
            available = np.setdiff1d(available, np.fromiter(self.chosen, dtype=np.int64))
            if num_samples > len(available):
                raise ConfigError(
                    f"{name}: asked for {num_samples} examples but only {len(available)} of the "
                    f"{pool} were not chosen in earlier rounds (repeat_across_rounds: false). Set "
                    "repeat_across_rounds: true, lower the per-round budget, or add data."
                )
        return available

    def examples_scored(self, pool_size: int, num_samples: int, round_: int) -> int:
        """The candidates of round ``round_``: a ``candidate_fraction`` of what may still be chosen.

        Without ``repeat_across_rounds`` the earlier rounds' ``num_samples`` picks each are
        no longer candidates; ``max_candidates`` caps the count, and a round never scores
        fewer than it chooses (:meth:`draw_candidates`).
        """
        p = self.params
        available = pool_size if p.repeat_across_rounds else max(pool_size - (round_ - 1) * num_samples, 0)
        count = math.ceil(p.candidate_fraction * available)
        if p.max_candidates is not None:
            count = min(count, p.max_candidates)
        return min(max(count, num_samples), available)

    def draw_candidates(self, ctx: SelectionContext, available: np.ndarray, num_samples: int) -> np.ndarray:
        """The seeded part of ``available`` scored this round (at least ``num_samples``)."""
        p = self.params
        rng = round_rng(self.seed_for(ctx), ctx.round)
        cands = candidate_indices(
            available, fraction=p.candidate_fraction, max_candidates=p.max_candidates, rng=rng
        )
        if len(cands) < num_samples:
            logger.warning(
                "%s: candidate_fraction/max_candidates give %d candidates but the round needs %d; "
                "scoring %d seeded random candidates instead, all of which are chosen, so this round's "
                "selection is random. Raise candidate_fraction to at least %.3g (or max_candidates) for "
                "the scores to choose.",
                self.registry_name,
                len(cands),
                num_samples,
                num_samples,
                2 * num_samples / max(len(available), 1),
            )
            cands = candidate_indices(available, fraction=1.0, max_candidates=num_samples, rng=rng)
        return cands

    # -- distributed work -------------------------------------------------------------------
    @staticmethod
    def sharded(ctx: SelectionContext, count: int, work: Callable[[range], torch.Tensor]) -> torch.Tensor:
        """Run ``work`` on this rank's block of ``range(count)`` and gather every rank's rows.

        Returns the rows for ``range(count)`` in order, identical on every rank; each
        row was computed by exactly one rank.
        """
        local = work(ctx.dist.shard(count))
        return ctx.dist.gather_tensor(local.detach().cpu())

    @staticmethod
    def sharded_by_length(
        ctx: SelectionContext,
        dataset: Sequence[Mapping[str, Any]],
        indices: Sequence[int],
        work: Callable[[list[int]], torch.Tensor],
    ) -> torch.Tensor:
        """Run ``work`` on this rank's share of ``indices`` (dataset positions) and gather.

        Unlike :meth:`sharded`'s contiguous blocks, the shares are dealt by token count
        (:func:`~dataflex.gradients.batching.balanced_shards`), so every rank does the
        same work and, under ZeRO-3 / FSDP, none waits on another's longer batches.
        ``work`` gets its share of ``indices`` (in their order) and returns one row per
        index; the result has the rows of ``indices`` in order, identical on every rank.
        """
        shares = balanced_shards([len(dataset[int(i)]["input_ids"]) for i in indices], ctx.dist.world_size)
        mine = shares[ctx.dist.rank]
        local = work([int(indices[j]) for j in mine]).detach().cpu()
        gathered = ctx.dist.gather_tensor(local)
        out = torch.empty_like(gathered)
        out[torch.as_tensor([j for share in shares for j in share], dtype=torch.long)] = gathered
        return out

    def cache(self, ctx: SelectionContext, kind: str) -> ScoreCache:
        """The score cache of this selector (disabled when no cache dir is set)."""
        return ScoreCache(self.cache_dir(ctx), kind)

    def cache_dir(self, ctx: SelectionContext) -> Path | None:
        """``cache_dir`` from the params, else the run's, else ``None``."""
        return self.cache_location(ctx.cache_dir)

    def cache_location(self, run_cache_dir: Path | None) -> Path | None:
        """``cache_dir`` from the params, else ``run_cache_dir`` (``None``: no cache)."""
        if self.params.cache_dir is not None:
            return Path(self.params.cache_dir)
        return Path(run_cache_dir) if run_cache_dir is not None else None

    def preflight(self, plan: PreflightPlan) -> None:
        """Also refuse a pool that runs dry across rounds and a ``cache_dir`` that cannot be written."""
        super().preflight(plan)
        if not self.params.repeat_across_rounds:
            needed = plan.num_samples * plan.rounds
            if needed > plan.pool_size:
                dry = plan.pool_size // plan.num_samples + 1
                raise ConfigError(
                    f"{self.name}: {plan.rounds} rounds x {plan.num_samples} examples = {needed} distinct "
                    f"examples, but the pool has {plan.pool_size} and repeat_across_rounds: false never "
                    f"picks an example twice, so round {dry} would run dry. Set repeat_across_rounds: true "
                    "in the selector's params, lower update_times or the per-round budget, or add data."
                )
        if self.params.cache_dir:
            check_writable_dir(self.params.cache_dir, f"{self.name}: cache_dir")

    @staticmethod
    def cached(
        ctx: SelectionContext, cache: ScoreCache, fingerprint: Mapping[str, Any]
    ) -> dict[str, torch.Tensor] | None:
        """Rank 0's cache lookup, shared with every rank so that all take the same path."""
        found = cache.load(fingerprint) if ctx.dist.is_main else None
        return ctx.dist.broadcast_object(found)

    @staticmethod
    def store(
        ctx: SelectionContext,
        cache: ScoreCache,
        fingerprint: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
    ) -> None:
        """Write a cache entry from rank 0 only."""
        if ctx.dist.is_main:
            cache.save(fingerprint, tensors)

    def candidate_losses(
        self, ctx: SelectionContext, cands: np.ndarray, *, cache_name: str, selector: str
    ) -> tuple[torch.Tensor, bool]:
        """Each candidate's loss under the current model, and whether it came from the cache.

        The work is split across ranks and gathered; the result is cached under
        ``cache_name``, keyed by the model, step and candidates' data.
        """
        model, collator = ctx.model, ctx.collator
        assert model is not None  # check_context refused a context without them
        assert collator is not None
        cache = self.cache(ctx, cache_name)
        fingerprint = {
            "selector": selector,
            "model": model_identity(model),
            "step": ctx.step,
            "data": data_identity(ctx.train_dataset, cands),
        }
        hit = self.cached(ctx, cache, fingerprint)
        if hit is not None:
            return hit["losses"], True
        cand_list = cands.tolist()

        def work(shard: range) -> torch.Tensor:
            return dataset_losses(
                model,
                ctx.train_dataset,
                cand_list[shard.start : shard.stop],
                collator,
                batch_size=self.params.batch_size,
                device=ctx.device,
            )

        losses = self.sharded(ctx, len(cand_list), work)
        self.store(ctx, cache, fingerprint, {"losses": losses})
        return losses, False

    # -- bookkeeping ------------------------------------------------------------------------
    def remember(self, indices: list[int]) -> None:
        """Record a round's choice (excluded later when ``repeat_across_rounds`` is false)."""
        self.chosen.update(int(i) for i in indices)

    @staticmethod
    def report(
        ctx: SelectionContext, indices: list[int], scores: torch.Tensor, candidates: int, **extra: object
    ) -> dict[str, Any]:
        """The metadata every scoring selector reports."""
        meta: dict[str, Any] = {
            "round": ctx.round,
            "step": ctx.step,
            "learning_rate": float(ctx.learning_rate),
            "candidates": int(candidates),
            "selected": len(indices),
            "candidate_scores": summarize(scores),
        }
        comp = composition(ctx.train_dataset, indices)
        if comp is not None:
            meta["composition"] = comp
        meta.update(extra)
        return meta

    def state_dict(self) -> dict[str, Any]:
        return {"chosen": sorted(self.chosen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state) - {"chosen"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown state keys {sorted(unknown)}.")
        self.chosen = {int(i) for i in state.get("chosen", [])}
