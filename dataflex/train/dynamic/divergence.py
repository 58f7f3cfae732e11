"""A run whose weights or scores turned NaN/Inf stops with a message saying where and what to try.

A learning rate far too high, fp16 overflow or a bad batch can make the weights
non-finite a few steps in; the next selection round would then fail deep inside a
selector (``project received NaN or Inf values``) or silently rank NaN scores. Before
each round the trainable weights are checked (one pass over them, small next to
scoring the pool), and a :class:`~dataflex.errors.NonFiniteError` raised while scoring
is re-raised naming the step and the round.
"""

from __future__ import annotations

import torch

from dataflex.errors import NonFiniteError


def _advice(learning_rate: float) -> str:
    return (
        f"Lower learning_rate (now {learning_rate:g}), keep gradient clipping on (max_grad_norm > 0), "
        "train in bf16 or fp32 rather than fp16, and start a fresh run: checkpoints saved after the "
        "divergence hold its weights."
    )


def check_finite_weights(model: torch.nn.Module, round_: int, step: int, learning_rate: float) -> None:
    """Raise before ``round_`` is scored if a trainable weight of ``model`` is NaN or Inf.

    Raises:
        NonFiniteError: naming the step, the round, the first non-finite parameter and the fix.
    """
    for name, param in model.named_parameters():
        if param.requires_grad and not bool(torch.isfinite(param.detach()).all()):
            raise NonFiniteError(
                f"training diverged: after step {step}, before selection round {round_}, the trainable "
                f"weight {name!r} holds NaN or Inf values. {_advice(learning_rate)}"
            )


def diverged_while_scoring(
    exc: NonFiniteError, round_: int, step: int, learning_rate: float
) -> NonFiniteError:
    """``exc`` (found while a selector scored) restated with the step, the round and the fix."""
    return NonFiniteError(
        f"training diverged: selection round {round_} at step {step} met NaN or Inf values while "
        f"scoring ({str(exc).rstrip('.')}). {_advice(learning_rate)}"
    )
