"""Selection quality: does LESS beat random, loss-based and full-data training on a target task?

Three settings (see ``benchmarks/quality_settings.py``), each with its target task(s);
per target, five arms at the same number of optimizer steps and examples
(``benchmarks/quality_arms.py``), three seeds each. Reported per arm: precision (the
share of each round's selection from the target family), the target validation and
held-out test losses after training, and the wall time split into training,
features, scoring and the rest. From the repository root::

    python -m benchmarks.selection_quality                        # quickstart + llamafactory, 3 seeds
    python -m benchmarks.selection_quality --setting quickstart   # one setting
    python -m benchmarks.selection_quality --setting paraphrase --arms less less_pd2048 random full
    python -m benchmarks.selection_quality --seeds 0 --arms less random
    python -m benchmarks.selection_quality --from-json --plot       # redraw from saved results

Writes ``<work>/<setting>/results.json``, prints a markdown table per target and,
with ``--plot``, draws ``docs/benchmarks/selection_quality.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.less_variants import VARIANTS
from benchmarks.quality_arms import ARMS, ArmResult, run_arm
from benchmarks.quality_settings import (
    Setting,
    Target,
    llamafactory_setting,
    paraphrase_setting,
    quickstart_setting,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "llamafactory"
SETTINGS = ("quickstart", "llamafactory", "paraphrase")
DEFAULT_SETTINGS = ("quickstart", "llamafactory")  # what --setting all runs


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN when empty or any is NaN)."""
    if not values or any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: list[ArmResult]) -> dict[str, dict[str, Any]]:
    """Per arm: mean and spread over seeds of precision, losses and wall-time split."""
    out: dict[str, dict[str, Any]] = {}
    for arm in dict.fromkeys(r.arm for r in results):
        rs = [r for r in results if r.arm == arm]
        row: dict[str, Any] = {"seeds": [r.seed for r in rs]}
        row["precision"] = mean_spread([statistics.fmean(r.precision) for r in rs])
        row["precision_min_round"] = min(min(r.precision) for r in rs)
        # per round, mean over seeds; and the worst of any seed after the first scored round
        row["precision_rounds"] = [statistics.fmean(p) for p in zip(*(r.precision for r in rs))]
        later = [p for r in rs for p in r.precision[1:]]
        row["precision_min_after_first"] = min(later) if later else math.nan
        row["run_share"] = mean_spread([r.run_share for r in rs])
        for key in ("valid_loss", "test_loss", "wall_s", "train_s", "features_s", "scoring_s"):
            row[key] = mean_spread([getattr(r, key) for r in rs])
        row["other_s"] = mean_spread(
            [r.wall_s - r.train_s - r.features_s - r.scoring_s - r.warmup_s for r in rs]
        )
        row["warmup_s"] = mean_spread([r.warmup_s for r in rs])
        out[arm] = row
    return out


def verdict(summary: dict[str, dict[str, Any]], target: Target, arm: str = "less") -> dict[str, Any]:
    """The issue's targets for ``arm``: precision ≥ 0.8 (target ≤ 10% of the pool) on average
    and in every round of every seed after the first scored round, and validation and
    held-out test loss below random's and full's beyond the seed spread (mean + spread <
    mean − spread)."""
    out: dict[str, Any] = {}
    less = summary.get(arm)
    if less is None:
        return out
    if target.pool_share <= 0.10:
        out["precision>=0.8"] = less["precision"][0] >= 0.8
        if not math.isnan(less.get("precision_min_after_first", math.nan)):
            out["every_round_after_first>=0.8"] = less["precision_min_after_first"] >= 0.8
    for key in ("valid_loss", "test_loss"):
        for other in ("random", "full"):
            if other in summary:
                (m, s), (mo, so) = less[key], summary[other][key]
                out[f"{key}<{other}"] = m + s < mo - so
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    """The markdown table of one target."""
    lines = [
        "| arm | precision (mean ± sd; worst round) | target valid loss | held-out test loss "
        "| wall s | train s | features s | scoring s | other s | worst round after the first "
        "| target share of the run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(pair: tuple[float, float], fmt: str = ".3f") -> str:
        return f"{pair[0]:{fmt}} ± {pair[1]:{fmt}}"

    for arm, row in summary.items():
        other = row["other_s"][0] + row["warmup_s"][0]
        lines.append(
            f"| {arm} | {ms(row['precision'], '.2f')}; {row['precision_min_round']:.2f} "
            f"| {ms(row['valid_loss'])} | {ms(row['test_loss'])} | {row['wall_s'][0]:.1f} "
            f"| {row['train_s'][0]:.1f} | {row['features_s'][0]:.1f} | {row['scoring_s'][0]:.2f} "
            f"| {other:.1f} | {row.get('precision_min_after_first', math.nan):.2f} "
            f"| {ms(row.get('run_share', (math.nan, math.nan)), '.2f')} |"
        )
    return "\n".join(lines)


def rounds_table(summary: dict[str, dict[str, Any]]) -> str:
    """Precision per scored round (mean over seeds), one row per dynamic arm."""
    rows = {a: r["precision_rounds"] for a, r in summary.items() if len(r.get("precision_rounds", [])) > 1}
    if not rows:
        return ""
    width = max(len(r) for r in rows.values())
    lines = [
        "| arm | " + " | ".join(f"round {i + 1}" for i in range(width)) + " |",
        "|---|" + "---|" * width,
    ]
    for arm, values in rows.items():
        cells = [f"{v:.2f}" for v in values] + [""] * (width - len(values))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_setting(name: str, work: Path, targets: list[str]) -> Setting:
    if name == "quickstart":
        return quickstart_setting(work / name)
    if name == "paraphrase":
        return paraphrase_setting(work / name)
    if not (SHARED / "dataset_info.json").is_file():
        raise SystemExit(f"the llamafactory setting needs {SHARED} (the shared demo datasets).")
    return llamafactory_setting(work / name, SHARED, target_names=tuple(targets))


def run_setting(
    name: str, work: Path, seeds: list[int], arms: list[str], targets: list[str]
) -> dict[str, Any]:
    """Build the setting, run every (target, arm, seed), and return the results."""
    t0 = time.perf_counter()
    setting = build_setting(name, work, targets)
    prepare_s = time.perf_counter() - t0
    report: dict[str, Any] = {
        "setting": name,
        "pool_size": setting.pool_size,
        "steps": setting.total_steps,
        "batch_size": setting.batch_size,
        "schedule": [setting.warmup_step, setting.update_step, setting.update_times],
        "prepare_s": prepare_s,
        "targets": {},
    }
    for target in setting.targets:
        results = []
        for seed in seeds:
            for arm in arms:
                r = run_arm(setting, target, arm, seed)
                print(
                    f"[{name}/{target.name}] {arm} seed {seed}: "
                    f"precision {statistics.fmean(r.precision):.2f} "
                    f"valid {r.valid_loss:.3f} test {r.test_loss:.3f} wall {r.wall_s:.1f}s",
                    flush=True,
                )
                results.append(r)
        summary = summarize(results)
        report["targets"][target.name] = {
            "pool_share": target.pool_share,
            "runs": [r.as_dict() for r in results],
            "summary": summary,
            "verdict": verdict(summary, target),
            "verdicts": {a: verdict(summary, target, a) for a in summary if a not in ("random", "full")},
        }
    report["wall_s"] = time.perf_counter() - t0
    return report


def plot(reports: list[dict[str, Any]], path: Path) -> None:
    """Target validation loss and precision per arm, one column per (setting, target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r["setting"], t, v) for r in reports for t, v in r["targets"].items()]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 5.2), squeeze=False)
    for col, (setting, target, data) in enumerate(panels):
        arms = list(data["summary"])
        for row, key, label in ((0, "valid_loss", "target valid loss"), (1, "precision", "precision")):
            ax = axes[row][col]
            means = [data["summary"][a][key][0] for a in arms]
            sds = [data["summary"][a][key][1] for a in arms]
            ax.bar(
                arms, means, yerr=sds, capsize=3, color=["C0" if a.startswith("less") else "C7" for a in arms]
            )
            ax.set_ylabel(label)
            ax.tick_params(axis="x", rotation=45, labelsize=8)
            if row == 0:
                ax.set_title(f"{setting}: {target} ({data['pool_share']:.0%} of pool)", fontsize=9)
                lo = min(m - s for m, s in zip(means, sds))
                ax.set_ylim(bottom=max(0.0, lo - 0.2 * (max(means) - lo + 1e-9)))
            else:
                ax.set_ylim(0, 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=[*ARMS, *VARIANTS], default=list(ARMS))
    parser.add_argument(
        "--lf-targets",
        nargs="+",
        choices=["identity", "glaive_toolcall_en_demo"],
        default=["identity", "glaive_toolcall_en_demo"],
        help="targets of the llamafactory setting (each adds ~9 min on 2 cores)",
    )
    parser.add_argument("--work", type=Path, default=Path("saves/bench_quality"))
    parser.add_argument(
        "--from-json", action="store_true", help="reprint and redraw from <work>/<setting>/results.json"
    )
    parser.add_argument(
        "--name",
        nargs="+",
        default=["results.json"],
        help="results file(s) under <work>/<setting>/; several only with --from-json (one plot panel each)",
    )
    parser.add_argument("--plot", type=Path, nargs="?", const=REPO / "docs/benchmarks/selection_quality.png")
    args = parser.parse_args(argv)
    if len(args.name) > 1 and not args.from_json:
        parser.error("--name: a run writes one results file; several names only with --from-json.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("dataflex").setLevel(logging.WARNING)
    reports = []
    settings = DEFAULT_SETTINGS if args.setting == "all" else (args.setting,)
    for name, file in ((n, f) for n in settings for f in args.name):
        results = args.work / name / file
        if args.from_json:
            report = json.loads(results.read_text())
            if len(args.name) > 1:  # the panel's title names the file
                report["setting"] = f"{name} ({Path(file).stem})"
        else:
            report = run_setting(name, args.work, args.seeds, args.arms, args.lf_targets)
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(json.dumps(report, indent=1) + "\n")
        print(
            f"\n## {name}: pool {report['pool_size']}, {report['steps']} steps x {report['batch_size']}, "
            f"wall {report['wall_s']:.0f} s (setup {report['prepare_s']:.0f} s)"
        )
        for target, data in report["targets"].items():
            print(f"\n### target {target} ({data['pool_share']:.1%} of the pool): {data['verdict']}\n")
            print(table(data["summary"]))
            per_round = rounds_table(data["summary"])
            if per_round:
                print(f"\nprecision per round (mean over seeds):\n\n{per_round}")
        reports.append(report)
    if args.plot:
        plot(reports, args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
