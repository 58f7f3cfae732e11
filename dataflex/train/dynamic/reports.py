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
from typing import Any

from dataflex.data.sft_dataset import composition
from dataflex.io import atomic_write_text
from dataflex.selectors.base import Selection

SELECTIONS_FILE = "selections.jsonl"
LOG_HISTORY_FILE = "log_history.json"
PLOT_FILES = ("loss.png", "composition.png", "scores.png")


def round_record(
    *,
    round_: int,
    step: int,
    learning_rate: float | None,
    selection: Selection,
    seconds: float,
    candidates: int,
    train_dataset: Any,
) -> dict[str, Any]:
    """The report record of one round."""
    return {
        "round": round_,
        "step": step,
        "lr": learning_rate,
        "time": round(seconds, 6),
        "candidates": candidates,
        "chosen": len(selection.indices),
        "composition": composition(train_dataset, selection.indices),
        "subtasks": composition(train_dataset, selection.indices, key="subtask"),
        "indices": selection.indices,
        "scores": selection.scores,
        "metadata": selection.metadata,
    }


class SelectionReport:
    """Append-only writer of ``selections.jsonl`` in ``report_dir``."""

    def __init__(self, report_dir: str | os.PathLike) -> None:
        self.report_dir = Path(report_dir)
        self.path = self.report_dir / SELECTIONS_FILE

    def reset(self) -> None:
        """Empty the report, atomically (a resumed run then rewrites its checkpoint's rounds)."""
        atomic_write_text(self.path, "")

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one round's record."""
        self.report_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record)) + "\n")

    def write_log_history(self, log_history: Sequence[Mapping[str, Any]]) -> Path:
        """Save the Trainer's ``state.log_history`` beside the selections (input of the loss plot)."""
        path = self.report_dir / LOG_HISTORY_FILE
        atomic_write_text(path, json.dumps(list(log_history), indent=1))
        return path


def read_selections(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``selections.jsonl``, in file order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _pyplot() -> Any:
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


def plot_run(
    report_dir: str | os.PathLike, log_history: Sequence[Mapping[str, Any]] | None = None
) -> list[Path]:
    """Draw the report's plots into ``report_dir``; return the files written.

    Args:
        report_dir: Folder holding ``selections.jsonl`` (and ``log_history.json``).
        log_history: The Trainer's ``state.log_history``; read from ``log_history.json``
            when omitted.

    Raises:
        ImportError: with the install command, when matplotlib is missing.
    """
    plt = _pyplot()
    report_dir = Path(report_dir)
    records = read_selections(report_dir / SELECTIONS_FILE)
    if log_history is None and (report_dir / LOG_HISTORY_FILE).is_file():
        log_history = json.loads((report_dir / LOG_HISTORY_FILE).read_text(encoding="utf-8"))
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    points = [(e["step"], e["loss"]) for e in log_history or [] if "loss" in e and "step" in e]
    if points:
        ax.plot(*zip(*points), marker=".", label="training loss")
    for i, rec in enumerate(r for r in records if r["round"] >= 1):
        ax.axvline(
            rec["step"], color="tab:red", linestyle="--", alpha=0.6, label="selection" if i == 0 else None
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss and selection rounds")
    ax.legend()
    written.append(_save(fig, report_dir / PLOT_FILES[0], plt))

    fig, ax = plt.subplots(figsize=(7, 4))
    field, title = _composition_field(records)
    comps = [(r["round"], r.get(field)) for r in records]
    names = sorted({k for _, c in comps if c for k in c})
    if names:
        positions = list(range(len(comps)))
        bottom = [0] * len(comps)
        for name in names:
            counts = [(c or {}).get(name, 0) for _, c in comps]
            ax.bar(positions, counts, bottom=bottom, label=name)
            bottom = [b + c for b, c in zip(bottom, counts)]
        ax.set_xticks(positions, [str(r) for r, _ in comps])
        ax.legend(title=title)
    else:
        note = "examples carry no 'dataset' field"
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("round (0 = warm-up)")
    ax.set_ylabel("examples chosen")
    ax.set_title("Composition of each round's selection")
    written.append(_save(fig, report_dir / PLOT_FILES[1], plt))

    fig, ax = plt.subplots(figsize=(7, 4))
    scored = [(r["round"], r["scores"]) for r in records if r.get("scores")]
    if scored:
        ax.boxplot([s for _, s in scored], tick_labels=[str(r) for r, _ in scored])
    else:
        ax.text(0.5, 0.5, "the selector reported no scores", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("round")
    ax.set_ylabel("score of chosen examples")
    ax.set_title("Score distribution per round")
    written.append(_save(fig, report_dir / PLOT_FILES[2], plt))
    return written


def _composition_field(records: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Plot by source dataset, or by subtask when every example comes from one dataset."""
    datasets = {k for r in records for k in (r.get("composition") or {})}
    subtasks = {k for r in records for k in (r.get("subtasks") or {})}
    if len(datasets) <= 1 and len(subtasks) > 1:
        return "subtasks", "subtask"
    return "composition", "dataset"


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
