"""Independent, slow embeddings: one example at a time, no padding, no mask, plain ``hidden_states``."""

from __future__ import annotations

import torch


@torch.no_grad()
def slow_embedding(model, example, layer: int = -1) -> torch.Tensor:
    """Mean over the example's tokens of hidden_states[layer], fp64."""
    was = model.training
    model.eval()
    ids = torch.tensor([example["input_ids"]])
    states = model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]
    model.train(was)
    return states.double().mean(dim=0)


def slow_embeddings(model, examples, indices=None, layer: int = -1) -> torch.Tensor:
    """Stacked :func:`slow_embedding` of ``examples[i]``."""
    indices = range(len(examples)) if indices is None else indices
    return torch.stack([slow_embedding(model, examples[int(i)], layer) for i in indices])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two vectors, by the formula."""
    return float((a @ b) / (a.norm() * b.norm()))
