"""Equal numbers of forwards on every rank when forwards are collective.

Under ZeRO-3 and FSDP every forward (and backward) of the model gathers the
parameters of each layer from all ranks. A rank whose shard of the candidates needs
fewer batches than another's would leave that rank waiting in a gather forever, so
each rank runs as many padding batches (results discarded) as it is short of the
busiest rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from dataflex.engines.detect import engine_of


def lockstep_extra_batches(model: nn.Module, local_batches: int) -> int:
    """How many padding batches this rank must run after its ``local_batches``.

    0 unless the model's forwards are collective (ZeRO-3, FSDP) and a process group is
    initialised; then the busiest rank's count minus ours. Every rank must call this
    (it is a collective when it is not 0-by-construction).
    """
    if not engine_of(model).collective_forward or not (dist.is_available() and dist.is_initialized()):
        return 0
    count = torch.tensor([int(local_batches)], dtype=torch.int64)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count.item()) - int(local_batches)


def run_padding(extra: int, run_one: Callable[[], object]) -> None:
    """Run ``extra`` discarded batches (``run_one``): see :func:`lockstep_extra_batches`.

    The count must be agreed *before* the real batches start (a rank that finished
    early would otherwise wait in the agreement while another waits in a gather).
    """
    for _ in range(extra):
        run_one()
