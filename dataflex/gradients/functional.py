"""Exact per-example gradients of an arbitrary module via ``torch.func`` (the fallback path).

Used for trainable modules that are neither ``nn.Linear`` nor ``nn.Embedding`` (for
example RMSNorm weights under full fine-tuning). Only the module itself is replayed,
on the inputs recorded in the batched forward: for each example b, the gradient of
⟨module(x_b; θ), gy_b⟩ with respect to θ, vmapped over the batch. This is exact as
long as the module treats the examples of a batch independently (true of norms and
every other per-token module).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def per_example_module_grads(
    module: nn.Module,
    attr: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    grad_out: torch.Tensor,
    batch: int,
) -> torch.Tensor:
    """``(B, *param.shape)`` fp32 per-example gradient of ``module.<attr>``.

    Args:
        module: The module that holds the parameter directly.
        attr: The parameter's attribute name on ``module``.
        args: Positional inputs recorded in the batched forward (detached).
        kwargs: Keyword inputs recorded in the batched forward (detached).
        grad_out: Gradient of the total loss with respect to the module's output.
        batch: B; tensors whose first dimension is B are split per example.
    """
    param = getattr(module, attr).detach()
    keys = list(kwargs)
    values = [*args, *(kwargs[k] for k in keys)]
    batched = [isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch for v in values]
    split = [v for v, b in zip(values, batched) if b]
    n_args = len(args)

    def one(p: torch.Tensor, gy: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        it = iter(xs)
        vals = [next(it).unsqueeze(0) if b else v for v, b in zip(values, batched)]
        call_args = tuple(vals[:n_args])
        call_kwargs = dict(zip(keys, vals[n_args:]))

        def f(p_: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(module, {attr: p_}, call_args, call_kwargs)

        vjp_fn = torch.func.vjp(f, p)[1]
        return vjp_fn(gy.unsqueeze(0))[0]

    in_dims = (None, 0, *([0] * len(split)))
    return torch.func.vmap(one, in_dims=in_dims)(param, grad_out, *split).float()
