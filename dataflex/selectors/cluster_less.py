"""``cluster_less``: LESS scores for a few representatives per cluster of the pool, not every candidate.

At a refresh round (every ``refresh_every`` rounds, and the first), the candidates are
embedded with the current model (:mod:`dataflex.embeddings`), scaled to unit length and
clustered by seeded k-means (:mod:`dataflex.selectors.kmeans`, identical on every
rank); each cluster's members are ordered by distance to its centroid. Every round:

1. the ``representatives`` members nearest each centroid get LESS features and
   per-subtask scores under the current model and optimizer (LESS's own feature
   pipeline: same transform, projector and cache, :class:`~dataflex.selectors.less.LessSelector`);
2. a cluster's score is the max over subtasks of its representatives' mean
   per-subtask cosine (LESS's matching step applied to the cluster);
3. the clusters are taken best first and the budget filled with their members that may
   be chosen, in the order of ``pick``: ``centroid`` (nearest the centroid first) or
   ``random`` (a shuffle seeded by (``seed``, round)).

Feature cost: (clusters × representatives + validation) rows per round instead of
LESS's (candidates + validation); reported as ``feature_share``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator

from dataflex.errors import ConfigError
from dataflex.registry import register_selector
from dataflex.selectors.base import PreflightPlan, SelectionContext
from dataflex.selectors.embedding_pool import EmbeddingParams, EmbeddingPoolSelector
from dataflex.selectors.kmeans import kmeans
from dataflex.selectors.less import LessSelector
from dataflex.selectors.less_features import check_less_inputs
from dataflex.selectors.pool import PoolRows, RoundScores
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.scoring import aggregate, top_n, unit_rows

logger = logging.getLogger(__name__)

_LESS_KEYS = ("gradient_type", "proj_dim", "projector", "subtask_field", "feature_dtype", "seed", "cache_dir")


def cluster_members(x: np.ndarray, num_clusters: int, rng: np.random.Generator) -> list[list[int]]:
    """k-means of the rows of ``x``; per cluster, its row positions by distance to the centroid.

    Squared distances are compared at 1e-6 (ties: lower position): exact ties are common (the
    two members of a two-point cluster) and embeddings computed in different batches differ
    in their last bits, so 1 and N processes would otherwise order tied members differently.
    """
    result = kmeans(x, num_clusters, rng)
    d2 = np.round(((x - result.centroids[result.labels]) ** 2).sum(axis=1), 6)
    members = []
    for c in range(num_clusters):
        rows = np.nonzero(result.labels == c)[0]
        members.append([int(r) for r in rows[np.lexsort((rows, d2[rows]))]])
    return members


@register_selector("cluster_less")
class ClusterLessSelector(EmbeddingPoolSelector):
    """Cluster the pool in embedding space; score clusters by LESS on a few representatives each."""

    requires_eval_dataset = True

    class Params(EmbeddingParams):
        num_clusters: int = Field(default=64, ge=1, description="Number of k-means clusters of the pool.")
        representatives: int = Field(
            default=4, ge=1, description="Members nearest each centroid that get LESS features."
        )
        pick: Literal["centroid", "random"] = Field(
            default="centroid",
            description="In-cluster order of picks: nearest the centroid first, or a seeded shuffle.",
        )
        refresh_every: int = Field(
            default=1, ge=1, description="Re-embed and re-cluster every this many rounds (1: every round)."
        )
        gradient_type: Literal["adam", "sgd", "sign"] = LessSelector.Params.model_fields["gradient_type"]  # type: ignore[assignment]  # pydantic takes a FieldInfo as the default
        proj_dim: int = LessSelector.Params.model_fields["proj_dim"]  # type: ignore[assignment]  # pydantic takes a FieldInfo as the default
        projector: str = LessSelector.Params.model_fields["projector"]  # type: ignore[assignment]  # pydantic takes a FieldInfo as the default
        subtask_field: str | None = LessSelector.Params.model_fields["subtask_field"]  # type: ignore[assignment]  # pydantic takes a FieldInfo as the default
        feature_dtype: Literal["float16", "float32"] = LessSelector.Params.model_fields["feature_dtype"]  # type: ignore[assignment]  # pydantic takes a FieldInfo as the default

        @field_validator("projector")
        @classmethod
        def _known_projector(cls, value: str) -> str:
            return LessSelector.Params._known_projector(value)

    params: Params  # what validate_params builds (Selector declares a BaseModel)

    def __init__(self, params: BaseModel | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        less_params = {k: getattr(p, k) for k in _LESS_KEYS}
        self.less = LessSelector(
            LessSelector.validate_params(
                {**less_params, "batch_size": p.batch_size, "score_accumulation": "current"}
            )
        )
        self.clusters: list[list[int]] | None = None
        self.clustered_round: int | None = None
        self._refreshed = False  # this round's: re-clustered, and the seconds spent embedding
        self._embed_s = 0.0

    def check_budget(self, pool_size: int, num_samples: int) -> None:
        """Also refuse, before the model loads, more clusters than pool examples."""
        if pool_size > 0 and self.params.num_clusters > pool_size:
            raise ConfigError(
                f"cluster_less: num_clusters is {self.params.num_clusters} but the pool has {pool_size} "
                "examples; lower num_clusters (at most the pool size, typically pool / 50 or less)."
            )
        super().check_budget(pool_size, num_samples)

    def preflight(self, plan: PreflightPlan) -> None:
        """Also check the target set's subtask labels, the projector's device and the features' size."""
        check_less_inputs(
            self.name, self.params, plan, self.cache_location(plan.cache_dir), self.less.subtask_labels
        )
        super().preflight(plan)

    def examples_scored(self, pool_size: int, num_samples: int, round_: int) -> int:
        """Representatives' LESS features every round, plus the embeddings of a refresh round."""
        if round_ < 1:
            return 0
        reps = self.params.num_clusters * self.params.representatives
        refresh = (round_ - 1) % self.params.refresh_every == 0
        return reps + (super().examples_scored(pool_size, num_samples, round_) if refresh else 0)

    # -- clustering -------------------------------------------------------------------------
    def refresh(self, ctx: SelectionContext, cands: np.ndarray, num_samples: int) -> float:
        """Embed and cluster ``cands``; returns the seconds spent embedding.

        With ``rescore_fraction`` < 1 only part of ``cands`` is re-embedded (the rule of
        :mod:`dataflex.selectors.rescoring`); the others keep their last embeddings.
        """
        k = self.params.num_clusters
        if k > len(cands):
            raise ConfigError(
                f"cluster_less: num_clusters is {k} but round {ctx.round} has only {len(cands)} candidates; "
                "lower num_clusters or raise candidate_fraction/max_candidates."
            )
        rows = self.pool_rows(ctx, cands, num_samples)
        x = unit_rows(rows.rows, torch.float64).numpy()
        rng = round_rng(self.seed_for(ctx), ctx.round)
        self.clusters = [[int(cands[r]) for r in m] for m in cluster_members(x, k, rng)]
        self.clustered_round = ctx.round
        return float(rows.facts["time_rows_s"])

    def example_rows(self, ctx: SelectionContext, indices: np.ndarray) -> PoolRows:
        """Each example's embedding under the current model (sharded, gathered, cached)."""
        rows = self.embed(ctx, ctx.train_dataset, indices.tolist())
        return PoolRows(rows.rows, {"cache_hit": rows.cache_hit})

    def needs_refresh(self, ctx: SelectionContext, available: np.ndarray, num_samples: int) -> bool:
        """First round, schedule due, or too few choosable members left in the clusters."""
        if self.clusters is None or self.clustered_round is None:
            return True
        if ctx.round - self.clustered_round >= self.params.refresh_every:
            return True
        allowed = set(available.tolist())
        left = sum(1 for m in self.clusters for i in m if i in allowed)
        if left < num_samples:
            logger.info(
                "cluster_less round %d: the clusters of round %d hold %d choosable examples, fewer than the "
                "%d needed; re-clustering early.",
                ctx.round,
                self.clustered_round,
                left,
                num_samples,
            )
            return True
        return False

    # -- the round ----------------------------------------------------------------------------
    def check_context(self, ctx: SelectionContext) -> None:
        """A validation set, then what LESS needs (model, collator, subtasks, learning rate)."""
        self.eval_examples(ctx)
        self.less.check_context(ctx)

    def round_candidates(self, ctx: SelectionContext, available: np.ndarray, num_samples: int) -> np.ndarray:
        """The clusters' choosable members, cluster by cluster, nearest the centroid first.

        Re-embeds and re-clusters a seeded draw of ``available`` first when due.
        """
        self._embed_s = 0.0
        self._refreshed = self.needs_refresh(ctx, available, num_samples)
        if self._refreshed:
            cands = self.draw_candidates(ctx, available, num_samples)
            self._embed_s = self.refresh(ctx, cands, num_samples)
        assert self.clusters is not None
        allowed = set(available.tolist())
        return np.array([i for m in self.clusters for i in m if i in allowed], dtype=np.int64)

    def score(self, ctx: SelectionContext, cands: np.ndarray, num_samples: int) -> RoundScores:
        """LESS on each cluster's representatives; a member's value is its cluster's score."""
        assert self.clusters is not None
        r = self.params.representatives
        reps = [m[:r] for m in self.clusters]
        flat = np.array([i for rs in reps for i in rs], dtype=np.int64)
        result = self.less.score_candidates(ctx, flat)
        self._scored += len(flat)
        facts = result.metadata
        t0 = time.perf_counter()
        owner = torch.tensor([c for c, rs in enumerate(reps) for _ in rs])
        per_cluster = torch.zeros(len(reps), result.per_subtask.shape[1], dtype=torch.float64)
        per_cluster.index_add_(0, owner, result.per_subtask.double())
        per_cluster /= torch.tensor([len(rs) for rs in reps], dtype=torch.float64)[:, None]
        cluster_scores = aggregate(per_cluster)
        cluster_of = {i: c for c, m in enumerate(self.clusters) for i in m}
        members = torch.tensor([cluster_of[int(i)] for i in cands], dtype=torch.long)
        clustered = sum(len(m) for m in self.clusters)
        assert ctx.eval_dataset is not None  # check_context refused a context without it
        val_rows = len(ctx.eval_dataset)
        return RoundScores(
            values=cluster_scores[members],
            reported=cluster_scores,
            detail=(cluster_scores, members),
            candidates=clustered,
            rows_ranked=cands,
            facts={
                "transform": facts["transform"],
                "subtasks": result.subtasks,
                "clusters": len(self.clusters),
                "clustered_round": self.clustered_round,
                "refreshed": self._refreshed,
                "feature_rows": len(flat) + val_rows,
                "less_feature_rows": clustered + val_rows,
                "feature_share": round((len(flat) + val_rows) / (clustered + val_rows), 4),
                "cache_hit": facts["cache_hit"],
                "time_embeddings_s": round(self._embed_s, 4),
                "time_features_s": round(facts["time_features_s"], 4),
                "time_scoring_s": round(facts["time_scoring_s"] + time.perf_counter() - t0, 4),
            },
        )

    def pick(
        self, ctx: SelectionContext, cands: np.ndarray, scores: RoundScores, num_samples: int
    ) -> tuple[list[int], list[float] | None]:
        """Members of the best clusters, best cluster first, ``pick`` order within a cluster."""
        cluster_scores, members = scores.detail
        rng = round_rng(self.seed_for(ctx), ctx.round)
        pos: list[int] = []
        chosen: list[float] = []
        for c in top_n(cluster_scores, len(cluster_scores)).tolist():
            inside = torch.nonzero(members == c).flatten().tolist()
            if self.params.pick == "random":
                inside = [inside[j] for j in rng.permutation(len(inside))]
            take = inside[: num_samples - len(pos)]
            pos.extend(take)
            chosen.extend([float(cluster_scores[c])] * len(take))
            if len(pos) == num_samples:
                break
        scores.facts["clusters_used"] = len({int(members[q]) for q in pos})
        return pos, chosen

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["clusters"] = self.clusters
        state["clustered_round"] = self.clustered_round
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        clusters = state.pop("clusters", None)
        clustered_round = state.pop("clustered_round", None)
        super().load_state_dict(state)
        self.clusters = [[int(i) for i in m] for m in clusters] if clusters is not None else None
        self.clustered_round = int(clustered_round) if clustered_round is not None else None
