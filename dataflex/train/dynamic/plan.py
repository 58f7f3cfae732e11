"""Checks of a dynamic-selection plan that run before any model is loaded."""

from __future__ import annotations

import os

from dataflex.configs.components import load_components
from dataflex.errors import ConfigError
from dataflex.selectors.base import Selector
from dataflex.train.dynamic.schedule import SelectionSchedule


def selector_from_components(components_cfg_file: str | os.PathLike | None, component_name: str) -> Selector:
    """Build the selector a training config names (``component_name`` in ``components_cfg_file``).

    Raises:
        ConfigError: for a missing file (``components_cfg_file``) or an unknown key
            (``component_name``), naming the closest keys.
    """
    if not isinstance(component_name, str) or not component_name:
        raise ConfigError(
            f"component_name must name a selector key of the components file, got {component_name!r}."
        )
    components = load_components(components_cfg_file)
    try:
        return components.build_selector(component_name)
    except ConfigError as exc:
        raise ConfigError(f"component_name: {exc}") from None


def check_dynamic_plan(
    schedule: SelectionSchedule,
    selector: Selector,
    pool_size: int,
    examples_per_step: int,
    *,
    has_eval_dataset: bool | None = None,
) -> int:
    """Reject a plan that cannot run, before any model is loaded; return the round budget.

    Args:
        schedule: The selection schedule.
        selector: The selector that will make rounds 1..update_times.
        pool_size: Number of candidate training examples.
        examples_per_step: Global batch: per-device batch × gradient accumulation × world size.
        has_eval_dataset: Whether an eval dataset is given; ``None`` skips that check.
            Selectors whose class sets ``requires_eval_dataset = True`` (LESS) need one.

    Returns:
        The per-round budget ``examples_per_step × update_step``.

    Raises:
        ConfigError: naming the value to change.
    """
    if (
        isinstance(examples_per_step, bool)
        or not isinstance(examples_per_step, int)
        or examples_per_step <= 0
    ):
        raise ConfigError(
            f"the global batch (per-device batch x gradient accumulation x world size) must be a positive "
            f"integer, got {examples_per_step!r}."
        )
    if pool_size <= 0:
        raise ConfigError("the training dataset is empty: dynamic selection needs candidates to choose from.")
    name = getattr(selector, "registry_name", type(selector).__name__)
    if has_eval_dataset is False and selector.requires_eval_dataset:
        raise ConfigError(
            f"selector {name!r} scores candidates against a target set: set eval_dataset "
            "(the examples of the task to select for)."
        )
    budget = examples_per_step * schedule.update_step
    selector.check_budget(pool_size, budget)
    return budget
