"""Checks of a training run that need no model: run before it loads, so bad input fails in seconds.

:func:`check_run_inputs` needs only the config (paths, loggers, resume, ``max_steps``);
:func:`check_selection_inputs` also needs the tokenised data and the selector, and
covers what a dynamic-selection run would otherwise find only after warm-up training:
an eval set without the subtask field, a CUDA projector without CUDA, a pool that runs
dry across rounds, feature matrices larger than memory or disk, a warm-up too long to
index.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from dataflex.errors import ConfigError
from dataflex.io import check_writable_dir
from dataflex.selectors.less_features import available_memory, check_feature_budget, gib
from dataflex.selectors.pool import PoolSelector

if TYPE_CHECKING:
    from dataflex.selectors.base import Selector
    from dataflex.train.config import TrainConfig
    from dataflex.train.dynamic.schedule import SelectionSchedule

logger = logging.getLogger(__name__)

#: report_to names and the module each needs.
_LOGGER_MODULES = {
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "neptune": "neptune",
    "codecarbon": "codecarbon",
    "swanlab": "swanlab",
    "trackio": "trackio",
}

_INDEX_BYTES = 40
"""Memory of one selected index in the warm-up's list (a Python int and its slot)."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ValueError, ImportError):  # a module blocked in sys.modules, or a broken parent
        return False


def check_report_to(report_to: list[str]) -> None:
    """Each logger in ``report_to`` is installed.

    Raises:
        ConfigError: naming the logger and the install command.
    """
    for name in report_to:
        module = _LOGGER_MODULES.get(name)
        if module is None:
            continue
        found = _installed(module) or (name == "tensorboard" and _installed("tensorboardX"))
        if not found:
            raise ConfigError(
                f"report_to: {name!r} needs the {module} package, which is not installed: pip install "
                f"{module}, or remove {name} from report_to (report_to: none)."
            )


def check_resume_adapter(cfg: TrainConfig) -> None:
    """A LoRA checkpoint to resume from has the rank, alpha and dropout of this config.

    Raises:
        ConfigError: naming the key that differs (a traceback from peft otherwise).
    """
    resume = cfg.resume_from_checkpoint
    if not isinstance(resume, str) or cfg.finetuning_type != "lora":
        return
    config_file = Path(resume) / "adapter_config.json"
    if not config_file.is_file():
        return
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"resume_from_checkpoint: {config_file} is unreadable ({exc}).") from None
    for key, saved_key, value in (
        ("lora_rank", "r", cfg.lora_rank),
        ("lora_alpha", "lora_alpha", cfg.lora_alpha_value),
        ("lora_dropout", "lora_dropout", cfg.lora_dropout),
    ):
        if saved_key in saved and saved[saved_key] != value:
            raise ConfigError(
                f"{key}: {value!r}, but the checkpoint {resume!r} was trained with {key}: "
                f"{saved[saved_key]!r} ({config_file.name}); resume with the same {key}, or start a "
                "fresh run."
            )


def check_run_inputs(cfg: TrainConfig) -> None:
    """Everything about a training config that needs neither data nor model.

    Raises:
        ConfigError: a missing logger package, a ``max_steps`` that the selection schedule
            would override, or a LoRA checkpoint to resume from with other LoRA settings
            (``output_dir`` itself is checked by :func:`dataflex.train.runner.check_output_dir`).
    """
    check_report_to(list(cfg.report_to))
    total = cfg.dynamic_total_steps
    if total is not None and cfg.max_steps > 0 and cfg.max_steps != total:
        raise ConfigError(
            f"max_steps: {cfg.max_steps} contradicts the selection schedule: dynamic selection trains "
            f"warmup_step + update_step x update_times = {cfg.warmup_step} + {cfg.update_step} x "
            f"{cfg.update_times} = {total} steps. Remove max_steps (or set it to {total})."
        )
    check_resume_adapter(cfg)


def check_selection_inputs(
    cfg: TrainConfig,
    selector: Selector,
    schedule: SelectionSchedule,
    train_dataset: Sized,
    eval_dataset: Sequence[Mapping[str, Any]] | None,
    examples_per_step: int,
) -> None:
    """What a dynamic-selection run would otherwise find after the model loaded or warm-up ran.

    Raises:
        ConfigError: naming the key and the fix.
    """
    params = getattr(selector, "params", None)
    name = getattr(selector, "registry_name", type(selector).__name__)
    if hasattr(selector, "subtask_labels") and eval_dataset is not None:
        selector.subtask_labels(SimpleNamespace(eval_dataset=eval_dataset))
    if getattr(params, "projector", None) == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{name}: projector: cuda needs a CUDA GPU, and none is visible; use projector: auto (a "
            "torch projector on this device) or run where a GPU is."
        )
    pool = len(train_dataset)
    budget = examples_per_step * schedule.update_step
    if isinstance(selector, PoolSelector) and not selector.params.repeat_across_rounds:
        needed = budget * schedule.update_times
        if needed > pool:
            dry = pool // budget + 1
            raise ConfigError(
                f"{name}: {schedule.update_times} rounds x {budget} examples = {needed} distinct examples, "
                f"but the pool has {pool} and repeat_across_rounds: false never picks an example twice, so "
                f"round {dry} would run dry. Set repeat_across_rounds: true in the selector's params, lower "
                "update_times or the per-round budget, or add data."
            )
    warmup = schedule.warmup_step * examples_per_step
    memory = available_memory()
    if memory is not None and warmup * _INDEX_BYTES > memory // 2:
        raise ConfigError(
            f"warmup_step: {schedule.warmup_step} steps x {examples_per_step} examples = {warmup} warm-up "
            f"indices, about {gib(warmup * _INDEX_BYTES)} of memory ({gib(memory)} available); lower "
            "warmup_step."
        )
    _check_feature_size(cfg, selector, pool, len(eval_dataset) if eval_dataset is not None else 0)
    _check_cache_dir(cfg, selector)


def _check_feature_size(cfg: TrainConfig, selector: Selector, pool: int, num_eval: int) -> None:
    params = getattr(selector, "params", None)
    if getattr(params, "proj_dim", None) is None:
        return
    name = getattr(selector, "registry_name", type(selector).__name__)
    check_feature_budget(name, params, pool, num_eval, _cache_dir(cfg, selector))


def _cache_dir(cfg: TrainConfig, selector: Selector) -> Path:
    cache_dir = getattr(getattr(selector, "params", None), "cache_dir", None)
    if cache_dir:
        return Path(cache_dir)
    return Path(cfg.output_dir) / "dataflex" / "cache"


def _check_cache_dir(cfg: TrainConfig, selector: Selector) -> None:
    cache_dir = getattr(getattr(selector, "params", None), "cache_dir", None)
    if cache_dir:
        check_writable_dir(cache_dir, f"{getattr(selector, 'registry_name', 'selector')}: cache_dir")
