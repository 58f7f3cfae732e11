"""One pass's rows split across ranks, gathered, and cached by rank 0.

Every rank computes its contiguous block of the rows
(:meth:`~dataflex.distributed.DistributedView.shard`) and the blocks are gathered in
rank order, so every rank holds the same result. The cache is read and written by rank
0 alone; its answer is broadcast, so that every rank takes the same path (a hit on one
rank and a miss on another would leave the second waiting in a collective).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from dataflex.distributed import DistributedView
from dataflex.passes.cache import ScoreCache


def sharded_rows(dist: DistributedView, count: int, work: Callable[[range], torch.Tensor]) -> torch.Tensor:
    """Run ``work`` on this rank's block of ``range(count)`` and gather every rank's rows.

    Returns the rows for ``range(count)`` in order, on the CPU, identical on every rank;
    each row was computed by exactly one rank.
    """
    local = work(dist.shard(count))
    return dist.gather_tensor(local.detach().cpu())


def cache_lookup(
    dist: DistributedView, cache: ScoreCache, fingerprint: Mapping[str, Any]
) -> dict[str, torch.Tensor] | None:
    """Rank 0's cache lookup, shared with every rank so that all take the same path."""
    found = cache.load(fingerprint) if dist.is_main else None
    return dist.broadcast_object(found)


def cache_store(
    dist: DistributedView,
    cache: ScoreCache,
    fingerprint: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
) -> None:
    """Write a cache entry from rank 0 only."""
    if dist.is_main:
        cache.save(fingerprint, tensors)
