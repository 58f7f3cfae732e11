"""What ``nice`` computes for a validation prompt: seeded generations and their policy gradient.

For a validation example x′ with prompt tokens and reference completion, M
samples y₁…y_M are drawn from the current model at temperature T (seeded by
(seed, round, example index), so any rank draws the same ones), each scored
r_m = metric(y_m, reference). The REINFORCE estimate of the gradient of the
expected metric is ∇J ≈ (1/M) Σ_m (r_m − b) ∇ log p(y_m | x′). ``nice`` uses
v = −∇J, the gradient of a loss whose descent raises the metric (the role of
∇ℓ(z′) in LESS). Since ∇ log p(y | x′) = −n · ∇ℓ(y), with ℓ the mean token
cross-entropy over the n generated tokens (the per-example loss the feature code
differentiates), v = (1/M) Σ_m (r_m − b) · n_m · ∇ℓ(y_m), and by linearity of
the projection P·v = (1/M) Σ_m (r_m − b) · n_m · P∇ℓ(y_m).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dataflex.data.collator import IGNORE_INDEX


def split_example(example: Mapping[str, Any], index: int) -> tuple[list[int], list[int]]:
    """``(prompt, reference)`` token ids of a tokenised example.

    The prompt is the tokens before the first completion token; the reference is the
    completion tokens (labels ≠ −100).

    Raises:
        ValueError: if the example has no completion or no prompt token.
    """
    ids, labels = list(example["input_ids"]), list(example["labels"])
    first = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), None)
    if first is None:
        raise ValueError(f"nice: eval example {index} has no completion token (all labels -100).")
    if first == 0:
        raise ValueError(f"nice: eval example {index} has no prompt token to generate from.")
    reference = [int(t) for t, label in zip(ids, labels) if label != IGNORE_INDEX]
    return [int(t) for t in ids[:first]], reference


def strip_eos(tokens: Sequence[int], eos: set[int]) -> list[int]:
    """``tokens`` up to (not including) the first end-of-sequence token."""
    out = []
    for t in tokens:
        if int(t) in eos:
            break
        out.append(int(t))
    return out


def sample_rng(seed: int, round_: int, index: int) -> torch.Generator:
    """The CPU generator of one validation prompt's samples: a pure function of its arguments."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(round_), int(index)]).generate_state(2)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]) >> 1)


@torch.no_grad()
def sample_generations(
    model: torch.nn.Module,
    prompt: Sequence[int],
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    eos: set[int],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """``num_samples`` continuations of ``prompt`` sampled from ``model``.

    Each is cut after its first end-of-sequence token (kept) or at ``max_new_tokens``.

    Sampling is ancestral, token by token with the KV cache, from
    softmax(logits / ``temperature``) (``temperature == 0``: greedy); the draws use
    ``generator`` on the CPU in float64, so they do not depend on the device's RNG.
    Dropout is off; the model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    try:
        ids = torch.tensor([list(prompt)] * num_samples, dtype=torch.long, device=device)
        out = model(input_ids=ids, use_cache=True)
        # transformers 5 names the KV cache `cache` (input and output); 4.x `past_key_values`.
        key = "cache" if "cache" in getattr(type(out), "__dataclass_fields__", {}) else "past_key_values"
        past, logits = getattr(out, key), out.logits[:, -1]
        samples: list[list[int]] = [[] for _ in range(num_samples)]
        done = [False] * num_samples
        for _ in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.float().argmax(dim=-1).cpu()
            else:
                probs = torch.softmax(logits.double().cpu() / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            for m, t in enumerate(nxt.tolist()):
                if not done[m]:
                    samples[m].append(int(t))
                    done[m] = int(t) in eos
            if all(done):
                break
            out = model(input_ids=nxt.view(-1, 1).to(device), use_cache=True, **{key: past})
            past, logits = getattr(out, key), out.logits[:, -1]
    finally:
        model.train(was_training)
    return samples


@dataclass
class PromptRollouts:
    """One validation prompt's samples, rewards and policy-gradient weights.

    Attributes:
        examples: ``prompt + y_m`` with the prompt masked, one per sample.
        rewards: r_m.
        weights: (r_m − b) · n_m / M, the coefficient of P∇ℓ(y_m) in P·v.
    """

    examples: list[dict[str, list[int]]]
    rewards: list[float]
    weights: list[float]


def rollouts(
    prompt: Sequence[int],
    samples: Sequence[Sequence[int]],
    rewards: Sequence[float],
    baseline: str,
) -> PromptRollouts:
    """The weights of :class:`PromptRollouts` for ``samples`` with ``rewards``.

    ``baseline``: ``none`` (b = 0, the original DataFlex code) or ``mean`` (b = the mean
    reward of this prompt's samples, a variance reduction that keeps the estimate's
    expectation up to a factor (M − 1)/M).
    """
    m = len(samples)
    b = float(np.mean(rewards)) if baseline == "mean" else 0.0
    examples = [
        {"input_ids": [*prompt, *y], "labels": [IGNORE_INDEX] * len(prompt) + list(y)} for y in samples
    ]
    weights = [(float(r) - b) * len(y) / m for y, r in zip(samples, rewards)]
    return PromptRollouts(examples, [float(r) for r in rewards], weights)
