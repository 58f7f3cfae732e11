"""Padding tokenised SFT examples into batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

IGNORE_INDEX = -100
"""Label of positions that do not contribute to the loss (prompt and padding)."""


class SFTDataCollator:
    """Pad ``input_ids`` / ``labels`` examples into ``input_ids``, ``attention_mask``, ``labels``.

    Examples are mappings with ``input_ids`` and ``labels`` (equal-length int lists or
    1-D tensors, prompt positions labelled :data:`IGNORE_INDEX`). Other keys (such as
    the ``dataset`` name) are metadata and are dropped.

    Args:
        pad_token_id: Token used for padding ``input_ids``.
        padding_side: ``"right"`` (default) or ``"left"``.
        pad_to_multiple_of: Round the padded length up to a multiple of this.
    """

    def __init__(
        self,
        pad_token_id: int,
        padding_side: Literal["right", "left"] = "right",
        pad_to_multiple_of: int | None = None,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("Cannot collate an empty list of examples.")
        ids = [torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples]
        labels = [torch.as_tensor(e["labels"], dtype=torch.long) for e in examples]
        for i, (a, b) in enumerate(zip(ids, labels)):
            if a.shape != b.shape:
                raise ValueError(f"Example {i}: input_ids has {a.numel()} tokens but labels has {b.numel()}.")
        length = max(a.numel() for a in ids)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = (length + m - 1) // m * m
        batch = len(ids)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        out_labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((batch, length), dtype=torch.long)
        for i, (a, b) in enumerate(zip(ids, labels)):
            n = a.numel()
            sl = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            input_ids[i, sl] = a
            out_labels[i, sl] = b
            mask[i, sl] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": out_labels}
