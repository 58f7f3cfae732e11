"""``less``: LESS (Xia et al., ICML 2024), influence of a training example on a target task.

At round i, for every candidate z and validation example z':

* z's Adam update direction Γ(z) (``gradient_type: adam``; β₁, β₂, ε read from
  the optimizer), z''s plain gradient ∇ℓ(z'), both over the trainable
  parameters (or those matching ``gradient_modules``), projected by the same
  random matrix and normalised to unit length;
* s_i(z) = max over validation subtasks of the mean cosine to that subtask;
* S_i(z) = Σ_{j≤i} η̄_j · s_j(z) (``score_accumulation: cumulative``) or s_i(z)
  (``current``); the top-n candidates by that score are selected.

Before the first optimizer step there is no Adam state and the round uses plain
gradients for the candidates too, with a log line saying so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator

from dataflex.engines import has_optimizer_state
from dataflex.errors import ConfigError, did_you_mean
from dataflex.gradients import AdamState, num_trainable
from dataflex.gradients.transforms import NUMERICS
from dataflex.passes.cache import adam_identity, data_identity, model_identity
from dataflex.projectors.base import Projector
from dataflex.registry import PROJECTORS, register_selector
from dataflex.selectors.base import CandidateScores, PreflightPlan, SelectionContext
from dataflex.selectors.less_features import (
    FeatureRequest,
    check_less_inputs,
    compute_rows,
    make_projector,
    only_parameters,
)
from dataflex.selectors.pool import PoolParams, PoolRows, PoolSelector, RoundScores
from dataflex.selectors.scoring import (
    ScoreAccumulator,
    aggregate,
    score_histogram,
    subtask_groups,
    subtask_scores,
    summarize,
    unit_rows,
)

logger = logging.getLogger(__name__)

FeatureRows: TypeAlias = Callable[
    [Sequence[Mapping[str, Any]], list[int], str, AdamState | None, str], torch.Tensor
]
"""``rows(dataset, indices, transform, adam_state, role)``: projected per-example gradient features."""


@dataclass
class ValidationFeatures:
    """A round's projected validation directions and what computing them reports.

    Attributes:
        rows: ``(M, k)`` projected directions (not normalised), identical on every rank.
        facts: Small JSON-serialisable facts of their computation (``nice``: the rewards'
            mean, the generation time), passed to :meth:`LessSelector.round_facts`.
    """

    rows: torch.Tensor
    facts: dict[str, Any] = field(default_factory=dict)


@register_selector("less")
class LessSelector(PoolSelector):
    """LESS: Adam-preconditioned gradient similarity to a target validation set.

    It has the :class:`~dataflex.selectors.base.ScoresCandidates` capability, so
    offline selection combines its scores over checkpoints.
    """

    requires_eval_dataset = True

    class Params(PoolParams):
        gradient_type: Literal["adam", "sgd", "sign"] = Field(
            default="adam", description="Candidate feature: Adam update direction, raw gradient, or its sign."
        )
        proj_dim: int = Field(default=8192, ge=1, description="Random projection dimension k.")
        projector: str = Field(
            default="auto",
            description=(
                "Projector registry name: auto (sjlt on every device), sjlt, rademacher, gaussian, "
                "identity, cuda."
            ),
        )
        subtask_field: str | None = Field(
            default=None,
            description="Eval-example key naming its subtask (mean per subtask, then max); None: one.",
        )
        score_accumulation: Literal["cumulative", "current"] = Field(
            default="cumulative", description="cumulative: Σ η̄_j s_j over rounds; current: s_i alone."
        )
        feature_dtype: Literal["float16", "float32"] = Field(
            default="float32", description="Dtype of cached features."
        )
        batch_size: int = Field(
            default=64, ge=1, description="Most examples per feature batch (see max_batch_tokens)."
        )
        max_batch_tokens: int | None = Field(
            default=8192,
            ge=1,
            description=(
                "Most padded tokens (examples x longest) per feature batch, batch_size examples at "
                "most, so short examples share large batches and memory is bounded by tokens; None: "
                "batch_size examples per batch."
            ),
        )
        gradient_modules: list[str] | None = Field(
            default=None,
            min_length=1,
            description=(
                "fnmatch patterns over trainable parameter names (e.g. '*lora_B*', '*mlp*', "
                "'*layers.1.*'): only their gradients make the features; None: every trainable one."
            ),
        )

        @field_validator("projector")
        @classmethod
        def _known_projector(cls, value: str) -> str:
            if value not in PROJECTORS:
                raise ValueError(f"unknown projector {value!r}." + did_you_mean(value, PROJECTORS.names()))
            return value

    params: Params  # what validate_params builds (Selector declares a BaseModel)

    def __init__(self, params: BaseModel | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self.accumulator: ScoreAccumulator | None = None
        self._projector: tuple[tuple, Projector] | None = None

    # -- checks -----------------------------------------------------------------------------
    def preflight(self, plan: PreflightPlan) -> None:
        """Also check the target set's subtask labels, the projector's device and the features' size."""
        check_less_inputs(
            self.name, self.params, plan, self.cache_location(plan.cache_dir), self.subtask_labels
        )
        super().preflight(plan)

    def subtask_labels(self, eval_dataset: Sequence[Mapping[str, Any]] | None) -> list[str]:
        """Each validation example's subtask (all ``"all"`` when ``subtask_field`` is None).

        Raises:
            ConfigError: if there is no eval dataset or an example lacks the subtask field.
        """
        if eval_dataset is None or len(eval_dataset) == 0:
            raise ConfigError(
                f"{self.registry_name} scores candidates against a validation set, but no eval dataset "
                "was given: set eval_dataset (the target task's examples) in the config."
            )
        field = self.params.subtask_field
        if field is None:
            return ["all"] * len(eval_dataset)
        labels = []
        for i, ex in enumerate(eval_dataset):
            if ex.get(field) is None:
                raise ConfigError(
                    f"less: subtask_field is {field!r} but eval example {i} has no {field!r} key; "
                    "add it to every eval example or set subtask_field: null for one subtask."
                )
            labels.append(str(ex[field]))
        return labels

    def check_context(self, ctx: SelectionContext) -> None:
        """Everything LESS needs, checked before any work."""
        super().check_context(ctx)
        self.subtask_labels(ctx.eval_dataset)
        if not ctx.learning_rate >= 0:
            raise ConfigError(
                f"less: the mean learning rate of round {ctx.round} is {ctx.learning_rate!r}; it weights "
                "the round's scores and must be >= 0 (SelectionContext.learning_rate)."
            )
        if self.params.score_accumulation == "cumulative" and ctx.learning_rate == 0:
            logger.warning(
                "%s round %d (step %d): the mean learning rate since the last selection is 0, so this "
                "round's scores get weight 0 in the cumulative score (LESS's formula); they only break "
                "ties, e.g. in a first round taken before the learning-rate warm-up starts.",
                self.registry_name,
                ctx.round,
                ctx.step,
            )

    # -- feature transform ------------------------------------------------------------------
    @property
    def needs_optimizer_state(self) -> bool:
        """True for ``gradient_type: adam``."""
        return self.params.gradient_type == "adam"

    def candidate_transform(self, ctx: SelectionContext) -> tuple[str, AdamState | None]:
        """The transform for candidates this round and its Adam state (or ``None``).

        The state is ``ctx.adam_state`` when given, else read from ``ctx.optimizer``;
        ``adam`` before the first optimizer step falls back to ``sgd`` with a log line.
        """
        kind = self.params.gradient_type
        if kind != "adam":
            return kind, None
        if ctx.adam_state is not None:
            return "adam", ctx.adam_state
        opt, model = ctx.optimizer, ctx.model
        assert model is not None  # check_context refused a context without it
        if opt is None or not has_optimizer_state(model, opt):  # agreed by all ranks
            logger.warning(
                "%s round %d (step %d): no Adam state yet (no optimizer step taken); candidates use "
                "plain gradients ('sgd') this round.",
                self.registry_name,
                ctx.round,
                ctx.step,
            )
            return "sgd", None
        return "adam", AdamState.from_optimizer(model, opt)

    def projector_for(self, ctx: SelectionContext) -> Projector:
        """The round's projector, reused across rounds while its shape, seed and device hold.

        Reuse keeps the torch backends' generated blocks of P between rounds.
        """
        p, model = self.params, ctx.model
        assert model is not None  # check_context refused a context without it
        with only_parameters(model, p.gradient_modules):  # k and D of the differentiated part
            dim = num_trainable(model)
            key = (p.projector, p.proj_dim, self.seed_for(ctx), str(ctx.device), dim)
            if self._projector is None or self._projector[0] != key:
                proj = make_projector(model, p.projector, p.proj_dim, self.seed_for(ctx), ctx.device)
                self._projector = (key, proj)
        return self._projector[1]

    # -- scoring ----------------------------------------------------------------------------
    def score_candidates(self, ctx: SelectionContext, candidates: np.ndarray) -> CandidateScores:
        """One round's per-subtask scores of ``candidates`` (pool indices) under ``ctx.model``.

        ``per_subtask[c, s]`` is the mean cosine of candidate ``c`` to validation subtask
        ``s``; ``metadata`` holds the transform actually used, ``cache_hit`` and the
        seconds spent on features and on scoring. Every rank computes the features of
        its shard of the validation set and of the candidates; validation features and
        candidate scores are gathered, so every rank returns the same result. Scores are
        cached under ``cache_dir``.
        """
        transform, adam_state = self.candidate_transform(ctx)
        p = self.params
        model, val_set = ctx.model, ctx.eval_dataset
        assert model is not None  # check_context refused a context without them
        assert val_set is not None
        labels = self.subtask_labels(val_set)
        names, group_ids = subtask_groups(labels)
        projector = self.projector_for(ctx)
        identity = {
            "model": model_identity(model),
            "step": ctx.step,
            "projector": projector.fingerprint(),
            "dtype": p.feature_dtype,
            **({"modules": p.gradient_modules} if p.gradient_modules is not None else {}),
        }
        fingerprint = {
            "selector": self.registry_name,
            **self.validation_fingerprint(ctx),
            **identity,
            "transform": transform,
            "numerics": NUMERICS,
            "adam_state": adam_identity(adam_state),
            "train": data_identity(ctx.train_dataset, candidates),
            "val": data_identity(val_set, range(len(val_set))),
            "subtasks": labels,
        }
        cache = self.cache(ctx, "less-scores")
        t_io = time.perf_counter()
        hit = self.cached(ctx, cache, fingerprint)
        score_io = time.perf_counter() - t_io
        if hit is not None:
            return CandidateScores(
                hit["per_subtask"],
                [str(n) for n in names],
                {
                    "transform": transform,
                    "cache_hit": True,
                    "time_features_s": 0.0,
                    "time_scoring_s": 0.0,
                    "time_io_s": score_io,
                },
            )

        timing = {"features": 0.0, "scoring": 0.0}
        phases: dict[str, float] = {}
        feature_dir = self.cache_dir(ctx)

        def rows(
            dataset: Sequence[Mapping[str, Any]],
            indices: list[int],
            kind: str,
            state: AdamState | None,
            role: str,
        ) -> torch.Tensor:
            t0 = time.perf_counter()
            request = FeatureRequest(
                dataset=dataset,
                indices=indices,
                transform=kind,
                adam_state=state,
                role=role,
                identity={**identity, "adam_state": fingerprint["adam_state"] if state is not None else None},
            )
            out = compute_rows(
                model,
                request,
                projector,
                ctx,
                batch_size=p.batch_size,
                max_batch_tokens=p.max_batch_tokens,
                dtype=p.feature_dtype,
                cache_dir=feature_dir,
                timings=phases,
                modules=p.gradient_modules,
            )
            timing["features"] += time.perf_counter() - t0
            return out

        validation = self.validation_features(ctx, rows)
        val = unit_rows(validation.rows)
        cand_list = [int(i) for i in candidates]

        def work(share: list[int]) -> torch.Tensor:
            feats = rows(ctx.train_dataset, share, transform, adam_state, "train")
            t0 = time.perf_counter()
            out = subtask_scores(unit_rows(feats), val, group_ids)
            timing["scoring"] += time.perf_counter() - t0
            return out

        per_subtask = self.sharded_by_length(ctx, ctx.train_dataset, cand_list, work)
        t_io = time.perf_counter()
        self.store(ctx, cache, fingerprint, {"per_subtask": per_subtask})
        score_io += time.perf_counter() - t_io
        return CandidateScores(
            per_subtask,
            [str(n) for n in names],
            {
                "transform": transform,
                "cache_hit": False,
                "time_features_s": timing["features"],
                "time_scoring_s": timing["scoring"],
                "time_io_s": phases.get("io", 0.0) + score_io,
                "feature_phases": {k: round(v, 4) for k, v in phases.items()},
                "validation": validation.facts,
            },
        )

    def validation_fingerprint(self, ctx: SelectionContext) -> dict[str, Any]:
        """What the validation features depend on beyond model, step, projector and data.

        Nothing for LESS (plain gradients); subclasses whose validation direction is
        computed differently (``nice``) add their settings here.
        """
        return {}

    def validation_features(self, ctx: SelectionContext, rows: FeatureRows) -> ValidationFeatures:
        """``(M, k)`` projected validation directions (not normalised), identical on every rank.

        LESS: the plain gradient ∇ℓ(z') of each eval example, each rank computing its
        shard. ``rows(dataset, indices, transform, adam_state, role)`` computes (and
        caches) projected per-example gradient features; subclasses replace this
        method to use another direction in place of ∇ℓ(z') (``nice``), and may return
        facts of that computation for the round's report (:meth:`round_facts`).
        """
        val = ctx.eval_dataset
        assert val is not None  # check_context refused a context without it
        return ValidationFeatures(
            self.sharded_by_length(
                ctx, val, range(len(val)), lambda share: rows(val, share, "sgd", None, "val")
            )
        )

    def round_facts(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """What this selector adds to a round's report beyond LESS's own keys.

        Nothing for LESS; ``nice`` reports its metric and the rewards of its generations
        (from ``metadata["validation"]``, the round's scoring facts; absent on a cache hit).
        """
        return {}

    # -- the round ----------------------------------------------------------------------------
    def example_rows(self, ctx: SelectionContext, indices: np.ndarray) -> PoolRows:
        """``(len(indices), S)``: each example's per-subtask mean cosine under the current model."""
        result = self.score_candidates(ctx, indices)
        return PoolRows(result.per_subtask, {**result.metadata, "subtasks": result.subtasks})

    def score_rows(
        self, ctx: SelectionContext, cands: np.ndarray, rows: PoolRows, num_samples: int
    ) -> RoundScores:
        """This round's s_i = max over subtasks, accumulated with weight η̄ into S_i."""
        round_scores = aggregate(rows.rows)
        acc = self.accumulator_for(len(ctx.train_dataset))
        totals = acc.add(torch.as_tensor(cands), round_scores, float(ctx.learning_rate))
        facts = rows.facts
        return RoundScores(
            values=totals,
            reported=round_scores,
            tiebreak=round_scores,
            facts={
                "transform": facts["transform"],
                "subtasks": facts["subtasks"],
                "score_accumulation": acc.mode,
                "score_label": "cumulative score Σ η̄·cos (LESS)"
                if acc.mode == "cumulative"
                else "this round's score: cosine to the target (LESS)",
                "cache_hit": facts["cache_hit"],
                "time_features_s": round(facts["time_features_s"], 4),
                "time_scoring_s": round(facts["time_scoring_s"], 4),
                "time_io_s": round(facts.get("time_io_s", 0.0), 4),
                "feature_phases": facts.get("feature_phases", {}),
                **self.round_facts(facts),
            },
        )

    def pick(
        self, ctx: SelectionContext, cands: np.ndarray, scores: RoundScores, num_samples: int
    ) -> tuple[list[int], list[float] | None]:
        """The top ``num_samples`` by S_i (ties: this round's s_i, then position)."""
        pos, chosen = super().pick(ctx, cands, scores, num_samples)
        scores.facts["selected_scores"] = summarize(scores.values[pos])
        scores.facts["score_histogram"] = score_histogram(scores.values, pos)
        return pos, chosen

    # -- state ------------------------------------------------------------------------------
    def accumulator_for(self, pool_size: int) -> ScoreAccumulator:
        """The cumulative scores over a pool of ``pool_size`` (created on first use)."""
        if self.accumulator is None:
            self.accumulator = ScoreAccumulator(pool_size, self.params.score_accumulation)
        elif self.accumulator.pool_size != pool_size:
            raise ValueError(
                f"less: the pool changed size ({self.accumulator.pool_size} -> {pool_size}) between rounds."
            )
        return self.accumulator

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["scores"] = self.accumulator.state_dict() if self.accumulator is not None else None
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        scores = state.pop("scores", None)
        super().load_state_dict(state)
        self.accumulator = None
        if scores is not None:
            self.accumulator = ScoreAccumulator(len(scores["total"]), self.params.score_accumulation)
            self.accumulator.load_state_dict(scores)
