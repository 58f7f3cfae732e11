"""A selector of your own: the worked example of docs/writing-a-selector.md.

Put this folder on PYTHONPATH and name the module under ``plugins:`` in a training
config, or import it in your own script.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dataflex.selectors import Selection, SelectionContext, Selector, SelectorParams, register_selector


@register_selector("longest_answer")
class LongestAnswer(Selector):
    """Prefer the examples with the most answer tokens, each at most once per run."""

    class Params(SelectorParams):  # strict: an unknown key in components.yaml is an error
        min_tokens: int = Field(default=1, ge=1, description="Never choose shorter answers.")

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.chosen: set[int] = set()  # state across rounds, saved in every checkpoint

    def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
        answer_tokens = [sum(t != -100 for t in ex["labels"]) for ex in ctx.train_dataset]
        eligible = [
            i for i, n in enumerate(answer_tokens) if n >= self.params.min_tokens and i not in self.chosen
        ]
        self.check_budget(len(eligible), num_samples)  # a clear error before any work
        chosen = sorted(eligible, key=lambda i: (-answer_tokens[i], i))[:num_samples]
        self.chosen.update(chosen)
        return Selection(
            indices=chosen,
            scores=[float(answer_tokens[i]) for i in chosen],
            metadata={"round": ctx.round, "eligible": len(eligible)},
        )

    def state_dict(self) -> dict[str, Any]:
        return {"chosen": sorted(self.chosen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chosen = {int(i) for i in state.get("chosen", [])}
