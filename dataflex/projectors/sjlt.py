"""``sjlt``: a sparse Johnson–Lindenstrauss transform (CountSketch at ``nnz_per_column=1``).

Each input coordinate ``c`` is added, with a hashed sign, to ``s`` hashed output rows,
one in each of ``s`` equal blocks of rows (the block construction of Kane & Nelson,
so a coordinate never hits the same row twice); entries are ``±1/√s``. Cost
``O(B·n·s)`` per slice of ``n`` coordinates, independent of k; no matrix is stored.

The entries are a pure function of ``(seed, column)`` through the counter-based hash
of :mod:`dataflex.projectors.hashing` (stream :data:`STREAM_SJLT`)::

    w = word(c, j)                     # j = 0 … s−1, the same word as the dense backends
    row(c, j)  = j·(k/s) + (w >> 1) mod (k/s)
    sign(c, j) = −1 if w & 1 else +1

so any slice can be projected anywhere (``offset``), and every backend computes the
same P: ``torch`` (``index_add_``, CPU or GPU), ``cpu`` (a C kernel built at first use,
:mod:`dataflex.projectors.native`, which also fuses LESS's Adam transform into the
scatter) and ``triton`` (one Triton kernel), each a strategy of
:mod:`dataflex.projectors.sjlt_backends`. ``auto``, the default, is ``cpu`` on a CPU
device where a C compiler is found and torch runs on at most :data:`KERNEL_MAX_THREADS`
threads, and ``torch`` elsewhere.
"""

from __future__ import annotations

import logging
import math

import torch

from dataflex.errors import ConfigError
from dataflex.projectors import native
from dataflex.projectors.base import ColumnTransformLike, Projector
from dataflex.projectors.cuda import interpreting, triton_available
from dataflex.projectors.hashing import (
    HASH_SCHEME,
    STREAM_SJLT,
    column_keys,
    counter_keys,
    hash_words,
    seed_keys,
)
from dataflex.projectors.sjlt_backends import BACKENDS, CHUNK_COLUMNS, SjltBackend, SjltGeometry
from dataflex.registry import register_projector

DEFAULT_NNZ = 4
"""Default ``nnz_per_column`` (chosen from the fidelity table in ``docs/projectors.md``)."""

DEFAULT_INDEX_CACHE_BYTES = 1 << 30
"""Default budget (1 GiB) for hashed output indices kept between calls."""

_BACKENDS = ("auto", *BACKENDS)

KERNEL_MAX_THREADS = 4
"""``auto`` uses the ``cpu`` kernel up to this many torch threads, the torch backend past it.

The kernel runs on one thread; the torch backend's transform and ``index_add_`` run on
all of torch's intra-op threads. Measured on the fused Adam transform and scatter
(B = 16, k = 8192, s = 4, one CPU of ``docs/benchmarks.md``): the kernel 1.1–1.2 ns per
element on 1 and on 2 threads, torch 4.7 ns on 1 and 2.4 ns on 2, so they meet near 4."""

logger = logging.getLogger(__name__)
_warned_no_kernel = False


def sjlt_indices(
    seed: int, proj_dim: int, nnz: int, start: int, stop: int, device: torch.device | str
) -> torch.Tensor:
    """``(nnz, stop − start)`` int64 indices ``2·row(c, j) + signbit(c, j)`` for columns ``[start, stop)``.

    Index ``i`` addresses a ``(B, 2k)`` accumulator whose even entries collect the
    positive and odd entries the negative contributions of row ``i // 2``.
    """
    k0, k1 = seed_keys(seed, STREAM_SJLT)
    words = hash_words(column_keys(start, stop, k0, device), counter_keys(0, nnz, k1, device))
    block = proj_dim // nnz
    rows = (words >> 1).remainder_(block)
    rows += torch.arange(nnz, device=device, dtype=torch.int64)[None, :] * block
    idx = rows.mul_(2).add_(words.bitwise_and_(1))
    return idx.t().contiguous()


class IndexCache:
    """Hashed indices of each chunk of :data:`CHUNK_COLUMNS` columns, kept while they fit a budget.

    Past the budget the latest chunk is still kept: the column slices of a large
    parameter (``accumulate``) read each chunk several times in a row, then never again.
    """

    def __init__(self, seed: int, proj_dim: int, nnz: int, input_dim: int, device: torch.device, budget: int):
        self.seed, self.proj_dim, self.nnz, self.input_dim = seed, proj_dim, nnz, input_dim
        self.device = device
        self.budget = budget
        self.cached: dict[int, torch.Tensor] = {}
        self.used = 0
        self._last: tuple[int, torch.Tensor] | None = None

    def __call__(self, chunk: int) -> torch.Tensor:
        """``(nnz, n)`` indices of columns ``chunk·CHUNK_COLUMNS …`` (:func:`sjlt_indices`)."""
        cached = self.cached.get(chunk)
        if cached is not None:
            return cached
        if self._last is not None and self._last[0] == chunk:
            return self._last[1]
        start = chunk * CHUNK_COLUMNS
        stop = min(start + CHUNK_COLUMNS, self.input_dim)
        idx = sjlt_indices(self.seed, self.proj_dim, self.nnz, start, stop, self.device)
        size = idx.numel() * idx.element_size()
        if self.used + size <= self.budget:
            self.cached[chunk] = idx
            self.used += size
        else:
            self._last = (chunk, idx)
        return idx


@register_projector("sjlt")
class SJLTProjector(Projector):
    """Sparse JL projection: ``nnz_per_column`` hashed ±1/√s entries per column; cost independent of k.

    Its cost is per input entry, so blocks may be projected a few rows (:attr:`row_blocks`)
    or a few columns at a time (:meth:`accumulate`), at no extra cost per call.

    Args:
        input_dim: D.
        proj_dim: k; a multiple of ``nnz_per_column``.
        nnz_per_column: s, nonzeros per column (1 is CountSketch).
        seed: Seed of the matrix.
        dtype: Precision of the multiply: the input is rounded to it (the ±1 entries are
            exact in any dtype) and summed in fp32.
        device: Device of the outputs (CPU or CUDA for ``backend="torch"``).
        backend: ``"auto"`` (default: ``"cpu"`` on a CPU device when a C compiler is
            found and torch uses at most :data:`KERNEL_MAX_THREADS` threads, else
            ``"torch"``, with a warning when only the compiler is missing), ``"torch"``
            (``index_add_``, any device), ``"cpu"`` (the C kernel of
            :mod:`dataflex.projectors.native`) or ``"triton"`` (one Triton kernel; a
            CUDA device, or the CPU under ``TRITON_INTERPRET=1``). Same P on every
            backend; ``cpu`` and ``triton`` fuse the ``sgd``/``adam`` transforms into
            the scatter (:meth:`fuses`). Each is a strategy of
            :mod:`dataflex.projectors.sjlt_backends`.
        cache_bytes: Budget for hashed indices kept between calls (torch and cpu backends;
            0 keeps only the latest chunk's). Indices take ``8·s`` bytes per cached column.

    Attributes:
        backend: The name of the backend in use (``"torch"``, ``"cpu"`` or ``"triton"``;
            ``"auto"`` resolved).

    Raises:
        ConfigError: on ``nnz_per_column`` not in ``[1, k]`` or not dividing k, an
            unknown backend, ``triton`` without Triton or a CUDA device, or ``cpu`` off
            the CPU or where its kernel cannot be built (no C compiler).
    """

    row_blocks = True

    def __init__(
        self,
        input_dim: int,
        proj_dim: int,
        *,
        nnz_per_column: int = DEFAULT_NNZ,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        backend: str = "auto",
        cache_bytes: int = DEFAULT_INDEX_CACHE_BYTES,
    ) -> None:
        super().__init__(input_dim, proj_dim, seed=seed, dtype=dtype, device=device)
        s = nnz_per_column
        if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= proj_dim or proj_dim % s:
            raise ConfigError(
                f"nnz_per_column must be an integer in [1, proj_dim] dividing proj_dim={proj_dim}, got {s!r}."
            )
        if backend not in _BACKENDS:
            raise ConfigError(f"backend must be one of {_BACKENDS}, got {backend!r}.")
        if not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ConfigError(f"cache_bytes must be a non-negative integer, got {cache_bytes!r}.")
        self._check_backend(backend)
        if backend == "auto":
            backend = self._auto_backend()
        self.nnz = s
        self.backend = backend
        self.scale = 1.0 / math.sqrt(s)
        self.cache_bytes = cache_bytes
        self._indices = IndexCache(self.seed, proj_dim, s, input_dim, self.device, cache_bytes)
        geometry = SjltGeometry(proj_dim, s, self.scale, self.device, seed_keys(self.seed, STREAM_SJLT))
        self._backend: SjltBackend = BACKENDS[backend](geometry, self._indices)

    def _check_backend(self, backend: str) -> None:
        """Refuse a backend that cannot run here, naming the one that can (before any work)."""
        if backend == "triton":
            if not triton_available():
                raise ConfigError(
                    "sjlt backend='triton' needs Triton, which is not installed "
                    "(pip install 'dataflex[gpu]'); "
                    "backend='torch' computes the same P on any device."
                )
            if self.device.type != "cuda" and not interpreting():
                raise ConfigError(
                    f"sjlt backend='triton' runs on a CUDA device, got device={self.device}; "
                    "backend='torch' computes the same P on any device."
                )
        if backend == "cpu" and self.device.type != "cpu":
            raise ConfigError(
                f"sjlt backend='cpu' runs on the CPU, got device={self.device}; use backend='torch' "
                "or 'triton' there (the same P)."
            )

    def _auto_backend(self) -> str:
        global _warned_no_kernel
        if self.device.type != "cpu" or torch.get_num_threads() > KERNEL_MAX_THREADS:
            return "torch"
        try:
            native.load()
        except native.CpuKernelUnavailable as err:
            if not _warned_no_kernel:
                logger.warning(
                    "sjlt: using the torch backend on the CPU (the same results; its transform and "
                    "scatter take about 4× the kernel's time on one thread): %s",
                    err,
                )
                _warned_no_kernel = True
            return "torch"
        return "cpu"

    @property
    def _cache(self) -> dict[int, torch.Tensor]:
        """The hashed indices kept within :attr:`cache_bytes`, by chunk."""
        return self._indices.cached

    @property
    def distribution(self) -> str:
        return "sjlt"

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "nnz_per_column": self.nnz, "hash_scheme": HASH_SCHEME}

    def matrix(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Columns ``[start, stop)`` of P as a dense ``(k, n)`` fp32 tensor (for tests and small D)."""
        stop = self.input_dim if stop is None else stop
        idx = sjlt_indices(self.seed, self.proj_dim, self.nnz, start, stop, self.device)
        out = torch.zeros(self.proj_dim, stop - start, device=self.device)
        cols = torch.arange(stop - start, device=self.device)
        for j in range(self.nnz):
            sign = 1.0 - 2.0 * (idx[j] & 1).float()
            out[idx[j] >> 1, cols] = sign * self.scale
        return out

    def accumulator(self, batch: int) -> torch.Tensor:
        """Zeroed sums in the backend's layout.

        ``(B, 2k)`` on the torch backend (even entries the positive and odd the negative
        contributions of each row), ``(2k, B)`` on the ``cpu`` backend (one contiguous run
        of B values per addition), ``(B, k)`` projections on ``triton``.
        """
        return self._backend.accumulator(batch)

    def accumulate(self, acc: torch.Tensor, x: torch.Tensor, offset: int = 0) -> None:
        self._backend.add(acc, self._as_fp32(self._checked_input(x, offset)), offset)

    def fuses(self, transform: ColumnTransformLike) -> bool:
        """True on the ``cpu`` and ``triton`` backends at fp32 for the ``sgd`` and ``adam`` transforms."""
        fused = self._backend.fuses_adam and self.dtype == torch.float32
        return fused and transform.kind in ("sgd", "adam")

    def accumulate_transformed(
        self, acc: torch.Tensor, x: torch.Tensor, offset: int, transform: ColumnTransformLike, start: int
    ) -> None:
        if not self.fuses(transform):
            super().accumulate_transformed(acc, x, offset, transform, start)
            return
        x = self._checked_input(x, offset)
        if x.dtype != torch.float32:
            raise ValueError(f"the fused transform takes fp32 gradients, got {x.dtype}.")
        adam = transform if transform.kind == "adam" else None
        self._backend.add(acc, x.to(self.device), offset, adam, start)

    def finish(self, acc: torch.Tensor) -> torch.Tensor:
        out = self._backend.finish(acc)
        self._check_output(out)
        return out

    def _as_fp32(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)  # rounded to dtype already (Projector.project); fp32 holds it exactly
        return x if x.dtype == torch.float32 else x.float()

    def _project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        return self._backend.project(self._as_fp32(x), offset)
