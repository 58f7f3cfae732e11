"""Loss curves of a run: the one loss-plot function, and the ``plot_loss: true`` files.

:func:`draw_loss` draws the training and/or eval loss of a Trainer ``log_history`` on
an axes, with optional selection steps marked; the Hugging Face-style
``training_loss.png`` / ``training_eval_loss.png`` (:func:`plot_loss`) and the selection
report's ``loss.png`` (:func:`dataflex.train.dynamic.reports.plot_run`) both use it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

TRAIN_COLOR = "#1f77b4"
EVAL_COLOR = "#d62728"
SELECTION_COLOR = "#7f7f7f"


def smooth(values: list[float], weight: float = 0.0) -> list[float]:
    """Exponential moving average (TensorBoard style); ``weight=0`` returns the values."""
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def loss_points(log_history: Sequence[Mapping[str, Any]], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every finite ``key`` entry of a Trainer ``log_history``."""
    return [
        (int(e["step"]), float(e[key]))
        for e in log_history
        if key in e and "step" in e and isinstance(e[key], int | float) and math.isfinite(e[key])
    ]


def draw_loss(
    ax: Axes,
    log_history: Sequence[Mapping[str, Any]],
    *,
    train: bool = True,
    train_label: str = "training loss",
    eval_label: str | None = "eval loss",
    selection_steps: Sequence[int] = (),
) -> dict[str, int]:
    """Draw the loss curves of ``log_history`` on ``ax``.

    Args:
        ax: A matplotlib axes.
        log_history: The Trainer's ``state.log_history``.
        train: Draw the training loss (``loss``), smoothed when there are more than 10 points.
        train_label: Legend label of the training loss.
        eval_label: Legend label of the eval loss (``eval_loss``); ``None``: do not draw it.
        selection_steps: Optimizer steps at which a selection round was made (dashed lines).

    Returns:
        How many points of each curve were drawn (``{"loss": n, "eval_loss": m}``).
    """
    drawn = {"loss": 0, "eval_loss": 0}
    if train:
        points = loss_points(log_history, "loss")
        if points:
            steps, values = zip(*points)
            many = len(points) > 10
            ax.plot(
                steps,
                values,
                color=TRAIN_COLOR,
                alpha=0.35 if many else 1.0,
                marker="." if not many else None,
                label=train_label + (" (logged)" if many else ""),
            )
            if many:
                ax.plot(
                    steps, smooth(list(values), 0.9), color=TRAIN_COLOR, label=f"{train_label} (smoothed)"
                )
            drawn["loss"] = len(points)
    if eval_label is not None:
        points = loss_points(log_history, "eval_loss")
        if points:
            ax.plot(*zip(*points), color=EVAL_COLOR, marker="o", markersize=4, linewidth=2, label=eval_label)
            drawn["eval_loss"] = len(points)
    for i, step in enumerate(selection_steps):
        ax.axvline(
            step,
            color=SELECTION_COLOR,
            linestyle="--",
            linewidth=1,
            alpha=0.7,
            label="selection round" if i == 0 else None,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean token cross-entropy)")
    ax.grid(alpha=0.25)
    return drawn


def plot_loss(
    log_history: list[dict[str, Any]], output_dir: str | Path, eval_name: str | None = None
) -> list[Path]:
    """Write ``training_loss.png`` (and ``training_eval_loss.png`` when evaluated) in ``output_dir``.

    The titles name the run (the ``output_dir`` folder), the legends what each curve is.

    Args:
        log_history: The Trainer's ``state.log_history``.
        output_dir: The run's output folder.
        eval_name: What the eval loss is measured on (e.g. the ``eval_dataset`` names).

    Returns:
        The files written (none if the run logged no loss).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(output_dir).resolve().name
    written = []
    for key, filename, title in (
        ("loss", "training_loss.png", f"Training loss of run '{run}'"),
        ("eval_loss", "training_eval_loss.png", f"Eval loss of run '{run}'"),
    ):
        if not loss_points(log_history, key):
            if key == "loss":
                logger.warning(
                    "no training loss was logged (logging_steps > steps?); %s not written", filename
                )
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        label = f"eval loss on {eval_name}" if eval_name else "eval loss"
        draw_loss(ax, log_history, train=key == "loss", eval_label=label if key == "eval_loss" else None)
        ax.set_title(title)
        ax.legend()
        path = Path(output_dir) / filename
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
