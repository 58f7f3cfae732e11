"""A small view of the distributed world that selectors may use.

Selectors never touch ``torch.distributed`` globals directly: they receive a
:class:`DistributedView` in their :class:`~dataflex.selectors.base.SelectionContext`.
With one process every collective is the identity, so the same selector code runs
unchanged under ``python`` and under ``torchrun``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedView:
    """Rank, world size and the collectives a selector needs.

    Attributes:
        rank: This process's rank in ``[0, world_size)``.
        world_size: Number of processes taking part in selection.
    """

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> DistributedView:
        """The view of the initialised default process group, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that writes reports)."""
        return self.rank == 0

    def shard(self, n: int) -> range:
        """The contiguous block of ``range(n)`` this rank owns.

        Blocks are as equal as possible and, concatenated in rank order, give
        ``range(n)`` exactly, so gathered per-shard results line up with indices.
        """
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))

    def all_gather_object(self, obj: T) -> list[T]:
        """Gather a picklable object from every rank, in rank order."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate along dim 0 the tensors of every rank, in rank order.

        Shards may differ in length by rank; the result is identical on every rank.
        """
        if self.world_size == 1:
            return t
        parts = self.all_gather_object(t.detach().cpu())
        return torch.cat(parts, dim=0).to(t.device)

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        """Return rank ``src``'s ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_equal(self, values: Sequence[Any]) -> bool:
        """True when ``values`` is the same on every rank (a cheap consistency check)."""
        gathered = self.all_gather_object(list(values))
        return all(g == gathered[0] for g in gathered)
