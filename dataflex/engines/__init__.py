"""What the scoring passes need to know about the training engine (DDP, DeepSpeed ZeRO, FSDP).

Selectors score on the unwrapped model, but under ZeRO-3 and FSDP2 its parameters
are shards and its forwards are collective, and under ZeRO-1/2/3 and FSDP2 the Adam
moments are partitioned. This package hides that behind four questions:

* :func:`engine_of`: which engine holds the model's parameters;
* :func:`full_numel` / :func:`full_shape`: a parameter's size as the model defines it;
* :func:`full_adam_state`: the full ``exp_avg`` / ``exp_avg_sq`` of every trainable
  parameter (an :class:`AdamMoments` each), read through the engine's public API;
* :func:`lockstep_extra_batches`: how many padding batches this rank must run so that
  every rank runs the same number of (collective) forwards, and :func:`run_padding` runs them.

:func:`check_engine_config` and :func:`check_fsdp_config` (the Trainer's ``fsdp`` /
``fsdp_config`` keys) refuse, before the model loads, what cannot work.
"""

from dataflex.engines.adam import AdamMoments, full_adam_state, has_optimizer_state
from dataflex.engines.detect import Engine, engine_of, full_numel, full_shape, full_tensors, has_accelerator
from dataflex.engines.fsdp import FsdpOptions, check_fsdp_config, fsdp_enabled
from dataflex.engines.lockstep import lockstep_extra_batches, run_padding
from dataflex.engines.preflight import check_engine_config, deepspeed_stage, require_deepspeed

__all__ = [
    "AdamMoments",
    "Engine",
    "FsdpOptions",
    "check_engine_config",
    "check_fsdp_config",
    "deepspeed_stage",
    "engine_of",
    "fsdp_enabled",
    "full_adam_state",
    "full_numel",
    "full_shape",
    "full_tensors",
    "has_accelerator",
    "has_optimizer_state",
    "lockstep_extra_batches",
    "require_deepspeed",
    "run_padding",
]
