"""Full Adam moments of every trainable parameter, read through the engine's public API.

* DeepSpeed ZeRO-1/2/3: ``deepspeed.utils.safe_get_full_optimizer_state(param, key)``,
  which assembles the fp32 state from every rank's partition (a collective);
* FSDP2: the moments are ``DTensor`` shards; ``DTensor.full_tensor()`` gathers them
  (a collective);
* one process / DDP: the optimizer's own tensors.

:class:`AdamMoments` is the one record of a parameter's moments and its group's
hyper-parameters: what this module returns, what ``dataflex.gradients`` transforms with
and what the sjlt kernels read for a block of columns.

Every collective here is issued for the trainable parameters in
``model.named_parameters()`` order, the same on every rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from dataflex.engines.detect import Engine, engine_of, full_shape
from dataflex.errors import ConfigError


@dataclass(frozen=True)
class AdamMoments:
    """Adam's running moments of one parameter (or of a block of its columns) and its group's betas/eps."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    beta1: float
    beta2: float
    eps: float


class HoldsOptimizerState(Protocol):
    """An optimizer whose ``param_groups`` and per-parameter ``state`` can be read.

    torch's optimizers, accelerate's wrapper of one and DeepSpeed's ZeRO optimizers (which
    do not subclass ``torch.optim.Optimizer``) all have this shape.
    """

    @property
    def param_groups(self) -> list[dict[str, Any]]: ...

    @property
    def state(self) -> Mapping[torch.Tensor, Any]: ...


def _inner(optimizer: HoldsOptimizerState) -> HoldsOptimizerState:
    """The optimizer holding ``param_groups``/``state`` (accelerate wraps it in ``.optimizer``)."""
    while not hasattr(optimizer, "param_groups") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def _group_hparams(optimizer: HoldsOptimizerState, index: int) -> tuple[float, float, float]:
    group = optimizer.param_groups[index]
    if "betas" not in group or "eps" not in group:
        raise ConfigError(
            f"transform='adam' needs an Adam-like optimizer, but param group {index} of "
            f"{type(optimizer).__name__} has no 'betas'/'eps'. Use torch.optim.Adam/AdamW, or "
            "transform='sgd' (gradient_type: sgd in a selector's params)."
        )
    beta1, beta2 = (float(b) for b in group["betas"])
    return beta1, beta2, float(group["eps"])


def has_optimizer_state(model: nn.Module, optimizer: HoldsOptimizerState) -> bool:
    """Whether the optimizer has stepped (holds Adam state), agreed by every rank.

    Under a sharded engine a rank may hold no partition of the state; the local answers
    are combined (any rank stepped means all did) so that every rank takes the same path.
    """
    opt = _inner(optimizer)
    local = opt is not None and any(len(s) for s in opt.state.values())
    if engine_of(model).sharded and dist.is_available() and dist.is_initialized():
        flag = torch.tensor([1 if local else 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
    return local


def full_adam_state(model: nn.Module, optimizer: HoldsOptimizerState) -> dict[str, AdamMoments]:
    """Full ``exp_avg`` / ``exp_avg_sq`` (fp32, full shape, CPU) of each trainable parameter.

    Args:
        model: The unwrapped model (``named_parameters()`` names the result).
        optimizer: The live optimizer: a torch Adam/AdamW, DeepSpeed's ZeRO optimizer, or
            accelerate's wrapper of either.

    Returns:
        Name → moments, for the parameters the optimizer has state for (it has stepped).

    Raises:
        ConfigError: if the optimizer is not Adam-like, or (DeepSpeed) if its param groups
            disagree on betas/eps for a parameter whose group cannot be told.
    """
    opt = _inner(optimizer)
    hparams = [_group_hparams(opt, i) for i in range(len(opt.param_groups))]  # Adam-like, every group
    engine = engine_of(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if engine in (Engine.ZERO, Engine.ZERO3):
        return _deepspeed_moments(trainable, opt, hparams)
    if engine is Engine.FSDP1:
        raise ConfigError(
            "FSDP1 (FullyShardedDataParallel) keeps flat parameters whose Adam moments cannot be read "
            "per parameter here; use FSDP2 (torch.distributed.fsdp.fully_shard, or fsdp_version: 2 in "
            "the Trainer's fsdp_config) or DeepSpeed ZeRO-3 instead."
        )
    index = {id(p): i for i, g in enumerate(opt.param_groups) for p in g["params"]}
    out: dict[str, AdamMoments] = {}
    for name, param in trainable:
        state = opt.state.get(param, {})
        if id(param) not in index or "exp_avg" not in state or "exp_avg_sq" not in state:
            continue
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if engine is Engine.FSDP2:
            m, v = m.full_tensor(), v.full_tensor()
        out[name] = AdamMoments(m, v, *hparams[index[id(param)]])
    return out


def _deepspeed_moments(
    trainable: list[tuple[str, nn.Parameter]],
    opt: HoldsOptimizerState,
    by_group: list[tuple[float, float, float]],
) -> dict[str, AdamMoments]:
    from deepspeed.utils import safe_get_full_optimizer_state

    hparams = set(by_group)
    out: dict[str, AdamMoments] = {}
    for name, param in trainable:
        mapping = getattr(param, "_hp_mapping", None)
        if mapping is not None and getattr(mapping, "param_group_index", None) is not None:
            group = by_group[int(mapping.param_group_index)]
        elif len(hparams) == 1:
            group = next(iter(hparams))
        else:
            raise ConfigError(
                f"DeepSpeed's optimizer groups have different betas/eps ({sorted(hparams)}) and the group "
                f"of {name!r} cannot be read; give every group the same betas and eps."
            )
        shape = full_shape(param)
        m = safe_get_full_optimizer_state(param, "exp_avg")
        v = safe_get_full_optimizer_state(param, "exp_avg_sq")
        if m is None or v is None:
            continue
        out[name] = AdamMoments(
            m.detach().float().reshape(shape).cpu(), v.detach().float().reshape(shape).cpu(), *group
        )
    return out
