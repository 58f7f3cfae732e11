"""The tests' one reference for LESS's Adam direction, written out apart from dataflex.

    Γ = (β₁·m + (1−β₁)·g) / (√(β₂·v + (1−β₂)·g²) + ε)

Rounded as docs/gradients.md promises the library rounds it: torch's ``add(alpha=)`` and
``addcmul(value=)`` (one multiply-add each) and numpy's square root (the correctly rounded
IEEE operation, not the library's ``sqrt_``). So in fp32 it is the library's Γ bit for bit;
the slow references pass fp64 gradients and get Γ in fp64.
"""

from __future__ import annotations

import numpy as np
import torch


def adam_direction(
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
) -> torch.Tensor:
    """Γ of ``grads`` (``(n,)`` or ``(B, n)``) from moments of any shape with n entries, in grads' dtype."""
    shape = grads.shape[-1:]
    m = beta1 * exp_avg.reshape(shape).to(grads)
    v = beta2 * exp_avg_sq.reshape(shape).to(grads)
    den = torch.addcmul(v, grads, grads, value=1.0 - beta2)
    den = torch.from_numpy(np.sqrt(den.detach().cpu().numpy())).to(den.device).add_(eps)
    return torch.add(m, grads, alpha=1.0 - beta1).div_(den)
