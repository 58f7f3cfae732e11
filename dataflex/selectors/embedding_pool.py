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

    scoring_cost = 1 / 3  # a forward pass per scored example, no backward

    Params = EmbeddingParams
    params: EmbeddingParams  # what validate_params builds (Selector declares a BaseModel)

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
        model, collator = ctx.model, ctx.collator
        assert model is not None  # check_context refused a context without them
        assert collator is not None
        return embedding_rows(
            model,
            dataset,
            indices,
            collator,
            self.embedding_spec(),
            dist=ctx.dist,
            device=ctx.device,
            cache_dir=self.cache_dir(ctx),
        )
