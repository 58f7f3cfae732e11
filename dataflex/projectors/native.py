"""The sjlt CPU kernel (``sjlt_cpu.c``): compiled once per process, called through ctypes.

The kernel is a few dozen lines of C. It is built with the system C compiler (``$CC``,
else ``cc``, ``gcc`` or ``clang`` on ``PATH``) into a private temporary directory the first
time a process asks for it (about 0.1 s), loaded, and the directory removed at once.
Nothing is written anywhere else and nothing is reused between processes, so a build can
never belong to another source, compiler or CPU. ``-march=native`` is safe for the same
reason: the library is only ever run on the machine that built it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from importlib import resources

import torch

from dataflex.engines.adam import AdamMoments
from dataflex.errors import ConfigError

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC")
"""Compiler flags; ``-ffp-contract=off`` keeps every rounding the one the source writes."""

MODE_IDENTITY = 0
MODE_ADAM = 2

SCRATCH_FLOATS = 1 << 16
"""Size of the kernel's transposed column group (256 KiB of fp32: it and a row block of the
accumulator fit in L2 together)."""

_COMPILERS = ("cc", "gcc", "clang")
_SYMBOL = "dataflex_sjlt_accumulate"


class CpuKernelUnavailable(ConfigError):
    """The sjlt CPU kernel cannot be built here (no C compiler, or the build failed)."""


def find_compiler() -> str | None:
    """The C compiler to use: ``$CC`` if set (even if it is missing), else the first on ``PATH``."""
    if os.environ.get("CC"):
        return os.environ["CC"]
    for name in _COMPILERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@functools.cache
def _library(compiler: str | None) -> ctypes.CDLL:
    if compiler is None:
        raise CpuKernelUnavailable(
            "the sjlt CPU kernel needs a C compiler and none was found (set CC, or install gcc or "
            "clang); backend='torch' computes the same P without one."
        )
    source = resources.files("dataflex.projectors").joinpath("sjlt_cpu.c").read_text()
    with tempfile.TemporaryDirectory(prefix="dataflex-kernel-") as tmp:
        src, lib = os.path.join(tmp, "sjlt_cpu.c"), os.path.join(tmp, "sjlt_cpu.so")
        with open(src, "w") as f:
            f.write(source)
        try:
            proc = subprocess.run(
                [compiler, *FLAGS, src, "-o", lib, "-lm"], capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise CpuKernelUnavailable(
                f"the sjlt CPU kernel could not be built: running the C compiler {compiler!r} failed "
                f"({err}); set CC to a working compiler, or use backend='torch' (the same P)."
            ) from err
        if proc.returncode != 0:
            raise CpuKernelUnavailable(
                f"the sjlt CPU kernel could not be built with {compiler!r} (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()[-2000:]}\nSet CC to a working compiler, or use backend='torch' "
                "(the same P)."
            )
        library = ctypes.CDLL(lib)  # mapped now; the file can go with the directory
    fn = getattr(library, _SYMBOL)
    p, i, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    fn.argtypes = [p, i, p, i, i, p, i, i, ctypes.c_int, p, p, f32, f32, f32, f32, f32, p, i]
    fn.restype = None
    return library


def load() -> None:
    """Build and load the kernel now (once per process).

    Raises:
        CpuKernelUnavailable: with the reason and the fix.
    """
    _library(find_compiler())


def scratch(batch: int) -> torch.Tensor:
    """A work buffer for :func:`accumulate` of ``batch`` rows (reuse it across calls)."""
    return torch.empty(max(SCRATCH_FLOATS, batch), dtype=torch.float32)


def accumulate(
    acc: torch.Tensor,
    x: torch.Tensor,
    idx: torch.Tensor,
    adam: AdamMoments | None = None,
    work: torch.Tensor | None = None,
) -> None:
    """Add ``x``'s columns, transformed if ``adam`` is given, into the ``(2k, B)`` sums ``acc``.

    Args:
        acc: ``(2k, B)`` contiguous fp32 CPU tensor (entries ``2·row + signbit``).
        x: ``(B, n)`` fp32 CPU tensor with unit column stride.
        idx: ``(nnz, n)`` int64 CPU tensor with unit column stride: the columns' indices
            into ``acc`` (:func:`dataflex.projectors.sjlt.sjlt_indices`).
        adam: The fused Adam transform's moments of these n columns (fp32, contiguous, CPU),
            or None (identity).
        work: From :func:`scratch` (made here if not given).
    """
    batch, width = x.shape
    if x.dtype != torch.float32 or x.device.type != "cpu" or (width > 1 and x.stride(1) != 1):
        raise ValueError(f"x must be fp32 on the CPU with unit column stride, got {x.dtype}, {x.stride()}.")
    if acc.dtype != torch.float32 or not acc.is_contiguous() or acc.dim() != 2 or acc.shape[1] != batch:
        raise ValueError(f"acc must be a contiguous fp32 (2k, {batch}) tensor, got {tuple(acc.shape)}.")
    if idx.dtype != torch.int64 or idx.shape[1] != width or (width > 1 and idx.stride(1) != 1):
        raise ValueError(f"idx must be int64 (nnz, {width}) with unit column stride, got {tuple(idx.shape)}.")
    if adam is not None and not all(
        t.dtype == torch.float32 and t.is_contiguous() and t.numel() == width and t.device.type == "cpu"
        for t in (adam.exp_avg, adam.exp_avg_sq)
    ):
        raise ValueError("adam's moments must be contiguous fp32 CPU tensors with one value per column of x.")
    if work is None or work.numel() < batch or work.dtype != torch.float32 or not work.is_contiguous():
        work = scratch(batch)
    fn = getattr(_library(find_compiler()), _SYMBOL)
    if adam is None:
        mode, m_ptr, v_ptr, b1, b2, eps = MODE_IDENTITY, None, None, 0.0, 0.0, 0.0
    else:
        mode, m_ptr, v_ptr = MODE_ADAM, adam.exp_avg.data_ptr(), adam.exp_avg_sq.data_ptr()
        b1, b2, eps = adam.beta1, adam.beta2, adam.eps
    fn(
        acc.data_ptr(),
        batch,
        x.data_ptr(),
        x.stride(0),
        width,
        idx.data_ptr(),
        idx.stride(0),
        idx.shape[0],
        mode,
        m_ptr,
        v_ptr,
        b1,
        b2,
        1.0 - b1,  # as torch rounds add(alpha=1 - β₁) and addcmul(value=1 - β₂): double, then fp32
        1.0 - b2,
        eps,
        work.data_ptr(),
        work.numel(),
    )
