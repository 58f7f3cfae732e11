"""Bad input is a clear error before any work is done."""

from __future__ import annotations

import logging

import pytest
import torch

from dataflex.errors import ConfigError
from dataflex.projectors import AutoProjector, GaussianProjector, RademacherProjector, build_projector, cuda


@pytest.mark.parametrize("proj_dim", [0, -3])
def test_non_positive_proj_dim(projector_name, proj_dim):
    if projector_name == "identity":
        with pytest.raises(ConfigError, match="proj_dim must equal input_dim"):
            build_projector("identity", input_dim=10, proj_dim=proj_dim)
        return
    name = "sjlt" if projector_name.startswith("sjlt-") else projector_name
    with pytest.raises(ConfigError, match="proj_dim must be a positive integer"):
        build_projector(name, input_dim=10, proj_dim=proj_dim, device="cpu")


@pytest.mark.parametrize("dtype", [torch.int32, torch.float64])
def test_dtype_argument_must_be_one_a_backend_multiplies_in(dtype):
    with pytest.raises(ConfigError, match=r"dtype must be one of torch.float32, torch.bfloat16, torch.fl"):
        RademacherProjector(10, 4, dtype=dtype)


def test_bad_input_to_project(projector_name, make_projector):
    p = make_projector(projector_name, 10, 4)
    with pytest.raises(ValueError, match=r"Coordinates \[8, 12\) are outside \[0, 10\)"):
        p.project(torch.randn(2, 4), offset=8)
    with pytest.raises(ValueError, match=r"Coordinates \[-1, 3\) are outside"):
        p.project(torch.randn(2, 4), offset=-1)
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        p.project(torch.randn(2, 11))
    with pytest.raises(ValueError, match=r"expects a floating tensor, got torch\.int64"):
        p.project(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expects a \(batch, width\) tensor"):
        p.project(torch.randn(4))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(2, 4)
        x[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            p.project(x)


@pytest.mark.parametrize("cls", [RademacherProjector, GaussianProjector])
def test_bad_tiling_options(cls):
    with pytest.raises(ConfigError, match="block_cols must be a positive integer"):
        cls(10, 4, block_cols=0)
    with pytest.raises(ConfigError, match="cache_bytes must be a non-negative integer"):
        cls(10, 4, cache_bytes=-1)


def test_cuda_backend_off_gpu_names_the_alternatives(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match=r"device=cpu.*'auto'.*'rademacher'"):
        build_projector("cuda", input_dim=10, proj_dim=4, device="cpu")


def test_cuda_backend_without_triton_names_the_alternatives(monkeypatch):
    monkeypatch.setattr(cuda, "triton_available", lambda: False)
    with pytest.raises(ConfigError, match=r"needs Triton.*'auto'.*'rademacher'"):
        build_projector("cuda", input_dim=10, proj_dim=4, device="cuda")


def test_cuda_backend_bad_options():
    with pytest.raises(ConfigError, match="distribution must be one of"):
        build_projector("cuda", input_dim=10, proj_dim=4, distribution="uniform")
    with pytest.raises(ConfigError, match="block_k must be a power of two >= 32"):
        build_projector("cuda", input_dim=10, proj_dim=4, block_k=48)
    with pytest.raises(ConfigError, match="fp32_precision must be one of"):
        build_projector("cuda", input_dim=10, proj_dim=4, fp32_precision="fast")


def test_auto_uses_the_torch_backend_off_gpu_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="dataflex.projectors.auto"):
        p = AutoProjector(50, 8, seed=3, distribution="gaussian", cache_bytes=0, fp32_precision="ieee")
    assert isinstance(p.chosen, GaussianProjector)
    assert "using 'gaussian'" in caplog.text
    assert "no CUDA device" in caplog.text
    assert p.fingerprint() == GaussianProjector(50, 8, seed=3).fingerprint()
    with pytest.raises(ConfigError, match="distribution must be one of"):
        AutoProjector(50, 8, distribution="sparse")


def test_identity_rejects_a_reduced_dimension():
    with pytest.raises(ConfigError, match=r"proj_dim must equal input_dim.*'rademacher' or 'auto'"):
        build_projector("identity", input_dim=10, proj_dim=4)


def test_auto_defaults_to_sjlt_on_every_device_and_says_so(caplog):
    from dataflex.projectors import SJLTProjector

    with caplog.at_level(logging.INFO, logger="dataflex.projectors.auto"):
        p = AutoProjector(
            50, 8, seed=3, cache_bytes=0, block_cols=16, fp32_precision="ieee", nnz_per_column=2
        )
    assert isinstance(p.chosen, SJLTProjector) and p.chosen.nnz == 2
    assert "using 'sjlt'" in caplog.text
    assert p.fingerprint() == SJLTProjector(50, 8, seed=3, nnz_per_column=2).fingerprint()
    x = torch.randn(3, 50)
    assert torch.equal(p.project(x), SJLTProjector(50, 8, seed=3, nnz_per_column=2).project(x))
    dense = AutoProjector(50, 8, seed=3, distribution="rademacher", nnz_per_column=2)
    assert isinstance(dense.chosen, RademacherProjector)
