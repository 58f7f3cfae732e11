"""The ``sjlt`` projector: its documented hash, its sparsity structure, every backend."""

from __future__ import annotations

import math

import pytest
import torch

from dataflex.errors import ConfigError
from dataflex.projectors import SJLTProjector, build_projector
from dataflex.projectors.sjlt import CHUNK_COLUMNS
from tests.adam_reference import adam_direction

MASK = 0xFFFFFFFF
SJLT_STREAM = 3


# --- an independent, slow, pure-Python statement of the documented scheme ---------------
def lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def word(seed: int, stream: int, c: int, j: int) -> int:
    k0 = lowbias32(lowbias32((seed & MASK) ^ 0x243F6A88 ^ stream) ^ (seed >> 32))
    k1 = lowbias32(k0 ^ 0x85A308D3)
    ck = lowbias32((c & MASK) ^ lowbias32((c >> 32) ^ k0))
    return lowbias32(ck ^ lowbias32(j ^ k1))


def reference_column(seed: int, k: int, s: int, c: int) -> dict[int, float]:
    """Row → entry of column ``c``, straight from the documented scheme in pure Python."""
    block = k // s
    out = {}
    for j in range(s):
        w = word(seed, SJLT_STREAM, c, j)
        out[j * block + (w >> 1) % block] = (-1.0 if w & 1 else 1.0) / math.sqrt(s)
    return out


@pytest.mark.parametrize("name", ["sjlt", "sjlt-torch", "sjlt-cpu", "sjlt-triton"])
@pytest.mark.parametrize(("k", "s"), [(40, 1), (64, 4), (48, 8)])
def test_entries_match_the_documented_scheme(name, k, s, make_projector, matrix_of):
    seed = 2**40 + 3
    p = make_projector(name, 50, k, seed=seed, nnz_per_column=s)
    got = matrix_of(p)
    want = torch.zeros(k, 50)
    for c in range(50):
        for r, v in reference_column(seed, k, s, c).items():
            want[r, c] = v
    assert torch.equal(got, want)
    if name != "sjlt-triton":
        assert torch.equal(p.matrix(), want)


@pytest.mark.parametrize("name", ["sjlt", "sjlt-torch", "sjlt-cpu", "sjlt-triton"])
def test_columns_past_two_to_the_32(name, make_projector):
    start = 2**32 - 2  # the slice straddles the change of the column's high word
    p = make_projector(name, 2**33, 40, seed=4, nnz_per_column=2)
    got = p.project(torch.eye(4), offset=start).cpu()
    for i in range(4):
        want = torch.zeros(40)
        for r, v in reference_column(4, 40, 2, start + i).items():
            want[r] = v
        assert torch.equal(got[i], want)


def test_one_entry_per_block_and_unit_columns():
    k, s = 64, 4
    m = SJLTProjector(3000, k, nnz_per_column=s, seed=1).matrix()
    blocks = (m != 0).view(s, k // s, -1).sum(dim=1)
    assert torch.equal(blocks, torch.ones_like(blocks))  # exactly one nonzero per block
    assert torch.equal(m.pow(2).sum(0), torch.ones(3000))
    rows = (m != 0).float().sum(1)  # rows are hit evenly: 3000·4/64 ≈ 187 ± 14
    assert rows.min() > 120 and rows.max() < 260
    signs = m[m != 0].sign()
    assert abs(signs.mean().item()) < 0.05  # 12000 signs: std 0.009


def test_chunk_boundaries_and_cache_do_not_change_p():
    d = CHUNK_COLUMNS + 300
    x = torch.randn(3, 700)
    a = CHUNK_COLUMNS - 400  # a slice across the boundary of two hashed chunks
    cached = SJLTProjector(d, 32, seed=5, nnz_per_column=2)
    uncached = SJLTProjector(d, 32, seed=5, nnz_per_column=2, cache_bytes=0)
    want = x @ cached.matrix(a, a + 700).t()
    for p in (cached, uncached, cached):  # the third call reads the cache
        torch.testing.assert_close(p.project(x, a), want, rtol=1e-5, atol=1e-5)
    assert cached._cache and not uncached._cache


def test_past_the_cache_budget_the_latest_chunk_is_hashed_once(monkeypatch):
    from dataflex.projectors import sjlt as sjlt_module

    calls = []
    original = sjlt_module.sjlt_indices

    def spy(*args):
        calls.append(args[3:5])
        return original(*args)

    monkeypatch.setattr(sjlt_module, "sjlt_indices", spy)
    d = 2 * CHUNK_COLUMNS
    x = torch.randn(4, 500)
    p = SJLTProjector(d, 32, seed=6, nnz_per_column=2, cache_bytes=0)
    want = x @ p.matrix(CHUNK_COLUMNS + 10, CHUNK_COLUMNS + 510).t()
    calls.clear()
    rows = torch.cat([p.project(x[i : i + 1], CHUNK_COLUMNS + 10) for i in range(4)])  # row blocks
    torch.testing.assert_close(rows, want, rtol=1e-5, atol=1e-5)
    assert calls == [(CHUNK_COLUMNS, d)]  # hashed once for the four calls, then reused
    p.project(x, 0)
    p.project(x, CHUNK_COLUMNS)
    assert calls == [(CHUNK_COLUMNS, d), (0, CHUNK_COLUMNS), (CHUNK_COLUMNS, d)]  # only the latest is kept


@pytest.mark.parametrize("name", ["sjlt", "sjlt-torch", "sjlt-cpu", "sjlt-triton"])
def test_projection_is_x_times_p_exactly_on_integers(name, make_projector, matrix_of):
    # Small integers times ±1/√s are exact in fp32 up to the scale: compare unscaled sums.
    p = make_projector(name, 300, 32, seed=9, nnz_per_column=2)
    x = torch.randint(-4, 5, (18, 300)).float()
    want = (matrix_of(p) * math.sqrt(2)).round() @ x.t()
    assert torch.equal((p.project(x).cpu() * math.sqrt(2)).round(), want.t())


def test_triton_backend_matches_torch_backend(make_projector):
    x = torch.randn(19, 517)
    ref = SJLTProjector(517, 96, seed=3, nnz_per_column=4)
    tri = make_projector("sjlt-triton", 517, 96, seed=3, nnz_per_column=4)
    torch.testing.assert_close(tri.project(x[:, 11:400], 11).cpu(), ref.project(x[:, 11:400], 11))
    assert tri.fingerprint() == ref.fingerprint()


def test_fingerprint_names_nnz():
    a = SJLTProjector(10, 8, seed=1, nnz_per_column=2).fingerprint()
    assert a["kind"] == "sjlt" and a["nnz_per_column"] == 2
    assert a != SJLTProjector(10, 8, seed=1, nnz_per_column=4).fingerprint()


@pytest.mark.parametrize("nnz", [0, 3, 9, 2.0, True])
def test_bad_nnz_is_a_config_error(nnz):
    with pytest.raises(ConfigError, match="nnz_per_column must be an integer"):
        build_projector("sjlt", input_dim=10, proj_dim=8, nnz_per_column=nnz)


def test_bad_backend_and_device():
    with pytest.raises(ConfigError, match="backend must be one of"):
        build_projector("sjlt", input_dim=10, proj_dim=8, backend="numba")
    with pytest.raises(ConfigError, match="cache_bytes"):
        build_projector("sjlt", input_dim=10, proj_dim=8, cache_bytes=-1)


@pytest.mark.parametrize("name", ["sjlt-torch", "sjlt-cpu", "sjlt-triton"])
def test_fused_adam_on_every_backend(name, make_projector):
    """``accumulate_transformed`` with Adam: the transform written out, then the projection."""
    from dataflex.gradients.transforms import AdamMoments, inplace_transform

    n, batch = 1_000, 5
    g = torch.Generator().manual_seed(0)
    moments = AdamMoments(
        torch.randn(n, generator=g) * 1e-3, torch.rand(n, generator=g) * 1e-6, 0.9, 0.99, 1e-8
    )
    grads = torch.randn(batch, n, generator=g) * 1e-3
    gamma = adam_direction(grads, moments.exp_avg, moments.exp_avg_sq, 0.9, 0.99, 1e-8)
    p = make_projector(name, n, 64, seed=1, nnz_per_column=4)
    transform = inplace_transform("adam", moments, p.device)
    assert p.fuses(transform) == (name != "sjlt-torch")
    acc = p.accumulator(batch)
    for a, b in [(0, 300), (300, n)]:
        p.accumulate_transformed(acc, grads[:, a:b].clone().to(p.device), a, transform, a)
    want = SJLTProjector(n, 64, seed=1, nnz_per_column=4, backend="torch").project(gamma)
    torch.testing.assert_close(p.finish(acc).cpu(), want, rtol=1e-5, atol=1e-5 * want.abs().max())
