"""Every backend, block size, cache setting and device computes the same P for a seed."""

from __future__ import annotations

import math

import pytest
import torch

from dataflex.projectors import GaussianProjector, RademacherProjector, list_projectors
from dataflex.projectors.hashing import HASH_SCHEME

MASK = 0xFFFFFFFF
REFERENCE = {"rademacher": RademacherProjector, "gaussian": GaussianProjector}


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


def reference_entry(dist: str, seed: int, k: int, r: int, c: int) -> float:
    if dist == "rademacher":
        bit = (word(seed, 1, c, r // 32) >> (r % 32)) & 1
        return (1 - 2 * bit) / math.sqrt(k)
    p = r // 2
    u1 = (2 * (word(seed, 2, c, 2 * p) >> 9) + 1) * 2.0**-24
    u2 = (2 * (word(seed, 2, c, 2 * p + 1) >> 9) + 1) * 2.0**-24
    trig = math.cos if r % 2 == 0 else math.sin
    return math.sqrt(-2 * math.log(u1)) * trig(2 * math.pi * u2) / math.sqrt(k)


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
@pytest.mark.parametrize("seed", [0, 123, 2**40 + 7])
def test_entries_match_the_documented_scheme(dist, seed):
    k = 70
    rows = [0, 1, 31, 32, 33, 69]
    # Columns past 2**32 exercise the high word of the column index.
    for start in (0, 1000, 2**32 - 2):
        p = REFERENCE[dist](2**33, k, seed=seed, cache_bytes=0)
        got = p.matrix(start, start + 4)
        for r in rows:
            for i in range(4):
                want = reference_entry(dist, seed, k, r, start + i)
                assert got[r, i].item() == pytest.approx(want, rel=1e-5, abs=1e-6), (r, start + i)


def test_generator_is_pinned_to_its_version():
    # If this fails you changed the generator: bump HASH_SCHEME (it keys feature caches).
    assert HASH_SCHEME == "lowbias32-xor-v1"
    signs = RademacherProjector(4, 32, seed=0).matrix()[:8, 0] * math.sqrt(32)
    assert [round(s) for s in signs.tolist()] == [1, 1, 1, -1, 1, 1, 1, -1]
    normals = GaussianProjector(4, 4, seed=0).matrix()[:, 0] * 2
    assert normals.tolist() == pytest.approx([0.03713, -1.543, 0.22843, 1.00118], abs=1e-5)
    assert word(0, 1, 0, 0) == 0x28FE0C88


@pytest.mark.parametrize("name", list_projectors())
@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_every_backend_computes_the_same_matrix(name, dist, make_projector, matrix_of):
    d, k = 100, 70
    if name in REFERENCE and name != dist:
        pytest.skip(f"{name} has a fixed distribution")
    if name == "sjlt":
        pytest.skip("sjlt is its own distribution: see test_sjlt.py")
    kwargs = {} if name in REFERENCE or name == "identity" else {"distribution": dist}
    p = make_projector(name, d, k, seed=11, **kwargs)
    got = matrix_of(p)
    if name == "identity":
        assert torch.equal(got, torch.eye(d))
        return
    # the independent pure-Python statement of the scheme, not another torch backend
    want = torch.tensor([[reference_entry(dist, 11, k, r, c) for c in range(d)] for r in range(k)])
    if dist == "rademacher":
        assert torch.equal(got, want)  # bit-identical
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_block_size_and_cache_do_not_change_p(dist):
    d, k = 203, 48
    cls = REFERENCE[dist]
    block_bytes = 16 * cls(d, k).k_pad * 4  # k is padded to whole hash words
    variants = [
        cls(d, k, seed=5, cache_bytes=0, block_cols=16),  # all tiles on the fly
        cls(d, k, seed=5, cache_bytes=1 << 30, block_cols=16),  # all cached
        cls(d, k, seed=5, cache_bytes=5 * block_bytes, block_cols=16),  # 80 columns cached, rest on the fly
        cls(d, k, seed=5, cache_bytes=1 << 30, block_cols=37),
        cls(d, k, seed=5),  # default block size
    ]
    assert variants[2].cached_columns == 80
    x = torch.randn(16, d)
    reference_out = variants[0].project(x)
    reference_p = variants[0].matrix()
    for v in variants[1:]:
        for a, b in [(0, d), (5, 150), (79, 81)]:
            torch.testing.assert_close(v.project(x[:, a:b], a), variants[0].project(x[:, a:b], a))
        # Read P back through project: exercises the cache filled by the calls above.
        assert torch.equal(v.project(torch.eye(d)).t(), reference_p)
        torch.testing.assert_close(v.project(x), reference_out)


class CountingRademacher(RademacherProjector):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generated = 0
        self.calls = 0

    def _generate(self, start, stop, out):
        self.generated += stop - start
        self.calls += 1
        super()._generate(start, stop, out)


def test_cache_is_reused_across_calls_and_the_rest_regenerated():
    d, k = 200, 32
    p = CountingRademacher(d, k, cache_bytes=3 * 16 * k * 4, block_cols=16)  # k = 32: no padding
    assert p.cached_columns == 48
    x = torch.randn(16, d)
    first = p.project(x)
    assert p.generated == d
    assert p.calls == 1 + 10  # the 3 cached blocks filled in one call, then 152 columns in 16-wide tiles
    second = p.project(x)
    assert p.generated == d + (d - 48)  # only the uncached columns were generated again
    assert torch.equal(first, second)
    none = CountingRademacher(d, k, cache_bytes=0)
    none.project(x)
    none.project(x)
    assert none.generated == 2 * d
    assert none._cache is None


def test_rademacher_signs_are_balanced_and_uncorrelated():
    k = 256
    signs = RademacherProjector(4000, k, seed=1).matrix() * math.sqrt(k)
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(signs.mean().item()) < 0.005  # 1e6 signs: std 0.001
    # Neighbouring rows (bits of one word) and columns are uncorrelated.
    assert abs((signs[1:] * signs[:-1]).mean().item()) < 0.005
    assert abs((signs[:, 1:] * signs[:, :-1]).mean().item()) < 0.005


def test_gaussian_entries_are_normal():
    scipy_stats = pytest.importorskip("scipy.stats")
    k = 64
    z = (GaussianProjector(2000, k, seed=1).matrix() * math.sqrt(k)).flatten().double()
    assert scipy_stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert abs(z.mean().item()) < 0.01
    assert abs(z.var().item() - 1) < 0.01
    pairs = z.view(-1, 2)  # cos/sin partners of one Box–Muller draw are uncorrelated
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item()) < 0.01


@pytest.mark.parametrize("name", list_projectors())
def test_columns_past_two_to_the_32_agree(name, make_projector):
    if name in ("identity", "gaussian", "sjlt"):
        pytest.skip("identity has no hash; gaussian and sjlt are covered by their reference-entry tests")
    start = 2**32 - 2  # the slice straddles the change of the column's high word
    kwargs = {"distribution": "rademacher"} if name == "auto" else {}  # auto's default is sjlt
    p = make_projector(name, 2**33, 40, seed=4, **kwargs)
    got = p.project(torch.eye(4), offset=start).cpu().t()
    assert torch.equal(got, RademacherProjector(2**33, 40, seed=4).matrix(start, start + 4))


def test_wide_tiles_hashed_in_chunks_give_the_same_p():
    # k = 2048: 64 words per column, so a default (1024-column) tile is hashed in 4 chunks.
    wide = RademacherProjector(600, 2048, seed=3, cache_bytes=0)
    assert wide.block_cols == 1024
    narrow = RademacherProjector(600, 2048, seed=3, cache_bytes=0, block_cols=16)
    assert torch.equal(wide.matrix(), narrow.matrix())


@pytest.mark.parametrize("blocks", [(16, 16, 64), (32, 64, 32)])
def test_cuda_block_sizes_give_the_same_p(blocks, make_projector, matrix_of):
    block_b, block_n, block_k = blocks
    p = make_projector("cuda", 100, 70, seed=6, block_b=block_b, block_n=block_n, block_k=block_k)
    assert torch.equal(matrix_of(p), RademacherProjector(100, 70, seed=6).matrix())


@pytest.mark.parametrize("name", ["gaussian", "cuda", "auto"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_every_backend_rounds_gaussian_entries_to_its_dtype(name, dtype, make_projector, matrix_of):
    d, k = 100, 70
    kwargs = {} if name == "gaussian" else {"distribution": "gaussian"}
    got = matrix_of(make_projector(name, d, k, seed=11, dtype=dtype, **kwargs))
    want = torch.tensor([[reference_entry("gaussian", 11, k, r, c) for c in range(d)] for r in range(k)])
    # the unscaled N(0, 1) entry is rounded, then scaled by 1/sqrt(k) in fp32
    rounded = (want * math.sqrt(k)).to(dtype).float() / math.sqrt(k)
    assert not torch.equal(got, want)
    eps = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    # round to nearest: within half an ulp of the fp32 entry
    assert ((got - want).abs() <= 1.01 * eps * want.abs() + 1e-7).all()
    # the same value as rounding the reference, except where sin/cos/log differ by an fp32 ulp
    # right at a rounding boundary (then one ulp of dtype apart)
    same = torch.isclose(got, rounded, rtol=1e-6, atol=1e-9)
    assert same.float().mean() > 0.99
    assert ((got - rounded).abs() <= 2.01 * eps * want.abs() + 1e-7).all()
