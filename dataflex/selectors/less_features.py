"""LESS's use of :mod:`dataflex.gradients`: the projector and cached feature rows."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dataflex.io import fingerprint_key
from dataflex.registry import build_projector
from dataflex.selectors.base import SelectionContext
from dataflex.selectors.cache import data_identity

logger = logging.getLogger(__name__)


def make_projector(
    model: torch.nn.Module, name: str, proj_dim: int, seed: int, device: torch.device | str
) -> Any | None:
    """The projector for this model's trainable parameters.

    ``identity`` keeps every coordinate (k = number of trainable parameters) and
    ignores ``proj_dim``; it is returned as ``None``, which the gradient code reads
    as "no projection". A random projector with ``proj_dim`` above the number of
    trainable parameters is allowed but logged as a warning: it costs more than no
    projection and is still only an approximation.
    """
    from dataflex.gradients import num_trainable

    dim = num_trainable(model)
    if name == "identity":
        return None
    if proj_dim > dim:
        logger.warning(
            "less: proj_dim=%d is larger than the %d trainable parameters. A random projection to more "
            "dimensions than the gradient has does not compress anything: it costs more than no "
            "projection and still only approximates the inner products. Use projector: identity for "
            "exact scores, or a proj_dim below %d.",
            proj_dim,
            dim,
            dim,
        )
    return build_projector(name, input_dim=dim, proj_dim=proj_dim, seed=seed, device=device)


@dataclass
class FeatureRequest:
    """Which rows to compute, and what their cache key depends on."""

    dataset: Sequence[Mapping[str, Any]]
    indices: list[int]
    transform: str
    adam_state: Any
    role: str
    identity: Mapping[str, Any]


def compute_rows(
    model: torch.nn.Module,
    request: FeatureRequest,
    projector: Any,
    ctx: SelectionContext,
    *,
    batch_size: int,
    dtype: str,
    cache_dir: Path | None,
) -> torch.Tensor:
    """Projected (not normalised) gradient features of ``request.indices``, ``(len, k)`` fp32.

    Features are stored under ``cache_dir/features`` in a
    :class:`~dataflex.gradients.FeatureStore` keyed by the model identity, step,
    projector, transform, role and data, so a rerun of the same round reuses them.
    """
    from dataflex.gradients import FeatureStore, compute_features, num_trainable

    dim = projector.proj_dim if projector is not None else num_trainable(model)
    if not request.indices:
        return torch.zeros(0, dim)
    store = None
    if cache_dir is not None:
        fingerprint = {
            **request.identity,
            "role": request.role,
            "transform": request.transform,
            "data": data_identity(request.dataset, request.indices),
        }
        store = FeatureStore.open(
            Path(cache_dir) / "features" / fingerprint_key(fingerprint),
            fingerprint,
            num_rows=len(request.indices),
            dim=dim,
            dtype=dtype,
        )
    feats = compute_features(
        model,
        request.dataset,
        ctx.collator,
        batch_size=batch_size,
        transform=request.transform,
        projector=projector,
        adam_state=request.adam_state,
        normalize=False,
        store=store,
        indices=request.indices,
        device=ctx.device,
        progress=False,
    )
    return torch.as_tensor(feats).float()
