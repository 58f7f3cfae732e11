"""What dynamic LESS selection costs: a dynamic run over a plain run of the same steps, by phase.

Both runs go through ``dataflex.train.runner.run_train``, the function behind
``dataflex-cli train``, from a YAML config written here: the same model, data, seed,
batch and number of optimizer steps; the plain run has ``train_type: static`` and
``max_steps`` = the schedule's total, the dynamic run ``train_type: dynamic_select`` with
the LESS selector. Nothing is re-implemented; the phases are read from what the runs record:

* total: the Trainer's own ``train_runtime`` (from before ``on_train_begin``, where
  round 0 is drawn, to the end of the last step; the report plots come after it and are
  off here, ``plot_loss: false``);
* a selection round: its ``time`` in ``<output_dir>/dataflex/selections.jsonl``;
* LESS features (per-example gradients, Adam transform, projection, feature cache; for the
  candidates and the validation set) and scoring (cosine similarities): the LESS
  selector's ``time_features_s`` / ``time_scoring_s`` in each round's metadata;
* other selection overhead: the rounds' time less features and scoring (candidate draw,
  Adam state, score cache, cumulative scores, top-k, the warm-up round's random draw);
* training: total less the rounds (forward, backward, optimizer, dataloader; the
  per-round dataloader restarts of the dynamic run included).

Setting: a randomly initialised Llama built from a config (hidden 256, 4 layers, vocab of
the quickstart tokenizer), LoRA r = 16 on all linear layers, alpaca_en_demo as the pool
(cutoff 256 tokens), a 16-example identity.json slice as the LESS target set, and a schedule
in the seed guide's shape (warmup_step = update_step, 2 rounds). Each ``--points`` entry
``PROJ_DIM:MAX_CANDIDATES`` is one dynamic run. Prints a markdown table; writes JSON and a
stacked-bar PNG when asked. Asserts nothing about time.

    python benchmarks/selection_overhead.py                    # ~6 min on 2 idle cores
    python benchmarks/selection_overhead.py --json docs/benchmarks/selection_overhead.json \\
        --plot docs/benchmarks/selection_overhead.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_MODEL = REPO / "examples" / "quickstart" / "model"
SHARED_DATA = REPO.parent / "shared" / "data" / "llamafactory"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
PHASES = ("training", "less_features", "scoring", "other_selection")
PHASE_LABELS = {
    "training": "training (fwd/bwd/optimizer)",
    "less_features": "LESS features (grads + projection)",
    "scoring": "scoring (similarities)",
    "other_selection": "other selection overhead",
}


# -- phase accounting (pure; tested in tests/test_selection_overhead.py) ---------------------------------


def round_totals(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Sum the per-round times of a ``selections.jsonl``.

    Args:
        records: The report's records, one per round (round 0 is the warm-up draw).

    Returns:
        ``rounds_s`` (every round's ``time``), ``features_s`` and ``scoring_s`` (the
        selector's ``time_features_s`` / ``time_scoring_s``, 0 when absent), ``scored_rounds``
        (rounds ≥ 1), ``candidates_scored`` (the LESS metadata's ``candidates`` summed over
        rounds ≥ 1) and ``cache_hits`` (rounds whose scores came from the cache: their
        features were not computed, so the timing would not be a cost).
    """
    out = dict.fromkeys(("rounds_s", "features_s", "scoring_s"), 0.0)
    scored = candidates = hits = 0
    for rec in records:
        out["rounds_s"] += float(rec["time"])
        if rec["round"] < 1:
            continue
        meta = rec.get("metadata") or {}
        scored += 1
        out["features_s"] += float(meta.get("time_features_s", 0.0))
        out["scoring_s"] += float(meta.get("time_scoring_s", 0.0))
        candidates += int(meta.get("candidates", rec.get("candidates", 0)))
        hits += bool(meta.get("cache_hit", False))
    return {**out, "scored_rounds": scored, "candidates_scored": candidates, "cache_hits": hits}


def phase_split(train_runtime_s: float, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Split a dynamic run's ``train_runtime`` into the four phases; they sum to it.

    Args:
        train_runtime_s: The Trainer's ``train_runtime`` of the dynamic run.
        records: Its ``selections.jsonl`` records.

    Raises:
        ValueError: when the rounds take longer than the run (not the same run), or a round
            reused cached scores (its cost would not be measured).
    """
    totals = round_totals(records)
    if totals["cache_hits"]:
        raise ValueError(
            f"{totals['cache_hits']} round(s) reused cached scores; run with a fresh output_dir/cache_dir."
        )
    if totals["rounds_s"] > train_runtime_s:
        raise ValueError(
            f"the selection rounds took {totals['rounds_s']:.3f}s, more than the run's train_runtime "
            f"{train_runtime_s:.3f}s: the report and the runtime are not from the same run."
        )
    features, scoring = totals["features_s"], totals["scoring_s"]
    return {
        "training": train_runtime_s - totals["rounds_s"],
        "less_features": features,
        "scoring": scoring,
        "other_selection": totals["rounds_s"] - features - scoring,
    }


def summarize_point(
    plain_runtime_s: float,
    plain_examples: int,
    dyn_runtime_s: float,
    records: Sequence[Mapping[str, Any]],
    val_examples: int,
) -> dict[str, Any]:
    """Ratios of one dynamic run against the plain run.

    Args:
        plain_runtime_s: ``train_runtime`` of the plain run.
        plain_examples: Examples the plain run trained on (steps × global batch).
        dyn_runtime_s: ``train_runtime`` of the dynamic run.
        records: The dynamic run's ``selections.jsonl`` records.
        val_examples: Size of the LESS target set (its features are computed every round).

    Returns:
        The phase split, ``ratio`` (dynamic / plain), per-example costs and
        ``per_candidate_x_train_example``: a scored round's time per candidate as a
        multiple of one training example (its share of a plain step: forward, backward,
        optimizer). The ``*_own_*`` figures take the training example's cost from the
        dynamic run's own training phase instead, which ran interleaved with its
        selection rounds and so under the same load (``self_ratio`` = total / training).
    """
    split = phase_split(dyn_runtime_s, records)
    totals = round_totals(records)
    per_train_example = plain_runtime_s / plain_examples
    rows = totals["candidates_scored"] + val_examples * totals["scored_rounds"]
    scored_rounds_s = sum(float(r["time"]) for r in records if r["round"] >= 1)
    per_candidate = scored_rounds_s / totals["candidates_scored"]
    own_train_example = split["training"] / plain_examples
    return {
        "phases_s": split,
        "total_s": dyn_runtime_s,
        "ratio": dyn_runtime_s / plain_runtime_s,
        "training_ratio": split["training"] / plain_runtime_s,
        "rounds": totals["scored_rounds"],
        "candidates_per_round": totals["candidates_scored"] / max(totals["scored_rounds"], 1),
        "feature_rows": rows,
        "per_train_example_s": per_train_example,
        "per_feature_row_s": totals["features_s"] / rows,
        "per_candidate_s": per_candidate,
        "per_candidate_x_train_example": per_candidate / per_train_example,
        "self_ratio": dyn_runtime_s / split["training"],
        "own_train_example_s": own_train_example,
        "per_feature_row_x_own_train_example": totals["features_s"] / rows / own_train_example,
        "per_candidate_x_own_train_example": per_candidate / own_train_example,
    }


# -- the runs --------------------------------------------------------------------------------------------


def make_model_dir(path: Path, hidden: int, layers: int, seed: int) -> Path:
    """A randomly initialised Llama (from a config) with the quickstart tokenizer, saved in ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    base = json.loads((QUICKSTART_MODEL / "config.json").read_text())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=base["vocab_size"],
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=512,
        bos_token_id=base["bos_token_id"],
        eos_token_id=base["eos_token_id"],
        pad_token_id=base["pad_token_id"],
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(QUICKSTART_MODEL / name, path / name)
    return path


def make_target_file(path: Path, examples: int) -> Path:
    """The LESS target set: the first ``examples`` rows of the demo ``identity.json``."""
    rows = json.loads((SHARED_DATA / "identity.json").read_text(encoding="utf-8"))[:examples]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def train_yaml(args: argparse.Namespace, model: Path, target: Path, out: Path, point: str | None) -> str:
    """The training YAML of the plain run (``point`` None) or of one dynamic point."""
    steps = args.steps * (args.rounds + 1)
    lines = [
        f"model_name_or_path: {model}",
        "stage: sft",
        "do_train: true",
        "finetuning_type: lora",
        "lora_target: all",
        f"lora_rank: {args.lora_rank}",
        f"lora_alpha: {2 * args.lora_rank}",
        "dataset: alpaca_en_demo",
        f"dataset_dir: {SHARED_DATA}",
        f"eval_dataset: {target}",
        "template: tokenizer",
        f"cutoff_len: {args.cutoff}",
        "seed: 42",
        f"output_dir: {out}",
        f"logging_steps: {args.steps}",
        "save_steps: 100000",
        "plot_loss: false",
        "overwrite_output_dir: true",
        f"per_device_train_batch_size: {args.batch}",
        "learning_rate: 1.0e-3",
        "lr_scheduler_type: cosine",
        "warmup_ratio: 0.1",
        "eval_strategy: 'no'",
    ]
    if point is None:
        lines.append(f"max_steps: {steps}")
    else:
        lines += [
            "train_type: dynamic_select",
            f"components_cfg_file: {out.parent / (out.name + '_components.yaml')}",
            "component_name: less",
            f"warmup_step: {args.steps}",
            f"update_step: {args.steps}",
            f"update_times: {args.rounds}",
        ]
    return "\n".join(lines) + "\n"


def components_yaml(proj_dim: int, max_candidates: int, batch_size: int) -> str:
    """The LESS component: the shipped settings with ``proj_dim`` / ``max_candidates`` set."""
    return (
        "selectors:\n  less:\n    name: less\n    params:\n"
        "      gradient_type: adam\n      seed: 123\n      projector: auto\n"
        f"      proj_dim: {proj_dim}\n      max_candidates: {max_candidates}\n"
        f"      batch_size: {batch_size}\n"
    )


def run(config_path: Path) -> dict[str, Any]:
    """``dataflex-cli train config_path`` in this process; the metrics and the selection report."""
    from dataflex.train.config import load_train_config
    from dataflex.train.dynamic.reports import SELECTIONS_FILE, read_selections
    from dataflex.train.runner import run_train

    cfg = load_train_config(config_path)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = run_train(cfg)
    wall = time.perf_counter() - start
    report = Path(cfg.output_dir) / "dataflex" / SELECTIONS_FILE
    return {
        "train_runtime_s": float(result.metrics["train_runtime"]),
        "run_train_wall_s": wall,
        "global_step": result.global_step,
        "load_1min": [load_before, os.getloadavg()[0]],
        "records": read_selections(report) if report.is_file() else [],
    }


def plain_result(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The plain baseline: the mean ``train_runtime`` of the runs before and after the dynamic ones."""
    runs = [{k: v for k, v in r.items() if k != "records"} for r in (before, after)]
    return {
        "train_runtime_s": (before["train_runtime_s"] + after["train_runtime_s"]) / 2,
        "load_1min": [runs[0]["load_1min"][0], runs[1]["load_1min"][1]],
        "runs": runs,
    }


def machine() -> dict[str, Any]:
    """CPU model, cores, load, versions: what the page states with every figure."""
    import peft
    import torch
    import transformers

    import dataflex

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), "?")
    except OSError:
        cpu = platform.processor() or "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "dataflex": getattr(dataflex, "__version__", "?"),
        "load_avg_start": list(os.getloadavg()),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# -- output ----------------------------------------------------------------------------------------------


def load_range(result: Mapping[str, Any]) -> tuple[float, float]:
    """Lowest and highest 1-minute load average seen at the start or end of any run."""
    runs = [*result["plain"]["runs"], *result["points"]]
    loads = [x for r in runs for x in r["load_1min"]]
    return min(loads), max(loads)


def markdown_table(result: Mapping[str, Any]) -> str:
    """The page's table: one row for the plain run, one per dynamic point."""
    plain = result["plain"]
    before, after = (r["train_runtime_s"] for r in plain["runs"])
    lines = [
        "| run | total (s) | training (s) | LESS features (s) | scoring (s) | other selection (s) "
        "| candidates/round | × plain | total / own training | s per candidate | ÷ training example "
        "| load at end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| plain (static; runs before/after: {before:.1f} / {after:.1f}) | {plain['train_runtime_s']:.1f} "
        f"| {plain['train_runtime_s']:.1f} | - | - | - | - | 1.00 | - | - | - "
        f"| {plain['load_1min'][1]:.1f} |",
    ]
    for p in result["points"]:
        s, ph = p["summary"], p["summary"]["phases_s"]
        lines.append(
            f"| LESS k={p['proj_dim']}, {p['max_candidates']} candidates | {s['total_s']:.1f} "
            f"| {ph['training']:.1f} | {ph['less_features']:.1f} | {ph['scoring']:.2f} "
            f"| {ph['other_selection']:.2f} | {s['candidates_per_round']:.0f} | {s['ratio']:.2f} "
            f"| {s['self_ratio']:.2f} | {s['per_candidate_s']:.3f} "
            f"| {s['per_candidate_x_own_train_example']:.1f} | {p['load_1min'][1]:.1f} |"
        )
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Stacked bars of the phase split, the plain run first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["plain"] + [f"LESS k={p['proj_dim']}\n{p['max_candidates']} cand." for p in result["points"]]
    splits = [{"training": result["plain"]["train_runtime_s"]}] + [
        p["summary"]["phases_s"] for p in result["points"]
    ]
    fig, ax = plt.subplots(figsize=(8.4, 3.6))
    bottom = [0.0] * len(splits)
    for phase, color in zip(PHASES, ("tab:blue", "tab:orange", "tab:green", "tab:gray")):
        values = [s.get(phase, 0.0) for s in splits]
        ax.bar(labels, values, bottom=bottom, label=PHASE_LABELS[phase], color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    for i, total in enumerate(bottom):
        ratio = total / bottom[0]
        ax.text(i, total, f"{ratio:.1f}×", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("seconds (train_runtime)")
    m = result["machine"]
    low, high = load_range(result)
    ax.set_title(
        f"Dynamic LESS vs plain run, {result['setting']['steps_total']} steps "
        f"({m['cores']} CPU cores, load {low:.1f}-{high:.1f})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_ylim(0, max(bottom) * 1.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------------------


def parse_points(values: Sequence[str]) -> list[tuple[int, int]]:
    """``PROJ_DIM:MAX_CANDIDATES`` strings → pairs."""
    points = []
    for value in values:
        try:
            k, c = (int(x) for x in value.split(":"))
        except ValueError:
            raise SystemExit(f"--points: {value!r} is not PROJ_DIM:MAX_CANDIDATES, e.g. 8192:64") from None
        points.append((k, c))
    return points


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--points", nargs="+", default=["8192:64", "8192:128", "1024:128"], help="PROJ_DIM:MAX_CANDIDATES"
    )
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--cutoff", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="per-device train batch")
    p.add_argument("--steps", type=int, default=4, help="warmup_step = update_step")
    p.add_argument("--rounds", type=int, default=2, help="update_times")
    p.add_argument("--val", type=int, default=16, help="LESS target examples")
    p.add_argument("--selector-batch", type=int, default=8, help="LESS batch_size (the shipped default)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--plot", type=Path, default=None, help="draw the stacked-bar PNG here")
    p.add_argument(
        "--from-json", type=Path, default=None, help="run nothing: print the table and plot a saved --json"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        setting = result["setting"]
        for p in result["points"]:  # recomputed, so that a saved run gets every current figure
            p["summary"] = summarize_point(
                result["plain"]["train_runtime_s"],
                setting["examples_trained"],
                p["train_runtime_s"],
                p["rounds"],
                setting["val"],
            )
        report(result, args)
        return result
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    points = parse_points(args.points)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dataflex-overhead-")
        work = Path(tmp.name)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    try:
        result: dict[str, Any] = {"machine": machine()}
        model = make_model_dir(work / "model", args.hidden, args.layers, seed=0)
        target = make_target_file(work / "target.json", args.val)
        steps_total = args.steps * (args.rounds + 1)
        result["setting"] = {
            **{k: v for k, v in vars(args).items() if k not in ("workdir", "json", "plot", "points")},
            "steps_total": steps_total,
            "examples_trained": steps_total * args.batch,
        }

        def one(name: str, point: tuple[int, int] | None) -> dict[str, Any]:
            out = work / name
            shutil.rmtree(out, ignore_errors=True)  # a stale feature/score cache would be a hit
            if point is not None:
                Path(str(out) + "_components.yaml").write_text(components_yaml(*point, args.selector_batch))
            config = work / f"{name}.yaml"
            config.write_text(train_yaml(args, model, target, out, None if point is None else name))
            print(f"== {name}: dataflex-cli train {config}", flush=True)
            return run(config)

        one("warmup", None)  # first-use costs (lazy imports, allocator, MKL) fall here, not on "plain"
        plain = one("plain", None)
        result["points"] = []
        for k, c in points:
            dyn = one(f"less_k{k}_c{c}", (k, c))
            rounds = [{key: r[key] for key in ("round", "step", "time", "metadata")} for r in dyn["records"]]
            result["points"].append({"proj_dim": k, "max_candidates": c, **dyn, "rounds": rounds})
        after = one("plain_after", None)  # brackets the dynamic runs: drift of the load shows here
        result["plain"] = plain_result(plain, after)
        for p in result["points"]:
            p["summary"] = summarize_point(
                result["plain"]["train_runtime_s"],
                steps_total * args.batch,
                p["train_runtime_s"],
                p.pop("records"),
                args.val,
            )
        result["load_avg_end"] = list(os.getloadavg())
    finally:
        if tmp is not None:
            tmp.cleanup()

    report(result, args)
    return result


def report(result: Mapping[str, Any], args: argparse.Namespace) -> None:
    """Print the machine line and the markdown table; write the JSON and the plot if asked."""
    m = result["machine"]
    low, high = load_range(result)
    print()
    print(
        f"{m['cpu']}, {m['cores']} cores, GPU: {m['gpu']}, {m['torch_threads']} torch threads; "
        f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}, "
        f"dataflex {m['dataflex']}; started {m['started']}; 1-minute load average {low:.1f}-{high:.1f}"
    )
    print()
    print(markdown_table(result))
    if args.json and args.from_json is None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
