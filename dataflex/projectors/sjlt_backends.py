"""How ``sjlt`` adds a block into its sums: one strategy per backend, behind :class:`SjltBackend`.

* :class:`TorchScatter` (``"torch"``): ``index_add_`` into ``(B, 2k)`` sums, any device;
* :class:`KernelScatter` (``"cpu"``): the C kernel of :mod:`dataflex.projectors.native`
  into ``(2k, B)`` sums, with LESS's Adam transform fused;
* :class:`TritonScatter` (``"triton"``): one Triton kernel that hashes and adds with
  atomics into ``(B, k)`` projections, the Adam transform fused.

Each owns the layout of its accumulator, the addition of fp32 columns into it and the
step from the sums to the ``(B, k)`` projection; :class:`~dataflex.projectors.sjlt.SJLTProjector`
validates the input, picks one and delegates. The two scatter backends read the hashed
indices through :class:`ChunkIndices` and add in column order, so their sums are equal bit
for bit.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from dataflex.projectors import native
from dataflex.projectors.base import ColumnTransformLike

CHUNK_COLUMNS = 1 << 18
"""Columns hashed (and cached) together; one ``index_add_`` per chunk and nonzero."""


class ChunkIndices(Protocol):
    """The hashed indices of one chunk of :data:`CHUNK_COLUMNS` columns (``sjlt_indices``)."""

    def __call__(self, chunk: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class SjltGeometry:
    """What every backend needs of the projection: k, s, the scale ``1/√s``, device and hash keys."""

    proj_dim: int
    nnz: int
    scale: float
    device: torch.device
    keys: tuple[int, int]


class SjltBackend(ABC):
    """One way of adding fp32 columns into sums and turning the sums into the projection.

    Args:
        geometry: The projection's shape and keys.
        indices: The hashed indices of a chunk (unused by :class:`TritonScatter`, which
            hashes in the kernel).
    """

    name: ClassVar[str]
    fuses_adam: ClassVar[bool] = False
    """Whether :meth:`add` applies a parameter's Adam transform inside its own pass."""

    def __init__(self, geometry: SjltGeometry, indices: ChunkIndices) -> None:
        self.geometry = geometry
        self.indices = indices

    @abstractmethod
    def accumulator(self, batch: int) -> torch.Tensor:
        """Zeroed sums for ``batch`` rows, in this backend's layout."""

    @abstractmethod
    def add(
        self,
        acc: torch.Tensor,
        x: torch.Tensor,
        offset: int,
        adam: ColumnTransformLike | None = None,
        start: int = 0,
    ) -> None:
        """Add fp32 ``x`` (input coordinates from ``offset``, on the device) into ``acc``.

        ``adam`` (backends that :attr:`fuses_adam` only): the parameter's Adam transform,
        applied inside the pass; ``x`` is then its raw columns from ``start``.
        """

    @abstractmethod
    def finish(self, acc: torch.Tensor) -> torch.Tensor:
        """The ``(B, k)`` fp32 projection summed in ``acc`` (not checked for NaN/Inf)."""

    def project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        """The ``(B, k)`` projection of fp32 ``x``'s coordinates from ``offset``."""
        acc = self.accumulator(x.shape[0])
        self.add(acc, x, offset)
        return self.finish(acc)


class _ChunkedScatter(SjltBackend):
    """A backend that adds ``±x`` at hashed indices, chunk by chunk, in column order.

    Each output entry lies in one row block j, so it receives its additions in column
    order whatever the slicing: slices streamed in order give the same sums, bit for
    bit, on either scatter backend. Even entries of the sums collect the positive, odd
    ones the negative contributions of a row; :meth:`finish` takes their difference.
    """

    def _pieces(self, x: torch.Tensor, offset: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """``(columns of x, their indices, their first column in x)`` for each chunk ``x`` meets."""
        width = x.shape[1]
        first, last = offset // CHUNK_COLUMNS, (offset + width - 1) // CHUNK_COLUMNS
        for chunk in range(first, last + 1):
            c0 = chunk * CHUNK_COLUMNS
            a, b = max(offset, c0), min(offset + width, c0 + CHUNK_COLUMNS)
            yield x[:, a - offset : b - offset], self.indices(chunk)[:, a - c0 : b - c0], a - offset


class TorchScatter(_ChunkedScatter):
    """``index_add_`` into ``(B, 2k)`` sums, on any device."""

    name = "torch"

    def accumulator(self, batch: int) -> torch.Tensor:
        g = self.geometry
        return torch.zeros(batch, 2 * g.proj_dim, device=g.device, dtype=torch.float32)

    def add(
        self,
        acc: torch.Tensor,
        x: torch.Tensor,
        offset: int,
        adam: ColumnTransformLike | None = None,
        start: int = 0,
    ) -> None:
        if adam is not None:
            raise ValueError("the torch backend of sjlt does not fuse a transform; transform first.")
        for src, idx, _ in self._pieces(x, offset):
            for j in range(self.geometry.nnz):
                acc.index_add_(1, idx[j], src)

    def finish(self, acc: torch.Tensor) -> torch.Tensor:
        pairs = acc.view(acc.shape[0], self.geometry.proj_dim, 2)
        return (pairs[:, :, 0] - pairs[:, :, 1]).mul_(self.geometry.scale)


class KernelScatter(_ChunkedScatter):
    """The C kernel into ``(2k, B)`` sums (one contiguous run of B values per addition), CPU only."""

    name = "cpu"
    fuses_adam = True

    def __init__(self, geometry: SjltGeometry, indices: ChunkIndices) -> None:
        super().__init__(geometry, indices)
        native.load()  # raises CpuKernelUnavailable with the reason and the fix
        self._work: torch.Tensor | None = None  # the kernel's scratch, made once

    def accumulator(self, batch: int) -> torch.Tensor:
        return torch.zeros(2 * self.geometry.proj_dim, batch, dtype=torch.float32)

    def add(
        self,
        acc: torch.Tensor,
        x: torch.Tensor,
        offset: int,
        adam: ColumnTransformLike | None = None,
        start: int = 0,
    ) -> None:
        if x.shape[1] > 1 and x.stride(1) != 1:
            x = x.contiguous()
        for src, idx, first in self._pieces(x, offset):
            cols = None if adam is None else adam.adam_columns(start + first, start + first + src.shape[1])
            if self._work is None or self._work.numel() < src.shape[0]:
                self._work = native.scratch(src.shape[0])
            native.accumulate(acc, src, idx, cols, self._work)

    def finish(self, acc: torch.Tensor) -> torch.Tensor:
        pairs = acc.view(self.geometry.proj_dim, 2, acc.shape[1])
        return (pairs[:, 0] - pairs[:, 1]).mul_(self.geometry.scale).t().contiguous()


class TritonScatter(SjltBackend):
    """One Triton kernel: hashes its columns and adds ``±x`` with atomics into ``(B, k)`` projections.

    A CUDA device, or the CPU under ``TRITON_INTERPRET=1``; Triton is imported at the first call.
    """

    name = "triton"
    fuses_adam = True
    BLOCK_B = 16
    BLOCK_N = 128

    def accumulator(self, batch: int) -> torch.Tensor:
        g = self.geometry
        return torch.zeros(batch, g.proj_dim, device=g.device, dtype=torch.float32)

    def add(
        self,
        acc: torch.Tensor,
        x: torch.Tensor,
        offset: int,
        adam: ColumnTransformLike | None = None,
        start: int = 0,
    ) -> None:
        acc.add_(self._run(x, offset, adam, start))

    def finish(self, acc: torch.Tensor) -> torch.Tensor:
        return acc

    def project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        return self._run(x, offset)

    def _run(
        self, x: torch.Tensor, offset: int, adam: ColumnTransformLike | None = None, start: int = 0
    ) -> torch.Tensor:
        kernels = importlib.import_module("dataflex.projectors._triton_kernels")
        g = self.geometry
        x = x.contiguous()
        batch, width = x.shape
        out = torch.zeros(batch, g.proj_dim, device=g.device, dtype=torch.float32)
        grid = (-(-width // self.BLOCK_N), -(-batch // self.BLOCK_B))
        if adam is None:
            moments, betas, eps = (x, x), (0.0, 0.0), 0.0  # unread: ADAM is off
        else:
            cols = adam.adam_columns(start, start + width)
            moments = (cols.exp_avg.to(g.device).contiguous(), cols.exp_avg_sq.to(g.device).contiguous())
            betas, eps = (cols.beta1, cols.beta2), cols.eps
        kernels.sjlt_kernel[grid](
            x,
            out,
            batch,
            width,
            offset,
            g.proj_dim // g.nnz,
            x.stride(0),
            out.stride(0),
            g.keys[0],
            g.keys[1],
            moments[0],
            moments[1],
            betas[0],
            betas[1],
            1.0 - betas[0],
            1.0 - betas[1],
            eps,
            NNZ=g.nnz,
            BLOCK_B=self.BLOCK_B,
            BLOCK_N=self.BLOCK_N,
            ADAM=adam is not None,
        )
        return out.mul_(g.scale)


BACKENDS: dict[str, type[SjltBackend]] = {b.name: b for b in (TorchScatter, KernelScatter, TritonScatter)}
"""Each backend by its ``backend=`` name."""
