"""What each engine costs one LESS scoring round: collectives, gathered bytes, time, peak memory.

Two gloo processes on the CPU run the tests' setup (tests/engines/engine_worker.py: a LoRA
tiny Llama after one AdamW step, 9 candidates and 3 validation examples in batches of 2)
under DDP-like plain modules, ZeRO-2, ZeRO-3 (every parameter partitioned) and FSDP2, and
profile one ``less`` round (identity projection) with ``torch.profiler``. Prints a table;
asserts nothing about time.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/engine_costs.py
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataflex.data.collator import SFTDataCollator
from dataflex.distributed import DistributedView
from dataflex.registry import build_selector
from dataflex.selectors.base import SelectionContext
from tests.conftest import make_examples
from tests.engines import engine_worker as w

ENGINES = ["plain", "zero2", "zero3", "fsdp2"]
KINDS = ("allgather", "all_gather", "allreduce", "all_reduce", "reduce_scatter", "broadcast")


def profile_round(engine: str, rank: int, world: int) -> dict:
    model, opt, _ = w.build("reference" if engine == "plain" else engine, rank)
    pool, val = make_examples(w.POOL, seed=21), make_examples(w.VAL, seed=22)
    ctx = SelectionContext(
        model=model,
        optimizer=opt,
        train_dataset=pool,
        eval_dataset=val,
        collator=SFTDataCollator(0),
        learning_rate=w.LR,
        step=1,
        round=1,
        dist=DistributedView(rank, world),
        seed=13,
    )
    selector = build_selector("less", projector="identity", batch_size=2)
    dist.barrier()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        selector.select(ctx, w.BUDGET)
    wall = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for ev in prof.key_averages():
        name = ev.key.lower()
        if name.startswith(("c10d::", "gloo:")) or any(k in name for k in KINDS):
            counts[ev.key] = counts.get(ev.key, 0) + ev.count
    return {
        "wall_s": round(wall, 2),
        "collectives": counts,
        "maxrss_growth_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1),
    }


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    results = {e: profile_round(e, rank, world) for e in ENGINES}
    dist.barrier()
    dist.destroy_process_group()
    Path(out_dir, f"{rank}.json").write_text(json.dumps(results))


def main() -> None:
    out = tempfile.mkdtemp()
    mp.spawn(worker, args=(2, f"{out}/init", out), nprocs=2, join=True)
    results = [json.loads(Path(out, f"{r}.json").read_text()) for r in range(2)]
    print("| engine | rank | collective calls in one LESS round (op: count) | wall s | max-RSS growth MiB |")
    print("| --- | --- | --- | --- | --- |")
    for engine in ENGINES:
        for rank, res in enumerate(results):
            r = res[engine]
            calls = ", ".join(f"{k}: {v}" for k, v in sorted(r["collectives"].items())) or "none"
            print(f"| {engine} | {rank} | {calls} | {r['wall_s']} | {r['maxrss_growth_mib']} |")


if __name__ == "__main__":
    main()
