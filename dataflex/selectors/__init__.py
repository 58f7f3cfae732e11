"""Selectors. Importing this package registers the built-in ones."""

from dataflex.registry import build_selector, list_selectors, register_selector
from dataflex.selectors.base import Selection, SelectionContext, Selector, SelectorParams
from dataflex.selectors.delta_loss import DeltaLossSelector
from dataflex.selectors.less import LessSelector
from dataflex.selectors.loss import LossSelector
from dataflex.selectors.nice import NiceSelector
from dataflex.selectors.random_selector import RandomSelector

__all__ = [
    "DeltaLossSelector",
    "LessSelector",
    "LossSelector",
    "NiceSelector",
    "RandomSelector",
    "Selection",
    "SelectionContext",
    "Selector",
    "SelectorParams",
    "build_selector",
    "list_selectors",
    "register_selector",
]
