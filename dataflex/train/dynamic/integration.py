"""The glue of ``train_type: dynamic_select`` into ``dataflex-cli train``.

:func:`check_dynamic_config` runs once the datasets are tokenised and before the model
loads; :func:`build_dynamic_trainer` is what the runner's ``build_trainer`` calls.
"""

from __future__ import annotations

from typing import Any

from dataflex.selectors.base import Selector
from dataflex.train.dynamic.plan import check_dynamic_plan, selector_from_components
from dataflex.train.dynamic.schedule import SelectionSchedule
from dataflex.train.dynamic.trainer import DynamicSelectTrainer, check_training_args


def schedule_from_config(cfg: Any) -> SelectionSchedule:
    """The :class:`SelectionSchedule` of a training config's dynamic_train keys."""
    return SelectionSchedule(cfg.warmup_step, cfg.update_step, cfg.update_times)


def check_dynamic_config(cfg: Any, pool_size: int, training_args: Any) -> tuple[SelectionSchedule, Selector]:
    """Validate a ``dynamic_select`` config against its data and training arguments.

    Args:
        cfg: The training config (``warmup_step``, ``update_step``, ``update_times``,
            ``components_cfg_file``, ``component_name``, ``eval_dataset``).
        pool_size: Number of tokenised training examples.
        training_args: The run's ``TrainingArguments`` (batch, accumulation, world size).

    Returns:
        The schedule and the selector, built and checked.

    Raises:
        ConfigError: for a bad schedule, an unknown component or missing components file,
            a per-round budget larger than the pool, or training arguments that
            contradict the schedule.
    """
    schedule = schedule_from_config(cfg)
    selector = selector_from_components(cfg.components_cfg_file, cfg.component_name)
    examples_per_step = (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size
    )
    has_eval = bool(cfg.eval_dataset)
    check_dynamic_plan(schedule, selector, pool_size, examples_per_step, has_eval_dataset=has_eval)
    check_training_args(training_args, schedule)
    return schedule, selector


def build_dynamic_trainer(
    cfg: Any, *, selection_eval_dataset: Any, **trainer_kwargs: Any
) -> DynamicSelectTrainer:
    """The :class:`DynamicSelectTrainer` of a ``train_type: dynamic_select`` config.

    Args:
        cfg: The validated training config.
        selection_eval_dataset: The target set the selector scores against.
        **trainer_kwargs: The ``transformers.Trainer`` arguments (``model``, ``args``,
            ``train_dataset``, ...), exactly as a static run would get them.
    """
    training_args = trainer_kwargs["args"]
    schedule, selector = check_dynamic_config(cfg, len(trainer_kwargs["train_dataset"]), training_args)
    return DynamicSelectTrainer(
        **trainer_kwargs,
        selector=selector,
        schedule=schedule,
        selection_eval_dataset=selection_eval_dataset,
        plots=bool(getattr(cfg, "plot_loss", True)),
    )
