"""Phase profile of exact LESS features (sjlt, adam) on each path, beside a plain step.

Side by side in one process, alternating per repetition, one torch thread, on the
``benchmarks/features.py`` workloads (same model, pool and batches)::

    python benchmarks/feature_phases.py --workloads full full-34m --reps 3

``cpu kernel`` is this checkout's :class:`FeaturePlan` with sjlt's C kernel (the
transform fused into the scatter, timed as ``projection``); ``torch backend`` is the
same plan with sjlt's torch backend (transform passes, then ``index_add_``); ``row
blocks`` is the torch backend with column chunks turned off (large Linear weights one
example at a time, the path before them). Prints seconds per batch of 16 for each
phase and the ratio of each method's rate to ``plain fwd+bwd``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from benchmarks.feature_setup import build, tokenised_pool
from benchmarks.features import BATCH, WORKLOADS, make_plain
from dataflex.gradients.features import PHASES, FeaturePlan
from dataflex.projectors import SJLTProjector


class RowBlockPlan(FeaturePlan):
    """The feature pass without column chunks (large Linear weights in row blocks)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.facts = [dataclasses.replace(f, linear=None) for f in self.facts]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=["full", "full-34m"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--k", type=int, default=8192)
    args = p.parse_args()
    torch.set_num_threads(1)
    pool = tokenised_pool(96, 160)
    g = torch.Generator().manual_seed(0)
    rows = [pool[i] for i in torch.randperm(len(pool), generator=g)[:256].tolist()]
    for wname in args.workloads:
        s = build(wname, examples=pool, **WORKLOADS[wname])
        kernel = SJLTProjector(s.dim, args.k, seed=0, backend="cpu")
        torch_backend = SJLTProjector(s.dim, args.k, seed=0, backend="torch")
        adam = {"transform": "adam", "optimizer": s.optimizer}
        plans = {
            "cpu kernel": FeaturePlan(s.model, projector=kernel, **adam),
            "torch backend": FeaturePlan(s.model, projector=torch_backend, **adam),
            "row blocks": RowBlockPlan(s.model, projector=torch_backend, **adam),
        }
        plain = make_plain(s, args.k)
        batch = rows[:BATCH]
        out = {n: pl.features(s.collator(batch)) for n, pl in plans.items()}  # untimed, fills the cache
        same = all(torch.equal(out["cpu kernel"], o) for o in out.values())
        diff = max((out["cpu kernel"] - o).abs().max().item() for o in out.values())
        plain(batch)
        secs: dict[str, list[float]] = {"plain fwd+bwd": [], **{n: [] for n in plans}}
        phases = {n: [] for n in plans}
        for rep in range(args.reps):
            batch = rows[(rep + 1) * BATCH : (rep + 2) * BATCH]
            t0 = time.perf_counter()
            plain(batch)
            secs["plain fwd+bwd"].append(time.perf_counter() - t0)
            for n, pl in plans.items():
                pl.timings = dict.fromkeys(PHASES, 0.0)
                t0 = time.perf_counter()
                pl.features(s.collator(batch))
                secs[n].append(time.perf_counter() - t0)
                phases[n].append(dict(pl.timings))
        head = f"# {wname}: D = {s.dim:,}, k = {args.k}, batch {BATCH}"
        print(f"{head}; bit-identical: {same} (max diff {diff:.1e})")
        for n, ts in secs.items():
            ratios = [p / t for p, t in zip(secs["plain fwd+bwd"], ts)]
            line = f"{n:14s} s/batch " + ", ".join(f"{t:.2f}" for t in ts)
            line += " | x plain " + ", ".join(f"{r:.2f}" for r in ratios)
            line += f" (median {statistics.median(ratios):.2f})"
            if n in phases:
                line += " | " + " ".join(
                    f"{ph} {statistics.median(d[ph] for d in phases[n]):.2f}" for ph in PHASES
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
