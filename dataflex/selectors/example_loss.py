"""Per-example loss under the current model: batched, without gradients.

The loss of an example is the mean token cross-entropy over *its own*
completion tokens (labels != -100), the definition of ``../shared/DESIGN.md``.
Position ids are derived from the attention mask so that left padding does not
shift rotary positions: a row's loss does not depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from dataflex.gradients import per_example_losses
from dataflex.gradients.dataset_pass import progress_bar
from dataflex.passes import forward_batches, position_ids


def per_example_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean completion-token cross-entropy of each row of ``batch``.

    Args:
        model: A causal LM returning ``logits`` (``transformers`` or ``peft``).
        batch: ``input_ids``, ``attention_mask`` and ``labels`` as the collator makes them.

    Returns:
        ``(B,)`` fp32 losses.

    Raises:
        ValueError: if a row has no completion token (its loss is undefined; ranking it as
            loss 0, as the gradient code's zero feature does, would be wrong here).
    """
    input_ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    labels = batch["labels"]
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask)).logits
    losses, counts = per_example_losses(logits, labels)
    if bool((counts == 0).any()):
        rows = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"Rows {rows} of the batch have no completion token (all labels are -100).")
    return losses


def dataset_losses(
    model: torch.nn.Module,
    examples: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
    collator: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    desc: str = "losses",
) -> torch.Tensor:
    """Losses of ``examples[i]`` for ``i`` in ``indices`` (in that order), in eval mode.

    The model's train/eval mode is restored afterwards. A progress bar with a time
    estimate shows on rank 0 when stderr is a terminal (labelled ``desc``).
    """
    with progress_bar(len(indices), desc) as bar:
        out = forward_batches(
            model,
            examples,
            indices,
            collator,
            lambda batch: per_example_loss(model, batch),
            batch_size=batch_size,
            device=device,
            on_batch=bar.update,
        )
    return torch.cat(out) if out else torch.zeros(0)
