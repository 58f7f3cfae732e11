"""Running a feature pass's plan: make each block, transform it, project it, sum the projections.

The executor of :class:`~dataflex.gradients.features.FeaturePlan`: it takes the steps of
:func:`~dataflex.gradients.block_plan.plan_blocks` in order and, for each, makes the
per-example gradient blocks through the :class:`GradientCapture`, applies the parameter's
:class:`ColumnTransform` (or lets the projector apply it inside its scatter), projects, and
adds the ``(rows, k)`` result into the batch's features. A layer's captured records are
released after the block that reads its last row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch
from torch import nn

from dataflex.gradients.block_plan import ColumnChunks, Joined, RowBlocks, Step
from dataflex.gradients.capture import GradientCapture
from dataflex.gradients.transforms import ColumnTransform
from dataflex.projectors.base import Projector

Phase = Callable[[str], AbstractContextManager[None]]
"""``phase(name)``: a context that adds the time spent in it to that phase's seconds."""


class BlockStream:
    """Runs plans over one model's captured gradients.

    Args:
        capture: The capture whose hooks recorded the batch's forward and backward.
        projector: The projector the blocks stream into, or None (raw columns).
        transform_of: The transform of a parameter, by name and parameter.
        kind: The transform's name (``"sgd"`` blocks are not touched).
        phase: Times a phase (:data:`~dataflex.gradients.features.PHASES`).
    """

    def __init__(
        self,
        capture: GradientCapture,
        projector: Projector | None,
        transform_of: Callable[[str, nn.Parameter], ColumnTransform],
        kind: str,
        phase: Phase,
    ) -> None:
        self.capture = capture
        self.projector = projector
        self.transform_of = transform_of
        self.kind = kind
        self.phase = phase

    def run(self, steps: list[Step], bsz: int, mask: torch.Tensor | None) -> torch.Tensor:
        """The ``(B, k)`` features of the recorded batch (``(B, D)`` raw columns without a projector)."""
        if self.projector is None:
            (whole,) = steps  # plan_blocks' one raw group
            assert isinstance(whole, Joined)
            return torch.cat([self._whole(i, bsz, mask, fused=False) for i in whole.members], dim=1)
        projector = self.projector
        out: torch.Tensor | None = None
        for step in steps:
            for rows, part in self._parts(projector, step, bsz, mask):
                if out is None:
                    out = torch.zeros(bsz, part.shape[1], dtype=part.dtype, device=part.device)
                out[rows].add_(part)
        assert out is not None, "a plan of a model with trainable parameters has a step"
        return out

    def row_blocks(
        self,
        param: nn.Parameter,
        bsz: int,
        mask: torch.Tensor | None,
        slices: list[slice],
        transform: ColumnTransform | None,
    ) -> Iterator[torch.Tensor]:
        """The blocks of ``param`` for each row slice in turn, transformed unless ``transform`` is None."""
        for i, rows in enumerate(slices):
            with self.phase("per_example"):
                g = self.capture.per_example_grad(param, bsz, mask, rows)
            if i == len(slices) - 1:
                self.capture.release(param)
            if transform is not None and self.kind != "sgd":
                with self.phase("transform"):
                    g = transform(g)
            yield g

    def _parts(
        self, projector: Projector, step: Step, bsz: int, mask: torch.Tensor | None
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """``(rows, their (rows, k) projection)`` of one step."""
        everyone = slice(0, bsz)
        if isinstance(step, ColumnChunks):
            yield everyone, self._column_chunks(projector, step, bsz, mask)
        elif isinstance(step, RowBlocks):
            name, param = self.capture.params[step.index]
            transform = self.transform_of(name, param)
            blocks = self.row_blocks(param, bsz, mask, list(step.rows), None if step.fused else transform)
            for rows, g in zip(step.rows, blocks):
                with self.phase("projection"):
                    part = self._projected(projector, g, step.start, transform if step.fused else None)
                del g
                yield rows, part
        else:
            yield everyone, self._joined(projector, step, bsz, mask)

    def _whole(self, index: int, bsz: int, mask: torch.Tensor | None, *, fused: bool) -> torch.Tensor:
        """Parameter ``index``'s whole ``(B, numel)`` block, transformed unless the projector fuses it."""
        name, param = self.capture.params[index]
        transform = None if fused else self.transform_of(name, param)
        return next(self.row_blocks(param, bsz, mask, [slice(0, bsz)], transform))

    def _joined(
        self, projector: Projector, step: Joined, bsz: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """One projection of the whole blocks of ``step``'s parameters, side by side from ``step.start``."""
        if not step.fused:
            pending = [self._whole(i, bsz, mask, fused=False) for i in step.members]
            with self.phase("projection"):
                return projector.project(
                    pending[0] if len(pending) == 1 else torch.cat(pending, dim=1), step.start
                )
        acc = projector.accumulator(bsz)
        offset = step.start
        for i in step.members:
            name, param = self.capture.params[i]
            transform = self.transform_of(name, param)
            g = self._whole(i, bsz, mask, fused=True)
            with self.phase("projection"):
                projector.accumulate_transformed(acc, g, offset, transform, 0)
            offset += g.shape[1]
            del g
        with self.phase("projection"):
            return projector.finish(acc)

    @staticmethod
    def _projected(
        projector: Projector, g: torch.Tensor, offset: int, transform: ColumnTransform | None
    ) -> torch.Tensor:
        """``project(g, offset)``, or with ``transform`` of raw ``g`` transformed inside the scatter."""
        if transform is None:
            return projector.project(g, offset)
        acc = projector.accumulator(g.shape[0])
        projector.accumulate_transformed(acc, g, offset, transform, 0)
        return projector.finish(acc)

    def _column_chunks(
        self, projector: Projector, step: ColumnChunks, bsz: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``(B, k)`` projection of a large Linear weight, made ``step.step`` rows at a time.

        Rows ``r0:r1`` of W are flattened columns ``[r0·in, r1·in)``: their per-example
        gradients for all B examples come from one ``bmm``, are transformed in place with
        those columns' moments and added into one accumulator
        (:meth:`Projector.accumulate`), so each hashed index is read once per batch, not
        once per example, and at most one chunk of ``B × (r1 − r0)·in`` exists. A
        projector that :meth:`~Projector.fuses` the transform does both in one pass
        (:meth:`Projector.accumulate_transformed`).
        """
        name, param = self.capture.params[step.index]
        transform = self.transform_of(name, param)
        acc = projector.accumulator(bsz)
        for r0 in range(0, step.out_features, step.step):
            r1 = min(r0 + step.step, step.out_features)
            with self.phase("per_example"):
                g = self.capture.weight_rows_grad(param, bsz, mask, r0, r1)
            first = r0 * step.in_features
            if step.fused:
                with self.phase("projection"):
                    projector.accumulate_transformed(acc, g, step.start + first, transform, first)
            else:
                if self.kind != "sgd":
                    with self.phase("transform"):
                        g = transform(g, first)
                with self.phase("projection"):
                    projector.accumulate(acc, g, step.start + first)
            del g
        self.capture.release(param)
        with self.phase("projection"):
            return projector.finish(acc)
