"""``Projector.accumulate``: column slices streamed into one accumulator equal ``project`` of the whole."""

from __future__ import annotations

import itertools

import pytest
import torch

from dataflex.projectors import SJLTProjector, build_projector
from dataflex.projectors.sjlt import CHUNK_COLUMNS


def _stream(proj, x, offset, cuts):
    acc = proj.accumulator(x.shape[0])
    for a, b in itertools.pairwise(cuts):
        proj.accumulate(acc, x[:, a:b], offset + a)
    return proj.finish(acc)


@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])
@pytest.mark.parametrize("offset", [0, 7, CHUNK_COLUMNS - 1500])  # the last slices cross a hash chunk
def test_sjlt_column_slices_equal_project_bit_for_bit(offset, cache_bytes):
    n, k = 3000, 64
    proj = SJLTProjector(CHUNK_COLUMNS + 4096, k, nnz_per_column=4, seed=5, cache_bytes=cache_bytes)
    x = torch.randn(6, n, generator=torch.Generator().manual_seed(1))
    want = proj.project(x, offset)
    gen = torch.Generator().manual_seed(2)
    for cuts in (
        [0, n],
        [0, 1, n],
        list(range(0, n + 1, 250)),
        [0, *sorted(torch.randperm(n, generator=gen)[:9].tolist()), n],
    ):
        cuts = sorted(set(cuts))
        assert torch.equal(_stream(proj, x, offset, cuts), want), cuts
    # ... and equal to x @ Pᵀ.
    torch.testing.assert_close(want, x @ proj.matrix(offset, offset + n).t(), atol=1e-5, rtol=1e-5)


def test_default_accumulate_sums_project_calls():
    proj = build_projector("rademacher", input_dim=500, proj_dim=16, seed=3)
    x = torch.randn(4, 300)
    got = _stream(proj, x, 100, [0, 17, 200, 300])
    torch.testing.assert_close(got, proj.project(x, 100), atol=1e-5, rtol=1e-5)


def test_accumulate_validates_and_finish_refuses_nan():
    proj = SJLTProjector(100, 8)
    acc = proj.accumulator(2)
    with pytest.raises(ValueError, match=r"Coordinates \[95, 105\) are outside \[0, 100\)"):
        proj.accumulate(acc, torch.zeros(2, 10), 95)
    bad = torch.zeros(2, 10)
    bad[1, 3] = float("nan")
    proj.accumulate(acc, bad, 0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        proj.finish(acc)
