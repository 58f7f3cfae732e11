"""Properties every registered projector must have (run for ``cuda`` under the Triton interpreter too)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

D, K = 100, 64


def _unit(n: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def test_norm_preserved_on_average(projector_name, make_projector):
    p = make_projector(projector_name, D, K, seed=3)
    x = _unit(64, D, 0)
    ratio = p.project(x).cpu().pow(2).sum(dim=1)
    # E‖Px‖² = ‖x‖² = 1; the mean of 64 draws has std ≈ sqrt(2/(k·64)) ≈ 0.022.
    assert abs(ratio.mean().item() - 1.0) < 0.1
    assert ratio.min().item() > 0.3


def test_inner_products_within_jl_tolerance(projector_name, make_projector):
    k = 128
    p = make_projector(projector_name, D, k, seed=5)
    x = _unit(16, D, 1)
    y = 0.8 * x + 0.6 * _unit(16, D, 2)  # correlated pairs, ⟨x, y⟩ ≈ 0.8
    y = y / y.norm(dim=1, keepdim=True)
    both = p.project(torch.cat([x, y])).cpu()
    fx, fy = both[:16], both[16:]
    error = ((fx * fy).sum(1) - (x * y).sum(1)).abs()
    # Var(⟨Px, Py⟩) = (1 + ⟨x, y⟩²)/k for Rademacher/Gaussian: 4 std ≈ 0.45 at k = 128.
    assert error.max().item() < 4 * math.sqrt(2 / k)


def test_same_seed_same_result(projector_name, make_projector):
    x = torch.randn(16, D)
    a = make_projector(projector_name, D, K, seed=7).project(x)
    b = make_projector(projector_name, D, K, seed=7).project(x)
    assert torch.equal(a, b)


def test_different_seeds_differ(projector_name, make_projector):
    if projector_name == "identity":
        pytest.skip("identity has no randomness")
    x = torch.randn(16, D)
    a = make_projector(projector_name, D, K, seed=7).project(x)
    b = make_projector(projector_name, D, K, seed=8).project(x)
    assert (a - b).abs().max().item() > 0.1


def test_invariant_to_batch_split(projector_name, make_projector):
    p = make_projector(projector_name, D, K, seed=1)
    x = torch.randn(40, D)
    whole = p.project(x)
    parts = torch.cat([p.project(x[:16]), p.project(x[16:17]), p.project(x[17:])])
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)


def test_slices_sum_to_whole(projector_name, make_projector):
    p = make_projector(projector_name, D, K, seed=2)
    x = torch.randn(16, D)
    cuts = [0, 1, 33, 34, 70, D]
    summed = sum(p.project(x[:, a:b], offset=a) for a, b in itertools.pairwise(cuts))
    torch.testing.assert_close(summed, p.project(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_fp32(projector_name, dtype, make_projector):
    p = make_projector(projector_name, D, K, seed=4)
    x = torch.randn(16, D).to(dtype)
    out = p.project(x)
    assert out.dtype == torch.float32
    assert out.shape == (16, p.proj_dim)
    torch.testing.assert_close(out, p.project(x.float()), rtol=1e-5, atol=1e-5)


def test_fingerprint_names_what_p_depends_on(projector_name, make_projector):
    fp = make_projector(projector_name, D, K, seed=9).fingerprint()
    assert fp["seed"] == 9
    assert fp["input_dim"] == D
    assert fp["kind"] in {"rademacher", "gaussian", "identity", "sjlt"}
    if projector_name != "identity":
        assert fp["proj_dim"] == K
        assert fp["hash_scheme"]
        assert fp != make_projector(projector_name, D, K, seed=10).fingerprint()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_dtype_rounds_the_multiply_and_is_in_the_fingerprint(
    projector_name, make_projector, matrix_of, dtype
):
    full = make_projector(projector_name, D, K, seed=6)
    half = make_projector(projector_name, D, K, seed=6, dtype=dtype)
    x = torch.randn(8, D, generator=torch.Generator().manual_seed(3))  # fp32 values dtype cannot hold
    assert not torch.equal(x.to(dtype).float(), x)
    out, ref = half.project(x), full.project(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)  # the dtype acts
    # Within a half-precision error: each product off by at most 2 roundings of 2^-(mantissa+1).
    p_abs = matrix_of(full).abs()
    eps = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    assert ((out.cpu() - ref.cpu()).abs() <= 2.1 * eps * (x.abs() @ p_abs.t()) + 1e-6).all()
    # Exactly the rounded input against the rounded entries, summed in fp32 (slow, independent).
    p_half = matrix_of(half)  # one-hot inputs are exact in any dtype: P with rounded entries
    if full.distribution == "gaussian":
        assert not torch.equal(p_half, matrix_of(full))  # N(0, 1) entries lose bits
    else:
        assert torch.equal(p_half, matrix_of(full))  # ±1 entries are exact in any dtype
    expected = x.to(dtype).double() @ p_half.double().t()
    torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-5, atol=1e-6)
    fp = half.fingerprint()
    assert fp["dtype"] == str(dtype).removeprefix("torch.") and full.fingerprint()["dtype"] == "float32"
    assert fp != full.fingerprint()  # a feature cache made with the other dtype is not reused
