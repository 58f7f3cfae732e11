"""``auto``: the fused ``cuda`` kernel on a CUDA device with Triton, else the torch backend."""

from __future__ import annotations

import logging

import torch

from dataflex.errors import ConfigError
from dataflex.projectors.base import Projector
from dataflex.projectors.cuda import CudaProjector, triton_available
from dataflex.projectors.gaussian import GaussianProjector
from dataflex.projectors.rademacher import RademacherProjector
from dataflex.registry import register_projector

logger = logging.getLogger(__name__)

_TORCH_BACKENDS = {"rademacher": RademacherProjector, "gaussian": GaussianProjector}


@register_projector("auto")
class AutoProjector(Projector):
    """Chooses the fastest backend for ``device``: ``cuda`` if possible, else ``rademacher``/``gaussian``.

    Every choice computes the same P for a seed, so features made with ``auto`` on
    different machines are comparable. The choice is logged.

    Args:
        input_dim: D.
        proj_dim: k.
        distribution: ``"rademacher"`` (default) or ``"gaussian"``.
        **kwargs: ``seed``, ``dtype``, ``device`` and the chosen backend's own options
            (``cache_bytes``/``block_cols`` for torch, ``fp32_precision`` for cuda);
            options of the backend not chosen are dropped.
    """

    def __init__(self, input_dim: int, proj_dim: int, *, distribution: str = "rademacher", **kwargs) -> None:
        if distribution not in _TORCH_BACKENDS:
            raise ConfigError(f"distribution must be one of {sorted(_TORCH_BACKENDS)}, got {distribution!r}.")
        device = torch.device(kwargs.get("device", "cpu"))
        torch_only = {"cache_bytes", "block_cols"}
        cuda_only = {"fp32_precision"}
        if device.type == "cuda" and triton_available():
            kwargs = {k: v for k, v in kwargs.items() if k not in torch_only}
            self.backend: Projector = CudaProjector(input_dim, proj_dim, distribution=distribution, **kwargs)
            why = "fused Triton kernel on " + str(device)
        else:
            kwargs = {k: v for k, v in kwargs.items() if k not in cuda_only}
            self.backend = _TORCH_BACKENDS[distribution](input_dim, proj_dim, **kwargs)
            why = "no CUDA device" if device.type != "cuda" else "Triton is not installed"
        super().__init__(
            input_dim,
            proj_dim,
            seed=self.backend.seed,
            dtype=self.backend.dtype,
            device=self.backend.device,
        )
        logger.info("auto projector: using %r (%s, %s).", self.backend.registry_name, distribution, why)

    @property
    def distribution(self) -> str:
        return self.backend.distribution

    def _project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        return self.backend._project(x, offset)

    def fingerprint(self) -> dict:
        return self.backend.fingerprint()
