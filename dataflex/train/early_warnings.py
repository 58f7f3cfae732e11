"""Warnings about a training config that runs but not as its author may expect.

Each is logged once (rank 0 under torchrun, through the ``dataflex`` logger) before the
model loads, and says what the run does instead. Errors are elsewhere: these settings
are legal, only surprising.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dataflex.train.config import TrainConfig

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)


def precision_warning(cfg: TrainConfig, has_accelerator: bool) -> str | None:
    """bf16/fp16 asked for on a machine without an accelerator."""
    if has_accelerator or not (cfg.bf16 or cfg.fp16):
        return None
    flag = "bf16" if cfg.bf16 else "fp16"
    return (
        f"{flag}: true, but there is no GPU/accelerator: training runs on the CPU with "
        f"{'bfloat16' if cfg.bf16 else 'float16'} autocast, which is usually slower than float32 "
        f"there and less precise. Set {flag}: false on a CPU machine."
    )


def context_warning(cfg: TrainConfig, model_config: PretrainedConfig) -> str | None:
    """``cutoff_len`` longer than the positions the model was built for."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(limit, int) or cfg.cutoff_len <= limit:
        return None
    return (
        f"cutoff_len: {cfg.cutoff_len} exceeds the model's max_position_embeddings ({limit}): examples "
        f"longer than {limit} tokens reach positions the model never learned. Set cutoff_len <= {limit}."
    )


def epochs_warning(cfg: TrainConfig, examples_per_step: int | None = None) -> str | None:
    """``num_train_epochs`` set in a dynamic-selection config (the schedule fixes the length)."""
    total = cfg.dynamic_total_steps
    if total is None or "num_train_epochs" not in cfg.model_fields_set:
        return None
    per_step = f" x {examples_per_step} examples" if examples_per_step else ""
    return (
        f"num_train_epochs: {cfg.num_train_epochs:g} is ignored with train_type: dynamic_select: the "
        f"run trains warmup_step + update_step x update_times = {cfg.warmup_step} + {cfg.update_step} x "
        f"{cfg.update_times} = {total} optimizer steps{per_step}, on the examples each round selects. "
        "Remove num_train_epochs (or change the schedule) to silence this."
    )


def warn_before_loading(
    cfg: TrainConfig,
    model_config: PretrainedConfig,
    *,
    has_accelerator: bool,
    examples_per_step: int | None = None,
) -> list[str]:
    """Log every warning that applies to ``cfg``; return their texts.

    Args:
        cfg: The validated training config.
        model_config: The model's ``AutoConfig`` (from :func:`~dataflex.train.model.check_model_path`).
        has_accelerator: Whether a GPU/accelerator is available.
        examples_per_step: Global batch (examples per optimizer step), when known.
    """
    messages = [
        m
        for m in (
            precision_warning(cfg, has_accelerator),
            context_warning(cfg, model_config),
            epochs_warning(cfg, examples_per_step),
        )
        if m
    ]
    for message in messages:
        logger.warning("%s", message)
    return messages
