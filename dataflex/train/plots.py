"""Loss curves of a run (``plot_loss: true``)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def smooth(values: list[float], weight: float = 0.0) -> list[float]:
    """Exponential moving average (TensorBoard style); ``weight=0`` returns the values."""
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def plot_loss(log_history: list[dict[str, Any]], output_dir: str | Path) -> list[Path]:
    """Write ``training_loss.png`` (and ``training_eval_loss.png`` when evaluated) in ``output_dir``.

    Returns:
        The files written (none if the run logged no loss).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, filename in (("loss", "training_loss.png"), ("eval_loss", "training_eval_loss.png")):
        points = [(e["step"], e[key]) for e in log_history if key in e and math.isfinite(e[key])]
        if not points:
            if key == "loss":
                logger.warning(
                    "no training loss was logged (logging_steps > steps?); %s not written", filename
                )
            continue
        steps, values = zip(*points)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, values, color="#1f77b4", alpha=0.4 if len(points) > 10 else 1.0, label="original")
        if len(points) > 10:
            ax.plot(steps, smooth(list(values), 0.9), color="#1f77b4", label="smoothed")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"{key} of {Path(output_dir).name}")
        ax.legend()
        path = Path(output_dir) / filename
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
