"""Projector throughput on LESS's stream: dataflex vs TRAK's BasicProjector vs a plain GEMM.

A stream of vectors is handed to the projector in batches of 16 (how LESS
projects per-example gradients): 512 vectors at D = 2e5 and 64 at D = 2e6, for
k in {4096, 8192}. Each method runs in a fresh subprocess (so its peak RSS is its
own) and prints seconds for the whole stream, GFLOP/s (2·B·D·k / time; a dense-equivalent
rate for the sparse ``sjlt``), peak RSS
and ratios to TRAK and to this machine's fp32 GEMM (torch.matmul against a matrix
made beforehand, same shapes, same run).

To keep the run short, a method whose stream would take longer than
``--max-seconds`` is timed on its first batches (at least two) and extrapolated
as first batch + mean of the later ones for the rest (the "measured" column says
how many ran). TRAK regenerates its whole matrix in
``ceil(k/100)`` blocks on every call, identically each time, so it is timed on
``--trak-blocks`` blocks of one call and scaled to the stream; the GEMM baseline
at D = 2e6 (32-65 GB of matrix) is timed at D = 2e5 (same k) and reported as a
rate. Nothing here asserts anything about time.

    python benchmarks/projectors.py                 # CPU, 2 threads (docs/benchmarks.md)
    python benchmarks/projectors.py --device cuda   # cuda kernel, sjlt (torch, Triton) vs GEMM
    python benchmarks/projectors.py --quick         # tiny shapes, a smoke test
    python benchmarks/projectors.py --json out.json # also write the rows (for plot_benchmarks.py)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

STREAMS = {200_000: 512, 2_000_000: 64}
KS = (4096, 8192)
BATCH = 16
GEMM_MAX_D = 200_000


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _time_stream(
    step, batches: int, max_seconds: float, sync=lambda: None, min_batches: int = 2
) -> tuple[float, int]:
    """Run ``step(i)`` for the stream; past ``max_seconds``, extrapolate.

    The estimate is the first batch (which pays any one-off generation) plus the mean
    of the later batches for each batch not run. ``min_batches=1`` lets a first batch
    stand for all of them: only right when nothing is cached between batches.
    """
    times = []
    for i in range(batches):
        start = time.perf_counter()
        step(i)
        sync()
        times.append(time.perf_counter() - start)
        if sum(times) > max_seconds and len(times) >= min_batches:
            break
    later = times[1:] or times
    return times[0] + sum(later) / len(later) * (batches - 1), len(times)


def run_one(spec: dict) -> dict:
    """Measure one method in this process; ``spec`` comes from the parent as JSON."""
    import torch

    torch.set_num_threads(spec["threads"])
    method, d, k, vectors = spec["method"], spec["d"], spec["k"], spec["vectors"]
    device = spec["device"]
    batches = vectors // BATCH
    gen = torch.Generator(device="cpu").manual_seed(0)
    # A few distinct batches recycled along the stream: the data does not change the cost.
    data = [torch.randn(BATCH, d, generator=gen).to(device) for _ in range(min(batches, 4))]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    flops_d = d
    measured = ""

    if method.startswith("gemm"):
        dtype = torch.bfloat16 if method == "gemm-bf16" else torch.float32
        flops_d = min(d, GEMM_MAX_D) if device == "cpu" else d
        matrix = torch.full((flops_d, k), 0.01, dtype=dtype, device=device)
        xs = [x[:, :flops_d].to(dtype) for x in data]
        torch.matmul(xs[0], matrix)
        seconds, done = _time_stream(
            lambda i: torch.matmul(xs[i % len(xs)], matrix), batches, spec["max_s"], sync
        )
        measured = f"{done}/{batches}" + ("" if flops_d == d else f" @D={flops_d:.0e}")
    elif method.startswith("trak"):
        from trak.projectors import BasicProjector

        blocks = spec["trak_blocks"]
        total_blocks = math.ceil(k / 100)
        timed = total_blocks if blocks <= 0 else min(blocks, total_blocks)
        proj_type = "rademacher" if method == "trak-rademacher" else "normal"
        proj = BasicProjector(d, 100 * timed, 0, proj_type, torch.device(device))
        start = time.perf_counter()
        proj.project(data[0], 0)
        sync()
        per_call = (time.perf_counter() - start) * total_blocks / timed
        seconds = per_call * batches
        measured = f"{timed}/{total_blocks} blocks of 1/{batches} calls"
    else:
        from dataflex.projectors import build_projector

        name, _, cache = method.partition(":")
        kwargs: dict = {"seed": 0, "device": device}
        if name == "sjlt-triton":  # the sparse projector's Triton kernel (same P as "sjlt")
            name = "sjlt"
            kwargs["backend"] = "triton"
        elif name == "cuda-bf16":
            name = "cuda"
            data = [x.bfloat16() for x in data]
        elif name.startswith("cuda-"):
            kwargs["distribution"] = name.split("-", 1)[1]
            name = "cuda"
        if cache == "none":
            kwargs["cache_bytes"] = 0
        elif cache == "all":
            kwargs["cache_bytes"] = d * k * 4 + (64 << 20)
        proj = build_projector(name, input_dim=d, proj_dim=k, **kwargs)
        # At D = 2e6 at most a few % of P fits the default cache: every batch costs the same.
        min_batches = 1 if d > GEMM_MAX_D and cache != "all" else 2
        seconds, done = _time_stream(
            lambda i: proj.project(data[i % len(data)]), batches, spec["max_s"], sync, min_batches
        )
        measured = f"{done}/{batches}"

    gflops = 2 * BATCH * batches * flops_d * k / seconds / 1e9
    result = {**spec, "seconds": seconds, "gflops": gflops, "measured": measured}
    result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else _peak_rss_gib()
    result["load"] = os.getloadavg()[0]
    return result


def methods_for(device: str, d: int) -> list[str]:
    if device == "cuda":
        return [
            "gemm",
            "gemm-bf16",
            "cuda-rademacher",
            "cuda-bf16",
            "cuda-gaussian",
            "sjlt",
            "sjlt-triton",
            "trak-rademacher",
        ]
    ours = ["rademacher", "rademacher:none", "gaussian", "sjlt"]
    if d <= GEMM_MAX_D:
        ours = ["rademacher:all", "rademacher:none", "gaussian:all", "sjlt"]
    return ["gemm", *ours, "trak-rademacher", "trak-normal"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=25.0, help="per method before extrapolating")
    parser.add_argument("--trak-blocks", type=int, default=3, help="TRAK blocks timed per call (0: all)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a smoke test")
    parser.add_argument("--dims", type=int, nargs="+", default=list(STREAMS), help="subset of D")
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS), help="subset of k")
    parser.add_argument("--methods", nargs="+", help="subset of methods (default: all)")
    parser.add_argument("--json", help="also write the rows here (input of benchmarks/plot_benchmarks.py)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return

    streams = {d: STREAMS.get(d, 64) for d in args.dims}
    ks = args.ks
    if args.quick:
        streams, ks = {20_000: 64}, [256]
    import torch

    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, batches of {BATCH}")
    header = f"{'D':>9} {'k':>5} {'method':<18} {'seconds':>9} {'GFLOP/s':>8} {'peak GiB':>8}"
    header += f" {'x TRAK':>7} {'/ GEMM':>7} {'load':>5}  measured"
    rows = []
    print(header)
    for d, vectors in streams.items():
        for k in ks:
            results = {}
            for method in methods_for(args.device, d):
                if args.methods and method not in args.methods:
                    continue
                spec = {
                    "method": method,
                    "d": d,
                    "k": k,
                    "vectors": vectors,
                    "threads": args.threads,
                    "device": args.device,
                    "max_s": args.max_seconds,
                    "trak_blocks": args.trak_blocks,
                }
                cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{d:>9} {k:>5} {method:<18} failed: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
            trak = {m.split("-")[1]: r["gflops"] for m, r in results.items() if m.startswith("trak")}
            gemm = results.get("gemm", {}).get("gflops")
            for method, r in results.items():
                family = "normal" if "gaussian" in method else "rademacher"
                vs_trak = trak.get(family, trak.get("rademacher"))
                x_trak = (
                    f"{r['gflops'] / vs_trak:7.1f}"
                    if vs_trak and not method.startswith("trak")
                    else "      -"
                )
                vs_gemm = f"{r['gflops'] / gemm:7.2f}" if gemm else "      -"
                line = (
                    f"{d:>9} {k:>5} {method:<18} {r['seconds']:9.2f} {r['gflops']:8.1f} {r['peak_gib']:8.2f}"
                    f" {x_trak} {vs_gemm} {r['load']:5.1f}  {r['measured']}"
                )
                print(line, flush=True)
                rows.append(r)
    if args.json:
        meta = {"torch": torch.__version__, "threads": args.threads, "device": args.device, "batch": BATCH}
        with open(args.json, "w") as fh:
            json.dump({**meta, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
