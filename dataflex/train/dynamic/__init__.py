"""Dynamic data selection during training: schedule, sampler, Trainer integration, reports."""

from dataflex.train.dynamic.integration import build_dynamic_trainer, check_dynamic_config
from dataflex.train.dynamic.plan import check_dynamic_plan, selector_from_components
from dataflex.train.dynamic.reports import SelectionReport, plot_run, read_selections
from dataflex.train.dynamic.sampler import DynamicSelectionSampler, warmup_indices
from dataflex.train.dynamic.schedule import SelectionSchedule
from dataflex.train.dynamic.state import load_selection_state, save_selection_state
from dataflex.train.dynamic.trainer import DynamicSelectionMixin, DynamicSelectTrainer, check_training_args

__all__ = [
    "DynamicSelectTrainer",
    "DynamicSelectionMixin",
    "DynamicSelectionSampler",
    "SelectionReport",
    "SelectionSchedule",
    "build_dynamic_trainer",
    "check_dynamic_config",
    "check_dynamic_plan",
    "check_training_args",
    "load_selection_state",
    "plot_run",
    "read_selections",
    "save_selection_state",
    "selector_from_components",
    "warmup_indices",
]
