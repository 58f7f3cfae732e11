"""dataflex: select training data while a language model is being fine-tuned.

The public surface: :class:`DynamicSelectTrainer` (a ``transformers.Trainer`` that
selects its data) with :class:`SelectionSchedule`, and the selector extension point
(:class:`Selector`, :func:`register_selector`, :func:`build_selector`,
:func:`list_selectors`). Everything else lives in the subpackages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataflex.errors import ConfigError, DataflexError, RegistryError
from dataflex.logging_utils import configure_library_logger
from dataflex.registry import build_selector, list_selectors, register_selector

configure_library_logger()  # the `dataflex` logger prints INFO lines to stderr (see logging_utils)

if TYPE_CHECKING:
    from dataflex.selectors.base import Selection, SelectionContext, Selector
    from dataflex.train.dynamic.schedule import SelectionSchedule
    from dataflex.train.dynamic.trainer import DynamicSelectionMixin, DynamicSelectTrainer

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataflexError",
    "DynamicSelectTrainer",
    "DynamicSelectionMixin",
    "RegistryError",
    "Selection",
    "SelectionContext",
    "SelectionSchedule",
    "Selector",
    "__version__",
    "build_selector",
    "list_selectors",
    "register_selector",
]

# These names import torch (and the trainer, transformers' Trainer), which takes
# seconds; they load on first use so that `import dataflex` (the CLI's argument
# parsing, `dataflex.errors`) stays instant.
_LAZY = {
    "Selection": "dataflex.selectors.base",
    "SelectionContext": "dataflex.selectors.base",
    "Selector": "dataflex.selectors.base",
    "DynamicSelectTrainer": "dataflex.train.dynamic.trainer",
    "DynamicSelectionMixin": "dataflex.train.dynamic.trainer",
    "SelectionSchedule": "dataflex.train.dynamic.schedule",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dataflex' has no attribute {name!r}")
