"""The extension point users subclass: :class:`Selector`, and what it sees and returns."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, get_args, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from dataflex.configs.validation import format_validation_error
from dataflex.distributed import DistributedView
from dataflex.errors import ConfigError
from dataflex.gradients.transforms import AdamState
from dataflex.selectors.scoring import aggregate


class SelectorParams(BaseModel):
    """Base of every selector's ``Params``: strict types, finite numbers, unknown keys rejected.

    A number key takes a number, never its text (``proj_dim: "512"`` is refused), an
    integer key an integer (``2.0`` is refused; an integer is fine for a float key), and a
    float key a finite value (``.inf``, ``.nan`` are refused). The one text accepted for a
    float key is an exponent without a dot (``1e-4``), which PyYAML (YAML 1.1) reads as
    text although YAML 1.2 and every reader mean a number.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _yaml_exponents(cls, data: object) -> object:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for key, value in out.items():
            field_info = cls.model_fields.get(key)
            if (
                field_info is not None
                and isinstance(value, str)
                and _takes_float_not_text(field_info.annotation)
                and _YAML_EXPONENT.fullmatch(value.strip())
            ):
                out[key] = float(value)
        return out


_YAML_EXPONENT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""``1e-4``, ``5E3``: numbers in YAML 1.2 that PyYAML's YAML 1.1 resolver leaves as text."""


def _takes_float_not_text(annotation: object) -> bool:
    """Whether a field of this annotation accepts a float and no text (``float``, ``float | None``)."""
    args = set(get_args(annotation)) or {annotation}
    return float in args and str not in args


@dataclass
class SelectionContext:
    """Everything a selector may use at one selection round, and nothing global.

    Attributes:
        model: The live model being trained, unwrapped from DDP/accelerate wrappers.
        optimizer: The live optimizer (``None`` before training or offline without state).
        train_dataset: Tokenised candidate pool; ``train_dataset[i]`` is a dict with
            ``input_ids`` and ``labels`` (lists of ints) and optional metadata such
            as ``dataset`` (the source dataset name).
        eval_dataset: Tokenised target/validation examples, same format, or ``None``.
        collator: Turns a list of examples into a padded batch of tensors
            (``input_ids``, ``attention_mask``, ``labels``).
        learning_rate: Mean learning rate over the optimizer steps since the previous
            selection (the LESS weight η̄ of this round).
        step: Optimizer steps completed when the selection is computed.
        round: Selection round, 1-based; 0 is the warm-up draw.
        dist: This process's distributed view.
        cache_dir: Directory where the selector may cache features and scores.
        seed: Run seed; selectors derive their randomness from it and ``round``.
        device: Device on which to run model forward/backward passes.
        adam_state: Adam moments to use when there is no live optimizer (offline
            selection, read from a checkpoint), else ``None``.
        total_rounds: Number of selection rounds of the run (``update_times``), for
            selectors whose rule follows training progress (``delta_loss``); ``None``
            when unknown (offline selection, direct calls).
    """

    model: torch.nn.Module | None
    optimizer: torch.optim.Optimizer | None
    train_dataset: Sequence[Mapping[str, Any]]
    eval_dataset: Sequence[Mapping[str, Any]] | None = None
    collator: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]] | None = None
    learning_rate: float = 0.0
    step: int = 0
    round: int = 0
    dist: DistributedView = field(default_factory=DistributedView)
    cache_dir: Path | None = None
    seed: int = 0
    device: torch.device | str = "cpu"
    adam_state: AdamState | None = None
    total_rounds: int | None = None


@dataclass(frozen=True)
class PreflightPlan:
    """What a run will ask of its selector, known before the model loads.

    :meth:`Selector.preflight` checks it; training (``train/preflight.py``) and offline
    selection (``offline/select.py``) build one each and call the same hook.

    Attributes:
        pool_size: Number of candidate examples.
        eval_dataset: Tokenised target examples, or ``None``.
        num_samples: Examples asked for per round.
        rounds: Number of :meth:`Selector.select` calls (``update_times``; 1 offline).
        device: Where scoring runs (``"cpu"``, ``"cuda"``...), or ``None`` when the
            Trainer places the model.
        cache_dir: The run's cache folder (``SelectionContext.cache_dir``), or ``None``.
    """

    pool_size: int
    eval_dataset: Sequence[Mapping[str, Any]] | None
    num_samples: int
    rounds: int = 1
    device: str | None = None
    cache_dir: Path | None = None


@dataclass
class Selection:
    """What a selector returns; identical on every rank.

    Attributes:
        indices: Chosen indices into ``train_dataset``, in training order.
        scores: Score of each chosen index (same length as ``indices``), or ``None``.
        metadata: Small JSON-serialisable facts for the run's report
            (score summary, candidate count, timings...).
    """

    indices: list[int]
    scores: list[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = [int(i) for i in self.indices]
        if self.scores is not None:
            self.scores = [float(s) for s in self.scores]
            if len(self.scores) != len(self.indices):
                raise ValueError(f"Selection has {len(self.indices)} indices but {len(self.scores)} scores.")


@dataclass
class CandidateScores:
    """Scores of a set of candidates, per target subtask.

    Attributes:
        per_subtask: ``(n_candidates, n_subtasks)`` scores.
        subtasks: The subtask of each column.
        metadata: Small JSON-serialisable facts (transform, timings, cache hit...).
    """

    per_subtask: torch.Tensor
    subtasks: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def scores(self) -> torch.Tensor:
        """``(n_candidates,)``: the max over subtasks (LESS's matching step)."""
        return aggregate(self.per_subtask)


@runtime_checkable
class ScoresCandidates(Protocol):
    """The capability of a selector that scores every candidate it is given.

    Offline selection (``dataflex-cli select``) uses it to score the whole pool under
    each checkpoint and combine the scores with learning-rate weights; a selector
    without it makes one :meth:`Selector.select` call on the last checkpoint.
    """

    @property
    def needs_optimizer_state(self) -> bool:
        """True when scores use the optimizer's moments (then checkpoints need optimizer.pt)."""
        ...

    def score_candidates(self, ctx: SelectionContext, candidates: np.ndarray) -> CandidateScores:
        """Score ``candidates`` (indices of ``ctx.train_dataset``); identical on every rank."""
        ...


class Selector(ABC):
    """Chooses which training examples the next optimizer steps train on.

    Subclass it, declare a strict pydantic ``Params`` model, implement
    :meth:`select`, and register it::

        @register_selector("my_selector")
        class MySelector(Selector):
            class Params(SelectorParams):
                temperature: float = 1.0

            def select(self, ctx, num_samples):
                ...

    The instance receives its validated params as ``self.params`` (annotate
    ``params: Params`` in the class so that their fields are typed). Override
    :meth:`preflight` to refuse, before the model loads, what the selector cannot do
    in a run.
    """

    Params: ClassVar[type[BaseModel]] = SelectorParams
    params: BaseModel
    """The validated params; a subclass annotates it with its own ``Params`` (``params: Params``)."""
    registry_name: ClassVar[str]
    requires_eval_dataset: ClassVar[bool] = False
    """True for selectors that score candidates against a target set (LESS)."""
    scoring_cost: ClassVar[float] = 1.0
    """Rough cost of scoring one example, in training examples (a forward and a backward = 1,
    a forward alone about 1/3); the printed plan's estimate of the scoring cost uses it."""

    def __init__(self, params: BaseModel | None = None, **kwargs: object) -> None:
        if params is not None and kwargs:
            raise TypeError("Pass either a Params instance or keyword params, not both.")
        self.params = params if params is not None else self.validate_params(kwargs)

    @classmethod
    def validate_params(cls, raw: Mapping[str, Any], *, where: str = "") -> BaseModel:
        """Validate ``raw`` against :attr:`Params`; errors become :class:`ConfigError`.

        Args:
            raw: The params mapping (e.g. from ``components.yaml``).
            where: Prefix naming the source, e.g. ``"components.yaml: selectors.less.params"``.
        """
        fields = cls.Params.model_fields
        if "replacement" in raw and "replacement" not in fields:
            ours = [f for f in ("repeat_within_round", "repeat_across_rounds") if f in fields]
            raise ConfigError(
                f"{where + '.' if where else ''}replacement: this key was split in two: "
                "repeat_within_round (an example may appear more than once in one round) and "
                "repeat_across_rounds (an example chosen in an earlier round may be chosen again); "
                f"{cls.__name__} takes {' and '.join(ours) if ours else 'neither'}."
            )
        try:
            return cls.Params.model_validate(dict(raw))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls.Params, where)) from None

    @classmethod
    def from_params(cls, raw: Mapping[str, Any], *, where: str = "") -> Selector:
        """Build from an unvalidated params mapping."""
        return cls(cls.validate_params(raw, where=where))

    @property
    def name(self) -> str:
        """The registry name (``less``), or the class name of an unregistered selector."""
        return getattr(type(self), "registry_name", type(self).__name__)

    def cache_location(self, run_cache_dir: Path | None) -> Path | None:
        """Where this selector caches features and scores, given the run's cache folder.

        The run's folder by default; selectors with a ``cache_dir`` param use it first.
        """
        return run_cache_dir

    def preflight(self, plan: PreflightPlan) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Refuse, before the model loads, what this selector cannot do in ``plan``.

        Nothing by default (the per-round budget is :meth:`check_budget`, which the
        schedule's check calls). Override it to check the target set, the device, a
        projector or what the cache will hold, and call ``super().preflight(plan)``.

        Raises:
            ConfigError: naming the key and the fix.
        """

    @abstractmethod
    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        """Choose ``num_samples`` indices of ``ctx.train_dataset``.

        Must return the same :class:`Selection` on every rank.
        """

    @property
    def repeats_within_round(self) -> bool:
        """True when one round's selection may hold an example more than once."""
        return bool(getattr(self.params, "repeat_within_round", False))

    def check_budget(self, pool_size: int, num_samples: int) -> None:
        """Raise before any work if ``num_samples`` cannot be drawn from ``pool_size``.

        The one budget rule of every selector: a round may ask for more examples than
        the pool holds only when it may repeat examples within the round
        (:attr:`repeats_within_round`, the ``repeat_within_round`` param).

        Raises:
            ConfigError: for a non-positive request, an empty pool, or a request larger
                than the pool without repeats.
        """
        name = self.name
        if num_samples <= 0:
            raise ConfigError(f"{name}: num_samples must be positive, got {num_samples}.")
        if pool_size <= 0:
            raise ConfigError(f"{name}: the candidate pool is empty.")
        if num_samples > pool_size and not self.repeats_within_round:
            fix = (
                ", add data, or set repeat_within_round: true"
                if "repeat_within_round" in type(self).Params.model_fields
                else " or add data"
            )
            raise ConfigError(
                f"{name}: asked for {num_samples} examples from a pool of {pool_size} without "
                "replacement (a round picks distinct examples). Lower the per-round budget "
                f"(per-device batch x gradient accumulation x world size x update_step){fix}."
            )

    def examples_scored(self, pool_size: int, num_samples: int, round_: int) -> int:
        """How many pool examples round ``round_`` (≥ 1) scores, for the plan printed before training.

        ``num_samples`` is the per-round budget. 0 here (a selector that scores nothing,
        ``random``); the pool-scoring selectors answer from their params
        (``candidate_fraction``, ``rescore_fraction``...).
        """
        return 0

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume (e.g. cumulative scores). JSON/tensor values only."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state but was given keys {sorted(state)}.")
