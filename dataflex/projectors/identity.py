"""``identity``: no projection (k = D), for exact checks and small models."""

from __future__ import annotations

import torch

from dataflex.errors import ConfigError
from dataflex.projectors.base import Projector
from dataflex.registry import register_projector


@register_projector("identity")
class IdentityProjector(Projector):
    """No projection: ``proj_dim`` must equal ``input_dim`` and features are the inputs in fp32.

    With ``dtype`` bf16 or fp16 the features are the inputs rounded to it (then held in fp32).

    Useful to check a pipeline exactly (cosines of the true gradients) and for
    models small enough that D fits in memory per example.
    """

    def __init__(
        self,
        input_dim: int,
        proj_dim: int | None = None,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        proj_dim = input_dim if proj_dim is None else proj_dim
        if proj_dim != input_dim:
            raise ConfigError(
                f"The identity projector keeps every coordinate: proj_dim must equal input_dim "
                f"({input_dim}), got {proj_dim}. Use 'rademacher' or 'auto' to reduce the dimension."
            )
        super().__init__(input_dim, proj_dim, seed=seed, dtype=dtype, device=device)

    def _project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.proj_dim, device=self.device)
        out[:, offset : offset + x.shape[1]] = x.to(device=self.device, dtype=torch.float32)
        return out
