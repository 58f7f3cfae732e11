"""Dynamic data selection during training: schedule, sampler, Trainer integration, reports."""

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
    "check_training_args",
    "load_selection_state",
    "plot_run",
    "read_selections",
    "save_selection_state",
    "warmup_indices",
]
