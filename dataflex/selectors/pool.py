"""The pool-scoring base: one round of a selector that scores examples of the pool.

:class:`PoolSelector` is a template method. Its :meth:`~PoolSelector.select` runs the
round: check the context and the request, draw the candidates, compute their
per-example rows (sharded across ranks with ``ctx.dist``, gathered so that every rank
holds the same rows), score them, pick, remember the picks (for
``repeat_across_rounds: false``) and report. A selector supplies only

* :meth:`~PoolSelector.example_rows`: the expensive per-example work (gradient
  features, losses, embeddings) for some pool indices, one row each;
* :meth:`~PoolSelector.score_rows`: the round's scores from its candidates' rows;
* :meth:`~PoolSelector.pick`, where its rule is not the top-n of the scores.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator

from dataflex.data.sft_dataset import composition
from dataflex.errors import ConfigError
from dataflex.gradients.batching import balanced_shards
from dataflex.io import canonical_json, check_writable_dir
from dataflex.passes.cache import ScoreCache, data_identity, model_identity
from dataflex.passes.sharded import cache_lookup, cache_store, sharded_rows
from dataflex.selectors.base import PreflightPlan, Selection, SelectionContext, Selector, SelectorParams
from dataflex.selectors.example_loss import dataset_losses
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.rescoring import ScoreTable, check_rescore_fraction, rescore_count
from dataflex.selectors.scoring import candidate_indices, summarize, top_n

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
    rescore_fraction: float = Field(
        default=1.0,
        description=(
            "Share of a round's candidates whose features/losses are recomputed after the first scored "
            "round (the shortlist of the best, then the least recently scored); the others keep their "
            "last ones. 1: all, exact. docs/rescoring.md."
        ),
    )

    @field_validator("rescore_fraction")
    @classmethod
    def _fraction_range(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(
                "must be in (0, 1]: the share of a round's candidates recomputed after the first round "
                "(1.0 = all, exact; e.g. 0.2)"
            )
        return value


@dataclass
class RoundScores:
    """A round's scores of its candidates, as a selector's :meth:`PoolSelector.score_rows` returns them.

    Attributes:
        values: ``(C,)`` one value per candidate, higher is better: what the default
            :meth:`PoolSelector.pick` ranks by, and the score reported for a chosen one.
        reported: What the report's ``candidate_scores`` summarises (default ``values``).
        tiebreak: ``(C,)`` order of equal ``values`` in the default pick (larger first).
        priority: ``(C,)`` how the round ranks its candidates for the next round's shortlist
            (``rescore_fraction`` < 1; default ``values``).
        weights: ``(C,)`` draw weights of a sampling pick rule (``delta_loss``).
        allowed: ``(C,)`` bool, the candidates the pick may choose: with ``rescore_fraction``
            < 1 those whose rows this round computed (set by :meth:`PoolSelector.score`), so
            no example is chosen on a stale row; ``None``: all.
        detail: Anything else the selector's own pick rule needs (``near``: the similarity matrix).
        candidates: The count reported as the round's candidates (default ``C``).
        rows_ranked: The pool indices whose table rows ``priority`` ranks (set by
            :meth:`PoolSelector.score`: the candidates).
        facts: Small JSON-serialisable facts for the round's report.
    """

    values: torch.Tensor
    reported: torch.Tensor | None = None
    tiebreak: torch.Tensor | None = None
    priority: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    allowed: torch.Tensor | None = None
    detail: Any = None
    candidates: int | None = None
    rows_ranked: np.ndarray | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class PoolRows:
    """Per-example rows of some pool indices, from :meth:`PoolSelector.example_rows`.

    Attributes:
        rows: ``(len(indices), d)`` (or ``(len(indices),)``), identical on every rank.
        facts: Facts of the computation (cache hit, seconds per phase) for the report.
        fresh: Positions of the rows computed this round (``rescore_fraction`` < 1; the
            others come from the score table); ``None``: all of them.
    """

    rows: torch.Tensor
    facts: dict[str, Any] = field(default_factory=dict)
    fresh: np.ndarray | None = None


class PoolSelector(Selector):
    """Base of selectors that score candidates of the pool on every rank's shard."""

    Params = PoolParams
    params: PoolParams  # what validate_params builds (Selector declares a BaseModel)

    def __init__(self, params: BaseModel | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self.chosen: set[int] = set()
        self.table: ScoreTable | None = None
        self._table_checked = False
        self._scored = 0

    @property
    def rescores(self) -> bool:
        """True when later rounds recompute only part of the candidates (``rescore_fraction`` < 1)."""
        return self.params.rescore_fraction < 1.0

    @property
    def computes_rows(self) -> bool:
        """True when :meth:`example_rows` runs the model (``near`` with an embedding file does not)."""
        return True

    # -- the round (template method) ---------------------------------------------------------
    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        """One round: check, draw candidates, score, pick, remember, report.

        The same on every rank: rows are gathered and every later step is deterministic
        given ``(seed, round)``.
        """
        self.check_context(ctx)
        self._scored = 0
        available = self.check_request(ctx, num_samples)
        cands = self.round_candidates(ctx, available, num_samples)
        scores = self.score(ctx, cands, num_samples)
        pos, chosen = self.pick(ctx, cands, scores, num_samples)
        indices = [int(cands[i]) for i in pos]
        self.remember(indices)
        if self.table is not None and scores.rows_ranked is not None:
            ranked = scores.values if scores.priority is None else scores.priority
            self.table.rank(scores.rows_ranked, ranked)
        reported = scores.values if scores.reported is None else scores.reported
        count = len(cands) if scores.candidates is None else scores.candidates
        meta = self.report(ctx, indices, reported, count, **scores.facts, scored=self._scored)
        return Selection(indices=indices, scores=chosen, metadata=meta)

    def check_context(self, ctx: SelectionContext) -> None:
        """What the round needs from ``ctx``, checked before any work: a model and a collator.

        Subclasses extend it (an eval set, a learning rate...).

        Raises:
            ConfigError: naming what is missing.
        """
        if ctx.model is None or ctx.collator is None:
            raise ConfigError(f"{self.registry_name}: the selection context needs a model and a collator.")

    def round_candidates(self, ctx: SelectionContext, available: np.ndarray, num_samples: int) -> np.ndarray:
        """The pool indices scored this round, in order (default: :meth:`draw_candidates`)."""
        return self.draw_candidates(ctx, available, num_samples)

    def score(self, ctx: SelectionContext, cands: np.ndarray, num_samples: int) -> RoundScores:
        """The round's scores of ``cands``: their rows (:meth:`pool_rows`), then :meth:`score_rows`."""
        rows = self.pool_rows(ctx, cands, num_samples)
        t0 = time.perf_counter()
        scores = self.score_rows(ctx, cands, rows, num_samples)
        scores.facts.setdefault("time_scoring_s", round(time.perf_counter() - t0, 4))
        scores.rows_ranked = cands
        if rows.fresh is not None:
            scores.allowed = torch.zeros(len(cands), dtype=torch.bool)
            scores.allowed[torch.as_tensor(rows.fresh, dtype=torch.long)] = True
        return scores

    def pool_rows(self, ctx: SelectionContext, cands: np.ndarray, num_samples: int) -> PoolRows:
        """The rows of ``cands``: all computed now, or (``rescore_fraction`` < 1) some from the table.

        Which candidates are recomputed is the rule of :mod:`dataflex.selectors.rescoring`
        (``num_samples`` sizes the shortlist); the others' rows are the ones last
        computed. Counts the computed rows into the round's ``scored``.
        """
        t0 = time.perf_counter()
        if not self.rescores:
            rows = self.example_rows(ctx, cands)
            self._scored += len(cands) if self.computes_rows else 0
        else:
            table = self.score_table(ctx)
            pos = table.rescored(cands, num_samples, self.params.rescore_fraction, self.seed_for(ctx))
            fresh = self.example_rows(ctx, cands[pos])
            self._scored += len(pos) if self.computes_rows else 0
            table.update(cands, pos, fresh.rows, ctx.round)
            rows = PoolRows(table.gather(cands), fresh.facts, fresh=pos)
        rows.facts.setdefault("time_rows_s", time.perf_counter() - t0)
        return rows

    def score_table(self, ctx: SelectionContext) -> ScoreTable:
        """The table of last computed rows, for this pool's data and base model.

        A table restored from a checkpoint is checked once against the run's data and
        base model (everything of :func:`~dataflex.passes.cache.model_identity` but
        the trained weights, which change every round by design); one computed for
        other data or another model is dropped with a warning and recomputed.
        """
        if self.table is not None and self._table_checked:
            return self.table
        assert ctx.model is not None  # check_context refused a context without one
        identity = model_identity(ctx.model)
        identity.pop("trainable_hash", None)
        key = {
            "selector": self.registry_name,
            "data": data_identity(ctx.train_dataset, range(len(ctx.train_dataset))),
            "model": identity,
        }
        if self.table is not None and canonical_json(self.table.key) != canonical_json(key):
            logger.warning(
                "%s: the score table of the restored state was computed for other data or another base "
                "model; it is dropped and every candidate is rescored this round.",
                self.registry_name,
            )
            self.table = None
        if self.table is None:
            self.table = ScoreTable(len(ctx.train_dataset), key)
        self._table_checked = True
        return self.table

    def examples_scored(self, pool_size: int, num_samples: int, round_: int) -> int:
        """Pool examples whose rows round ``round_`` (1-based) computes, as planned.

        The first scored round computes every candidate; with ``rescore_fraction`` < 1 a
        later one computes ``floor(rescore_fraction x candidates)`` (more when
        ``candidate_fraction`` < 1 draws candidates never scored before). Candidates:
        the pool (less earlier rounds' ``num_samples`` picks each under
        ``repeat_across_rounds: false``), cut by ``candidate_fraction`` /
        ``max_candidates``, at least ``num_samples``.
        """
        if round_ < 1 or not self.computes_rows:
            return 0
        p = self.params
        available = pool_size if p.repeat_across_rounds else max(0, pool_size - (round_ - 1) * num_samples)
        count = self.planned_candidates(available, num_samples)
        return count if round_ == 1 or not self.rescores else rescore_count(p.rescore_fraction, count)

    def planned_candidates(self, available: int, budget: int) -> int:
        """Candidates of a round with ``available`` choosable examples (the draw's count)."""
        p = self.params
        count = math.ceil(p.candidate_fraction * available)
        if p.max_candidates is not None:
            count = min(count, p.max_candidates)
        return min(available, max(count, budget))

    def check_budget(self, pool_size: int, num_samples: int) -> None:
        """Also refuse, before the model loads, a ``rescore_fraction`` that rescores only the shortlist."""
        super().check_budget(pool_size, num_samples)
        if self.rescores:
            check_rescore_fraction(
                self.registry_name,
                self.params.rescore_fraction,
                self.planned_candidates(pool_size, num_samples),
                num_samples,
            )

    def example_rows(self, ctx: SelectionContext, indices: np.ndarray) -> PoolRows:
        """The per-example work of the round for pool ``indices``: one row each, gathered.

        Default: :meth:`rows_of` on this rank's share of ``indices`` (dealt by token
        count, :meth:`sharded_by_length`), gathered so that every rank holds every row.
        The built-in selectors override it with their sharded, cached passes.
        """
        rows = self.sharded_by_length(
            ctx, ctx.train_dataset, [int(i) for i in indices], lambda share: self.rows_of(ctx, share)
        )
        return PoolRows(rows)

    def rows_of(self, ctx: SelectionContext, indices: list[int]) -> torch.Tensor:
        """This rank's rows: one per pool index of ``indices`` (a tensor of ``len(indices)`` rows)."""
        raise NotImplementedError(
            f"{type(self).__name__} implements none of rows_of, example_rows or score (PoolSelector)."
        )

    def score_rows(
        self, ctx: SelectionContext, cands: np.ndarray, rows: PoolRows, num_samples: int
    ) -> RoundScores:
        """The round's scores of ``cands`` from their rows (cheap: no model work)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither score_rows nor score.")

    def pick(
        self, ctx: SelectionContext, cands: np.ndarray, scores: RoundScores, num_samples: int
    ) -> tuple[list[int], list[float] | None]:
        """Positions (into ``cands``) of the round's choice, in training order, and their scores.

        Default: the ``num_samples`` best ``scores.values`` among ``scores.allowed``, ties
        by ``scores.tiebreak``, then by lower position.
        """
        values = scores.values
        if scores.allowed is not None:
            values = values.masked_fill(~scores.allowed, -math.inf)
        pos = top_n(values, num_samples, tiebreak=scores.tiebreak)
        return pos.tolist(), scores.values[pos].tolist()

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
        """:func:`~dataflex.passes.sharded_rows` on the context's ranks."""
        return sharded_rows(ctx.dist, count, work)

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
        """:func:`~dataflex.passes.cache_lookup` on the context's ranks (rank 0 reads, all get it)."""
        return cache_lookup(ctx.dist, cache, fingerprint)

    @staticmethod
    def store(
        ctx: SelectionContext,
        cache: ScoreCache,
        fingerprint: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
    ) -> None:
        """:func:`~dataflex.passes.cache_store` on the context's ranks (rank 0 writes)."""
        cache_store(ctx.dist, cache, fingerprint, tensors)

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
        state: dict[str, Any] = {"chosen": sorted(self.chosen)}
        if self.table is not None:
            state["score_table"] = self.table.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state) - {"chosen", "score_table"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown state keys {sorted(unknown)}.")
        self.chosen = {int(i) for i in state.get("chosen", [])}
        table = state.get("score_table")
        self.table = None if table is None else ScoreTable.from_state(table)
        self._table_checked = False
