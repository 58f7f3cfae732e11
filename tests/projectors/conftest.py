"""Builds every registered projector at test sizes, on the device each one runs on."""

from __future__ import annotations

import pytest
import torch

from dataflex.projectors import list_projectors
from dataflex.projectors.cuda import interpreting, triton_available
from dataflex.registry import build_projector

ALL_PROJECTORS = [*list_projectors(), "sjlt-triton", "sjlt-torch", "sjlt-cpu"]
"""Registered names, plus the ``sjlt`` projector on each of its backends (``sjlt`` alone is
its ``auto`` backend: ``cpu`` here when a C compiler is found)."""
# Small Triton tiles keep the CPU interpreter fast and exercise multi-tile paths.
CUDA_TEST_KWARGS = {"block_b": 16, "block_n": 32, "block_k": 32}


def cuda_runnable() -> bool:
    """The ``cuda`` backend runs on a GPU, or on the CPU under ``TRITON_INTERPRET=1``."""
    return triton_available() and (torch.cuda.is_available() or interpreting())


def cpu_kernel_available() -> bool:
    """Whether the sjlt C kernel builds here (a C compiler is found and works)."""
    from dataflex.projectors import native

    try:
        native.load()
    except native.CpuKernelUnavailable:
        return False
    return True


def cuda_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _make_projector(name: str, input_dim: int, proj_dim: int, seed: int = 0, **kwargs):
    """Build ``name``; ``identity`` ignores ``proj_dim``; ``cuda`` and ``sjlt-triton`` run where they can."""
    if name == "identity":
        return build_projector(name, input_dim=input_dim, proj_dim=input_dim, seed=seed, **kwargs)
    if name == "sjlt-torch":
        name, kwargs = "sjlt", {"backend": "torch", **kwargs}
    if name == "sjlt-cpu":
        if not cpu_kernel_available():
            pytest.skip("sjlt cpu kernel: no C compiler here")
        name, kwargs = "sjlt", {"backend": "cpu", **kwargs}
    if name == "sjlt-triton":
        if not cuda_runnable():
            pytest.skip("sjlt triton kernel: no GPU here; its tests run under TRITON_INTERPRET=1 (subproc)")
        name, kwargs = "sjlt", {"backend": "triton", "device": cuda_device(), **kwargs}
    if name == "cuda":
        if not cuda_runnable():
            pytest.skip("cuda backend: no GPU here; its tests run under TRITON_INTERPRET=1 in a subprocess")
        kwargs = {**CUDA_TEST_KWARGS, "device": cuda_device(), **kwargs}
    return build_projector(name, input_dim=input_dim, proj_dim=proj_dim, seed=seed, **kwargs)


def _matrix_of(projector) -> torch.Tensor:
    """P as ``(proj_dim, input_dim)``, read back through ``project`` with one-hot inputs."""
    eye = torch.eye(projector.input_dim)
    return projector.project(eye).cpu().t()


@pytest.fixture(params=ALL_PROJECTORS)
def projector_name(request) -> str:
    return request.param


@pytest.fixture
def make_projector():
    """``make_projector(name, input_dim, proj_dim, seed=0, **kwargs)``."""
    return _make_projector


@pytest.fixture
def matrix_of():
    """``matrix_of(projector)``: P as ``(proj_dim, input_dim)`` read back through ``project``."""
    return _matrix_of
