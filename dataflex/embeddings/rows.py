"""Embeddings of a part of a dataset: sharded across ranks, gathered, cached by fingerprint.

Each rank embeds its contiguous block of the requested rows
(:meth:`~dataflex.distributed.DistributedView.shard`), the blocks are gathered in rank
order, so every rank holds the same ``(len(indices), H)`` tensor. The result is cached
through the same keyed store as LESS's scores (:class:`dataflex.passes.ScoreCache`),
keyed by the model identity (trainable weights by value), the layer, and the tokens of
the rows, so a rerun of the same round, or a second selector on the same model state,
reuses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dataflex.distributed import DistributedView
from dataflex.embeddings.hidden import EmbeddingSpec, embed_examples
from dataflex.passes import ScoreCache, cache_lookup, cache_store, data_identity, model_identity, sharded_rows


@dataclass
class EmbeddingRows:
    """Embeddings of some rows and how they were obtained.

    Attributes:
        rows: ``(N, H)`` fp32, row ``r`` for the ``r``-th requested index; the same on every rank.
        cache_hit: Whether they came from the cache.
        time_s: Seconds this rank spent (computing its shard, or reading the cache).
    """

    rows: torch.Tensor
    cache_hit: bool
    time_s: float


def embedding_rows(
    model: torch.nn.Module,
    dataset: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
    collator: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]],
    spec: EmbeddingSpec,
    *,
    dist: DistributedView | None = None,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
) -> EmbeddingRows:
    """Embeddings of ``dataset[i]`` for ``i`` in ``indices``, sharded over ``dist`` and cached.

    Args:
        model: The current model (unwrapped).
        dataset: Tokenised examples (``input_ids``, ``labels``).
        indices: Which rows, in output order.
        collator: Pads a list of examples into a batch.
        spec: Layer and batch size.
        dist: The distributed view (``None``: one process).
        device: Where the forward passes run.
        cache_dir: Folder of the cache (``embeddings-<key>.safetensors``); ``None`` disables it.
    """
    dist = dist or DistributedView()
    t0 = time.perf_counter()
    idx = [int(i) for i in indices]
    cache = ScoreCache(cache_dir, "embeddings")
    fingerprint = {
        "kind": "embeddings",
        "model": model_identity(model),
        **spec.fingerprint(),
        "data": data_identity(dataset, idx),
    }
    found = cache_lookup(dist, cache, fingerprint)
    if found is not None:
        return EmbeddingRows(found["rows"].float(), True, time.perf_counter() - t0)
    elapsed = [0.0]

    def work(shard: range) -> torch.Tensor:
        local = embed_examples(model, dataset, idx[shard.start : shard.stop], collator, spec, device=device)
        elapsed[0] = time.perf_counter() - t0
        return local

    rows = sharded_rows(dist, len(idx), work)
    cache_store(dist, cache, fingerprint, {"rows": rows})
    return EmbeddingRows(rows, False, elapsed[0])
