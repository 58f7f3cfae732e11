"""Draw the plots of docs/benchmarks.md from the benchmarks' JSON output (matplotlib, Agg).

    python benchmarks/plot_benchmarks.py projectors docs/benchmarks/projectors_idle.json \\
        docs/benchmarks/projectors.png

``projectors``: GFLOP/s on LESS's stream per method, one group of bars per (D, k), from
``benchmarks/projectors.py --json``. (The selection-overhead plot is drawn by
``benchmarks/selection_overhead.py --plot``.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# method (as benchmarks/projectors.py names it) → (legend label, colour); the cached and the
# gaussian variants are named differently at D = 2e5 (":all", the cache holds P) and 2e6.
SERIES = {
    "gemm": ("fp32 GEMM, premade matrix", "tab:gray"),
    "rademacher:all": ("dataflex rademacher, cache (all of P at 2e5, 2 GiB at 2e6)", "tab:blue"),
    "rademacher": ("dataflex rademacher, cache (all of P at 2e5, 2 GiB at 2e6)", "tab:blue"),
    "rademacher:none": ("dataflex rademacher, regenerated every call", "tab:cyan"),
    "gaussian:all": ("dataflex gaussian", "tab:green"),
    "gaussian": ("dataflex gaussian", "tab:green"),
    "trak-rademacher": ("TRAK BasicProjector, rademacher", "tab:red"),
    "trak-normal": ("TRAK BasicProjector, normal", "tab:orange"),
}


def plot_projectors(data: dict, path: Path) -> None:
    """Grouped bars of GFLOP/s: one group per (D, k), one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({(r["d"], r["k"]) for r in data["rows"]})
    labels = list(dict.fromkeys(SERIES[r["method"]][0] for r in data["rows"] if r["method"] in SERIES))
    colours = {label: colour for label, colour in SERIES.values()}
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for j, label in enumerate(labels):
        xs, ys = [], []
        for i, shape in enumerate(shapes):
            for r in data["rows"]:
                if (r["d"], r["k"]) == shape and SERIES.get(r["method"], ("",))[0] == label:
                    xs.append(i + (j - (len(labels) - 1) / 2) * width)
                    ys.append(r["gflops"])
        ax.bar(xs, ys, width, label=label, color=colours[label])
    ax.set_xticks(range(len(shapes)), [f"D = {d:.0e}, k = {k}".replace("e+0", "e") for d, k in shapes])
    ax.set_ylabel("GFLOP/s (2·B·D·k / time)")
    ax.set_title(
        f"Projecting LESS's stream (batches of {data.get('batch', 16)}), "
        f"{data.get('threads', '?')} CPU threads",
        fontsize=10,
    )
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["projectors"])
    parser.add_argument("json", type=Path, help="the benchmark's --json output")
    parser.add_argument("png", type=Path)
    args = parser.parse_args()
    data = json.loads(args.json.read_text())
    plot_projectors(data, args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
