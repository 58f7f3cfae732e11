"""LESS's use of :mod:`dataflex.gradients`: the projector and cached feature rows."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from dataflex.engines import Engine, engine_of
from dataflex.errors import ConfigError
from dataflex.gradients import AdamState, FeatureStore, compute_features, num_trainable
from dataflex.gradients.transforms import NUMERICS
from dataflex.io import fingerprint_key
from dataflex.passes.cache import data_identity
from dataflex.projectors.base import Projector
from dataflex.registry import build_projector
from dataflex.selectors.base import PreflightPlan, SelectionContext

logger = logging.getLogger(__name__)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux/macOS), or ``None`` when unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    """``n`` bytes in GiB, for messages."""
    return f"{n / 2**30:.1f} GiB"


def check_projector_device(name: str, projector: str) -> None:
    """Refuse ``projector: cuda`` where no CUDA GPU is visible, before any model loads.

    Raises:
        ConfigError: naming ``projector`` and the fix.
    """
    if projector == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{name}: projector: cuda needs a CUDA GPU, and none is visible; use projector: auto (a "
            "torch projector on this device) or run where a GPU is."
        )


class FeatureParams(Protocol):
    """The params of a selector built on LESS's features (``less``, ``nice``, ``cluster_less``)."""

    @property
    def proj_dim(self) -> int: ...
    @property
    def projector(self) -> str: ...
    @property
    def feature_dtype(self) -> str: ...
    @property
    def max_candidates(self) -> int | None: ...


def check_feature_budget(
    name: str, params: FeatureParams, pool: int, num_eval: int, cache_dir: Path | None
) -> None:
    """Refuse a round whose features would not fit in memory or on the cache's disk.

    The round's features, ``(candidates + eval) × proj_dim``, are stored in ``cache_dir``
    and read back in fp32; checked before any model loads.

    Raises:
        ConfigError: naming ``proj_dim`` and the sizes.
    """
    proj_dim = params.proj_dim
    if params.projector == "identity":
        return
    candidates = min(pool, params.max_candidates) if params.max_candidates else pool
    itemsize = 2 if params.feature_dtype == "float16" else 4
    size = (candidates + num_eval) * proj_dim * itemsize
    memory = available_memory()
    if memory is not None and size * 2 > memory:  # stored features, and their fp32 copy when read
        raise ConfigError(
            f"{name}: proj_dim: {proj_dim} makes the round's features ({candidates} candidates + "
            f"{num_eval} eval examples) x {proj_dim} x {itemsize} bytes = {gib(size)}, more than half the "
            f"{gib(memory)} of memory available; lower proj_dim (LESS uses 8192) or max_candidates."
        )
    if cache_dir is None:
        return
    probe = Path(cache_dir).absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if size > free:
        raise ConfigError(
            f"{name}: the round's features need {gib(size)} on disk in {str(cache_dir)!r} but only "
            f"{gib(free)} are free; lower proj_dim or max_candidates, or set cache_dir to a larger disk."
        )


def check_less_inputs(
    name: str,
    params: FeatureParams,
    plan: PreflightPlan,
    cache_dir: Path | None,
    subtask_labels: Callable[[Sequence[Mapping[str, Any]]], list[str]],
) -> None:
    """What a selector built on LESS's features checks before the model loads.

    The target set's subtask labels (``subtask_labels`` raises on a missing field), the
    projector's device and the size of a round's features in memory and in ``cache_dir``.

    Raises:
        ConfigError: naming the key and the fix.
    """
    if plan.eval_dataset is not None:
        subtask_labels(plan.eval_dataset)
    check_projector_device(name, params.projector)
    num_eval = len(plan.eval_dataset) if plan.eval_dataset is not None else 0
    check_feature_budget(name, params, plan.pool_size, num_eval, cache_dir)


def feature_parameters(model: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """Names of the trainable parameters that match any of ``patterns`` (``fnmatch``, case-sensitive).

    Raises:
        ConfigError: if none matches, listing a few of the trainable names.
    """
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    keep = [n for n in trainable if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    if not keep:
        examples = ", ".join(trainable[:3])
        raise ConfigError(
            f"less: gradient_modules {list(patterns)} matches none of the {len(trainable)} trainable "
            f"parameters (e.g. {examples}); use fnmatch patterns over those names, such as '*lora_B*' "
            "or '*layers.1.*', or gradient_modules: null for all of them."
        )
    return keep


@contextlib.contextmanager
def only_parameters(model: torch.nn.Module, patterns: Sequence[str] | None) -> Iterator[None]:
    """Within the block, only the trainable parameters matching ``patterns`` require grad.

    LESS's features are then the gradient of those parameters alone (the feature pass
    differentiates what requires grad). The others are restored on exit, also on an
    error. ``None`` changes nothing. Only without a sharded engine (plain or DDP):
    ZeRO and FSDP manage ``requires_grad`` of their flat parameters themselves.

    Raises:
        ConfigError: on a sharded engine, or if no trainable parameter matches.
    """
    if patterns is None:
        yield
        return
    engine = engine_of(model)
    if engine is not Engine.PLAIN:
        raise ConfigError(
            f"less: gradient_modules works without a sharded engine (one process or DDP), but the model "
            f"runs under {engine.value}; set gradient_modules: null there."
        )
    keep = set(feature_parameters(model, patterns))
    frozen = [p for n, p in model.named_parameters() if p.requires_grad and n not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def make_projector(
    model: torch.nn.Module, name: str, proj_dim: int, seed: int, device: torch.device | str
) -> Projector:
    """The registered projector ``name`` for this model's trainable parameters.

    ``identity`` keeps every coordinate (k = number of trainable parameters) and
    ignores ``proj_dim``. A random projector with ``proj_dim`` above the number of
    trainable parameters is allowed but logged as a warning: it costs more than no
    projection and is still only an approximation.
    """
    dim = num_trainable(model)
    if name == "identity":
        proj_dim = dim
    elif proj_dim > dim:
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
    adam_state: AdamState | None
    role: str
    identity: Mapping[str, Any]


def idle_collective_forwards(
    model: torch.nn.Module,
    request: FeatureRequest,
    projector: Projector,
    ctx: SelectionContext,
    batch_size: int,
) -> None:
    """A rank with no rows still takes part in the other ranks' collective forwards (ZeRO-3, FSDP).

    It computes (and discards) one batch of the dataset's first example, then the
    padding batches :func:`~dataflex.gradients.compute_features` adds to match the
    busiest rank. Without a sharded engine this does nothing.
    """
    if not engine_of(model).collective_forward or len(request.dataset) == 0:
        return
    collator = ctx.collator
    assert collator is not None  # check_context refused a context without it
    compute_features(
        model,
        request.dataset,
        collator,
        batch_size=batch_size,
        transform="sgd",
        projector=projector,
        indices=[0],
        device=ctx.device,
        progress=False,
    )


def compute_rows(
    model: torch.nn.Module,
    request: FeatureRequest,
    projector: Projector,
    ctx: SelectionContext,
    *,
    batch_size: int,
    dtype: Literal["float16", "float32"],
    cache_dir: Path | None,
    max_batch_tokens: int | None = None,
    timings: dict[str, float] | None = None,
    modules: Sequence[str] | None = None,
) -> torch.Tensor:
    """Projected (not normalised) gradient features of ``request.indices``, ``(len, k)`` fp32.

    Features are stored under ``cache_dir/features`` in a
    :class:`~dataflex.gradients.FeatureStore` keyed by the model identity, step,
    projector, transform, role and data, so a rerun of the same round reuses them.
    Examples are batched longest first (the store keeps that row order, named in its
    key). A progress bar shows on rank 0 in a terminal. ``timings`` collects the seconds
    per phase (see :func:`~dataflex.gradients.compute_features`). ``modules``: only the
    trainable parameters matching these patterns are differentiated (:func:`only_parameters`;
    the caller keys ``request.identity`` and the projector by them).
    """
    dim = projector.proj_dim
    collator = ctx.collator
    assert collator is not None  # check_context refused a context without it
    if not request.indices:
        idle_collective_forwards(model, request, projector, ctx, batch_size)
        return torch.zeros(0, dim)
    store = None
    if cache_dir is not None:
        fingerprint = {
            **request.identity,
            "role": request.role,
            "transform": request.transform,
            "numerics": NUMERICS,
            "data": data_identity(request.dataset, request.indices),
            "row_order": "length-desc",
        }
        store = FeatureStore.open(
            Path(cache_dir) / "features" / fingerprint_key(fingerprint),
            fingerprint,
            num_rows=len(request.indices),
            dim=dim,
            dtype=dtype,
        )
    with only_parameters(model, modules):
        feats = compute_features(
            model,
            request.dataset,
            collator,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            transform=request.transform,
            projector=projector,
            adam_state=request.adam_state,
            normalize=False,
            store=store,
            indices=request.indices,
            device=ctx.device,
            progress=None,
            desc=f"LESS features ({request.role})",
            timings=timings,
        )
    return torch.as_tensor(feats).float()
