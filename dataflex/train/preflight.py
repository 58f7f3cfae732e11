"""Checks of a training run that need no model: run before it loads, so bad input fails in seconds.

:func:`check_run_inputs` needs only the config (paths, loggers, resume, ``max_steps``);
:func:`check_selection_inputs` also needs the tokenised data and the selector, and
covers what a dynamic-selection run would otherwise find only after warm-up training:
what the selector's own :meth:`~dataflex.selectors.base.Selector.preflight` refuses (for
the built-ins: an eval set without the subtask field, a CUDA projector without CUDA, a
pool that runs dry across rounds, feature matrices larger than memory or disk, a
``cache_dir`` that cannot be written) and a warm-up too long to index.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflex.errors import ConfigError
from dataflex.selectors.base import PreflightPlan
from dataflex.selectors.less_features import available_memory, gib
from dataflex.train.dynamic.layout import selection_cache_dir
from dataflex.train.dynamic.schedule import SelectionSchedule, check_max_steps

if TYPE_CHECKING:
    from dataflex.selectors.base import Selector
    from dataflex.train.config import TrainConfig

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
    if cfg.dynamic_total_steps is not None:
        assert cfg.update_step is not None  # dynamic_total_steps is None without both
        assert cfg.update_times is not None
        schedule = SelectionSchedule(cfg.warmup_step, cfg.update_step, cfg.update_times)
        check_max_steps(cfg.max_steps, schedule, yaml_key=True)
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
    selector.preflight(
        PreflightPlan(
            pool_size=len(train_dataset),
            eval_dataset=eval_dataset,
            num_samples=examples_per_step * schedule.update_step,
            rounds=schedule.update_times,
            cache_dir=selection_cache_dir(cfg.output_dir),
        )
    )
    warmup = schedule.warmup_step * examples_per_step
    memory = available_memory()
    if memory is not None and warmup * _INDEX_BYTES > memory // 2:
        raise ConfigError(
            f"warmup_step: {schedule.warmup_step} steps x {examples_per_step} examples = {warmup} warm-up "
            f"indices, about {gib(warmup * _INDEX_BYTES)} of memory ({gib(memory)} available); lower "
            "warmup_step."
        )
