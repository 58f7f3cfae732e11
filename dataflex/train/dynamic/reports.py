"""The run's selection report: ``selections.jsonl`` and its plots.

One JSON record per round (warm-up included) in ``<output_dir>/dataflex/selections.jsonl``;
``plot_run`` draws the loss curve with the selection steps marked, the composition of
each round by source dataset (when examples carry a ``dataset`` field) and the
distribution of the chosen examples' scores per round (by ``subtask`` instead when every
example comes from one dataset). Plotting needs matplotlib
(``pip install 'dataflex[plots]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dataflex.data.sft_dataset import composition
from dataflex.io import atomic_write_text
from dataflex.selectors.base import Selection
from dataflex.train.plots import draw_loss

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SELECTIONS_FILE = "selections.jsonl"
LOG_HISTORY_FILE = "log_history.json"
TARGETS_FILE = "targets.json"
PLOT_FILES = ("loss.png", "composition.png", "scores.png")


def round_record(
    *,
    round_: int,
    step: int,
    learning_rate: float | None,
    selection: Selection,
    seconds: float,
    candidates: int,
    train_dataset: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The report record of one round."""
    return {
        "round": round_,
        "step": step,
        "lr": learning_rate,
        "time": round(seconds, 6),
        "candidates": candidates,
        "chosen": len(selection.indices),
        "scored": int(selection.metadata.get("scored", 0)),
        "composition": composition(train_dataset, selection.indices),
        "subtasks": composition(train_dataset, selection.indices, key="subtask"),
        **selection_fields(selection),
    }


SELECTION_KEYS = ("indices", "scores", "metadata")
"""The keys of a round record that copy its :class:`Selection` (a checkpoint saves them once)."""


def selection_fields(selection: Selection) -> dict[str, Any]:
    """A round record's copy of ``selection``: its indices, scores and metadata."""
    return {"indices": selection.indices, "scores": selection.scores, "metadata": selection.metadata}


class SelectionReport:
    """Append-only writer of ``selections.jsonl`` in ``report_dir``."""

    def __init__(self, report_dir: str | os.PathLike) -> None:
        self.report_dir = Path(report_dir)
        self.path = self.report_dir / SELECTIONS_FILE

    def reset(self) -> None:
        """Empty the report, atomically (a resumed run then rewrites its checkpoint's rounds)."""
        atomic_write_text(self.path, "")

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one round's record (the file is rewritten atomically: a kill never leaves half a line)."""
        old = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
        atomic_write_text(self.path, old + json.dumps(dict(record)) + "\n")

    def write_log_history(self, log_history: Sequence[Mapping[str, Any]]) -> Path:
        """Save the Trainer's ``state.log_history`` beside the selections (input of the loss plot)."""
        path = self.report_dir / LOG_HISTORY_FILE
        atomic_write_text(path, json.dumps(list(log_history), indent=1))
        return path


def read_selections(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``selections.jsonl``, in file order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _pyplot() -> ModuleType:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plotting the selection report needs matplotlib, which is not installed: "
            "pip install 'dataflex[plots]' (or pip install matplotlib)."
        ) from None
    return plt


def target_labels(eval_dataset: Sequence[object] | None) -> tuple[str, list[str]] | None:
    """What the target task is called in the pool: ``("subtask", names)`` or ``("dataset", names)``.

    The eval (target) examples' ``subtask`` values when they have one, else their
    ``dataset`` values; ``None`` without an eval dataset or labels.
    """
    if eval_dataset is None or len(eval_dataset) == 0:
        return None
    for key in ("subtask", "dataset"):
        names = sorted(
            {str(e[key]) for e in eval_dataset if isinstance(e, Mapping) and e.get(key) is not None}
        )
        if names:
            return key, names
    return None


def write_targets(report_dir: str | os.PathLike, targets: tuple[str, list[str]] | None) -> None:
    """Save the target labels beside the selections (``targets.json``; read by :func:`plot_run`)."""
    payload = None if targets is None else {"field": targets[0], "names": targets[1]}
    atomic_write_text(Path(report_dir) / TARGETS_FILE, json.dumps(payload) + "\n")


def read_targets(report_dir: str | os.PathLike) -> tuple[str, list[str]] | None:
    """The target labels saved by :func:`write_targets` (``None`` when absent)."""
    path = Path(report_dir) / TARGETS_FILE
    if not path.is_file():
        return None
    payload = json.loads(path.read_text(encoding="utf-8"))
    return None if payload is None else (payload["field"], list(payload["names"]))


def target_share(record: Mapping[str, Any], targets: tuple[str, list[str]] | None) -> int | None:
    """How many of a round's chosen examples belong to the target (``None``: unknown)."""
    if targets is None:
        return None
    counts = record.get("subtasks" if targets[0] == "subtask" else "composition")
    if counts is None:
        return None
    return sum(counts.get(name, 0) for name in targets[1])


def run_summary(
    report_dir: str | os.PathLike,
    log_history: Sequence[Mapping[str, Any]],
    *,
    headline: str,
    pool_counts: Mapping[str, Mapping[str, int]] | None = None,
    eval_name: str | None = None,
) -> list[str]:
    """The three lines printed after a dynamic run.

    Args:
        report_dir: The run's report folder (``<output_dir>/dataflex``).
        log_history: The Trainer's ``state.log_history``.
        headline: What was trained and where it was saved (the first line starts with it).
        pool_counts: Examples of the pool per label, by field (``{"subtask": {...}, "dataset": {...}}``),
            for the target's base rate.
        eval_name: What the eval (target) loss is measured on.

    Returns:
        Where the report is; the per-round share of the target task; the final target loss.
    """
    report_dir = Path(report_dir)
    records = read_selections(report_dir / SELECTIONS_FILE)
    targets = read_targets(report_dir)
    plots = [name for name in PLOT_FILES if (report_dir / name).is_file()]
    lines = [f"{headline}; report in {report_dir}/ ({', '.join([SELECTIONS_FILE, *plots])})"]
    shares = [(r, target_share(r, targets)) for r in records]
    if targets is None or any(k is None for _, k in shares):
        lines.append("target share per round: unknown (the eval examples carry no subtask/dataset label)")
    else:
        base = ""
        counts = (pool_counts or {}).get(targets[0]) or {}
        if counts:
            in_pool = sum(counts.get(name, 0) for name in targets[1])
            base = f", {in_pool / max(sum(counts.values()), 1):.0%} of the pool"
        parts = [
            f"{'warm-up' if r['round'] == 0 else 'round ' + str(r['round'])} {k}/{r['chosen']}"
            for r, k in shares
        ]
        lines.append(f"target ({', '.join(targets[1])}{base}) chosen per round: " + ", ".join(parts))
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e and "step" in e]
    if evals:
        step, loss = evals[-1]
        first = f" (step {evals[0][0]}: {evals[0][1]:.4f})" if len(evals) > 1 else ""
        on = f" on {eval_name}" if eval_name else ""
        lines.append(f"final target loss (eval_loss{on}): {loss:.4f} at step {step}{first}")
    else:
        lines.append("final target loss: not evaluated (set eval_strategy: steps and eval_steps)")
    return lines


def plot_run(
    report_dir: str | os.PathLike,
    log_history: Sequence[Mapping[str, Any]] | None = None,
    targets: tuple[str, list[str]] | None = None,
) -> list[Path]:
    """Draw the report's plots into ``report_dir``; return the files written.

    * ``loss.png``: training loss and the target (eval) loss, the selection steps marked;
    * ``composition.png``: what each round chose, by subtask (one source dataset) or by
      dataset, the target highlighted;
    * ``scores.png``: each round's score distribution over all candidates, the chosen marked.

    Args:
        report_dir: Folder holding ``selections.jsonl`` (and ``log_history.json``).
        log_history: The Trainer's ``state.log_history``; read from ``log_history.json``
            when omitted.
        targets: ``(field, names)`` of the target task (:func:`target_labels`); read from
            ``targets.json`` when omitted.

    Raises:
        ImportError: with the install command, when matplotlib is missing.
    """
    plt = _pyplot()
    report_dir = Path(report_dir)
    records = read_selections(report_dir / SELECTIONS_FILE)
    if log_history is None and (report_dir / LOG_HISTORY_FILE).is_file():
        log_history = json.loads((report_dir / LOG_HISTORY_FILE).read_text(encoding="utf-8"))
    if targets is None:
        targets = read_targets(report_dir)
    run = report_dir.resolve().parent.name
    return [
        _plot_loss(plt, report_dir / PLOT_FILES[0], records, log_history or [], targets, run),
        _plot_composition(plt, report_dir / PLOT_FILES[1], records, targets, run),
        _plot_scores(plt, report_dir / PLOT_FILES[2], records, run),
    ]


def _plot_loss(
    plt: ModuleType,
    path: Path,
    records: Sequence[Mapping[str, Any]],
    log_history: Sequence[Mapping[str, Any]],
    targets: tuple[str, list[str]] | None,
    run: str,
) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    target = f" ({', '.join(targets[1])})" if targets else ""
    drawn = draw_loss(
        ax,
        log_history,
        train_label="training loss (on each round's selection)",
        eval_label=f"target loss{target}: eval_loss",
        selection_steps=[r["step"] for r in records if r["round"] >= 1],
    )
    if not drawn["eval_loss"]:
        ax.text(
            0.99,
            0.98,
            "no eval loss logged (eval_strategy: no)",
            ha="right",
            va="top",
            transform=ax.transAxes,
            fontsize=8,
            color="0.4",
        )
    ax.set_title(f"Run '{run}': training and target loss, selection rounds dashed")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return _save(fig, path, plt)


def _plot_composition(
    plt: ModuleType,
    path: Path,
    records: Sequence[Mapping[str, Any]],
    targets: tuple[str, list[str]] | None,
    run: str,
) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    field, title = _composition_field(records)
    comps = [(r["round"], r.get(field)) for r in records]
    names = sorted({k for _, c in comps if c for k in c})
    target_names = set(targets[1]) if targets and targets[0] == title else set()
    datasets = sorted({k for r in records for k in (r.get("composition") or {})})
    ax.set_title(f"Run '{run}': what each round chose" + (f" (by {title})" if names else ""))
    if field == "composition" and len(names) == 1:
        note = (
            f"every chosen example comes from one dataset, {names[0]!r}, and carries no subtask:\n"
            "there is no composition to compare (give the rows a subtask column to see one)"
        )
        names = []
    elif not names:
        note = "the examples carry no 'dataset' or 'subtask' field"
    if names:
        others = [n for n in names if n not in target_names]
        ordered = [n for n in names if n in target_names] + others
        palette = plt.get_cmap("tab20c" if len(others) > 10 else "Pastel1")
        positions = list(range(len(comps)))
        bottom = [0] * len(comps)
        for name in ordered:
            counts = [(c or {}).get(name, 0) for _, c in comps]
            is_target = name in target_names
            ax.bar(
                positions,
                counts,
                bottom=bottom,
                color="#d62728" if is_target else palette(others.index(name) % palette.N),
                edgecolor="black" if is_target else "white",
                linewidth=1.2 if is_target else 0.5,
                label=f"{name} (target)" if is_target else name,
            )
            bottom = [b + c for b, c in zip(bottom, counts)]
        if target_names:
            for x, rec in zip(positions, records):
                share = target_share(rec, targets)
                if share is not None:
                    ax.text(x, bottom[x], f"{share}/{rec['chosen']}", ha="center", va="bottom", fontsize=8)
            ax.set_ylim(0, max(bottom) * 1.1)
        ax.set_xticks(positions, ["warm-up" if r == 0 else str(r) for r, _ in comps])
        legend_title = title + (
            f"\n(datasets: {', '.join(datasets)})" if title == "subtask" and datasets else ""
        )
        ax.legend(title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax.set_xlabel("selection round (warm-up = the random first subset)")
    ax.set_ylabel("examples chosen")
    return _save(fig, path, plt)


def _plot_scores(plt: ModuleType, path: Path, records: Sequence[Mapping[str, Any]], run: str) -> Path:
    scored = [r for r in records if r["round"] >= 1 and (r.get("metadata") or {}).get("score_histogram")]
    if not scored:
        fig, ax = plt.subplots(figsize=(8, 4))
        chosen_only = [r for r in records if r.get("scores")]
        text = (
            "the selector reported no scores (e.g. random)"
            if not chosen_only
            else "the selector reported only the chosen examples' scores (no candidate histogram)"
        )
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(f"Run '{run}': selection scores")
        return _save(fig, path, plt)
    cols = min(3, len(scored))
    rows = -(-len(scored) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 1.5, 2.6 * rows + 0.8), squeeze=False)
    label = scored[0]["metadata"].get("score_label", "score")
    for ax, rec in zip(axes.flat, scored):
        hist = rec["metadata"]["score_histogram"]
        edges, widths = hist["edges"][:-1], [b - a for a, b in zip(hist["edges"], hist["edges"][1:])]
        ax.bar(edges, hist["all"], width=widths, align="edge", color="0.75", label="all candidates")
        ax.bar(edges, hist["chosen"], width=widths, align="edge", color="#d62728", label="chosen")
        ax.set_title(
            f"round {rec['round']} (step {rec['step']}): {sum(hist['chosen'])} of {sum(hist['all'])}",
            fontsize=9,
        )
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(scored) :]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("candidates", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel(label, fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Run '{run}': each round's score over all candidates (higher = chosen first)", fontsize=10)
    return _save(fig, path, plt)


def _composition_field(records: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Plot by source dataset, or by subtask when every example comes from one dataset."""
    datasets = {k for r in records for k in (r.get("composition") or {})}
    subtasks = {k for r in records for k in (r.get("subtasks") or {})}
    if len(datasets) <= 1 and len(subtasks) > 1:
        return "subtasks", "subtask"
    return "composition", "dataset"


def _save(fig: Figure, path: Path, plt: ModuleType) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # keeps the outside legends in the picture
    plt.close(fig)
    return path
