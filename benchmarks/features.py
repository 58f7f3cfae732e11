"""Per-example gradient features against the peers and a plain training step, side by side.

Same model, same examples (96–160 tokens from alpaca_en_demo), same batches of 16, one
thread, in one process; the methods run in turn, repetition after repetition
(alternating), each for ``--seconds`` per repetition, and the median examples/second is
reported. Methods:

* ``plain``: the training step's forward + backward of the batch (``loss.backward()``),
  no per-example work: the target.
* ``dataflex sjlt adam``: exact LESS features: per-example gradients from one fwd+bwd,
  LESS's Adam transform on the full per-example gradient, ``sjlt`` projection to k, on
  sjlt's default backend (the C kernel on the CPU, transform fused into the scatter).
* ``dataflex sjlt adam (torch)``: the same features on sjlt's torch backend (the
  transform as torch passes, then ``index_add_``): equal bit for bit, for the ratio.
* ``dataflex sjlt sgd`` / ``dataflex rademacher sgd``: plain gradients, sparse vs dense P.
* ``LESS loop + TRAK``: LESS's reference shape: batch-1 ``backward``, flatten ``.grad``,
  Adam transform, TRAK's ``BasicProjector`` (Rademacher) every 16 (LoRA only: at full FT
  TRAK regenerates a D × k matrix per call).
* ``bergson``: Bergson's ``GradientCollector`` with its per-module two-sided projection
  (p × p per Linear module, p chosen so that Σ p² ≈ k), hooks on the trainable Linear
  modules, as ``bergson build`` runs it without writing an index.
* ``dattri LoGra``: dattri's ``LoGraAttributor`` (``hessian="Identity"``, per-layer
  Kronecker projection p × p), ``cache()`` over the same batches.

Each method first runs one untimed batch (one-off setup such as dattri's projection
matrices is not timed). Fidelity: Pearson correlation of each method's pairwise
cosines (among the first 32 examples, 16 at D = 3.4·10⁷; sgd features) with the exact ones
(no projection). Peak memory: largest
resident set size above the level before the method's first repetition (sampled every
2 ms, after ``malloc_trim``). Prints a markdown table; asserts nothing about time.

    python benchmarks/features.py --seconds 0           # LoRA, full FT at D = 4.5e6 and 3.4e7, k = 8192
    python benchmarks/features.py --workloads lora --seconds 10 --reps 2
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.feature_setup import build, tokenised_pool
from benchmarks.gradients import PeakRSS

WORKLOADS = {
    "lora": {"hidden": 256, "layers": 4, "lora_rank": 16},
    "full": {"hidden": 256, "layers": 4, "lora_rank": None},
    "full-34m": {"hidden": 512, "layers": 8, "lora_rank": None},
}
# Methods not run by default on a workload (``--methods`` overrides): TRAK's batch-1 loop
# regenerates a D × k matrix per call at full FT, and the dense projector costs 2·B·D·k
# (≈ 4.5·10¹² flops a batch at D = 3.4·10⁷).
SKIP = {
    "full": {"LESS loop + TRAK"},
    "full-34m": {"LESS loop + TRAK", "dataflex rademacher sgd", "dataflex sjlt sgd"},
}
BATCH = 16
FIDELITY_EXAMPLES = {"full-34m": 16}  # examples whose pairwise cosines give r(cos); 32 elsewhere


def trim() -> None:
    with contextlib.suppress(OSError):  # not glibc: the peak is read without the trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def linear_names(model) -> list[str]:
    """Names of the nn.Linear modules whose weight is trainable (what the factored peers hook)."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.weight.requires_grad]


def side_for(k: int, modules: int) -> int:
    return max(1, round(math.sqrt(k / modules)))


# --- the methods: each returns run(batch_rows) -> (B, k) features (or None for plain) ------------------
def make_plain(s, k):
    def run(rows):
        batch = s.collator(rows)
        s.model.zero_grad(set_to_none=True)
        s.model(**batch).loss.backward()
        s.model.zero_grad(set_to_none=True)

    return run


def make_dataflex(s, k, projector: str, transform: str, **options):
    from dataflex.gradients.features import FeaturePlan
    from dataflex.projectors import RademacherProjector, SJLTProjector

    cls = SJLTProjector if projector == "sjlt" else RademacherProjector
    proj = cls(s.dim, k, seed=0, **options)
    plan = FeaturePlan(s.model, transform=transform, projector=proj, optimizer=s.optimizer)

    def run(rows):
        return plan.features(s.collator(rows))

    run.plan = plan  # type: ignore[attr-defined]
    return run


def make_less_trak(s, k, transform: str = "adam"):
    from trak.projectors import BasicProjector, ProjectionType

    from dataflex.gradients import AdamState
    from dataflex.gradients.transforms import apply_transform

    if s.name != "lora":
        raise RuntimeError("not run at full FT: TRAK's BasicProjector regenerates a D × k matrix per call")
    proj = BasicProjector(s.dim, k, 0, ProjectionType.rademacher, torch.device("cpu"))
    params = [(n, p) for n, p in s.model.named_parameters() if p.requires_grad]
    state = AdamState.from_optimizer(s.model, s.optimizer)

    def run(rows):
        grads = []
        for row in rows:
            s.model.zero_grad(set_to_none=True)
            s.model(**s.collator([row])).loss.backward()
            blocks = [
                apply_transform(
                    transform, p.grad.reshape(1, -1).float(), state[n] if transform == "adam" else None
                )
                for n, p in params
            ]
            grads.append(torch.cat(blocks, dim=1))
        s.model.zero_grad(set_to_none=True)
        return proj.project(torch.cat(grads), model_id=0)

    return run


def make_bergson(s, k):
    from bergson.collector.gradient_collectors import GradientCollector
    from bergson.config import IndexConfig
    from bergson.gradients import GradientProcessor
    from datasets import Dataset

    names = linear_names(s.model)
    p = side_for(k, len(names))
    collector = GradientCollector(
        model=s.model,
        data=Dataset.from_dict({"row": list(range(BATCH))}),
        cfg=IndexConfig(run_path="/tmp/bergson-unused", projection_dim=p),
        processor=GradientProcessor(projection_dim=p, projection_seed=0),
        target_modules=set(names),
        skip_index=True,
    )

    def run(rows):
        batch = s.collator(rows)
        collector.with_batch(None)  # returns the collector itself: enter it once
        with collector:
            s.model.zero_grad(set_to_none=True)
            s.model(**batch).loss.backward()
        feats = torch.cat([g.float().flatten(1) for g in collector.mod_grads.values()], dim=1)
        collector.mod_grads.clear()
        s.model.zero_grad(set_to_none=True)
        return feats

    run.k = p * p * len(names)  # type: ignore[attr-defined]
    return run


def make_dattri(s, k):
    from dattri.algorithm import LoGraAttributor
    from dattri.task import AttributionTask

    names = linear_names(s.model)
    p = side_for(k, len(names))

    def loss_func(model, batch, device):
        return model(**batch).loss

    task = AttributionTask(loss_func=loss_func, model=s.model, checkpoints=s.model.state_dict())

    # Built once (its projections are made on the first cache() call and kept), then
    # cache() over a loader of this one batch, as dattri processes a training set.
    attr = LoGraAttributor(task, layer_names=names, hessian="Identity", proj_dim=p * p, offload="cpu")

    def run(rows):
        loader = torch.utils.data.DataLoader(rows, batch_size=len(rows), collate_fn=s.collator)
        attr.cache(loader)
        s.model.zero_grad(set_to_none=True)
        return torch.cat([g.float().cpu() for g in attr.offload_manager.retrieve_gradients(0)], dim=1)

    run.k = p * p * len(names)  # type: ignore[attr-defined]
    return run


METHODS: dict[str, Callable] = {
    "plain fwd+bwd": make_plain,
    "dataflex sjlt adam": lambda s, k: make_dataflex(s, k, "sjlt", "adam"),
    "dataflex sjlt adam (torch)": lambda s, k: make_dataflex(s, k, "sjlt", "adam", backend="torch"),
    "dataflex sjlt sgd": lambda s, k: make_dataflex(s, k, "sjlt", "sgd"),
    "dataflex rademacher sgd": lambda s, k: make_dataflex(s, k, "rademacher", "sgd"),
    "LESS loop + TRAK": make_less_trak,
    "bergson": make_bergson,
    "dattri LoGra": make_dattri,
}
SGD_VARIANT = {  # fidelity is measured on sgd features, against the exact sgd cosines
    "dataflex sjlt adam": lambda s, k: make_dataflex(s, k, "sjlt", "sgd"),
    "dataflex sjlt adam (torch)": lambda s, k: make_dataflex(s, k, "sjlt", "sgd", backend="torch"),
    "LESS loop + TRAK": lambda s, k: make_less_trak(s, k, "sgd"),
}


def exact_gram(s, rows) -> torch.Tensor:
    """Gram matrix of the exact (unprojected) sgd per-example gradients of ``rows``, one batch.

    Accumulated parameter by parameter, so the (B, D) gradients never exist together
    (4.4 GB at D = 3.4·10⁷ for 32 examples).
    """
    from dataflex.gradients.features import FeaturePlan

    class GramPlan(FeaturePlan):
        def _stream(self, bsz, mask, normalize):
            gram = torch.zeros(bsz, bsz, dtype=torch.float64)
            for name, param in self.capture.params:
                g = self.parameter_block(name, param, bsz, mask).double()
                gram += g @ g.t()
            return gram

    return GramPlan(s.model, transform="sgd").features(s.collator(rows))


def pair_r(feats: torch.Tensor, gram: torch.Tensor) -> float:
    """Pearson r of the pairwise cosines of ``feats`` with those of the exact Gram matrix."""

    def cos(c):
        d = c.diagonal().sqrt()
        c = c / d[:, None] / d[None, :]
        i, j = torch.triu_indices(len(c), len(c), 1)
        return c[i, j]

    f = feats.double()
    return torch.corrcoef(torch.stack([cos(f @ f.t()), cos(gram)]))[0, 1].item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    p.add_argument("--methods", nargs="+", help="default: all but those SKIP lists for the workload")
    p.add_argument("--k", type=int, default=8192)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="per method and repetition (≥ 1 batch)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    pool = tokenised_pool(96, 160)
    g = torch.Generator().manual_seed(0)
    rows = [pool[i] for i in torch.randperm(len(pool), generator=g)[:256].tolist()]
    results = []
    for wname in args.workloads:
        s = build(wname, examples=pool, **WORKLOADS[wname])
        print(f"# {wname}: D = {s.dim:,}", flush=True)
        methods = args.methods or [m for m in METHODS if m not in SKIP.get(wname, ())]
        n_fid = FIDELITY_EXAMPLES.get(wname, 32)
        exact = exact_gram(s, rows[:n_fid])
        runners, notes, fidelity, kdims = {}, {}, {}, {}
        for m in methods:
            try:
                runners[m] = METHODS[m](s, args.k)
                kdims[m] = getattr(runners[m], "k", None if m.startswith("plain") else args.k)
            except Exception as exc:  # a peer that cannot run here: say why, keep going
                notes[m] = f"{type(exc).__name__}: {exc}"
                print(f"  {m}: cannot run: {notes[m]}", flush=True)
                traceback.print_exc()
        for m in list(runners):  # one untimed batch each: one-off setup (dattri's projections) is not timed
            try:
                runners[m](rows[:BATCH])
            except Exception as exc:
                notes[m] = f"{type(exc).__name__}: {exc}"
                print(f"  {m}: failed: {notes[m]}", flush=True)
                del runners[m]
        rates: dict[str, list[float]] = {m: [] for m in runners}
        peaks: dict[str, float] = {}
        for rep in range(args.reps):
            for m in list(runners):
                run = runners[m]
                trim()
                done, cursor, t0 = 0, 0, time.perf_counter()
                try:
                    with PeakRSS() as mem:
                        while done == 0 or time.perf_counter() - t0 < args.seconds:
                            batch_rows = rows[cursor : cursor + BATCH]
                            cursor = (cursor + BATCH) % len(rows)
                            run(batch_rows)
                            done += len(batch_rows)
                except Exception as exc:
                    notes[m] = f"{type(exc).__name__}: {exc}"
                    print(f"  {m}: failed: {notes[m]}", flush=True)
                    traceback.print_exc()
                    del runners[m]
                    continue
                rate = done / (time.perf_counter() - t0)
                rates[m].append(rate)
                peaks[m] = max(peaks.get(m, 0.0), (mem.peak - mem.base) / 2**30)
                print(
                    f"  rep {rep} {m}: {rate:.2f} ex/s, +{(mem.peak - mem.base) / 2**30:.2f} GiB", flush=True
                )
        for m in list(runners):
            if m.startswith("plain"):
                continue
            try:
                run = SGD_VARIANT[m](s, args.k) if m in SGD_VARIANT else runners[m]
                feats = torch.cat([run(rows[a : a + BATCH]) for a in range(0, n_fid, BATCH)])
                fidelity[m] = pair_r(feats, exact)
            except Exception as exc:
                notes[m] = f"fidelity failed: {type(exc).__name__}: {exc}"
        plain = statistics.median(rates["plain fwd+bwd"]) if rates.get("plain fwd+bwd") else None
        bergson = statistics.median(rates["bergson"]) if rates.get("bergson") else None
        for m in methods:
            r = rates.get(m) or []
            med = statistics.median(r) if r else None
            results.append(
                {
                    "workload": wname,
                    "D": s.dim,
                    "method": m,
                    "k": kdims.get(m),
                    "examples_per_s": med,
                    "rates": r,
                    "x_plain": (med / plain) if (med and plain) else None,
                    "x_bergson": (med / bergson) if (med and bergson) else None,
                    "peak_gib": peaks.get(m),
                    "r_cos": fidelity.get(m),
                    "note": notes.get(m),
                }
            )
        del s, runners
    print()
    print("| workload | method | k | examples/s | × plain | × bergson | peak GiB | r(cos) | note |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:

        def f(v, fmt):
            return "–" if v is None else format(v, fmt)

        cells = [
            f"{r['workload']} (D={r['D']:,})",
            r["method"],
            f(r["k"], ","),
            f(r["examples_per_s"], ".2f"),
            f(r["x_plain"], ".2f"),
            f(r["x_bergson"], ".2f"),
            f(r["peak_gib"], ".2f"),
            f(r["r_cos"], ".3f"),
            r["note"] or "",
        ]
        print("| " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s in all", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
