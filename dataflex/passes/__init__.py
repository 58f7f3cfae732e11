"""What every scoring pass over examples shares, below the gradient features and the embeddings.

* :mod:`~dataflex.passes.forward`: the batched no-grad forward loop and the position ids
  of a padded batch;
* :mod:`~dataflex.passes.sharded`: rows split across ranks, gathered, cached by rank 0;
* :mod:`~dataflex.passes.cache`: the keyed, checksummed cache of per-example tensors
  and the identities (model, data, Adam state) that key it.
"""

from dataflex.passes.cache import ScoreCache, adam_identity, data_identity, model_identity
from dataflex.passes.forward import Collator, forward_batches, position_ids
from dataflex.passes.sharded import cache_lookup, cache_store, sharded_rows

__all__ = [
    "Collator",
    "ScoreCache",
    "adam_identity",
    "cache_lookup",
    "cache_store",
    "data_identity",
    "forward_batches",
    "model_identity",
    "position_ids",
    "sharded_rows",
]
