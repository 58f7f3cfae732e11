"""The :class:`Projector` interface: a k × D random matrix applied in slices."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from dataflex.errors import ConfigError


class Projector(ABC):
    """Random projection ``f = P·x`` of D-dimensional inputs to ``proj_dim`` dimensions.

    Entries of P are a pure function of ``(seed, row, column)``, so any column block
    can be generated anywhere: :meth:`project` takes a slice of the input coordinates
    and returns that slice's contribution. Summing contributions over the slices of
    a vector equals projecting the whole vector, which lets gradients stream in
    layer by layer.

    Subclasses implement :meth:`_project`; :meth:`project` validates input first.

    Args:
        input_dim: D, the number of input coordinates.
        proj_dim: k, the output dimension.
        seed: Seed of the matrix; the same seed gives the same P on every backend.
        dtype: Dtype in which the backend multiplies (accumulation is fp32).
        device: Device of the outputs (and of the generated tiles).
    """

    registry_name: ClassVar[str]
    row_blocks: ClassVar[bool] = False
    """Whether projecting a block a few rows at a time costs no more than all rows at once.

    True when :meth:`project` has no per-call work of order ``n × k`` (generating a
    tile of P), so callers may stream a large block in row blocks that stay in cache."""

    def __init__(
        self,
        input_dim: int,
        proj_dim: int,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(input_dim, int) or input_dim <= 0:
            raise ConfigError(f"input_dim must be a positive integer, got {input_dim!r}.")
        if not isinstance(proj_dim, int) or proj_dim <= 0:
            raise ConfigError(f"proj_dim must be a positive integer, got {proj_dim!r}.")
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating dtype, got {dtype}.")
        self.input_dim = input_dim
        self.proj_dim = proj_dim
        self.seed = int(seed)
        self.dtype = dtype
        self.device = torch.device(device)

    def project(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Project input coordinates ``[offset, offset + n)``.

        Args:
            x: ``(B, n)`` floating tensor (fp32, bf16 or fp16) holding those coordinates.
            offset: Index of ``x``'s first column among the D input coordinates.

        Returns:
            ``(B, proj_dim)`` fp32 tensor on :attr:`device`: the contribution of
            these coordinates to ``P·x_full``.

        Raises:
            ValueError: on a non-floating dtype, a slice outside ``[0, input_dim)``,
                or NaN/Inf in ``x``.
        """
        if x.dim() != 2:
            raise ValueError(f"project expects a (batch, width) tensor, got shape {tuple(x.shape)}.")
        if not x.dtype.is_floating_point:
            raise ValueError(f"project expects a floating tensor, got {x.dtype}.")
        width = x.shape[1]
        if offset < 0 or offset + width > self.input_dim:
            raise ValueError(
                f"Coordinates [{offset}, {offset + width}) are outside [0, {self.input_dim}) "
                f"of this {type(self).__name__} (input_dim={self.input_dim})."
            )
        out = self._project(x, offset)
        # Checked on the (B, k) output, not the (B, n) input: a pass over B·n values costs as
        # much as a sparse projection. Every backend's columns have a nonzero entry, so a
        # NaN or Inf in x always reaches the output (as NaN or ±Inf).
        if not bool(torch.isfinite(out).all()):
            raise ValueError("project received NaN or Inf values; the gradients upstream diverged.")
        return out

    @abstractmethod
    def _project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        """Backend implementation of :meth:`project` on validated input."""

    def fingerprint(self) -> dict[str, Any]:
        """What the projection depends on; used to key feature caches.

        Two projectors with equal fingerprints compute the same P.
        """
        return {
            "kind": self.distribution,
            "input_dim": self.input_dim,
            "proj_dim": self.proj_dim,
            "seed": self.seed,
        }

    @property
    def distribution(self) -> str:
        """Name of the entry distribution (``"rademacher"``, ``"gaussian"``, ``"identity"``)."""
        return self.registry_name
