"""The compiled ``cuda`` and ``sjlt`` Triton kernels at realistic sizes (need a CUDA GPU and Triton)."""

from __future__ import annotations

import pytest
import torch

from dataflex.projectors import CudaProjector, GaussianProjector, RademacherProjector, SJLTProjector
from dataflex.projectors.cuda import triton_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()), reason="needs CUDA + Triton"),
]


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_kernel_matches_torch_backend_at_less_sizes(dist):
    d, k = 200_003, 4096
    ref_cls = RademacherProjector if dist == "rademacher" else GaussianProjector
    ref = ref_cls(d, k, seed=1, device="cuda", cache_bytes=0)
    fused = CudaProjector(d, k, seed=1, distribution=dist, device="cuda")
    # Columns read back through the kernel equal the generated matrix.
    cols = [0, 1, 77_777, d - 1]
    for c in cols:
        got = fused.project(torch.eye(1, device="cuda"), offset=c)[0]
        want = ref.matrix(c, c + 1)[:, 0]
        if dist == "rademacher":
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    x = torch.randn(16, d, device="cuda")
    expected = ref.project(x)
    torch.testing.assert_close(fused.project(x), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.project(x.bfloat16()), ref.project(x.bfloat16()), rtol=1e-4, atol=1e-4)
    halves = fused.project(x[:, :100_000]) + fused.project(x[:, 100_000:], offset=100_000)
    torch.testing.assert_close(halves, expected, rtol=1e-4, atol=1e-4)


def test_kernel_is_deterministic():
    fused = CudaProjector(1_000_000, 8192, seed=2, device="cuda")
    x = torch.randn(16, 1_000_000, device="cuda", dtype=torch.bfloat16)
    assert torch.equal(fused.project(x), fused.project(x))


@pytest.mark.parametrize("nnz", [1, 4])
def test_sjlt_backends_agree_on_gpu_and_with_the_cpu(nnz):
    d, k = 1_000_003, 8192
    cpu = SJLTProjector(d, k, seed=1, nnz_per_column=nnz)
    gpu_torch = SJLTProjector(d, k, seed=1, nnz_per_column=nnz, device="cuda")
    gpu_triton = SJLTProjector(d, k, seed=1, nnz_per_column=nnz, device="cuda", backend="triton")
    x = torch.randn(16, d)
    want = cpu.project(x)
    for p in (gpu_torch, gpu_triton):
        torch.testing.assert_close(p.project(x.cuda()).cpu(), want, rtol=1e-4, atol=1e-4)
        half = p.project(x.cuda().bfloat16()).cpu()
        torch.testing.assert_close(half, cpu.project(x.bfloat16()), rtol=1e-4, atol=1e-4)
        halves = p.project(x[:, :500_000].cuda()) + p.project(x[:, 500_000:].cuda(), offset=500_000)
        torch.testing.assert_close(halves.cpu(), want, rtol=1e-4, atol=1e-4)
    # Columns read back through the kernel equal the documented matrix.
    for c in (0, 77_777, d - 1):
        got = gpu_triton.project(torch.eye(1, device="cuda"), offset=c)[0].cpu()
        assert torch.equal(got, cpu.matrix(c, c + 1)[:, 0])
