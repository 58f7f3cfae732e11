"""``cuda``: one fused Triton kernel that generates P in registers and multiplies.

P is never materialised in GPU memory: each program of the kernel hashes its
``(BLOCK_N, BLOCK_K)`` tile of Pᵀ from ``(seed, row, column)`` (the scheme of
:mod:`dataflex.projectors.hashing`), multiplies it into an fp32 accumulator with
``tl.dot``, and moves on. Triton is imported only when this backend is built.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os

import torch

from dataflex.errors import ConfigError
from dataflex.projectors.base import Projector
from dataflex.projectors.hashing import (
    HASH_SCHEME,
    STREAM_GAUSSIAN,
    STREAM_RADEMACHER,
    seed_keys,
)
from dataflex.registry import register_projector

_STREAMS = {"rademacher": STREAM_RADEMACHER, "gaussian": STREAM_GAUSSIAN}
_PRECISIONS = ("tf32x3", "ieee", "tf32")
_PARTIAL_BYTES = 256 << 20  # cap on the per-split partial sums, summed afterwards in torch
_MAX_GRID_Z = 65535  # CUDA's limit on the third grid dimension
_ROUND_P = {torch.bfloat16: 1, torch.float16: 2}  # the kernel's ROUND_P code of a dtype


def triton_available() -> bool:
    """Whether Triton can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")


def _power_of_two(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum or value & (value - 1):
        raise ConfigError(f"{name} must be a power of two >= {minimum}, got {value!r}.")


@register_projector("cuda")
class CudaProjector(Projector):
    """Fused Triton kernel: P generated in registers, never stored; same P as the torch backends.

    Args:
        input_dim: D.
        proj_dim: k.
        distribution: ``"rademacher"`` (default) or ``"gaussian"``; the same seed gives
            the same P as the backend of that name.
        seed: Seed of the matrix.
        dtype: Precision of the multiply (see :class:`~dataflex.projectors.base.Projector`):
            inputs and Gaussian entries are rounded to it, upcast to fp32 in registers
            and accumulated in fp32. Under bf16/fp16 (and for bf16/fp16 inputs against
            Rademacher P) the kernel takes one TF32 tensor-core pass, exact for such
            values, instead of ``fp32_precision``.
        device: A CUDA device (a CPU device only under ``TRITON_INTERPRET=1``).
        block_b: Batch rows per program (power of two ≥ 16).
        block_n: Columns of P per generated tile (power of two ≥ 16).
        block_k: Rows of P per program (power of two ≥ 32).
        fp32_precision: How ``tl.dot`` multiplies fp32: ``"tf32x3"`` (default, about fp32
            accuracy on tensor cores), ``"ieee"`` (exact fp32 FMAs, slower) or ``"tf32"``.

    Raises:
        ConfigError: without Triton, or without a CUDA device; both name the
            ``auto`` and ``rademacher`` alternatives.
    """

    def __init__(
        self,
        input_dim: int,
        proj_dim: int,
        *,
        distribution: str = "rademacher",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cuda",
        block_b: int = 16,
        block_n: int = 64,
        block_k: int = 128,
        fp32_precision: str = "tf32x3",
    ) -> None:
        super().__init__(input_dim, proj_dim, seed=seed, dtype=dtype, device=device)
        if distribution not in _STREAMS:
            raise ConfigError(f"distribution must be one of {sorted(_STREAMS)}, got {distribution!r}.")
        if fp32_precision not in _PRECISIONS:
            raise ConfigError(f"fp32_precision must be one of {_PRECISIONS}, got {fp32_precision!r}.")
        _power_of_two("block_b", block_b, 16)
        _power_of_two("block_n", block_n, 16)
        _power_of_two("block_k", block_k, 32)
        if not triton_available():
            raise ConfigError(
                "The 'cuda' projector needs Triton, which is not installed (pip install 'dataflex[gpu]'). "
                "Use projector 'auto' (falls back by itself) or 'rademacher' (same P, any device)."
            )
        if self.device.type != "cuda" and not interpreting():
            raise ConfigError(
                f"The 'cuda' projector runs on a CUDA device, got device={self.device}. "
                "Use projector 'auto' (picks 'rademacher' off-GPU) or 'rademacher' (same P, any device)."
            )
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "The 'cuda' projector was asked for a CUDA device but torch sees none. "
                "Use projector 'auto' or 'rademacher' (same P, any device)."
            )
        self._distribution = distribution
        self._keys = seed_keys(self.seed, _STREAMS[distribution])
        self.block_b, self.block_n, self.block_k = block_b, block_n, block_k
        self.fp32_precision = fp32_precision
        self.scale = 1.0 / math.sqrt(proj_dim)

    @property
    def distribution(self) -> str:
        return self._distribution

    def _project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        kernels = importlib.import_module("dataflex.projectors._triton_kernels")
        x = x.to(self.device).contiguous()
        batch, width = x.shape
        # x is rounded to dtype already (Projector.project)
        precision = self.fp32_precision
        half = x.dtype in (torch.bfloat16, torch.float16)
        if half and (self._distribution == "rademacher" or self.dtype == x.dtype):
            precision = "tf32"  # exact: half values, ±1 and half-rounded entries are TF32 values
        # Columns are split across programs so a small batch still fills the GPU; the
        # split depends only on the shapes (never on the device), and the partial sums
        # are added in a fixed order, so results are deterministic.
        max_splits = max(1, _PARTIAL_BYTES // (batch * self.proj_dim * 4))
        cols_per_split = max(1 << 14, -(-width // max_splits), -(-width // _MAX_GRID_Z))
        cols_per_split = -(-cols_per_split // self.block_n) * self.block_n
        splits = -(-width // cols_per_split)
        partial = torch.empty(splits, batch, self.proj_dim, device=self.device, dtype=torch.float32)
        grid = (
            -(-batch // self.block_b),
            -(-self.proj_dim // self.block_k),
            splits,
        )
        kernels.project_kernel[grid](
            x,
            partial,
            batch,
            width,
            self.proj_dim,
            offset,
            cols_per_split,
            x.stride(0),
            partial.stride(0),
            partial.stride(1),
            self._keys[0],
            self._keys[1],
            GAUSSIAN=self._distribution == "gaussian",
            ROUND_P=_ROUND_P.get(self.dtype, 0),
            PRECISION=precision,
            BLOCK_B=self.block_b,
            BLOCK_N=self.block_n,
            BLOCK_K=self.block_k,
        )
        out = partial[0] if splits == 1 else partial.sum(dim=0)
        return out.mul_(self.scale)

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "hash_scheme": HASH_SCHEME}
