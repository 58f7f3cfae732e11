"""The planner of a feature pass: every parameter once, in order, at its offset, in blocks that fit."""

from __future__ import annotations

import random

import pytest

from dataflex.gradients.block_plan import (
    BlockSizes,
    ColumnChunks,
    Joined,
    ParamFacts,
    RowBlocks,
    plan_blocks,
)

SIZES = BlockSizes(chunk=400, row_block=120, column_chunk=90, fused_chunk=250)


def _params(seed: int, fused: bool) -> list[ParamFacts]:
    rng = random.Random(seed)
    out = []
    for i in range(rng.randint(1, 12)):
        shape = (rng.randint(1, 9), rng.randint(1, 9))
        linear = shape if rng.random() < 0.5 else None
        numel = shape[0] * shape[1] if linear else rng.randint(1, 80)
        out.append(ParamFacts(f"p{i}", numel, linear, rng.random() < 0.7, fused))
    return out


def _members(step) -> tuple[int, ...]:
    return step.members if isinstance(step, Joined) else (step.index,)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("bsz", [1, 3, 8])
def test_each_parameter_once_in_order_at_its_offset_in_blocks_that_fit(seed, fused, bsz):
    params = _params(seed, fused)
    steps = plan_blocks(params, bsz, SIZES, projected=True, row_blocks=True)
    order = [i for s in steps for i in _members(s)]
    assert order == list(range(len(params)))
    offset = 0
    for step in steps:
        assert step.start == offset and step.fused == fused
        width = sum(params[i].numel for i in _members(step))
        offset += width
        if isinstance(step, Joined) and len(step.members) > 1:
            assert width * bsz <= SIZES.chunk  # joined only while the group fits
        if isinstance(step, RowBlocks):
            p = params[step.index]
            assert bsz * p.numel > SIZES.row_block and p.sliceable and p.linear is None
            covered = [r for s in step.rows for r in range(bsz)[s]]
            assert covered == list(range(bsz))
            assert len(step.rows) == 1 or len(range(bsz)[step.rows[0]]) * p.numel <= SIZES.row_block
        if isinstance(step, ColumnChunks):
            p = params[step.index]
            assert bsz * p.numel > SIZES.row_block and (step.out_features, step.in_features) == p.linear
            budget = SIZES.fused_chunk if fused else SIZES.column_chunk
            assert step.step == 1 or step.step * step.in_features * bsz <= budget
    assert offset == sum(p.numel for p in params)


def test_without_row_blocks_or_a_projector_every_block_is_whole():
    params = _params(3, False)
    for steps in (
        plan_blocks(params, 8, SIZES, projected=True, row_blocks=False),
        plan_blocks(params, 8, SIZES, projected=False, row_blocks=True),
    ):
        assert all(isinstance(s, Joined) for s in steps)
    assert plan_blocks(params, 8, SIZES, projected=False, row_blocks=True) == [
        Joined(tuple(range(len(params))), 0, False)
    ]


def test_a_change_of_fusion_starts_a_new_group():
    params = [ParamFacts("a", 2, None, True, False), ParamFacts("b", 2, None, True, True)]
    steps = plan_blocks(params, 1, SIZES, projected=True, row_blocks=True)
    assert steps == [Joined((0,), 0, False), Joined((1,), 2, True)]
