"""Selectors. Importing this package registers the built-in ones.

The extension points: :class:`Selector` (any selection rule), :class:`PoolSelector`
with :class:`PoolParams` (a rule that scores examples of the pool: a template method whose
round draws candidates, shards and gathers the per-example work, picks, remembers
earlier rounds' picks and reports; the selector supplies its rows and scores), and the
:class:`ScoresCandidates` capability (scores every candidate, so offline selection
can combine them over checkpoints).
"""

from dataflex.registry import build_selector, list_selectors, register_selector
from dataflex.selectors.base import (
    CandidateScores,
    PreflightPlan,
    ScoresCandidates,
    Selection,
    SelectionContext,
    Selector,
    SelectorParams,
)
from dataflex.selectors.cluster_less import ClusterLessSelector
from dataflex.selectors.delta_loss import DeltaLossSelector
from dataflex.selectors.less import LessSelector
from dataflex.selectors.loss import LossSelector
from dataflex.selectors.near import NearSelector
from dataflex.selectors.nice import NiceSelector
from dataflex.selectors.pool import PoolParams, PoolRows, PoolSelector, RoundScores
from dataflex.selectors.random_selector import RandomSelector
from dataflex.selectors.tsds import TsdsSelector

__all__ = [
    "CandidateScores",
    "ClusterLessSelector",
    "DeltaLossSelector",
    "LessSelector",
    "LossSelector",
    "NearSelector",
    "NiceSelector",
    "PoolParams",
    "PoolRows",
    "PoolSelector",
    "PreflightPlan",
    "RandomSelector",
    "RoundScores",
    "ScoresCandidates",
    "Selection",
    "SelectionContext",
    "Selector",
    "SelectorParams",
    "TsdsSelector",
    "build_selector",
    "list_selectors",
    "register_selector",
]
