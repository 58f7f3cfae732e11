"""The ``sjlt`` C kernel (``backend="cpu"``): the torch backend's sums, the fused Adam transform."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from dataflex.errors import ConfigError
from dataflex.gradients.transforms import AdamMoments, inplace_transform, sqrt_
from dataflex.projectors import SJLTProjector, build_projector, native
from dataflex.projectors import sjlt as sjlt_module
from dataflex.projectors.sjlt import CHUNK_COLUMNS
from tests.adam_reference import adam_direction
from tests.projectors.conftest import cpu_kernel_available

needs_kernel = pytest.mark.skipif(not cpu_kernel_available(), reason="sjlt cpu kernel: no C compiler here")
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def _moments(n: int, seed: int = 0) -> AdamMoments:
    g = torch.Generator().manual_seed(seed)
    return AdamMoments(
        torch.randn(n, generator=g) * 1e-3, torch.rand(n, generator=g) * 1e-6, BETA1, BETA2, EPS
    )


def _adam_reference(grads: torch.Tensor, moments: AdamMoments) -> torch.Tensor:
    return adam_direction(grads, moments.exp_avg, moments.exp_avg_sq, BETA1, BETA2, EPS)


@needs_kernel
@pytest.mark.parametrize("batch", [1, 3, 16, 17, 300])
@pytest.mark.parametrize("nnz", [1, 2, 4, 8])
def test_sums_equal_the_torch_backend_bit_for_bit(batch, nnz):
    d = CHUNK_COLUMNS + 900  # slices cross the boundary of two hashed chunks
    x = torch.randn(batch, d)
    cpu = SJLTProjector(d, 64, seed=7, nnz_per_column=nnz, backend="cpu")
    ref = SJLTProjector(d, 64, seed=7, nnz_per_column=nnz, backend="torch")
    assert cpu.backend == "cpu" and ref.backend == "torch"
    assert torch.equal(cpu.project(x), ref.project(x))
    acc = cpu.accumulator(batch)
    assert acc.shape == (128, batch)  # (2k, B): one contiguous run of B sums per addition
    for a, b in [(0, 5), (5, CHUNK_COLUMNS - 3), (CHUNK_COLUMNS - 3, d)]:
        cpu.accumulate(acc, x[:, a:b], a)
    assert torch.equal(cpu.finish(acc), ref.project(x))


@needs_kernel
def test_strided_and_low_precision_inputs():
    x = torch.randn(40, 6).t()  # (6, 40) with column stride 6
    cpu = SJLTProjector(40, 16, seed=1, backend="cpu")
    ref = SJLTProjector(40, 16, seed=1, backend="torch")
    assert torch.equal(cpu.project(x), ref.project(x))
    half = SJLTProjector(40, 16, seed=1, backend="cpu", dtype=torch.bfloat16)
    want = SJLTProjector(40, 16, seed=1, backend="torch", dtype=torch.bfloat16).project(x)
    assert torch.equal(half.project(x), want)


@needs_kernel
@pytest.mark.parametrize("batch", [1, 5, 16, 33])
def test_fused_adam_is_the_written_out_transform_then_the_scatter(batch):
    n = 70_001
    moments = _moments(n)
    grads = torch.randn(batch, n) * 1e-3
    want = SJLTProjector(n, 96, seed=3, backend="torch").project(_adam_reference(grads, moments))
    p = SJLTProjector(n, 96, seed=3, backend="cpu")
    transform = inplace_transform("adam", moments, "cpu")
    assert p.fuses(transform)
    acc = p.accumulator(batch)
    offset = 0
    for a, b in [(0, 1), (1, 30_000), (30_000, n)]:  # one parameter streamed in column chunks
        p.accumulate_transformed(acc, grads[:, a:b].clone(), offset + a, transform, a)
    assert torch.equal(p.finish(acc), want)


@needs_kernel
def test_fused_and_unfused_paths_agree_bit_for_bit():
    n = 5_000
    moments = _moments(n, seed=2)
    grads = torch.randn(7, n) * 1e-3
    cpu = SJLTProjector(n, 32, seed=4, backend="cpu")
    torch_backend = SJLTProjector(n, 32, seed=4, backend="torch")
    results = []
    for proj in (cpu, torch_backend):
        transform = inplace_transform("adam", moments, "cpu")
        acc = proj.accumulator(7)
        proj.accumulate_transformed(acc, grads.clone(), 0, transform, 0)
        results.append(proj.finish(acc))
    assert not torch_backend.fuses(inplace_transform("adam", moments, "cpu"))
    assert torch.equal(results[0], results[1])
    sign = inplace_transform("sign")
    assert not cpu.fuses(sign)  # applied by torch first, then the kernel's identity scatter
    acc = cpu.accumulator(7)
    cpu.accumulate_transformed(acc, grads.clone(), 0, sign, 0)
    assert torch.equal(cpu.finish(acc), torch_backend.project(torch.sign(grads)))


@needs_kernel
def test_nan_in_a_fused_block_is_reported():
    p = SJLTProjector(50, 8, backend="cpu")
    grads = torch.randn(2, 50)
    grads[1, 7] = float("nan")
    acc = p.accumulator(2)
    p.accumulate_transformed(acc, grads, 0, inplace_transform("adam", _moments(50), "cpu"), 0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        p.finish(acc)


def test_sqrt_is_correctly_rounded():
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.rand(300_000, generator=g) * 1e-6,
            torch.rand(300_000, generator=g) * 1e6,
            torch.tensor([0.0, 1.0, 2.0, 1e-45, 3.4e38, float("inf")]),
        ]
    )
    want = np.sqrt(x.numpy())
    assert np.array_equal(sqrt_(x.clone()).numpy(), want)


def test_no_compiler_refuses_the_cpu_backend_and_auto_warns(monkeypatch, caplog):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    monkeypatch.setattr(sjlt_module, "_warned_no_kernel", False)
    with pytest.raises(ConfigError, match=r"needs a C compiler.*set CC.*backend='torch'"):
        SJLTProjector(100, 8, backend="cpu")
    with caplog.at_level(logging.WARNING, logger="dataflex"):
        p = SJLTProjector(100, 8)
    assert p.backend == "torch"
    assert "torch backend on the CPU" in caplog.text and "C compiler" in caplog.text
    x = torch.randn(3, 100)
    assert torch.equal(p.project(x), SJLTProjector(100, 8, backend="torch").project(x))


def test_a_compiler_that_fails_is_reported_with_its_output(monkeypatch, tmp_path):
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: error: no such target' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.raises(ConfigError, match=r"(?s)exit 3.*no such target.*Set CC"):
        native.load()
    monkeypatch.setenv("CC", str(tmp_path / "missing-cc"))
    with pytest.raises(ConfigError, match="running the C compiler"):
        SJLTProjector(10, 4, backend="cpu")


@needs_kernel
def test_auto_takes_the_kernel_up_to_a_few_threads(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: sjlt_module.KERNEL_MAX_THREADS)
    assert SJLTProjector(10, 4).backend == "cpu"
    monkeypatch.setattr(torch, "get_num_threads", lambda: sjlt_module.KERNEL_MAX_THREADS + 1)
    assert SJLTProjector(10, 4).backend == "torch"  # torch's passes run on all threads
    assert SJLTProjector(10, 4, backend="cpu").backend == "cpu"  # asked for: always


def test_cpu_backend_is_for_the_cpu():
    with pytest.raises(ConfigError, match="backend='cpu' runs on the CPU"):
        SJLTProjector(10, 4, backend="cpu", device="cuda")


@needs_kernel
def test_auto_projector_streams_through_its_backend():
    auto = build_projector("auto", input_dim=300, proj_dim=16, seed=2)
    direct = SJLTProjector(300, 16, seed=2)
    assert auto.row_blocks and direct.row_blocks
    transform = inplace_transform("adam", _moments(300), "cpu")
    assert auto.fuses(transform)
    x = torch.randn(4, 300)
    acc = auto.accumulator(4)
    auto.accumulate_transformed(acc, x[:, :100].clone(), 0, transform, 0)
    auto.accumulate(acc, x[:, 100:], 100)
    want = direct.accumulator(4)
    direct.accumulate_transformed(want, x[:, :100].clone(), 0, transform, 0)
    direct.accumulate(want, x[:, 100:], 100)
    assert torch.equal(auto.finish(acc), direct.finish(want))
