"""``nice``: NICE (Wang et al., ICML 2025), LESS with a policy gradient of a metric as the target.

LESS scores a candidate by the cosine between its Adam update direction and the
gradient of the validation *loss*. NICE targets a metric that need not be
differentiable (exact match, ROUGE-L, a reward model's score): for each
validation prompt the current model generates M samples, the metric scores
them, and the REINFORCE estimate of the metric's gradient,
v = −(1/M) Σ_m (r_m − b) ∇ log p(y_m | x′), takes the place of ∇ℓ(z′)
(:mod:`dataflex.selectors.nice_policy`). Everything else is LESS's: the same
projector, Adam-transformed candidate features, subtask matching, cumulative
scores and cache (:class:`~dataflex.selectors.less.LessSelector`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from dataflex.errors import did_you_mean
from dataflex.gradients import num_trainable
from dataflex.registry import register_selector
from dataflex.selectors.base import SelectionContext
from dataflex.selectors.less import FeatureRows, LessSelector, ValidationFeatures
from dataflex.selectors.nice_metrics import METRICS, get_metric
from dataflex.selectors.nice_policy import (
    PromptRollouts,
    rollouts,
    sample_generations,
    sample_rng,
    split_example,
    strip_eos,
)

logger = logging.getLogger(__name__)


def eos_ids(model: torch.nn.Module) -> set[int]:
    """The model's end-of-sequence token ids (``generation_config`` first, then ``config``)."""
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(source, "eos_token_id", None)
        if eos is not None:
            return {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])}
    return set()


@register_selector("nice")
class NiceSelector(LessSelector):
    """NICE: LESS against the policy gradient of a (non-differentiable) metric on generations."""

    class Params(LessSelector.Params):
        metric: str = Field(
            default="rouge_l",
            description="Registered metric scoring a generation against the reference (rouge_l, "
            "exact_match, or one registered with register_metric).",
        )
        mc_samples: int = Field(default=4, ge=1, description="Generations sampled per validation prompt (M).")
        max_new_tokens: int = Field(default=64, ge=1, description="Most tokens generated per sample.")
        temperature: float = Field(
            default=0.7, ge=0.0, description="Sampling temperature (0: greedy, the M samples coincide)."
        )
        baseline: Literal["none", "mean"] = Field(
            default="none",
            description="b in (r - b): none (0, the original's) or mean (the prompt's mean reward).",
        )

        @field_validator("metric")
        @classmethod
        def _known_metric(cls, value: str) -> str:
            if value not in METRICS:
                raise ValueError(
                    f"unknown metric {value!r} (register it with dataflex.selectors.nice_metrics."
                    "register_metric before the config is loaded, e.g. from a plugin)."
                    + did_you_mean(value, METRICS.names())
                )
            return value

    params: Params  # what validate_params builds (Selector declares a BaseModel)

    def validation_fingerprint(self, ctx: SelectionContext) -> dict[str, Any]:
        p = self.params
        return {
            "metric": p.metric,
            "mc_samples": p.mc_samples,
            "max_new_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "baseline": p.baseline,
            "generation_seed": [self.seed_for(ctx), ctx.round],
        }

    def prompt_rollouts(self, ctx: SelectionContext, index: int) -> PromptRollouts:
        """Generations, rewards and policy-gradient weights of eval example ``index``."""
        p, model, val = self.params, ctx.model, ctx.eval_dataset
        assert model is not None  # check_context refused a context without them
        assert val is not None
        example = val[index]
        prompt, reference = split_example(example, index)
        eos = eos_ids(model)
        samples = sample_generations(
            model,
            prompt,
            num_samples=p.mc_samples,
            max_new_tokens=p.max_new_tokens,
            temperature=p.temperature,
            eos=eos,
            generator=sample_rng(self.seed_for(ctx), ctx.round, index),
            device=ctx.device,
        )
        metric = get_metric(p.metric)
        target = strip_eos(reference, eos)
        rewards = [float(metric(strip_eos(y, eos), target, example)) for y in samples]
        return rollouts(prompt, samples, rewards, p.baseline)

    def validation_features(self, ctx: SelectionContext, rows: FeatureRows) -> ValidationFeatures:
        """``(M, k)``: per eval example, P·v = Σ_m w_m · P∇ℓ(y_m) over its generations.

        Each rank generates for, scores and differentiates its shard of the eval set;
        the rows and the rewards are gathered, so every rank holds the same result. The
        facts are the rewards of every generation and this rank's seconds spent generating.
        """
        generation_s = [0.0]
        assert ctx.eval_dataset is not None  # check_context refused a context without it
        count = len(ctx.eval_dataset)

        def work(shard: range) -> torch.Tensor:
            out: list[torch.Tensor | None] = []
            rewards: list[float] = []
            for index in shard:
                t0 = time.perf_counter()
                roll = self.prompt_rollouts(ctx, index)
                generation_s[0] += time.perf_counter() - t0
                rewards.extend(roll.rewards)
                keep = [m for m, w in enumerate(roll.weights) if w != 0.0]
                if not keep:  # every sample's advantage is 0: v = 0
                    out.append(None)
                    continue
                feats = rows([roll.examples[m] for m in keep], list(range(len(keep))), "sgd", None, "val-pg")
                weights = torch.tensor([roll.weights[m] for m in keep], dtype=torch.float64)
                out.append((weights[:, None] * feats.double()).sum(dim=0).float())
            dim = next((o.shape[0] for o in out if o is not None), None)
            if dim is None:
                dim = self._feature_dim(ctx)
            rows_ = [o if o is not None else torch.zeros(dim) for o in out]
            packed = torch.stack(rows_) if rows_ else torch.zeros(0, dim)
            return torch.cat(
                [packed, torch.tensor(rewards, dtype=torch.float32).view(len(shard), self.params.mc_samples)],
                dim=1,
            )

        gathered = self.sharded(ctx, count, work)
        dim = gathered.shape[1] - self.params.mc_samples
        features, rewards = gathered[:, :dim], gathered[:, dim:]
        zero = int((features.abs().sum(dim=1) == 0).sum())
        if zero:
            logger.warning(
                "nice round %d: %d of %d validation prompts have a zero policy gradient (all their %d "
                "samples got the same reward%s); they add nothing to the scores. A graded metric "
                "(rouge_l), more mc_samples or a higher temperature make this rarer.",
                ctx.round,
                zero,
                count,
                self.params.mc_samples,
                " and baseline is mean" if self.params.baseline == "mean" else " of 0",
            )
        facts = {"rewards": rewards.flatten().tolist(), "time_generation_s": round(generation_s[0], 4)}
        return ValidationFeatures(features, facts)

    def _feature_dim(self, ctx: SelectionContext) -> int:
        projector = self.projector_for(ctx)
        return projector.proj_dim if projector is not None else num_trainable(ctx.model)

    def round_facts(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The metric, and the rewards' mean and generation time (``None`` and 0 on a cache hit)."""
        facts = metadata.get("validation", {})
        rewards = torch.tensor(facts.get("rewards", []), dtype=torch.float64)
        return {
            "metric": self.params.metric,
            "mc_samples": self.params.mc_samples,
            "reward_mean": float(rewards.mean()) if len(rewards) else None,
            "time_generation_s": facts.get("time_generation_s", 0.0),
        }
