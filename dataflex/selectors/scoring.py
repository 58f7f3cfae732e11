"""The scoring math shared by the built-in selectors, free of models and I/O.

LESS's matching step (:func:`subtask_scores`, :func:`aggregate`), the
learning-rate-weighted accumulation across rounds (:class:`ScoreAccumulator`),
deterministic top-n, and the seeded choice of which part of the pool is scored
in a round (:func:`candidate_indices`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from dataflex.errors import ConfigError


def unit_rows(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows of ``x`` scaled to unit L2 norm in ``dtype``; an all-zero row stays zero.

    Norms are clamped at 1e-12 in fp32 (LESS's features) and at 1e-300 in fp64
    (embeddings), so only an all-zero row (or one far below any real feature) is
    left unscaled.
    """
    x = x.to(dtype)
    eps = 1e-300 if dtype == torch.float64 else 1e-12
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def subtask_groups(labels: Sequence[Hashable]) -> tuple[list[Hashable], torch.Tensor]:
    """Map per-example subtask labels to group ids.

    Returns:
        ``(names, ids)``: the distinct labels in order of first appearance and a
        ``(M,)`` long tensor giving each example's position in ``names``.
    """
    names: list[Hashable] = []
    lookup: dict[Hashable, int] = {}
    ids = []
    for label in labels:
        if label not in lookup:
            lookup[label] = len(names)
            names.append(label)
        ids.append(lookup[label])
    return names, torch.tensor(ids, dtype=torch.long)


def subtask_scores(train: torch.Tensor, val: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of every training row to each validation subtask.

    Args:
        train: ``(N, k)`` unit-norm training features.
        val: ``(M, k)`` unit-norm validation features.
        group_ids: ``(M,)`` subtask id of each validation row, in ``[0, S)``.

    Returns:
        ``(N, S)`` fp32: entry ``(n, s)`` is the mean over the validation rows of
        subtask ``s`` of ``<train[n], val[m]>`` (the cosine, rows being unit-norm).
    """
    if val.shape[0] != group_ids.shape[0]:
        raise ValueError(f"{val.shape[0]} validation rows but {group_ids.shape[0]} subtask ids.")
    num_groups = int(group_ids.max()) + 1 if group_ids.numel() else 0
    # Mean of inner products == inner product with the mean validation row of the subtask.
    onehot = torch.zeros(num_groups, val.shape[0], dtype=torch.float32, device=val.device)
    onehot[group_ids.to(val.device), torch.arange(val.shape[0], device=val.device)] = 1.0
    centroids = (onehot @ val.float()) / onehot.sum(dim=1, keepdim=True)
    return train.float() @ centroids.to(train.device).T


def aggregate(per_subtask: torch.Tensor) -> torch.Tensor:
    """LESS's round score: the max over subtasks of the per-subtask mean cosine."""
    return per_subtask.max(dim=1).values


class ScoreAccumulator:
    """Cumulative LESS scores ``S_i(z) = sum_{j<=i} lr_j * s_j(z)`` over a fixed pool.

    Examples not scored in a round (subsampled out) keep their previous value.

    Args:
        pool_size: Number of examples in the pool.
        mode: ``"cumulative"`` (the LESS formula) or ``"current"`` (``s_i`` alone).
    """

    def __init__(self, pool_size: int, mode: Literal["cumulative", "current"] = "cumulative") -> None:
        if mode not in ("cumulative", "current"):
            raise ConfigError(f"score_accumulation must be 'cumulative' or 'current', got {mode!r}.")
        self.mode = mode
        self.pool_size = int(pool_size)
        self.total = torch.zeros(self.pool_size, dtype=torch.float64)
        self.rounds = 0

    def add(self, indices: torch.Tensor | Sequence[int], scores: torch.Tensor, lr: float) -> torch.Tensor:
        """Add one round's scores of ``indices`` with weight ``lr``; return their new totals.

        In ``current`` mode the returned values are ``scores`` themselves (unweighted).
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        scores = scores.detach().to(torch.float64).cpu()
        if idx.shape != scores.shape:
            raise ValueError(f"{idx.numel()} indices but {scores.numel()} scores.")
        self.rounds += 1
        if self.mode == "current":
            return scores.clone()
        self.total[idx] += float(lr) * scores
        return self.total[idx].clone()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (the totals as a list of floats)."""
        return {"mode": self.mode, "rounds": self.rounds, "total": self.total.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; refuses a different pool size or mode."""
        total = torch.tensor(state["total"], dtype=torch.float64)
        if total.numel() != self.pool_size:
            raise ValueError(
                f"Saved cumulative scores cover {total.numel()} examples but the pool has {self.pool_size}."
            )
        if state["mode"] != self.mode:
            raise ValueError(f"Saved scores used score_accumulation={state['mode']!r}, not {self.mode!r}.")
        self.total = total
        self.rounds = int(state["rounds"])


def top_n(scores: torch.Tensor, n: int, tiebreak: torch.Tensor | None = None) -> torch.Tensor:
    """Positions of the ``n`` largest scores, best first.

    Equal scores are ordered by ``tiebreak`` (larger first) when given, then by lower
    position. Deterministic, so every rank picks the same examples.
    """
    keys = [np.arange(len(scores))]
    if tiebreak is not None:
        keys.append(-tiebreak.detach().cpu().to(torch.float64).numpy())
    keys.append(-scores.detach().cpu().to(torch.float64).numpy())
    return torch.from_numpy(np.lexsort(keys)[:n].copy())


def gumbel_top_k(log_weights: torch.Tensor, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` distinct positions drawn with probability ∝ ``exp(log_weights)``, in the order drawn.

    Gumbel top-k: the ``n`` largest of ``log_weights`` + Gumbel noise (one draw per
    position from ``rng``) are distributed exactly as ``n`` successive draws without
    replacement. Seeded by ``rng`` alone, so every rank draws the same.
    """
    keys = log_weights.to(torch.float64) + torch.from_numpy(rng.gumbel(size=len(log_weights)))
    return top_n(keys, n)


def candidate_indices(
    available: Sequence[int] | np.ndarray,
    *,
    fraction: float,
    max_candidates: int | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """The part of ``available`` scored in a round: a seeded subsample, kept in pool order.

    Args:
        available: Pool indices that may be chosen this round.
        fraction: Share of ``available`` to score, in ``(0, 1]``.
        max_candidates: Upper bound on the count, or ``None``.
        rng: The round's generator (the same on every rank).
    """
    available = np.asarray(available, dtype=np.int64)
    count = int(np.ceil(fraction * len(available)))
    if max_candidates is not None:
        count = min(count, max_candidates)
    if count >= len(available):
        return available
    return np.sort(rng.choice(available, size=count, replace=False))


def summarize(values: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Min, mean, max and standard deviation, for reports."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.numel() == 0:
        return {}
    return {
        "min": float(v.min()),
        "mean": float(v.mean()),
        "max": float(v.max()),
        "std": float(v.std(unbiased=False)),
    }


def score_histogram(
    values: torch.Tensor | np.ndarray, chosen: Sequence[int] | torch.Tensor | np.ndarray, bins: int = 30
) -> dict[str, list[float] | list[int]]:
    """A round's score distribution over all candidates, and over the chosen ones (reports, plots).

    Args:
        values: The ranking score of every candidate of the round.
        chosen: Positions (into ``values``) of the chosen candidates.
        bins: Number of equal-width bins between the smallest and largest score.

    Returns:
        ``{"edges": bins + 1 floats, "all": counts, "chosen": counts}``.
    """
    v = np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu())
    if v.size == 0:
        return {"edges": [], "all": [], "chosen": []}
    lo, hi = float(v.min()), float(v.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    all_counts, _ = np.histogram(v, bins=edges)
    chosen_counts, _ = np.histogram(v[np.asarray(list(chosen), dtype=np.int64)], bins=edges)
    return {"edges": edges.tolist(), "all": all_counts.tolist(), "chosen": chosen_counts.tolist()}
