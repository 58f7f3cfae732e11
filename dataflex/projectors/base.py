"""The :class:`Projector` interface: a k × D random matrix applied in slices."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from dataflex.errors import ConfigError, NonFiniteError

if TYPE_CHECKING:
    from dataflex.engines.adam import AdamMoments

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The dtypes a projector multiplies in, by name (the ``dtype`` of :class:`Projector`)."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def holds_exactly(wide: torch.dtype, narrow: torch.dtype) -> bool:
    """Whether every value of ``narrow`` is a value of ``wide`` (bf16 and fp16 in fp32; not bf16 in fp16)."""
    return wide == narrow or (wide == torch.float32 and narrow in (torch.bfloat16, torch.float16))


def round_to(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round fp32 ``values`` in place to the nearest ``dtype`` values (kept in fp32); returns them."""
    if dtype != torch.float32:
        values.copy_(values.to(dtype))
    return values


class ColumnTransformLike(Protocol):
    """What a projector sees of a parameter's elementwise gradient transform.

    :class:`dataflex.gradients.transforms.ColumnTransform` is the implementation.
    """

    kind: str

    def __call__(self, grads: torch.Tensor, start: int = 0) -> torch.Tensor: ...

    def adam_columns(self, start: int, stop: int) -> AdamMoments: ...


class Projector(ABC):
    """Random projection ``f = P·x`` of D-dimensional inputs to ``proj_dim`` dimensions.

    Entries of P are a pure function of ``(seed, row, column)``, so any column block
    can be generated anywhere: :meth:`project` takes a slice of the input coordinates
    and returns that slice's contribution. Summing contributions over the slices of
    a vector equals projecting the whole vector, which lets gradients stream in
    layer by layer.

    Subclasses implement :meth:`_project`; :meth:`project` validates input first and
    rounds it to :attr:`dtype`.

    The ``dtype`` contract, the same on every backend: the input is rounded to
    ``dtype`` (a tensor whose values ``dtype`` holds exactly, e.g. bf16 under fp32, is
    left as it is), P's entries are rounded to ``dtype`` (exact for the ±1 entries of
    ``rademacher``/``sjlt``/``identity``; Gaussian entries lose bits under bf16/fp16),
    their products and sums are fp32 and the output is fp32, scaled by 1/√k in fp32.
    That is what a bf16 tensor-core multiply with fp32 accumulation computes.

    Args:
        input_dim: D, the number of input coordinates.
        proj_dim: k, the output dimension.
        seed: Seed of the matrix; the same seed gives the same P on every backend.
        dtype: Precision of the multiply: ``torch.float32`` (default), ``torch.bfloat16``
            or ``torch.float16``; inputs and P's entries are rounded to it, products and
            sums are fp32 (see above). Part of :meth:`fingerprint`.
        device: Device of the outputs (and of the generated tiles).
    """

    registry_name: ClassVar[str]
    row_blocks: ClassVar[bool] = False
    """Whether projecting a block a few rows or columns at a time costs no more than all at once.

    True when :meth:`project` and :meth:`accumulate` have no per-call work of order
    ``n × k`` (generating a tile of P), so callers may stream a large block in row
    blocks or column chunks that stay in cache."""

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
        if dtype not in DTYPES.values():
            raise ConfigError(
                f"dtype must be one of {', '.join(f'torch.{n}' for n in DTYPES)}, got {dtype!r}."
            )
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
        x = self._checked_input(x, offset)
        out = self._project(x, offset)
        self._check_output(out)
        return out

    def accumulator(self, batch: int) -> torch.Tensor:
        """A zeroed accumulator for :meth:`accumulate` of ``batch`` rows (backend-specific layout)."""
        return torch.zeros(batch, self.proj_dim, device=self.device, dtype=torch.float32)

    def accumulate(self, acc: torch.Tensor, x: torch.Tensor, offset: int = 0) -> None:
        """Add the contribution of coordinates ``[offset, offset + n)`` of ``x`` into ``acc``.

        Streaming consecutive column slices of one block through :meth:`accumulate` and
        then calling :meth:`finish` once equals :meth:`project` of the whole block (for
        ``sjlt`` bit for bit: the same additions in the same order), without the whole
        block ever existing. Validated as :meth:`project` is, except for NaN/Inf, which
        :meth:`finish` checks on the result.

        Args:
            acc: From :meth:`accumulator`.
            x: ``(B, n)`` floating tensor holding those coordinates.
            offset: Index of ``x``'s first column among the D input coordinates.
        """
        acc.add_(self._project(self._checked_input(x, offset), offset))

    def fuses(self, transform: ColumnTransformLike) -> bool:
        """Whether :meth:`accumulate_transformed` applies ``transform`` inside its own pass.

        False here: the transform runs first, as its own pass over the block.
        """
        return False

    def accumulate_transformed(
        self, acc: torch.Tensor, x: torch.Tensor, offset: int, transform: ColumnTransformLike, start: int
    ) -> None:
        """:meth:`accumulate` of ``transform(x, start)``; ``x`` may be overwritten.

        ``x`` holds columns ``[start, start + n)`` of one parameter whose transform is
        ``transform`` and coordinates ``[offset, offset + n)`` of the input. A backend
        that :meth:`fuses` the transform reads each value once, transforms and adds it.
        """
        self.accumulate(acc, transform(x, start), offset)

    def finish(self, acc: torch.Tensor) -> torch.Tensor:
        """The ``(B, proj_dim)`` fp32 projection summed in ``acc`` (checked for NaN/Inf)."""
        self._check_output(acc)
        return acc

    def _checked_input(self, x: torch.Tensor, offset: int) -> torch.Tensor:
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
        if x.dtype != self.dtype and not holds_exactly(self.dtype, x.dtype):
            x = x.to(self.dtype)
        return x

    def _check_output(self, out: torch.Tensor) -> None:
        # Checked on the (B, k) output, not the (B, n) input: a pass over B·n values costs as
        # much as a sparse projection. Every backend's columns have a nonzero entry, so a
        # NaN or Inf in x always reaches the output (as NaN or ±Inf).
        if not bool(torch.isfinite(out).all()):
            hint = ""
            if self.dtype == torch.float16:
                hint = " (or values beyond float16's range, 65504: use dtype float32 or bfloat16)"
            raise NonFiniteError(
                f"project received NaN or Inf values; the gradients upstream diverged{hint}."
            )

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
            "dtype": dtype_name(self.dtype),
        }

    @property
    def distribution(self) -> str:
        """Name of the entry distribution (``"rademacher"``, ``"gaussian"``, ``"identity"``)."""
        return self.registry_name
