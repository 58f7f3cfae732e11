"""The feature pass under sharded engines (DeepSpeed ZeRO-3, FSDP): what it refuses, how it pads.

The per-example gradients come from captured activations and output gradients
(:mod:`dataflex.gradients.capture`), so a linear or embedding layer's own weight is
never read by dataflex: the engine's module hooks gather it for the forward and for
the backward through the activations, layer by layer, and release it after. No
parameter gradient is requested, so the engine's gradient hooks (reduce-scatter) never
run. Two things remain:

* modules on the ``torch.func`` fallback (norms under full fine-tuning) are called with
  their own parameters, which are empty shards outside the engine's gather: refused;
* forwards are collective: every rank runs the same number of batches
  (:func:`~dataflex.engines.lockstep_extra_batches`, :func:`~dataflex.engines.run_padding`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from dataflex.engines import Engine, engine_of
from dataflex.errors import ConfigError


def check_capturable(model: nn.Module, functional_modules: Sequence[str]) -> None:
    """Refuse an engine/model combination whose per-example gradients cannot be computed.

    Raises:
        ConfigError: under FSDP1 (flat parameters), or under ZeRO-3 / FSDP2 when trainable
            parameters sit in modules that need the ``torch.func`` fallback.
    """
    engine = engine_of(model)
    if engine is Engine.FSDP1:
        raise ConfigError(
            "Per-example gradients under FSDP1 (FullyShardedDataParallel) are not supported: its flat "
            "parameters hide the per-parameter shapes and moments. Use FSDP2 (fully_shard; "
            "fsdp_version: 2 in the Trainer's fsdp_config), DeepSpeed ZeRO-3, or DDP."
        )
    if engine.collective_forward and functional_modules:
        raise ConfigError(
            f"Per-example gradients under {engine.value} cannot be computed for the trainable parameters "
            f"of {', '.join(functional_modules[:5])} (not nn.Linear/nn.Embedding): the torch.func "
            "fallback calls the module with its own parameters, which are shards outside the engine's "
            "gather. Train only linear layers (finetuning_type: lora), or use ZeRO-2 or DDP."
        )
