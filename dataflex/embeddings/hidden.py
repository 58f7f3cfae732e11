"""Per-example embeddings: mean-pooled hidden states of the current model, batched, no gradients.

The embedding of an example is the mean, over *its own* tokens (positions where the
attention mask is 1: prompt and completion), of the hidden states of one layer of the
model: by default the last entry of ``output_hidden_states`` (after the final norm for
Llama-style models), or a layer by index, or the output of a module named by its
``named_modules()`` name. Position ids are derived from the attention mask, so neither
padding side nor batch-mates change a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dataflex.errors import ConfigError, did_you_mean
from dataflex.passes import forward_batches, position_ids


@dataclass(frozen=True)
class EmbeddingSpec:
    """Which hidden states make an example's embedding.

    Attributes:
        layer: An index into the model's ``hidden_states`` (0: the token embeddings,
            -1: the last layer), or the ``named_modules()`` name of a module whose
            output (its first element when it returns a tuple) is taken.
        batch_size: Examples per forward pass.
    """

    layer: int | str = -1
    batch_size: int = 8

    def fingerprint(self) -> dict[str, Any]:
        """What the embeddings depend on besides the model and the data."""
        return {"layer": self.layer, "pooling": "mean-over-attended-tokens"}


def _module_named(model: torch.nn.Module, name: str) -> torch.nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        names = [n for n in modules if n]
        raise ConfigError(
            f"embedding layer {name!r} is not a module of {type(model).__name__}." + did_you_mean(name, names)
        )
    return modules[name]


def _hidden(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], layer: int | str) -> torch.Tensor:
    """``(B, T, H)`` hidden states of ``layer`` for ``batch``."""
    mask = batch["attention_mask"]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": position_ids(mask)}
    if isinstance(layer, int):
        out = model(**inputs, output_hidden_states=True)
        states = out.hidden_states
        if not -len(states) <= layer < len(states):
            raise ConfigError(
                f"embedding layer {layer} is out of range: the model returns {len(states)} hidden states "
                f"(0 = token embeddings .. {len(states) - 1} = last layer; negative counts from the end)."
            )
        return states[layer]
    captured: list[torch.Tensor] = []

    def hook(
        module: torch.nn.Module, args: tuple[object, ...], output: torch.Tensor | tuple[torch.Tensor, ...]
    ) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = _module_named(model, layer).register_forward_hook(hook)
    try:
        model(**inputs)
    finally:
        handle.remove()
    if len(captured) != 1 or captured[0].dim() != 3:
        raise ConfigError(
            f"embedding layer {layer!r} must run once per forward and output (batch, tokens, hidden); it ran "
            f"{len(captured)} times" + (f" with shape {tuple(captured[0].shape)}." if captured else ".")
        )
    return captured[0]


def embed_batch(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], layer: int | str = -1
) -> torch.Tensor:
    """Mean over each row's attended tokens of ``layer``'s hidden states, ``(B, H)`` fp32.

    Runs under ``torch.no_grad``; the caller sets eval/train mode.
    """
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(batch["input_ids"])
    batch = {**batch, "attention_mask": mask}
    with torch.no_grad():
        states = _hidden(model, batch, layer).float()
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def embed_examples(
    model: torch.nn.Module,
    examples: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
    collator: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]],
    spec: EmbeddingSpec,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Embeddings of ``examples[i]`` for ``i`` in ``indices`` (in that order), ``(len, H)`` fp32 on CPU.

    The model is put in eval mode (no dropout) and its mode restored afterwards.
    """
    out = forward_batches(
        model,
        examples,
        indices,
        collator,
        lambda batch: embed_batch(model, batch, spec.layer),
        batch_size=spec.batch_size,
        device=device,
    )
    if out:
        return torch.cat(out)
    return torch.zeros(0, _hidden_size(model))


def _hidden_size(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "hidden_size", None)
    return int(size) if size is not None else 0
