"""What the embedding-space selectors (``near``, ``tsds``, ``cluster_less``) share.

An :class:`EmbeddingPoolSelector` is a :class:`~dataflex.selectors.pool.PoolSelector`
that embeds candidates and validation examples with the current model through
:func:`dataflex.embeddings.embedding_rows` (sharded across ranks, gathered, cached).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from dataflex.embeddings import EmbeddingRows, EmbeddingSpec, embedding_rows
from dataflex.errors import ConfigError
from dataflex.selectors.base import SelectionContext
from dataflex.selectors.pool import PoolParams, PoolSelector


class EmbeddingParams(PoolParams):
    """Params of the selectors that work in the model's embedding space."""

    layer: int | str = Field(
        default=-1,
        description="Hidden states to mean-pool: index into hidden_states (-1: last) or a module name.",
    )


class EmbeddingPoolSelector(PoolSelector):
    """A pool selector that embeds examples with the current model."""

    Params = EmbeddingParams

    def embedding_spec(self) -> EmbeddingSpec:
        """The layer and batch size of this selector's embeddings."""
        return EmbeddingSpec(layer=self.params.layer, batch_size=self.params.batch_size)

    def eval_examples(self, ctx: SelectionContext) -> Sequence[Mapping[str, Any]]:
        """The validation set, or a :class:`ConfigError` naming the fix when there is none."""
        if ctx.eval_dataset is None or len(ctx.eval_dataset) == 0:
            raise ConfigError(
                f"{self.registry_name} selects for a target task described by a validation set, but no "
                "eval dataset was given: set eval_dataset (the target task's examples) in the config."
            )
        return ctx.eval_dataset

    def check_context(self, ctx: SelectionContext) -> None:
        """A validation set (the target), then a model and a collator."""
        self.eval_examples(ctx)
        super().check_context(ctx)

    def embed(
        self, ctx: SelectionContext, dataset: Sequence[Mapping[str, Any]], indices: Sequence[int]
    ) -> EmbeddingRows:
        """Embeddings of ``dataset[i]``, ``i`` in ``indices``: sharded, gathered, cached."""
        return embedding_rows(
            ctx.model,
            dataset,
            indices,
            ctx.collator,
            self.embedding_spec(),
            dist=ctx.dist,
            device=ctx.device,
            cache_dir=self.cache_dir(ctx),
        )
