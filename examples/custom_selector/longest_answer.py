"""A selector of your own: the worked example of docs/writing-a-selector.md.

Put this folder on PYTHONPATH and name the module under ``plugins:`` in a training
config, or import it in your own script.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dataflex.selectors import PoolParams, PoolSelector, RoundScores, SelectionContext, register_selector


@register_selector("longest_answer")
class LongestAnswer(PoolSelector):
    """Prefer the examples with the most answer tokens, each at most once per run."""

    # strict: an unknown key in components.yaml is an error. PoolParams adds seed, cache_dir,
    # candidate_fraction, max_candidates, repeat_across_rounds, batch_size and rescore_fraction.
    class Params(PoolParams):
        min_tokens: int = Field(default=1, ge=1, description="Never choose shorter answers.")

    def check_context(self, ctx: SelectionContext) -> None:
        """Counting tokens needs no model (the base's check asks for one)."""

    def rows_of(self, ctx: SelectionContext, indices: list[int]) -> torch.Tensor:
        """This rank's share of the round's per-example work; the base gathers every rank's."""
        labels = [ctx.train_dataset[i]["labels"] for i in indices]
        return torch.tensor([float(sum(t != -100 for t in ls)) for ls in labels])

    def score_rows(self, ctx, cands, rows, num_samples) -> RoundScores:
        """The round's scores from the gathered rows; the base picks the top ``num_samples``."""
        tokens = rows.rows
        eligible = tokens >= self.params.min_tokens
        self.check_budget(int(eligible.sum()), num_samples)  # a clear error naming the fix
        values = torch.where(eligible, tokens, torch.tensor(float("-inf")))
        return RoundScores(values=values, reported=tokens, facts={"eligible": int(eligible.sum())})
