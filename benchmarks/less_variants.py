"""LESS variants measured on the ``paraphrase`` setting: one knob changed from the ``less`` arm.

Each variant is a dynamic LESS arm of the selection-quality benchmark with some of
LESS's params, the schedule (at the same total steps) or the validation set changed;
``python -m benchmarks.selection_quality --setting paraphrase --arms less less_pd2048 ...``
runs them side by side with the plain ``less`` arm (proj_dim 512, cumulative scores,
warm-up 5 steps, 32 validation rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variant:
    """What a LESS variant changes.

    Attributes:
        params: LESS params that replace the ``less`` arm's.
        warmup_step: Warm-up steps; ``update_times`` shrinks so the total steps stay the same.
        eval_dataset: The validation split LESS scores against (``dataset_info.json`` name);
            the reported validation loss is still the setting's own split.
        note: One line for the docs.
    """

    params: dict[str, Any] = field(default_factory=dict)
    warmup_step: int | None = None
    eval_dataset: str | None = None
    note: str = ""


VARIANTS: dict[str, Variant] = {
    "less_pd128": Variant({"proj_dim": 128}, note="proj_dim 128"),
    "less_pd2048": Variant({"proj_dim": 2048}, note="proj_dim 2048"),
    "less_current": Variant({"score_accumulation": "current"}, note="this round's scores only"),
    "less_sgd": Variant({"gradient_type": "sgd"}, note="plain gradients for candidates"),
    "less_sign": Variant({"gradient_type": "sign"}, note="gradient signs for candidates"),
    "less_phrasing_max": Variant(
        {"subtask_field": "subtask"},
        eval_dataset="uppercase_valid_by_phrasing",
        note="max over the 3 validation phrasings (subtask_field) of the mean cosine",
    ),
    "less_val8": Variant(eval_dataset="uppercase_valid8", note="8 validation rows"),
    "less_val128": Variant(eval_dataset="uppercase_valid128", note="128 validation rows"),
    "less_warm15": Variant(warmup_step=15, note="warm-up 15 steps, 4 rounds"),
    "less_lora_b": Variant({"gradient_modules": ["*lora_B*"]}, note="LoRA B matrices only"),
    "less_attn": Variant({"gradient_modules": ["*self_attn*"]}, note="attention projections only"),
    "less_mlp": Variant({"gradient_modules": ["*mlp*"]}, note="MLP projections only"),
    "less_last": Variant({"gradient_modules": ["*layers.1.*"]}, note="last layer (of 2) only"),
    # combinations with the one knob that lifted precision alone (128 validation rows)
    "less_val128_warm15": Variant(
        warmup_step=15, eval_dataset="uppercase_valid128", note="128 validation rows, warm-up 15"
    ),
    "less_val128_phrasing_max": Variant(
        {"subtask_field": "subtask"},
        eval_dataset="uppercase_valid128_by_phrasing",
        note="128 validation rows, max over the 3 phrasings",
    ),
    "less_val128_last": Variant(
        {"gradient_modules": ["*layers.1.*"]}, eval_dataset="uppercase_valid128", note="128 rows, last layer"
    ),
    "less_val128_current": Variant(
        {"score_accumulation": "current"}, eval_dataset="uppercase_valid128", note="128 rows, this round only"
    ),
}
