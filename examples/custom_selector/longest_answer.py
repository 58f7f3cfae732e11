"""A selector of your own: the worked example of docs/writing-a-selector.md.

Put this folder on PYTHONPATH and name the module under ``plugins:`` in a training
config, or import it in your own script.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dataflex.selectors import PoolParams, PoolSelector, Selection, SelectionContext, register_selector


@register_selector("longest_answer")
class LongestAnswer(PoolSelector):
    """Prefer the examples with the most answer tokens, each at most once per run."""

    # strict: an unknown key in components.yaml is an error. PoolParams adds seed,
    # cache_dir, candidate_fraction, max_candidates, repeat_across_rounds and batch_size.
    class Params(PoolParams):
        min_tokens: int = Field(default=1, ge=1, description="Never choose shorter answers.")

    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        available = self.check_request(ctx, num_samples)  # the pool less earlier rounds' picks
        candidates = self.draw_candidates(ctx, available, num_samples)  # seeded, same on every rank

        def answer_tokens(shard: range) -> torch.Tensor:  # each rank counts its own shard
            labels = [ctx.train_dataset[int(candidates[i])]["labels"] for i in shard]
            return torch.tensor([float(sum(t != -100 for t in ls)) for ls in labels])

        tokens = self.sharded(ctx, len(candidates), answer_tokens).tolist()  # gathered: all ranks
        eligible = [j for j, n in enumerate(tokens) if n >= self.params.min_tokens]
        self.check_budget(len(eligible), num_samples)  # a clear error naming the fix
        best = sorted(eligible, key=lambda j: (-tokens[j], int(candidates[j])))[:num_samples]
        chosen = [int(candidates[j]) for j in best]
        self.remember(chosen)  # excluded from later rounds (state saved in every checkpoint)
        meta = self.report(ctx, chosen, torch.tensor(tokens), len(candidates), eligible=len(eligible))
        return Selection(indices=chosen, scores=[tokens[j] for j in best], metadata=meta)
