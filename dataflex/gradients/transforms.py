"""Gradient transforms (``sgd``, ``adam``, ``sign``) and the Adam state they read.

``adam`` turns a per-example gradient g into the direction of one Adam step taken on
that example alone, from the current moments m, v of the optimizer:

    m' = β₁·m + (1−β₁)·g,   v' = β₂·v + (1−β₂)·g²,   Γ = m' / (√v' + ε)

with β₁, β₂, ε read from the parameter's optimizer group. Bias correction only
rescales Γ (and cancels under the cosine LESS uses), so it is left out.

Γ is computed in fp32 with a correctly rounded √ on every path (:func:`sqrt_`), so the
torch operations here (:meth:`ColumnTransform.__call__`, the one statement of the formula
in Python) and the fused kernels of ``sjlt`` (``sjlt_cpu.c``, the Triton kernel, which
restate it in their own language) give the same values bit for bit, however a parameter
is blocked. The moments are an :class:`~dataflex.engines.AdamMoments`, the one record
of them, read from a live optimizer by :func:`dataflex.engines.full_adam_state`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import torch
from torch import nn

from dataflex.engines import AdamMoments, full_adam_state
from dataflex.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

TRANSFORMS = ("sgd", "adam", "sign")

NUMERICS = "fp32-fma-sqrt-ieee/1"
"""How Γ is rounded (part of every feature-cache fingerprint): fused multiply-adds as torch
computes ``add(alpha=)``/``addcmul(value=)``, and a correctly rounded square root. Change
it when the arithmetic changes, so caches of the old values are recomputed, not reused."""

_SQRT_BLOCK = 1 << 18


def sqrt_(values: torch.Tensor) -> torch.Tensor:
    """Correctly rounded √ of contiguous fp32 ``values``, in place; returns them.

    On the CPU torch's fp32 ``sqrt`` goes through MKL's vector math, which is within 1 ulp
    of the correctly rounded root but not always equal to it. The fp64 root rounded to
    fp32 is the correctly rounded fp32 root (53 ≥ 2·24 + 2 bits), so that is used there,
    a block at a time. Elsewhere (CUDA) ``sqrt_`` is the IEEE operation itself.
    """
    if values.device.type != "cpu":
        return values.sqrt_()
    flat = values.view(-1)
    for a in range(0, flat.numel(), _SQRT_BLOCK):
        block = flat[a : a + _SQRT_BLOCK]
        block.copy_(block.double().sqrt_())
    return values


# transformers.Trainer.get_decay_parameter_names: parameters outside LayerNorm modules whose
# lower-cased names match none of these patterns form the weight-decay group.
_NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


class AdamState:
    """Adam moments per trainable parameter name, independent of any live optimizer.

    Args:
        moments: Parameter name (as in ``model.named_parameters()``) → its moments.
    """

    def __init__(self, moments: dict[str, AdamMoments]) -> None:
        self.moments = dict(moments)

    def __contains__(self, name: str) -> bool:
        return name in self.moments

    def __getitem__(self, name: str) -> AdamMoments:
        return self.moments[name]

    def __len__(self) -> int:
        return len(self.moments)

    def missing(self, names: list[str]) -> list[str]:
        """The names among ``names`` that have no moments here."""
        return [n for n in names if n not in self.moments]

    @classmethod
    def from_optimizer(cls, model: nn.Module, optimizer: torch.optim.Optimizer) -> AdamState:
        """Read the moments of a live ``torch.optim.Adam``/``AdamW`` (or a wrapper exposing its state).

        Parameters the optimizer has not stepped yet, and frozen ones, are simply absent.
        On one process and under DDP the tensors are referenced, not copied: nothing here
        writes to them; under a sharded engine they are the full moments gathered
        (:func:`dataflex.engines.full_adam_state`).

        Raises:
            ConfigError: if the optimizer's groups have no ``betas``/``eps`` (not Adam-like).
        """
        return cls(full_adam_state(model, optimizer))  # every engine: DDP, ZeRO, FSDP2, one process

    @classmethod
    def from_checkpoint(cls, model: nn.Module, checkpoint_dir: str | Path) -> AdamState:
        """Read ``optimizer.pt`` of a Hugging Face ``Trainer`` checkpoint.

        The Trainer saves ``optimizer.state_dict()``: state keyed by integer index, the
        indices numbering the parameters group by group. Its default optimizer has two
        groups built from ``named_parameters()`` (trainable only): the weight-decay group
        first, then the no-decay group (biases and norm weights). This mapping is rebuilt
        from ``model`` and checked against the checkpoint (group sizes, tensor shapes).

        Args:
            model: The model (same wrapping as in training, e.g. the ``PeftModel``).
            checkpoint_dir: A ``checkpoint-N`` directory.

        Raises:
            FileNotFoundError: if there is no ``optimizer.pt`` (e.g. a DeepSpeed checkpoint).
            ConfigError: if the checkpoint's groups do not match the Trainer's layout for ``model``.
        """
        path = Path(checkpoint_dir) / "optimizer.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"No optimizer.pt in {checkpoint_dir}: Adam state cannot be read from this checkpoint "
                "(DeepSpeed/FSDP save it elsewhere; pass a live optimizer instead)."
            )
        sd = torch.load(path, map_location="cpu", weights_only=True)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        decay = set(_decay_parameter_names(model))
        layout = [
            [(n, p) for n, p in trainable if n in decay],
            [(n, p) for n, p in trainable if n not in decay],
        ]
        groups = sd.get("param_groups", [])
        sizes = [len(g["params"]) for g in groups]
        if sizes != [len(x) for x in layout]:
            raise ConfigError(
                f"{path}: parameter groups of sizes {sizes} do not match the HF Trainer layout for this "
                f"model (decay={len(layout[0])}, no-decay={len(layout[1])}). Was it saved for another "
                "model/adapter, or by a custom optimizer? Pass a live optimizer instead."
            )
        moments: dict[str, AdamMoments] = {}
        for group, members in zip(groups, layout):
            if "betas" not in group or "eps" not in group:
                raise ConfigError(f"{path}: param group has no 'betas'/'eps'; not an Adam checkpoint.")
            beta1, beta2 = (float(b) for b in group["betas"])
            for index, (name, param) in zip(group["params"], members):
                st = sd["state"].get(index)
                if st is None or "exp_avg" not in st:
                    continue
                if tuple(st["exp_avg"].shape) != tuple(param.shape):
                    raise ConfigError(
                        f"{path}: state {index} has shape {tuple(st['exp_avg'].shape)} but maps to "
                        f"{name!r} of shape {tuple(param.shape)}; the checkpoint is for another model."
                    )
                moments[name] = AdamMoments(
                    st["exp_avg"], st["exp_avg_sq"], beta1, beta2, float(group["eps"])
                )
        return cls(moments)


def _decay_parameter_names(model: nn.Module) -> list[str]:
    from transformers.trainer_pt_utils import get_parameter_names

    return get_parameter_names(model, [nn.LayerNorm], _NO_DECAY_PATTERNS)


def apply_transform(transform: str, grads: torch.Tensor, moments: AdamMoments | None = None) -> torch.Tensor:
    """Apply ``transform`` to ``(B, n)`` fp32 per-example gradients of one parameter (a new tensor).

    The :class:`ColumnTransform` of the parameter on a copy of ``grads``.

    Args:
        transform: ``"sgd"``, ``"adam"`` or ``"sign"``.
        grads: Per-example gradients, flattened.
        moments: The parameter's Adam moments (``"adam"`` only).
    """
    if transform == "sgd":
        return grads
    return inplace_transform(transform, moments, grads.device)(grads.clone())


class ColumnTransform:
    """One parameter's transform, applied in place to ``(b, n)`` fp32 blocks of its columns.

    Calling it computes Γ in place (the one statement of the formula in the package), with
    the moments scaled by β₁, β₂ once for all the row or column blocks of the parameter
    and one scratch block: the per-example block is overwritten by its Adam direction where it lies,
    while it is still in cache. ``grads`` holds the parameter's flattened columns
    ``[start, start + n)``; the moments of those columns are broadcast over its rows.
    A projector that fuses the transform into its scatter (:meth:`Projector.fuses`)
    reads :meth:`adam_columns` instead and never makes the scaled moments.

    Args:
        kind: ``"sgd"``, ``"adam"`` or ``"sign"``.
        moments: The parameter's Adam moments (``adam`` only).
        device: Where the gradients live (the moments are moved there, as fp32, at the
            first call, so making a transform costs nothing until it is used).
    """

    def __init__(
        self, kind: str, moments: AdamMoments | None = None, device: torch.device | str | None = None
    ) -> None:
        if kind == "adam" and moments is None:  # guarded by the caller's validation
            raise ValueError("transform='adam' needs the parameter's Adam moments.")
        self.kind = kind
        self.moments = moments
        self.device = device
        self._flat: AdamMoments | None = None
        self._scaled: tuple[torch.Tensor, torch.Tensor] | None = None

    def _moments(self) -> AdamMoments:
        """The moments flattened, fp32, on :attr:`device`: moved there at the first use, once."""
        if self._flat is None:
            m = cast(AdamMoments, self.moments)  # adam: checked in __init__
            ea = m.exp_avg.to(device=self.device, dtype=torch.float32).reshape(-1)
            eas = m.exp_avg_sq.to(device=self.device, dtype=torch.float32).reshape(-1)
            self._flat = AdamMoments(ea, eas, m.beta1, m.beta2, m.eps)
        return self._flat

    def __call__(self, grads: torch.Tensor, start: int = 0) -> torch.Tensor:
        if self.kind == "sgd":
            return grads
        if self.kind == "sign":
            return grads.sign_()
        moments = self._moments()
        if self._scaled is None:
            ea, eas = moments.exp_avg, moments.exp_avg_sq
            self._scaled = (moments.beta1 * ea.reshape(1, -1), moments.beta2 * eas.reshape(1, -1))
        m, v = self._scaled
        cols = slice(start, start + grads.shape[1])
        denom = sqrt_(torch.addcmul(v[:, cols], grads, grads, value=1.0 - moments.beta2)).add_(moments.eps)
        return torch.add(m[:, cols], grads, alpha=1.0 - moments.beta1, out=grads).div_(denom)

    def adam_columns(self, start: int, stop: int) -> AdamMoments:
        """The moments of the parameter's flattened columns ``[start, stop)``, fp32 (``adam`` only).

        What a projector that fuses the transform reads (:meth:`Projector.fuses`).
        """
        moments = self._moments()
        ea, eas = moments.exp_avg, moments.exp_avg_sq
        return AdamMoments(ea[start:stop], eas[start:stop], moments.beta1, moments.beta2, moments.eps)


def inplace_transform(
    transform: str, moments: AdamMoments | None = None, device: torch.device | str | None = None
) -> ColumnTransform:
    """The :class:`ColumnTransform` of one parameter (see there for the arguments)."""
    return ColumnTransform(transform, moments if transform == "adam" else None, device)


def check_transform(transform: object) -> str:
    """Validate a transform name, with a "did you mean" on typos."""
    if not isinstance(transform, str) or transform not in TRANSFORMS:
        hint = did_you_mean(str(transform), list(TRANSFORMS))
        raise ConfigError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}.{hint}")
    return transform
