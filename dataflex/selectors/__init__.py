"""Selectors. Importing this package registers the built-in ones."""

from dataflex.registry import build_selector, list_selectors, register_selector
from dataflex.selectors.base import Selection, SelectionContext, Selector, SelectorParams
from dataflex.selectors.cluster_less import ClusterLessSelector
from dataflex.selectors.less import LessSelector
from dataflex.selectors.loss import LossSelector
from dataflex.selectors.near import NearSelector
from dataflex.selectors.random_selector import RandomSelector
from dataflex.selectors.tsds import TsdsSelector

__all__ = [
    "ClusterLessSelector",
    "LessSelector",
    "LossSelector",
    "NearSelector",
    "RandomSelector",
    "Selection",
    "SelectionContext",
    "Selector",
    "SelectorParams",
    "TsdsSelector",
    "build_selector",
    "list_selectors",
    "register_selector",
]
