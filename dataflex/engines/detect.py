"""Which engine holds a model's parameters, and their full sizes."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor


class Engine(str, enum.Enum):
    """Where the parameters and the Adam moments of a model live.

    Attributes:
        PLAIN: Whole parameters and whole moments on every rank (one process, DDP).
        ZERO: DeepSpeed ZeRO-1/2: whole parameters, partitioned moments.
        ZERO3: DeepSpeed ZeRO-3: partitioned parameters (gathered by the engine's
            module hooks during each forward/backward) and moments.
        FSDP2: ``torch.distributed.fsdp.fully_shard``: parameters are ``DTensor`` shards
            (unsharded by FSDP's module hooks), moments are ``DTensor`` shards too.
        FSDP1: ``FullyShardedDataParallel`` wrappers (flat parameters).
    """

    PLAIN = "plain"
    ZERO = "zero1/2"
    ZERO3 = "zero3"
    FSDP2 = "fsdp2"
    FSDP1 = "fsdp1"

    @property
    def collective_forward(self) -> bool:
        """Whether every forward gathers parameters collectively (all ranks must run it)."""
        return self in (Engine.ZERO3, Engine.FSDP2, Engine.FSDP1)

    @property
    def sharded(self) -> bool:
        """Whether the Adam moments are partitioned across ranks."""
        return self is not Engine.PLAIN


def has_accelerator() -> bool:
    """Whether this machine has an accelerator torch can train on (CUDA, XPU, MPS, ...)."""
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def _is_dtensor(t: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch builds without distributed
        return False
    return isinstance(t, DTensor)


def _is_fsdp1(module: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(module, FullyShardedDataParallel)


def engine_of(model: nn.Module) -> Engine:
    """The engine of ``model`` (the unwrapped module the selectors score on).

    Read from the parameters themselves: DeepSpeed ZeRO-3 marks each with ``ds_id``,
    ZeRO-1/2 link each to its optimizer partition (``_hp_mapping``), FSDP2 makes them
    ``DTensor`` and FSDP1 wraps modules in ``FullyShardedDataParallel``.
    """
    if any(_is_fsdp1(m) for m in model.modules()):
        return Engine.FSDP1
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        return Engine.ZERO3
    if any(_is_dtensor(p) for p in params):
        return Engine.FSDP2
    if any(hasattr(p, "_hp_mapping") for p in params):
        return Engine.ZERO
    return Engine.PLAIN


def full_shape(param: torch.Tensor) -> torch.Size:
    """The shape of ``param`` as the model defines it, not of the local shard.

    ZeRO-3 keeps it in ``ds_shape`` (the local tensor is empty outside a gather);
    a ``DTensor``'s ``shape`` is already the global one.
    """
    shape = getattr(param, "ds_shape", None)
    return torch.Size(shape) if shape is not None else param.shape


def full_numel(param: torch.Tensor) -> int:
    """The number of elements of ``param`` as the model defines it (``ds_numel`` under ZeRO-3)."""
    numel = getattr(param, "ds_numel", None)
    return int(numel) if numel is not None else param.numel()


def _ds_available(p: torch.Tensor) -> bool:
    """Whether a ZeRO-3 parameter is whole here now (persistent small ones always are)."""
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return p.ds_status == ZeroParamStatus.AVAILABLE  # type: ignore[attr-defined]  # set by ZeRO-3 on its parameters


def full_tensors(named: Sequence[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, full detached tensor)`` for each parameter, one at a time.

    Under ZeRO-3 each parameter is gathered inside ``deepspeed.zero.GatheredParameters``
    and copied out; under FSDP2 ``DTensor.full_tensor()`` gathers it. Both are
    collectives: every rank must iterate the same list to the end.
    """
    for name, p in named:
        if hasattr(p, "ds_id") and not _ds_available(p):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                full = p.detach().clone()
            yield name, full
        elif _is_dtensor(p):
            yield name, cast("DTensor", p.detach()).full_tensor()  # _is_dtensor(p)
        else:
            yield name, p.detach()
