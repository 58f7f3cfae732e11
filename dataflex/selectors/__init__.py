"""Selectors. Importing this package registers the built-in ones.

The extension points: :class:`Selector` (any selection rule), :class:`PoolSelector`
with :class:`PoolParams` (a rule that scores examples of the pool: candidates,
sharding across ranks, earlier rounds' picks, caching and the report), and the
:class:`ScoresCandidates` capability (scores every candidate, so offline selection
can combine them over checkpoints).
"""

from dataflex.registry import build_selector, list_selectors, register_selector
from dataflex.selectors.base import (
    CandidateScores,
    ScoresCandidates,
    Selection,
    SelectionContext,
    Selector,
    SelectorParams,
)
from dataflex.selectors.less import LessSelector
from dataflex.selectors.loss import LossSelector
from dataflex.selectors.pool import PoolParams, PoolSelector
from dataflex.selectors.random_selector import RandomSelector

__all__ = [
    "CandidateScores",
    "LessSelector",
    "LossSelector",
    "PoolParams",
    "PoolSelector",
    "RandomSelector",
    "ScoresCandidates",
    "Selection",
    "SelectionContext",
    "Selector",
    "SelectorParams",
    "build_selector",
    "list_selectors",
    "register_selector",
]
