"""``compute_features``: a batched ``torch.utils.data`` pass that fills a feature store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from dataflex.engines import lockstep_extra_batches
from dataflex.errors import ConfigError
from dataflex.gradients.features import FeaturePlan
from dataflex.gradients.sharded import run_padding
from dataflex.gradients.store import FeatureStore
from dataflex.gradients.transforms import AdamState
from dataflex.projectors.base import Projector

logger = logging.getLogger(__name__)


def compute_features(
    model: nn.Module,
    dataset: Sequence[dict[str, Any]] | torch.utils.data.Dataset,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    transform: str = "sgd",
    projector: Projector | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    adam_state: AdamState | None = None,
    normalize: bool = False,
    store: FeatureStore | None = None,
    indices: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    allow_sgd_fallback: bool = False,
) -> torch.Tensor:
    """Per-example features of (a subset of) a tokenised dataset, batch by batch.

    Row j of the result is the feature of ``dataset[indices[j]]`` (see
    :func:`~dataflex.gradients.per_example_features` for the feature arguments). With
    a ``store``, completed rows are skipped (resume) and every finished batch is
    written to it before the next one starts.

    Args:
        model: The model, already on its device.
        dataset: Tokenised examples (dicts with ``input_ids`` and ``labels``).
        collator: Turns a list of examples into a padded batch, e.g. ``SFTDataCollator``.
        batch_size: Examples per forward/backward.
        transform: ``"sgd"``, ``"adam"`` or ``"sign"``.
        projector: Projector streamed into, or None for raw columns.
        optimizer: Live Adam/AdamW (``adam``).
        adam_state: Adam moments from a checkpoint (``adam``).
        normalize: Unit-length rows.
        store: A :class:`FeatureStore` with ``num_rows == len(indices)`` and ``dim == k``.
        indices: Dataset positions to compute (default: all, in order).
        device: Where batches go (default: the device of the model's first parameter).
        progress: Show a tqdm progress bar.
        allow_sgd_fallback: See :func:`~dataflex.gradients.per_example_features`.

    Returns:
        ``(N, k)`` fp32 CPU tensor (read back from the store when there is one, i.e.
        rounded to the store's dtype).

    Raises:
        ConfigError: on a bad ``batch_size``, indices out of range, or a store whose
            shape does not match.
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    n_data = len(dataset)
    indices = list(range(n_data)) if indices is None else [int(i) for i in indices]
    if not indices:
        raise ConfigError("indices is empty: there is nothing to compute features for.")
    bad = [i for i in indices if not 0 <= i < n_data]
    if bad:
        raise ConfigError(f"indices {bad[:5]} are outside the dataset of {n_data} examples.")
    plan = FeaturePlan(
        model,
        transform=transform,
        projector=projector,
        optimizer=optimizer,
        adam_state=adam_state,
        allow_sgd_fallback=allow_sgd_fallback,
    )
    dim = projector.proj_dim if projector is not None else plan.dim
    if store is not None and (store.num_rows, store.dim) != (len(indices), dim):
        raise ConfigError(
            f"store has shape ({store.num_rows}, {store.dim}) but this pass makes ({len(indices)}, {dim}); "
            "open the store with num_rows=len(indices) and dim=projector.proj_dim (or num_trainable)."
        )
    if device is None:
        device = next(model.parameters()).device
    ranges = store.missing_ranges() if store is not None else [(0, len(indices))]
    batches = [
        list(range(s, min(s + batch_size, e))) for start, e in ranges for s in range(start, e, batch_size)
    ]
    todo = sum(len(b) for b in batches)
    if store is not None and todo < len(indices):
        logger.info("Resuming: %d of %d rows are already in the store.", len(indices) - todo, len(indices))
    out = None if store is not None else torch.empty(len(indices), dim, dtype=torch.float32)
    # ZeRO-3 / FSDP: forwards are collective, so every rank runs as many batches as the busiest.
    extra = lockstep_extra_batches(model, len(batches))
    loader = DataLoader(Subset(dataset, indices), batch_sampler=batches, collate_fn=collator)
    with tqdm(
        total=len(indices), initial=len(indices) - todo, disable=not progress, desc="per-example gradients"
    ) as bar:
        for rows, batch in zip(batches, loader):
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            feats = plan.features(batch, normalize=normalize).detach().cpu()
            if store is not None:
                store.write(rows[0], feats)
            else:
                out[rows[0] : rows[-1] + 1] = feats
            bar.update(len(rows))

    def padding() -> None:
        pad = collator([dataset[indices[0]]])
        plan.features({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in pad.items()})

    run_padding(extra, padding)
    return store.read() if store is not None else out
