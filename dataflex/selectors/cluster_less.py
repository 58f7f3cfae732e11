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
from dataflex.selectors.base import PreflightPlan, Selection, SelectionContext
from dataflex.selectors.embedding_pool import EmbeddingParams, EmbeddingPoolSelector, unit_rows64
from dataflex.selectors.kmeans import kmeans
from dataflex.selectors.less import LessSelector
from dataflex.selectors.less_features import check_less_inputs
from dataflex.selectors.random_selector import round_rng
from dataflex.selectors.scoring import aggregate, top_n

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

    # -- clustering -------------------------------------------------------------------------
    def refresh(self, ctx: SelectionContext, cands: np.ndarray) -> float:
        """Embed and cluster ``cands``; returns the seconds spent embedding."""
        k = self.params.num_clusters
        if k > len(cands):
            raise ConfigError(
                f"cluster_less: num_clusters is {k} but round {ctx.round} has only {len(cands)} candidates; "
                "lower num_clusters or raise candidate_fraction/max_candidates."
            )
        rows = self.embed(ctx, ctx.train_dataset, cands.tolist())
        x = unit_rows64(rows.rows).numpy()
        rng = round_rng(self.seed_for(ctx), ctx.round)
        self.clusters = [[int(cands[r]) for r in m] for m in cluster_members(x, k, rng)]
        self.clustered_round = ctx.round
        return rows.time_s

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

    # -- selection --------------------------------------------------------------------------
    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        self.eval_examples(ctx)
        self.less.check_context(ctx)
        available = self.check_request(ctx, num_samples)
        embed_s = 0.0
        refreshed = self.needs_refresh(ctx, available, num_samples)
        if refreshed:
            cands = self.draw_candidates(ctx, available, num_samples)
            embed_s = self.refresh(ctx, cands)
        assert self.clusters is not None
        r = self.params.representatives
        reps = [m[:r] for m in self.clusters]
        flat = np.array([i for rs in reps for i in rs], dtype=np.int64)
        result = self.less.score_candidates(ctx, flat)
        facts = result.metadata
        t0 = time.perf_counter()
        owner = torch.tensor([c for c, rs in enumerate(reps) for _ in rs])
        per_cluster = torch.zeros(len(reps), result.per_subtask.shape[1], dtype=torch.float64)
        per_cluster.index_add_(0, owner, result.per_subtask.double())
        per_cluster /= torch.tensor([len(rs) for rs in reps], dtype=torch.float64)[:, None]
        cluster_scores = aggregate(per_cluster)
        indices, scores = self.fill(ctx, available, cluster_scores, num_samples)
        self.remember(indices)
        clustered = sum(len(m) for m in self.clusters)
        assert ctx.eval_dataset is not None  # check_context refused a context without it
        val_rows = len(ctx.eval_dataset)
        meta = self.report(
            ctx,
            indices,
            cluster_scores,
            clustered,
            transform=facts["transform"],
            subtasks=result.subtasks,
            clusters=len(self.clusters),
            clustered_round=self.clustered_round,
            refreshed=refreshed,
            clusters_used=len({c for c in self._owners(indices)}),
            feature_rows=len(flat) + val_rows,
            less_feature_rows=clustered + val_rows,
            feature_share=round((len(flat) + val_rows) / (clustered + val_rows), 4),
            cache_hit=facts["cache_hit"],
            time_embeddings_s=round(embed_s, 4),
            time_features_s=round(facts["time_features_s"], 4),
            time_scoring_s=round(facts["time_scoring_s"] + time.perf_counter() - t0, 4),
        )
        return Selection(indices=indices, scores=scores, metadata=meta)

    def fill(
        self, ctx: SelectionContext, available: np.ndarray, cluster_scores: torch.Tensor, num_samples: int
    ) -> tuple[list[int], list[float]]:
        """Members of the best clusters, best cluster first, ``pick`` order within a cluster."""
        assert self.clusters is not None
        allowed = set(available.tolist())
        rng = round_rng(self.seed_for(ctx), ctx.round)
        indices: list[int] = []
        scores: list[float] = []
        for c in top_n(cluster_scores, len(cluster_scores)).tolist():
            members = [i for i in self.clusters[c] if i in allowed]
            if self.params.pick == "random":
                members = [members[j] for j in rng.permutation(len(members))]
            take = members[: num_samples - len(indices)]
            indices.extend(take)
            scores.extend([float(cluster_scores[c])] * len(take))
            if len(indices) == num_samples:
                break
        return indices, scores

    def _owners(self, indices: list[int]) -> list[int]:
        assert self.clusters is not None
        owner = {i: c for c, m in enumerate(self.clusters) for i in m}
        return [owner[i] for i in indices]

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
