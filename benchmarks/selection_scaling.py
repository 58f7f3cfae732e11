"""Selection cost against pool size: exact dynamic LESS against ``rescore_fraction``.

Pools of 1k, 4k and 16k rows generated like the quickstart's (its seven task families in
equal shares, so the target ``uppercase`` is 1/7 of the pool as in the quickstart's 1,050),
trained with the quickstart's model, LoRA, batch and schedule (``examples/quickstart/less.yaml``:
warm-up 5 steps, 6 rounds of 5 steps of 8 examples) and LESS's components (proj_dim 512).
Per pool, one run per setting: exact LESS (``rescore_fraction: 1.0``) and
``rescore_fraction`` 0.2 and 0.05, each with a fresh feature cache (no run reuses
another's features). Each run goes through ``dataflex.train.runner.run_train``, the function
behind ``dataflex-cli train``.

Reported per run (all from that run's own records):

* selection / training: the rounds' ``time`` in ``selections.jsonl`` over the Trainer's
  ``train_runtime`` less those rounds (forward, backward, optimizer, dataloader, the final
  evaluation);
* examples scored in all: the rounds' ``scored`` summed, and the bound
  ``pool x (1 + f x (R - 1))``;
* target share per round: the share of each round's choice from the target family;
* final target loss: the eval loss on the target's validation split after the last step.

From the repository root (measured under shared load: see docs/benchmarks.md)::

    python -m benchmarks.selection_scaling --pools 1000 --fractions 1.0 0.2   # an estimate first
    python -m benchmarks.selection_scaling --json docs/benchmarks/selection_scaling.json \\
        --plot docs/benchmarks/selection_scaling.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from examples.quickstart.make_quickstart import FAMILIES

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
TARGET = "uppercase"
COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "subtask": "task"}


def make_pool(size: int, seed: int) -> list[dict[str, str]]:
    """``size`` rows of the quickstart's families in equal shares (seeded), shuffled."""
    rng = random.Random(seed)
    names = list(FAMILIES)
    rows = [{**FAMILIES[names[i % len(names)]](rng), "task": names[i % len(names)]} for i in range(size)]
    rng.shuffle(rows)
    return rows


def write_data(folder: Path, size: int, seed: int) -> Path:
    """A dataset folder: the pool and the quickstart's target validation split."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pool.json").write_text(json.dumps(make_pool(size, seed), ensure_ascii=False))
    shutil.copy2(QUICKSTART / "data" / "valid.json", folder / "valid.json")
    info = {
        "pool": {"file_name": "pool.json", "columns": COLUMNS},
        "target_valid": {"file_name": "valid.json", "columns": COLUMNS},
    }
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return folder


def components_yaml(fraction: float, cache_dir: Path) -> str:
    """The quickstart's LESS components with ``rescore_fraction`` and a run-own cache."""
    return (
        "selectors:\n"
        "  less:\n"
        "    name: less\n"
        "    params:\n"
        f"      cache_dir: {cache_dir}\n"
        "      gradient_type: adam\n"
        "      proj_dim: 512\n"
        "      seed: 123\n"
        "      repeat_across_rounds: true\n"
        f"      rescore_fraction: {fraction}\n"
    )


def train_overrides(data: Path, out: Path, components: Path, total_steps: int) -> list[str]:
    """Overrides of examples/quickstart/less.yaml: the generated pool, one eval at the end."""
    return [
        f"dataset_dir={data}",
        "dataset=pool",
        "eval_dataset=target_valid",
        f"output_dir={out}",
        f"components_cfg_file={components}",
        f"eval_steps={total_steps}",
        "plot_loss=false",
        "save_steps=100000",
    ]


def run_one(pool: int, fraction: float, work: Path, seed: int) -> dict[str, Any]:
    """One dynamic run; its timings, scored counts, target shares and final target loss."""
    from dataflex.train.config import load_train_config
    from dataflex.train.dynamic.reports import SELECTIONS_FILE, read_selections
    from dataflex.train.runner import run_train

    data = work / f"data_{pool}"
    if not (data / "dataset_info.json").is_file():
        write_data(data, pool, seed)
    tag = f"{pool}_{fraction}"
    components = work / f"components_{tag}.yaml"
    cache = work / f"cache_{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    components.write_text(components_yaml(fraction, cache))
    out = work / f"run_{tag}"
    cfg = load_train_config(QUICKSTART / "less.yaml", train_overrides(data, out, components, 35))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = run_train(cfg)
    wall = time.perf_counter() - start
    records = read_selections(out / "dataflex" / SELECTIONS_FILE)
    log = json.loads((out / "dataflex" / "log_history.json").read_text())
    evals = [e["eval_loss"] for e in log if "eval_loss" in e]
    rounds = [r for r in records if r["round"] >= 1]
    selection_s = sum(float(r["time"]) for r in records)
    runtime = float(result.metrics["train_runtime"])
    shares = [(r.get("subtasks") or {}).get(TARGET, 0) / max(1, r["chosen"]) for r in rounds]
    return {
        "pool": pool,
        "rescore_fraction": fraction,
        "selection_s": selection_s,
        "training_s": runtime - selection_s,
        "ratio": selection_s / max(1e-9, runtime - selection_s),
        "scored": [int(r.get("scored", 0)) for r in rounds],
        "scored_total": sum(int(r.get("scored", 0)) for r in rounds),
        "bound": pool * (1 + fraction * (len(rounds) - 1)),
        "target_share": shares,
        "target_loss": evals[-1] if evals else None,
        "wall_s": wall,
        "load_1min": [load_before, os.getloadavg()[0]],
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per run; the ratio's reduction against the same pool's exact run."""
    exact = {r["pool"]: r for r in results if r["rescore_fraction"] == 1.0}
    lines = [
        "| pool | rescore_fraction | selection s | training s | selection / training | ratio vs exact "
        "| selection s vs exact | scored in all (bound) | target share per round "
        "| largest share gap vs exact | final target loss |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        base = exact.get(r["pool"])
        gain = f"{base['ratio'] / r['ratio']:.1f}x lower" if base and r is not base else "-"
        faster = f"{base['selection_s'] / r['selection_s']:.1f}x less" if base and r is not base else "-"
        diff = (
            f"{max(abs(a - b) for a, b in zip(r['target_share'], base['target_share'])):.3f}"
            if base and r is not base
            else "-"
        )
        shares = " ".join(f"{s:.2f}" for s in r["target_share"])
        loss = "-" if r["target_loss"] is None else f"{r['target_loss']:.4f}"
        lines.append(
            f"| {r['pool']} | {r['rescore_fraction']} | {r['selection_s']:.1f} | {r['training_s']:.1f} "
            f"| {r['ratio']:.2f} | {gain} | {faster} | {r['scored_total']} ({r['bound']:.0f}) | {shares} "
            f"| {diff} | {loss} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Selection seconds and selection / training against pool size, one line per fraction (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for fraction in sorted({r["rescore_fraction"] for r in results}, reverse=True):
        rs = sorted((r for r in results if r["rescore_fraction"] == fraction), key=lambda r: r["pool"])
        label = "exact (1.0)" if fraction == 1.0 else f"rescore_fraction {fraction}"
        for ax, key in zip(axes, ("selection_s", "ratio")):
            ax.plot([r["pool"] for r in rs], [r[key] for r in rs], marker="o", label=label)
    for ax, ylabel in zip(axes, ("selection time, all 6 rounds (s)", "selection time / training time")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pool size (examples)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Dynamic LESS, 6 rounds of 40 (quickstart model and schedule)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def read_results(path: Path) -> list[dict[str, Any]]:
    """The runs of a ``--json`` file, or of the JSON lines a run printed."""
    text = path.read_text()
    if path.suffix == ".json":
        return list(json.loads(text)["results"])
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"pool"')]


def machine() -> dict[str, Any]:
    """Where it ran (a shared machine: each run records its load)."""
    return {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pools", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.2, 0.05])
    parser.add_argument("--seed", type=int, default=0, help="Seed of the generated pools.")
    parser.add_argument("--work", type=Path, default=None, help="Work folder (default: a temporary one).")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="Instead of running: join earlier results (--json files, or logs of its JSON lines).",
    )
    args = parser.parse_args(argv)
    if args.merge is not None:
        results = sorted(
            (r for path in args.merge for r in read_results(path)),
            key=lambda r: (r["pool"], -r["rescore_fraction"]),
        )
        print(markdown_table(results))
        if args.json is not None:
            args.json.write_text(json.dumps({"meta": machine(), "results": results}, indent=1) + "\n")
        if args.plot is not None:
            plot(results, args.plot)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="selection_scaling_"))
    results = []
    for pool in args.pools:
        for fraction in args.fractions:
            results.append(run_one(pool, fraction, work, args.seed))
            print(json.dumps(results[-1]), flush=True)
    print(markdown_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": machine(), "results": results}, indent=1) + "\n")
    if args.plot is not None:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
