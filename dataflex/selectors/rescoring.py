"""Which candidates a round recomputes (``rescore_fraction``), and the table of their last rows.

The rule (docs/rescoring.md): with ``rescore_fraction`` f < 1 and C candidates in a
round, a round recomputes the rows (features, losses, embeddings) of

1. every candidate that has no row yet (all of them in the first scored round);
2. the shortlist: the ``budget`` candidates that ranked best in the last round that
   ranked them (what the selector's pick ranks by: LESS's cumulative score, ...);
3. the least recently computed of the others, ties in a fixed seeded shuffle of the
   pool, until ``floor(f * C)`` rows are computed in all,

and takes every other candidate's row from the table, as computed in an earlier round.
f = 1 recomputes every candidate each round (exact): no table is kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dataflex.errors import ConfigError
from dataflex.selectors.scoring import top_n

_ROTATION_STREAM = 0xFFFFFFFF
"""Second word of the seed of the rotation shuffle (rounds use 0, 1, 2, ...)."""


def rescore_count(fraction: float, candidates: int) -> int:
    """Rows a round after the first recomputes: ``floor(fraction * candidates)``, at least 1."""
    if fraction >= 1.0:
        return candidates
    return max(1, math.floor(fraction * candidates))


def check_rescore_fraction(name: str, fraction: float, candidates: int, budget: int) -> None:
    """Refuse a ``rescore_fraction`` under which no example outside the shortlist is rescored.

    Args:
        name: The selector, for the message.
        fraction: ``rescore_fraction``.
        candidates: Candidates of a round (the pool, or what candidate_fraction /
            max_candidates leave of it).
        budget: Examples a round chooses (the shortlist's size).

    Raises:
        ConfigError: naming the value and the valid range.
    """
    if fraction >= 1.0:
        return
    count = rescore_count(fraction, candidates)
    if count > budget:
        return
    low = math.ceil((budget + 1) / candidates * 1e4 - 1e-6) / 1e4  # rounded up: the value to type
    while rescore_count(low, candidates) <= budget:
        low += 1e-4
    fix = (
        f"use a rescore_fraction of at least {low:.4g} (valid range [{low:.4g}, 1] for this pool and budget)"
        if low < 1
        else "no fraction below 1 leaves room for that here: use rescore_fraction: 1.0"
    )
    raise ConfigError(
        f"{name}: rescore_fraction: {fraction} recomputes {count} of a round's {candidates} candidates, no "
        f"more than the shortlist of the round's {budget} best, so no other example would ever be "
        f"rescored; {fix}."
    )


def rotation_rank(seed: int, pool_size: int) -> np.ndarray:
    """Each pool index's place in the run's fixed shuffle (the rotation's tie order)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _ROTATION_STREAM]))
    rank = np.empty(pool_size, dtype=np.int64)
    rank[rng.permutation(pool_size)] = np.arange(pool_size)
    return rank


class ScoreTable:
    """The last computed row of every pool example, when and how well it ranked.

    Args:
        pool_size: Examples in the pool.
        key: What the rows depend on beyond the trained weights (data, base model);
            a table is used only with the same key.
    """

    def __init__(self, pool_size: int, key: Mapping[str, Any]) -> None:
        self.pool_size = int(pool_size)
        self.key = dict(key)
        self.rows: torch.Tensor | None = None
        self.scored_round = torch.full((self.pool_size,), -1, dtype=torch.long)
        self.priority = torch.full((self.pool_size,), math.nan, dtype=torch.float64)

    def rescored(self, cands: np.ndarray, budget: int, fraction: float, seed: int) -> np.ndarray:
        """Positions (into ``cands``, increasing) of the candidates this round recomputes."""
        idx = torch.as_tensor(cands, dtype=torch.long)
        last = self.scored_round[idx].numpy()
        never = last < 0
        chosen = never.copy()
        seen = np.nonzero(~never)[0]
        count = rescore_count(fraction, len(cands))
        if len(seen):
            short = seen[top_n(self.priority[idx[seen]].nan_to_num(nan=-math.inf), budget).numpy()]
            chosen[short] = True
            rest = np.nonzero(~chosen)[0]
            room = count - int(chosen.sum())
            if room > 0 and len(rest):
                rank = rotation_rank(seed, self.pool_size)[cands[rest]]
                chosen[rest[np.lexsort((rank, last[rest]))[:room]]] = True
        return np.nonzero(chosen)[0]

    def update(self, cands: np.ndarray, positions: np.ndarray, rows: torch.Tensor, round_: int) -> None:
        """Store the freshly computed ``rows`` of ``cands[positions]`` (computed in ``round_``)."""
        idx = torch.as_tensor(cands[positions], dtype=torch.long)
        if self.rows is None:
            self.rows = torch.zeros((self.pool_size, *rows.shape[1:]), dtype=rows.dtype)
        self.rows[idx] = rows.to(self.rows.dtype)
        self.scored_round[idx] = int(round_)

    def gather(self, cands: np.ndarray) -> torch.Tensor:
        """The table's rows of ``cands``, in order."""
        assert self.rows is not None
        return self.rows[torch.as_tensor(cands, dtype=torch.long)].clone()

    def rank(self, cands: np.ndarray, priority: torch.Tensor) -> None:
        """Remember how the round ranked ``cands`` (the next shortlist's order)."""
        self.priority[torch.as_tensor(cands, dtype=torch.long)] = priority.detach().to(torch.float64).cpu()

    def state_dict(self) -> dict[str, Any]:
        """Tensors and the key (the checkpoint stores tensors in safetensors)."""
        return {
            "key": self.key,
            "rows": self.rows,
            "scored_round": self.scored_round,
            "priority": self.priority,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ScoreTable:
        """Rebuild from :meth:`state_dict`'s output."""
        scored = torch.as_tensor(state["scored_round"], dtype=torch.long)
        table = cls(len(scored), state["key"])
        table.scored_round = scored.clone()
        table.priority = torch.as_tensor(state["priority"], dtype=torch.float64).clone()
        rows = state.get("rows")
        table.rows = None if rows is None else torch.as_tensor(rows).clone()
        return table
