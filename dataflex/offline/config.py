"""The config of ``dataflex-cli select``: offline, one-shot selection (the LESS paper's workflow).

Example (the quickstart assets, after a short LoRA warm-up run saved two checkpoints)::

    model_name_or_path: examples/quickstart/model
    checkpoints: [saves/warmup/checkpoint-4, saves/warmup/checkpoint-8]
    checkpoint_learning_rates: [2.0e-3, 1.0e-3]   # normalised to sum to one
    dataset: quickstart_train
    eval_dataset: quickstart_valid
    dataset_dir: examples/quickstart/data
    template: tokenizer
    cutoff_len: 128
    component_name: less
    select_fraction: 0.1
    output_dir: saves/quickstart/selected
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflex.configs.yaml_files import apply_overrides, read_yaml_mapping, validate_model
from dataflex.errors import ConfigError


class OfflineSelectConfig(BaseModel):
    """Every key of an offline selection config."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf/.nan refused by name

    model_name_or_path: str = Field(description="Base model: a local folder or a hub id.")
    adapter_name_or_path: str | None = Field(
        default=None, description="LoRA adapter scored when no checkpoints are given."
    )
    checkpoints: list[str] = Field(
        default_factory=list,
        description="HF Trainer checkpoint folders (adapter or full weights + optimizer.pt), scored in turn.",
    )
    checkpoint_learning_rates: list[float] | None = Field(
        default=None,
        description="Mean learning rate of the training before each checkpoint; normalised to sum to "
        "one. None: equal weights.",
    )
    trust_remote_code: bool = Field(default=False, description="Allow model code from the model folder/hub.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="float32", description="Model dtype.")
    device: str = Field(default="auto", description="auto (cuda when available), cpu, cuda, cuda:1, ...")

    dataset: str = Field(description="The pool: dataset name(s) (comma-separated) or file path(s).")
    eval_dataset: str | None = Field(default=None, description="The target task's validation examples.")
    dataset_dir: str = Field(default="data", description="Folder holding dataset_info.json.")
    template: str | None = Field(default=None, description="Chat template name (tokenizer's own if None).")
    cutoff_len: int = Field(
        default=1024, ge=1, description="Maximum tokens per example (longer are truncated)."
    )
    max_samples: int | None = Field(default=None, ge=1, description="Keep the first N rows of each dataset.")
    strict: bool = Field(
        default=False,
        description="Fail on the first bad row (or row without answer tokens) instead of skipping it.",
    )

    components_cfg_file: str | None = Field(default=None, description="components.yaml (shipped if None).")
    component_name: str = Field(default="less", description="Selector key in components_cfg_file.")
    select_fraction: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Share of the pool to keep; set this or select_count."
    )
    select_count: int | None = Field(
        default=None, ge=1, description="Number of pool examples to keep; set this or select_fraction."
    )
    output_dir: str = Field(
        description="Where the subset, its dataset_info.json, scores.jsonl and selection.json go."
    )
    seed: int = Field(
        default=42, description="Run seed given to the selector (used where its params set no seed)."
    )

    def check(self, where: str) -> None:
        """Cross-key rules, each a :class:`ConfigError` naming the keys and the fix."""
        if (self.select_fraction is None) == (self.select_count is None):
            raise ConfigError(
                f"{where} set exactly one of select_fraction (e.g. 0.05) or select_count (e.g. 1000)."
            )
        lrs = self.checkpoint_learning_rates
        if lrs is not None:
            if len(lrs) != len(self.checkpoints):
                raise ConfigError(
                    f"{where} checkpoint_learning_rates has {len(lrs)} entries but checkpoints has "
                    f"{len(self.checkpoints)}; give one learning rate per checkpoint."
                )
            if any(lr <= 0 for lr in lrs):
                raise ConfigError(f"{where} checkpoint_learning_rates must all be positive, got {lrs}.")
        if self.checkpoints and self.adapter_name_or_path is not None:
            raise ConfigError(
                f"{where} give either checkpoints (each one's weights are loaded) or "
                "adapter_name_or_path, not both."
            )

    def checkpoint_weights(self) -> list[float]:
        """Per-checkpoint weights η̄_i / Σ η̄ (equal when no learning rates are given)."""
        n = len(self.checkpoints)
        if n == 0:
            return [1.0]
        lrs = self.checkpoint_learning_rates or [1.0] * n
        total = sum(lrs)
        return [lr / total for lr in lrs]

    def num_to_select(self, pool_size: int) -> int:
        """How many pool examples to keep."""
        if self.select_count is not None:
            return self.select_count
        assert self.select_fraction is not None
        return max(1, round(self.select_fraction * pool_size))


def load_offline_config(path: str | Path, overrides: list[str] | None = None) -> OfflineSelectConfig:
    """Read, override (``key=value``, values parsed as YAML) and validate a select config.

    Raises:
        ConfigError: naming the file, the key and the closest valid key.
    """
    raw = apply_overrides(
        read_yaml_mapping(path, "select config"), list(overrides or []), OfflineSelectConfig
    )
    config = validate_model(OfflineSelectConfig, raw, f"{path}:")
    config.check(f"{path}:")
    return config
