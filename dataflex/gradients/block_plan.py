"""What a feature pass computes, in what blocks, in what order: the planner of :class:`FeaturePlan`.

A batch's per-example gradients are never made whole: each trainable parameter's
``(B, numel)`` block is made, transformed and projected in turn. :func:`plan_blocks`
decides, from facts about the parameters that do not change between batches
(:class:`ParamFacts`) and the batch size, how each parameter's block is made and which
projector call it goes into:

* :class:`Joined`: consecutive whole blocks (LoRA matrices, biases) joined up to
  ``chunk`` elements into one ``project`` call (or one fused accumulator);
* :class:`RowBlocks`: a large parameter a few examples at a time, each block small
  enough to stay in cache while it is transformed and projected;
* :class:`ColumnChunks`: a large Linear weight a block of its rows at a time, for all
  B examples at once (one ``bmm``), accumulated into one projection.

Row blocks and column chunks are only planned for a projector whose cost is per entry
(:attr:`Projector.row_blocks`); without a projector every block is one raw
:class:`Joined` group. Running the plan is :mod:`dataflex.gradients.block_stream`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockSizes:
    """Element budgets (``B × columns``) of the blocks, from :mod:`dataflex.gradients.features`."""

    chunk: int
    """Most elements of consecutive whole blocks joined into one ``project`` call."""
    row_block: int
    """Past this many elements a parameter's block is streamed (row blocks or column chunks)."""
    column_chunk: int
    """Target elements of one column chunk of a Linear weight, transform applied first."""
    fused_chunk: int
    """Target elements of one column chunk when the projector fuses the transform."""


@dataclass(frozen=True)
class ParamFacts:
    """What planning needs to know of one trainable parameter (the same for every batch)."""

    name: str
    numel: int
    """Its full number of scalars (not a ZeRO-3 shard's)."""
    linear: tuple[int, int] | None
    """``(out_features, in_features)`` when its gradient can be made a block of rows at a time."""
    sliceable: bool
    """Whether its gradient can be made for a few examples alone."""
    fused: bool
    """Whether the projector applies its transform inside the scatter (:meth:`Projector.fuses`)."""


@dataclass(frozen=True)
class Joined:
    """Whole blocks of consecutive parameters ``members``, projected from coordinate ``start`` together."""

    members: tuple[int, ...]
    start: int
    fused: bool


@dataclass(frozen=True)
class RowBlocks:
    """Parameter ``index``'s block, made and projected (from ``start``) for the examples of each slice."""

    index: int
    start: int
    rows: tuple[slice, ...]
    fused: bool


@dataclass(frozen=True)
class ColumnChunks:
    """Linear weight ``index`` (``out × in``), made ``step`` rows at a time for all examples."""

    index: int
    start: int
    out_features: int
    in_features: int
    step: int
    fused: bool


Step = Joined | RowBlocks | ColumnChunks


def plan_blocks(
    params: list[ParamFacts], bsz: int, sizes: BlockSizes, *, projected: bool, row_blocks: bool
) -> list[Step]:
    """The steps that compute a batch of ``bsz`` examples' features, in parameter order.

    Memory stays O(B × (largest whole parameter + chunk)), and with a per-entry projector
    (``row_blocks``) O(one row block or column chunk + chunk).

    Args:
        params: The trainable parameters in ``named_parameters()`` order.
        bsz: B.
        sizes: The element budgets.
        projected: Whether there is a projector (else one raw :class:`Joined` of every block).
        row_blocks: The projector's :attr:`~dataflex.projectors.base.Projector.row_blocks`.
    """
    if not projected:
        return [Joined(tuple(range(len(params))), 0, False)] if params else []
    steps: list[Step] = []
    members: list[int] = []
    width = start = 0
    fused = False

    def close() -> None:
        nonlocal width, start, members
        if width:
            steps.append(Joined(tuple(members), start, fused))
            start += width
            width, members = 0, []

    for i, p in enumerate(params):
        large = row_blocks and bsz * p.numel > sizes.row_block
        if large and p.linear is not None:
            close()
            out_features, in_features = p.linear
            chunk = sizes.fused_chunk if p.fused else sizes.column_chunk
            step = max(1, chunk // (bsz * in_features))
            steps.append(ColumnChunks(i, start, out_features, in_features, step, p.fused))
            start += p.numel
        elif large and p.sliceable:
            close()
            per = max(1, sizes.row_block // p.numel)
            rows = tuple(slice(a, min(a + per, bsz)) for a in range(0, bsz, per))
            steps.append(RowBlocks(i, start, rows, p.fused))
            start += p.numel
        else:
            if width and ((width + p.numel) * bsz > sizes.chunk or p.fused != fused):
                close()
            members.append(i)
            fused = p.fused
            width += p.numel
    close()
    return steps
