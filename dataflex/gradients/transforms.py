"""Gradient transforms (``sgd``, ``adam``, ``sign``) and the Adam state they read.

``adam`` turns a per-example gradient g into the direction of one Adam step taken on
that example alone, from the current moments m, v of the optimizer:

    m' = β₁·m + (1−β₁)·g,   v' = β₂·v + (1−β₂)·g²,   Γ = m' / (√v' + ε)

with β₁, β₂, ε read from the parameter's optimizer group. Bias correction only
rescales Γ (and cancels under the cosine LESS uses), so it is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dataflex.engines import engine_of, full_adam_state
from dataflex.errors import ConfigError
from dataflex.registry import did_you_mean

logger = logging.getLogger(__name__)

TRANSFORMS = ("sgd", "adam", "sign")

# transformers.Trainer.get_decay_parameter_names: parameters outside LayerNorm modules whose
# lower-cased names match none of these patterns form the weight-decay group.
_NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


@dataclass(frozen=True)
class AdamMoments:
    """Adam's running moments of one parameter and the hyper-parameters of its group."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    beta1: float
    beta2: float
    eps: float


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

        Parameters the optimizer has not stepped yet are simply absent. Tensors are
        referenced, not copied: nothing here writes to them.

        Raises:
            ConfigError: if the optimizer's groups have no ``betas``/``eps`` (not Adam-like).
        """
        if engine_of(model).sharded:  # ZeRO-1/2/3, FSDP: the full moments, through the engine's API
            return cls({n: AdamMoments(*m) for n, m in full_adam_state(model, optimizer).items()})
        names = {id(p): n for n, p in model.named_parameters()}
        moments: dict[str, AdamMoments] = {}
        for i, group in enumerate(optimizer.param_groups):
            if "betas" not in group or "eps" not in group:
                raise ConfigError(
                    f"transform='adam' needs an Adam-like optimizer, but param group {i} of "
                    f"{type(optimizer).__name__} has no 'betas'/'eps'. Use torch.optim.Adam/AdamW, "
                    "or transform='sgd'."
                )
            beta1, beta2 = (float(b) for b in group["betas"])
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if id(p) in names and "exp_avg" in st and "exp_avg_sq" in st:
                    moments[names[id(p)]] = AdamMoments(
                        st["exp_avg"], st["exp_avg_sq"], beta1, beta2, float(group["eps"])
                    )
        return cls(moments)

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
    """Apply ``transform`` to ``(B, n)`` fp32 per-example gradients of one parameter.

    Args:
        transform: ``"sgd"``, ``"adam"`` or ``"sign"``.
        grads: Per-example gradients, flattened.
        moments: The parameter's Adam moments (``"adam"`` only).
    """
    if transform == "sgd":
        return grads
    if transform == "sign":
        return torch.sign(grads)
    if moments is None:  # guarded by the caller's validation
        raise ValueError("transform='adam' needs the parameter's Adam moments.")
    m = moments.exp_avg.to(device=grads.device, dtype=torch.float32).reshape(1, -1)
    v = moments.exp_avg_sq.to(device=grads.device, dtype=torch.float32).reshape(1, -1)
    # Few full-size passes and allocations: this runs on (B, n) blocks of every parameter.
    m_new = torch.add(moments.beta1 * m, grads, alpha=1.0 - moments.beta1)
    v_new = torch.addcmul(moments.beta2 * v, grads, grads, value=1.0 - moments.beta2)
    return m_new.div_(v_new.sqrt_().add_(moments.eps))


def inplace_transform(
    transform: str, moments: AdamMoments | None = None, device: torch.device | str | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(grads)``: :func:`apply_transform` computed in place on ``(b, n)`` fp32 ``grads``.

    The same operations in the same order as :func:`apply_transform` (so the same
    values), with the moments scaled by β₁, β₂ once for all the row blocks of one
    parameter, and one scratch block instead of two fresh ones: the per-example block
    is overwritten by its Adam direction where it lies, while it is still in cache.

    Args:
        transform: ``"sgd"``, ``"adam"`` or ``"sign"``.
        moments: The parameter's Adam moments (``"adam"`` only).
        device: Where the gradients live (the moments are moved there once).
    """
    if transform == "sgd":
        return lambda grads: grads
    if transform == "sign":
        return torch.Tensor.sign_
    if moments is None:  # guarded by the caller's validation
        raise ValueError("transform='adam' needs the parameter's Adam moments.")
    m = moments.beta1 * moments.exp_avg.to(device=device, dtype=torch.float32).reshape(1, -1)
    v = moments.beta2 * moments.exp_avg_sq.to(device=device, dtype=torch.float32).reshape(1, -1)
    beta1, beta2, eps = moments.beta1, moments.beta2, moments.eps

    def adam(grads: torch.Tensor) -> torch.Tensor:
        denom = torch.addcmul(v, grads, grads, value=1.0 - beta2).sqrt_().add_(eps)
        return torch.add(m, grads, alpha=1.0 - beta1, out=grads).div_(denom)

    return adam


def check_transform(transform: object) -> str:
    """Validate a transform name, with a "did you mean" on typos."""
    if not isinstance(transform, str) or transform not in TRANSFORMS:
        hint = did_you_mean(str(transform), list(TRANSFORMS))
        raise ConfigError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}.{hint}")
    return transform
