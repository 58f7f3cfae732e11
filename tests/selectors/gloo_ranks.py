"""Run a selection on two gloo processes and collect what each rank returned (test helper)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dataflex.distributed import DistributedView

RankWork = Callable[[DistributedView], dict[str, Any]]
"""What one rank computes: a JSON-serialisable result from its distributed view."""


def run_on_ranks(work: RankWork, tmp_path: Path, world: int = 2) -> list[dict[str, Any]]:
    """``work(view)`` on ``world`` gloo processes; each rank's result, in rank order.

    ``work`` must be a module-level function (it is pickled to the processes).
    """
    mp.spawn(_worker, args=(work, world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    return [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]


def _worker(rank: int, work: RankWork, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = work(DistributedView(rank, world))
        dist.barrier()  # both ranks done before either tears down its gloo pairs
    finally:
        dist.destroy_process_group()
    with open(f"{out_dir}/{rank}.json", "w") as fh:
        json.dump(result, fh)
