"""Per-example embeddings of the current model (mean-pooled hidden states), shared by selectors.

:func:`embed_examples` computes them (batched, no gradients, padding-independent);
:func:`embedding_rows` shards that work across ranks, gathers it and caches it.
"""

from dataflex.embeddings.hidden import EmbeddingSpec, embed_batch, embed_examples
from dataflex.embeddings.rows import EmbeddingRows, embedding_rows

__all__ = ["EmbeddingRows", "EmbeddingSpec", "embed_batch", "embed_examples", "embedding_rows"]
