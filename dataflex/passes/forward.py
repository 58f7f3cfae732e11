"""The batched no-grad forward over examples, and the position ids of a padded batch.

Every scoring pass without gradients (per-example losses, pooled hidden states)
runs the same loop: eval mode, batches of ``batch_size`` examples in the order asked,
each collated and moved to the device, and, under an engine whose forwards are
collective (ZeRO-3, FSDP), as many discarded batches as this rank is short of the
busiest one. :func:`forward_batches` is that loop; a pass supplies what it computes
from one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from dataflex.engines import lockstep_extra_batches, run_padding

Collator = Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]]
"""Pads a list of tokenised examples into a batch of tensors."""


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that count a row's real tokens only: ``0, 1, …`` from its first real token.

    With left padding the model's default positions would start at the padding, so
    rotary positions (and every output) would depend on the row's batch-mates; these
    do not. Padding positions get 0.

    Args:
        mask: ``(B, T)`` attention mask, 1 on real tokens.
    """
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def forward_batches(
    model: torch.nn.Module,
    examples: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
    collator: Collator,
    run: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], object] | None = None,
) -> list[torch.Tensor]:
    """``run(batch)`` on ``examples[i]`` for ``i`` in ``indices``, ``batch_size`` at a time, in eval mode.

    Runs under ``torch.no_grad``; the model's train/eval mode is restored afterwards.
    Under ZeRO-3 / FSDP every rank runs as many forwards: the padding batches (one
    example each, results discarded) are agreed before the first real batch.

    Args:
        model: The model ``run`` calls.
        examples: Tokenised examples.
        indices: Which examples, in output order.
        collator: Pads a list of examples into a batch.
        run: Computes a ``(B, ...)`` result from one batch on ``device``.
        batch_size: Most examples per forward.
        device: Where the batches go.
        on_batch: Called with each real batch's size once it is done (a progress bar's ``update``).

    Returns:
        One CPU tensor per batch, in order (empty when ``indices`` is).
    """
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    # ZeRO-3 / FSDP: forwards are collective; agree on the padding batches before the first.
    extra = lockstep_extra_batches(model, -(-len(indices) // batch_size))
    try:
        with torch.no_grad():
            for start in range(0, len(indices), batch_size):
                chunk = [examples[int(i)] for i in indices[start : start + batch_size]]
                out.append(run({k: v.to(device) for k, v in collator(chunk).items()}).cpu())
                if on_batch is not None:
                    on_batch(len(chunk))

            def padding() -> None:  # a discarded batch, so that every rank runs as many forwards
                first = examples[int(indices[0])] if len(indices) else examples[0]
                run({k: v.to(device) for k, v in collator([first]).items()})

            run_padding(extra, padding)
    finally:
        model.train(was_training)
    return out
