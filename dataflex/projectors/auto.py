"""``auto``: one distribution on every device, each on its fastest backend; ``sjlt`` by default.

* ``distribution="sjlt"`` (default): the sparse JL projector with its own ``auto``
  backend (the C kernel on a CPU device where a C compiler is found, ``index_add_``
  elsewhere); ``backend=`` picks one (``torch``, ``cpu``, ``triton``; same P).
* ``"rademacher"``/``"gaussian"``: the fused ``cuda`` kernel on a CUDA device with
  Triton, else the torch backend of that name.

Why ``sjlt``: at equal fidelity to LESS's cosines it costs O(B·D·s) instead of the dense
O(B·D·k), see ``docs/projectors.md`` for the measurements.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import torch

from dataflex.errors import ConfigError
from dataflex.projectors.base import ColumnTransformLike, Projector
from dataflex.projectors.cuda import CudaProjector, triton_available
from dataflex.projectors.gaussian import GaussianProjector
from dataflex.projectors.rademacher import RademacherProjector
from dataflex.projectors.sjlt import SJLTProjector
from dataflex.registry import register_projector

logger = logging.getLogger(__name__)

_TORCH_BACKENDS = {"rademacher": RademacherProjector, "gaussian": GaussianProjector}
_DISTRIBUTIONS = ("sjlt", "rademacher", "gaussian")
_OPTIONS = {
    "torch": {"cache_bytes", "block_cols"},
    "cuda": {"fp32_precision"},
    "sjlt": {"nnz_per_column", "backend", "cache_bytes"},
}


@register_projector("auto")
class AutoProjector(Projector):
    """The same P for a seed on every device, on the fastest backend there; ``sjlt`` by default.

    Args:
        input_dim: D.
        proj_dim: k.
        distribution: ``"sjlt"`` (default), ``"rademacher"`` or ``"gaussian"``.
        **kwargs: ``seed``, ``dtype``, ``device`` and the chosen backend's own options
            (``nnz_per_column``/``backend``/``cache_bytes`` for sjlt,
            ``cache_bytes``/``block_cols`` for the dense torch backends,
            ``fp32_precision`` for cuda); options of backends not chosen are dropped.

    Attributes:
        chosen: The projector every call is delegated to (an :class:`SJLTProjector`,
            :class:`CudaProjector`, :class:`RademacherProjector` or :class:`GaussianProjector`);
            ``chosen.backend`` is, for ``sjlt``, the name of its own backend.
    """

    def __init__(
        self, input_dim: int, proj_dim: int, *, distribution: str = "sjlt", **kwargs: object
    ) -> None:
        if distribution not in _DISTRIBUTIONS:
            raise ConfigError(f"distribution must be one of {sorted(_DISTRIBUTIONS)}, got {distribution!r}.")
        device = torch.device(cast("torch.device | str", kwargs.get("device", "cpu")))  # Projector checks it
        if distribution == "sjlt":
            kind = "sjlt"
        elif device.type == "cuda" and triton_available():
            kind = "cuda"
        else:
            kind = "torch"
        dropped = set().union(*(v for k, v in _OPTIONS.items() if k != kind)) - _OPTIONS[kind]
        # The chosen constructor checks each option's type and value.
        options: dict[str, Any] = {k: v for k, v in kwargs.items() if k not in dropped}
        if kind == "sjlt":
            sjlt = SJLTProjector(input_dim, proj_dim, **options)
            self.chosen: Projector = sjlt
            why = f"sparse JL, s={sjlt.nnz}, {sjlt.backend} backend on {device}"
        elif kind == "cuda":
            self.chosen = CudaProjector(input_dim, proj_dim, distribution=distribution, **options)
            why = "fused Triton kernel on " + str(device)
        else:
            self.chosen = _TORCH_BACKENDS[distribution](input_dim, proj_dim, **options)
            why = "no CUDA device" if device.type != "cuda" else "Triton is not installed"
        super().__init__(
            input_dim,
            proj_dim,
            seed=self.chosen.seed,
            dtype=self.chosen.dtype,
            device=self.chosen.device,
        )
        logger.info("auto projector: using %r (%s, %s).", self.chosen.registry_name, distribution, why)

    @property
    def distribution(self) -> str:
        return self.chosen.distribution

    # Everything a caller may stream through is the chosen backend's own.
    @property
    def row_blocks(self) -> bool:  # type: ignore[override]  # the chosen backend's ClassVar
        return self.chosen.row_blocks

    def accumulator(self, batch: int) -> torch.Tensor:
        return self.chosen.accumulator(batch)

    def accumulate(self, acc: torch.Tensor, x: torch.Tensor, offset: int = 0) -> None:
        self.chosen.accumulate(acc, x, offset)

    def fuses(self, transform: ColumnTransformLike) -> bool:
        return self.chosen.fuses(transform)

    def accumulate_transformed(
        self, acc: torch.Tensor, x: torch.Tensor, offset: int, transform: ColumnTransformLike, start: int
    ) -> None:
        self.chosen.accumulate_transformed(acc, x, offset, transform, start)

    def finish(self, acc: torch.Tensor) -> torch.Tensor:
        return self.chosen.finish(acc)

    def _project(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        return self.chosen._project(x, offset)

    def fingerprint(self) -> dict:
        return self.chosen.fingerprint()
