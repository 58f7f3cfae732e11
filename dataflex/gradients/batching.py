"""How a scoring pass batches examples and what it hands the model for a padded batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dataflex.passes.forward import position_ids


def right_padded(mask: torch.Tensor) -> bool:
    """Whether every row of a ``(B, T)`` attention mask is its real tokens first, then padding.

    An unpadded batch counts as right padded.
    """
    m = mask.bool()
    return bool((m[:, 1:] <= m[:, :-1]).all())


def causal_lm_inputs(input_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """The keyword inputs of a causal LM's forward for a padded batch.

    A right-padded batch passes ``input_ids`` alone. Under causal attention a real
    token attends to no later position, so it never sees the padding at a row's end,
    and its positions are ``0..n-1`` either way: the real tokens' outputs are those
    of the masked call (padding positions differ; they carry no loss and, being last,
    feed no real token). Without a mask the model may take its causal attention
    kernel (sdpa's ``is_causal``), which skips the masked half of the score matrix
    instead of computing and discarding it: on CPU that halves attention's time.

    Any other batch (left padding) passes the mask and position ids that count real
    tokens only, so padding does not shift rotary positions.

    Args:
        input_ids: ``(B, T)`` token ids.
        mask: ``(B, T)`` attention mask, 1 on real tokens.

    Returns:
        ``input_ids``, and ``attention_mask`` and ``position_ids`` unless right padded.
    """
    if right_padded(mask):
        return {"input_ids": input_ids}
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids(mask)}


def length_order(lengths: Sequence[int]) -> list[int]:
    """Positions of ``lengths`` sorted longest first (stable)."""
    return sorted(range(len(lengths)), key=lambda j: -lengths[j])


def token_batches(
    lengths: Sequence[int],
    ranges: Sequence[tuple[int, int]],
    batch_size: int,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Rows of each batch of a pass: consecutive rows of ``ranges``, in order.

    A batch holds at most ``batch_size`` rows and, with ``max_tokens``, at most that many
    padded tokens (its rows × the longest row's length). A row longer than
    ``max_tokens`` makes a batch alone. Over rows sorted longest first, short rows thus
    go in large batches and long ones in small batches, with the padding of each batch
    kept to the spread of its own rows.

    Args:
        lengths: ``lengths[r]`` is the token count of row ``r``.
        ranges: ``(start, end)`` row ranges to batch (a batch never spans two).
        batch_size: Most rows per batch.
        max_tokens: Most padded tokens per batch; ``None``: ``batch_size`` alone decides.

    Returns:
        One list of row numbers per batch.
    """
    batches: list[list[int]] = []
    for start, end in ranges:
        row = start
        while row < end:
            longest = lengths[row]
            stop = row + 1
            while stop < end and stop - row < batch_size:
                wider = max(longest, lengths[stop])
                if max_tokens is not None and (stop - row + 1) * wider > max_tokens:
                    break
                longest = wider
                stop += 1
            batches.append(list(range(row, stop)))
            row = stop
    return batches


def balanced_shards(lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Positions of ``lengths`` dealt to ``world_size`` ranks so that their work matches.

    The positions are sorted longest first and dealt in a snake (0, 1, …, W-1, W-1, …,
    0, 0, 1, …): every rank gets every W-th length, so the ranks' token counts, and the
    lengths of their i-th batches, are nearly equal. Under ZeRO-3 and FSDP, where each
    batch is a collective step, no rank then waits on a longer batch of another. Each
    shard is in ascending position order.

    Args:
        lengths: Token count per position.
        world_size: Number of ranks.

    Returns:
        ``world_size`` lists of positions; together they hold each position once.
    """
    order = length_order(lengths)
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for turn, j in enumerate(order):
        lap, seat = divmod(turn, world_size)
        shards[seat if lap % 2 == 0 else world_size - 1 - seat].append(j)
    return [sorted(s) for s in shards]
