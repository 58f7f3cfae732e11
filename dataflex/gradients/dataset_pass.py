"""``compute_features``: a batched ``torch.utils.data`` pass that fills a feature store."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence, Sized
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from dataflex import stop_points
from dataflex.engines import lockstep_extra_batches, run_padding
from dataflex.errors import ConfigError
from dataflex.gradients.batching import length_order, token_batches
from dataflex.gradients.features import FeaturePlan
from dataflex.gradients.store import FeatureStore
from dataflex.gradients.transforms import AdamState
from dataflex.projectors.base import Projector

logger = logging.getLogger(__name__)


def compute_features(
    model: nn.Module,
    dataset: Sequence[Mapping[str, Any]] | torch.utils.data.Dataset,
    collator: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]],
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
    progress: bool | None = None,
    allow_sgd_fallback: bool = False,
    sort_by_length: bool = True,
    max_batch_tokens: int | None = None,
    desc: str = "per-example gradients",
    timings: MutableMapping[str, float] | None = None,
) -> torch.Tensor:
    """Per-example features of (a subset of) a tokenised dataset, batch by batch.

    Row j of the result is the feature of ``dataset[indices[j]]`` (see
    :func:`~dataflex.gradients.per_example_features` for the feature arguments). With
    a ``store``, completed rows are skipped (resume) and every finished batch is
    written to it before the next one starts.

    With ``sort_by_length`` (default) the examples are processed longest first, so a
    batch is padded only to the length of its own examples, not to the longest of the
    pass; the result is returned in ``indices`` order all the same. A store then holds
    its rows in that length order (a pure function of the data, so a rerun resumes it).

    Args:
        model: The model, already on its device.
        dataset: Tokenised examples (dicts with ``input_ids`` and ``labels``).
        collator: Turns a list of examples into a padded batch, e.g. ``SFTDataCollator``.
        batch_size: Examples per forward/backward (the most, with ``max_batch_tokens``).
        transform: ``"sgd"``, ``"adam"`` or ``"sign"``.
        projector: Projector streamed into, or None for raw columns.
        optimizer: Live Adam/AdamW (``adam``).
        adam_state: Adam moments from a checkpoint (``adam``).
        normalize: Unit-length rows.
        store: A :class:`FeatureStore` with ``num_rows == len(indices)`` and ``dim == k``.
        indices: Dataset positions to compute (default: all, in order).
        device: Where batches go (default: the device of the model's first parameter).
        progress: Show a tqdm progress bar (examples/second). ``None`` (default): on the
            rank-0 process (or without ``torch.distributed``) when stderr is a terminal.
        allow_sgd_fallback: See :func:`~dataflex.gradients.per_example_features`.
        sort_by_length: Batch the examples longest first (order of the result unchanged).
        max_batch_tokens: Also cap each batch at this many padded tokens (examples × its
            longest), so that short examples share large batches and long ones small
            ones (see :func:`~dataflex.gradients.batching.token_batches`); ``None``:
            every batch has ``batch_size`` examples.
        desc: Label of the progress bar.
        timings: If given, seconds are added to it per phase: those of
            :data:`~dataflex.gradients.features.PHASES` and ``"io"`` (data loading and
            collation, store writes and the final read).

    Returns:
        ``(N, k)`` fp32 CPU tensor (read back from the store when there is one, i.e.
        rounded to the store's dtype).

    Raises:
        ConfigError: on a bad ``batch_size`` or ``max_batch_tokens``, indices out of
            range, or a store whose shape does not match.
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if max_batch_tokens is not None and (not isinstance(max_batch_tokens, int) or max_batch_tokens <= 0):
        raise ConfigError(f"max_batch_tokens must be a positive integer or None, got {max_batch_tokens!r}.")
    n_data = len(cast(Sized, dataset))  # a Sequence, or a map-style Dataset with __len__
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
    # order[r] is the position (in indices) of the r-th example processed (and stored).
    lengths = [len(dataset[i]["input_ids"]) for i in indices]
    order = length_order(lengths) if sort_by_length else list(range(len(indices)))
    ranges = store.missing_ranges() if store is not None else [(0, len(indices))]
    batches = token_batches([lengths[j] for j in order], ranges, batch_size, max_batch_tokens)
    todo = sum(len(b) for b in batches)
    if store is not None and todo < len(indices):
        logger.info("Resuming: %d of %d rows are already in the store.", len(indices) - todo, len(indices))
    out = None if store is not None else torch.empty(len(indices), dim, dtype=torch.float32)
    # ZeRO-3 / FSDP: forwards are collective, so every rank runs as many batches as the busiest.
    extra = lockstep_extra_batches(model, len(batches))
    loader = DataLoader(
        Subset(
            cast("Dataset[Mapping[str, Any]]", dataset), [indices[j] for j in order]
        ),  # indexable either way
        batch_sampler=batches,
        collate_fn=collator,
    )
    io = 0.0
    with tqdm(
        total=len(indices),
        initial=len(indices) - todo,
        disable=_bar_disabled(progress),
        desc=desc,
        unit="ex",
        dynamic_ncols=True,
    ) as bar:
        batch_iter = iter(loader)
        for rows in batches:
            t0 = time.perf_counter()
            batch = next(batch_iter)
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            io += time.perf_counter() - t0
            feats = plan.features(batch, normalize=normalize).detach().cpu()
            t0 = time.perf_counter()
            if store is not None:
                store.write(rows[0], feats)
            elif out is not None:  # always, without a store
                out[rows[0] : rows[-1] + 1] = feats
            io += time.perf_counter() - t0
            bar.update(len(rows))
            stop_points.reached("feature-batch")

    def padding() -> None:
        pad = collator([dataset[indices[0]]])
        plan.features({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in pad.items()})

    run_padding(extra, padding)
    t0 = time.perf_counter()
    if store is not None:
        out = store.read()
    assert out is not None  # filled in place, or read back from the store
    if sort_by_length:
        restored = torch.empty_like(out)
        restored[torch.as_tensor(order)] = out
        out = restored
    io += time.perf_counter() - t0
    if timings is not None:
        for phase, seconds in plan.timings.items():
            timings[phase] = timings.get(phase, 0.0) + seconds
        timings["io"] = timings.get("io", 0.0) + io
    return out


def progress_bar(total: int, desc: str, progress: bool | None = None) -> tqdm:
    """A tqdm bar over ``total`` examples (rate and time left), shown as :func:`_bar_disabled` says."""
    return tqdm(total=total, disable=_bar_disabled(progress), desc=desc, unit="ex", dynamic_ncols=True)


def _bar_disabled(progress: bool | None) -> bool:
    """Whether to hide the bar: as asked, else on ranks other than 0 and when stderr is no terminal."""
    if progress is not None:
        return not progress
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_rank() != 0:
        return True
    return not sys.stderr.isatty()
