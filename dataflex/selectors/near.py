"""``near``: nearest neighbours of the target set in the current model's embedding space.

Each round, the candidates and the validation examples are embedded with the current
model (:mod:`dataflex.embeddings`: mean-pooled hidden states), and every validation
example ranks the candidates by cosine similarity. The per-example top-k lists are
merged into one budget of n by rank level: all validation examples' first
neighbours, then all second neighbours, ..., each level in order of decreasing
similarity (ties: lower validation index, then lower pool index), skipping examples
already taken, until n are chosen. This is the smallest k for which the union of the
top-k lists holds n examples, with the last level cut by similarity.

Optionally the embeddings come from a file (``embedding_file``) instead of the model:
see :func:`read_embedding_file`; it is validated when the config is read.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator

from dataflex.errors import ConfigError
from dataflex.registry import register_selector
from dataflex.selectors.base import SelectionContext
from dataflex.selectors.embedding_file import EmbeddingFile, read_embedding_file
from dataflex.selectors.embedding_pool import EmbeddingParams, EmbeddingPoolSelector
from dataflex.selectors.pool import PoolRows, RoundScores
from dataflex.selectors.scoring import unit_rows


def merge_neighbours(sim: torch.Tensor, n: int) -> tuple[list[int], list[float]]:
    """Merge per-query top-k lists of ``sim`` (queries × candidates) into ``n`` distinct columns.

    Returns:
        The chosen column positions, in the order taken, and each one's similarity to the
        query that took it.
    """
    sim = sim.to(torch.float64)
    num_q, num_c = sim.shape
    if n > num_c:
        raise ValueError(f"cannot take {n} distinct candidates from {num_c}.")
    # per query: candidates by decreasing similarity, ties by lower position (stable sort)
    order = torch.sort(-sim, dim=1, stable=True).indices
    taken: list[int] = []
    scores: list[float] = []
    seen: set[int] = set()
    queries = torch.arange(num_q)
    for level in range(num_c):
        cols = order[:, level]
        vals = sim[queries, cols]
        level_order = np.lexsort((np.arange(num_q), -vals.numpy()))
        for q in level_order:
            c = int(cols[q])
            if c in seen:
                continue
            seen.add(c)
            taken.append(c)
            scores.append(float(vals[q]))
            if len(taken) == n:
                return taken, scores
    return taken, scores


@register_selector("near")
class NearSelector(EmbeddingPoolSelector):
    """Per validation example, its nearest candidates by cosine in embedding space."""

    requires_eval_dataset = True

    class Params(EmbeddingParams):
        embedding_file: str | None = Field(
            default=None,
            description=(
                "Precomputed embeddings (safetensors: train (N, d), eval (M, d), optional train_indices) "
                "used instead of the model's; null: embed with the current model each round."
            ),
        )

        @field_validator("embedding_file")
        @classmethod
        def _valid_file(cls, value: str | None) -> str | None:
            if value is not None:
                read_embedding_file(value)
            return value

    params: Params  # what validate_params builds (Selector declares a BaseModel)

    def __init__(self, params: BaseModel | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self._file: EmbeddingFile | None = None

    def embedding_file(self) -> EmbeddingFile | None:
        """The validated embedding file, read once, or ``None``."""
        if self.params.embedding_file is None:
            return None
        if self._file is None:
            self._file = read_embedding_file(self.params.embedding_file)
        return self._file

    @property
    def computes_rows(self) -> bool:
        """False with an embedding file: its rows are read, not computed."""
        return self.params.embedding_file is None

    def check_budget(self, pool_size: int, num_samples: int) -> None:
        """Also check, before the model loads, that the embedding file fits the pool."""
        file = self.embedding_file()
        if file is not None:
            file.check_pool(pool_size)
            if self.rescores:
                raise ConfigError(
                    f"near: rescore_fraction: {self.params.rescore_fraction} spares recomputing embeddings, "
                    "but with embedding_file none are computed (the file's rows are read); remove "
                    "rescore_fraction (valid range (0, 1], default 1.0) or embedding_file."
                )
        super().check_budget(pool_size, num_samples)

    def check_context(self, ctx: SelectionContext) -> None:
        """A validation set; a model and a collator unless the embeddings come from a file."""
        if self.embedding_file() is None:
            super().check_context(ctx)
        else:
            self.eval_examples(ctx)

    def round_candidates(self, ctx: SelectionContext, available: np.ndarray, num_samples: int) -> np.ndarray:
        """The seeded draw, from the pool rows the embedding file covers when there is one."""
        file = self.embedding_file()
        if file is not None:
            file.check_pool(len(ctx.train_dataset))
            file.check_eval(len(self.eval_examples(ctx)))
            available = np.intersect1d(available, file.pool_indices())
            if len(available) < num_samples:
                raise ConfigError(
                    f"near: {Path(file.path).name} covers {len(available)} choosable pool "
                    f"examples but the round needs {num_samples}; add rows to the file or lower the budget."
                )
        return self.draw_candidates(ctx, available, num_samples)

    def example_rows(self, ctx: SelectionContext, indices: np.ndarray) -> PoolRows:
        """Each example's embedding: the file's row, or the current model's (sharded, gathered, cached)."""
        file = self.embedding_file()
        if file is not None:
            return PoolRows(file.rows_for(indices), {"cache_hit": False})
        rows = self.embed(ctx, ctx.train_dataset, indices.tolist())
        return PoolRows(rows.rows, {"cache_hit": rows.cache_hit})

    def score_rows(
        self, ctx: SelectionContext, cands: np.ndarray, rows: PoolRows, num_samples: int
    ) -> RoundScores:
        """Cosines of every validation example to every candidate; a candidate's value is its best."""
        t0 = time.perf_counter()
        file = self.embedding_file()
        if file is not None:
            val, cache_hit = file.eval, False
        else:
            val_set = self.eval_examples(ctx)
            val_rows = self.embed(ctx, val_set, range(len(val_set)))
            val, cache_hit = val_rows.rows, val_rows.cache_hit and rows.facts["cache_hit"]
        embed_s = rows.facts["time_rows_s"] + time.perf_counter() - t0
        t1 = time.perf_counter()
        # cosines compared at 1e-6: fp32 embeddings of one example in different batches differ
        # by ~1e-7, and 1 and N processes batch differently; ties go to the lower pool index
        sim = torch.round(unit_rows(val, torch.float64) @ unit_rows(rows.rows, torch.float64).T, decimals=6)
        return RoundScores(
            values=sim.max(dim=0).values,
            detail=sim,
            facts={
                "source": "file" if file is not None else "model",
                "cache_hit": cache_hit,
                "time_embeddings_s": round(embed_s, 4),
                "time_scoring_s": round(time.perf_counter() - t1, 4),
            },
        )

    def pick(
        self, ctx: SelectionContext, cands: np.ndarray, scores: RoundScores, num_samples: int
    ) -> tuple[list[int], list[float] | None]:
        """The per-example neighbour lists merged by rank level (:func:`merge_neighbours`)."""
        sim = scores.detail
        if scores.allowed is not None:  # rescore_fraction < 1: only rows computed this round
            sim = sim.masked_fill(~scores.allowed[None, :], -math.inf)
        pos, chosen = merge_neighbours(sim, num_samples)
        scores.facts["neighbours_per_query"] = _levels_used(sim, pos)
        return pos, chosen


def _levels_used(sim: torch.Tensor, taken: list[int]) -> int:
    """The k of the merge: the deepest rank level any chosen candidate was taken from."""
    if not taken:
        return 0
    ranks = torch.sort(-sim, dim=1, stable=True).indices.argsort(dim=1)
    return int(ranks[:, taken].min(dim=0).values.max()) + 1
